"""A generic webhook receiver, as docs/pipelines.md (External jobs) defines the protocol.

There is no upstream server to follow here: the protocol is rpmgate's own.  The
receiver checks ``X-Rpmgate-Signature-256`` (HMAC-SHA256 of the raw body, as
GitHub's webhooks sign theirs) when it has a secret, dispatches on
``X-Rpmgate-Event`` (``run`` / ``cancel``), treats a repeated run id as the same
run (the gate re-sends after a restart that lost the answer), and answers 202
with its own handle ``{"id": ..., "url": ...}``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from aiohttp import web

from tests.fakeci import FakeCI, Outcome, Received


class FakeWebhookCI(FakeCI):
    def __init__(
        self, outcome: Outcome = "pass", delay: float = 0.0, secret: str | None = None
    ) -> None:
        super().__init__(outcome, delay)
        self.secret = secret
        self.cancels: list[dict[str, Any]] = []
        #: signatures that did not match (refused with 401)
        self.bad_signatures = 0

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/hooks/rpmgate", self.hook)]

    async def hook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self.secret is not None:
            expected = "sha256=" + hmac.new(self.secret.encode(), raw, hashlib.sha256).hexdigest()
            given = request.headers.get("X-Rpmgate-Signature-256", "")
            if not hmac.compare_digest(given.encode(), expected.encode()):
                self.bad_signatures += 1
                return web.json_response({"error": "bad signature"}, status=401)
        doc = json.loads(raw)
        event = request.headers.get("X-Rpmgate-Event")
        if event == "cancel":
            self.cancels.append(doc)
            for received in self.received:
                if received.run == doc["run"]:
                    received.cancelled = True
            return web.json_response({"cancelled": doc["run"]}, status=202)
        if event != "run":
            return web.json_response({"error": f"unknown event {event!r}"}, status=400)
        for received in self.received:
            if received.run == doc["run"] and received.document is not None:
                # the same run again (a gate restarted before our answer): its new token wins
                received.document = doc
                received.variables.update(_variables(doc))
                return web.json_response(
                    {"id": f"wh-{received.remote_id}", "url": self._url(received.remote_id)},
                    status=202,
                )
        remote_id = len(self.received) + 1
        self.accepted(Received(remote_id, _variables(doc), document=doc))
        return web.json_response({"id": f"wh-{remote_id}", "url": self._url(remote_id)}, status=202)

    def _url(self, remote_id: int) -> str:
        return f"{self.url}/runs/{remote_id}"


def _variables(doc: dict[str, Any]) -> dict[str, str]:
    """The document as the RPMGATE_* names the other flavours get."""
    return {
        "RPMGATE_RUN": str(doc["run"]),
        "RPMGATE_TOKEN": doc["token"],
        "RPMGATE_RESULT_URL": doc["result_url"],
        "RPMGATE_ARCHES": " ".join(doc["arches"]),
        "RPMGATE_REPO_URL": doc["repos"]["url"],
        "RPMGATE_PROJECT": doc["project"],
    }
