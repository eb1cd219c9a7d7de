"""GitLab's pipeline trigger and pipeline cancel endpoints, as GitLab answers them.

* ``POST /api/v4/projects/:id/trigger/pipeline`` -- https://docs.gitlab.com/ci/triggers/
  and https://docs.gitlab.com/api/pipeline_triggers/#trigger-a-pipeline-with-a-token;
  GitLab's ``lib/api/ci/triggers.rb``: ``token`` and ``ref`` required (form, JSON or
  query), ``variables`` a hash of strings (``variables[KEY]=value`` in a form) else
  400 ``variables needs to be a map of key-valued strings``; an unknown project or
  token: 404 ``{"message": "404 Not Found"}``; an unknown ref: 400
  ``{"message": {"base": ["Reference not found"]}}``; else 201 with the pipeline
  (``Entities::Ci::Pipeline``: id, iid, project_id, sha, ref, status "created",
  web_url, ...).
* ``POST /api/v4/projects/:id/pipelines/:pipeline_id/cancel`` --
  https://docs.gitlab.com/api/pipelines/#cancel-a-pipelines-jobs: needs a user's
  token (``PRIVATE-TOKEN``; a trigger token is no API credential): 401
  ``{"message": "401 Unauthorized"}`` without one, 404 for an unknown pipeline,
  else 200 with the pipeline, ``status: "canceled"``.

A project is named by its id or its URL-encoded path (``group%2Fproject``); an
unencoded ``/`` in the path is a different route, a 404, as on gitlab.com.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.fakeci import FakeCI, Outcome, Received

SHA = "91e2711a93e5d9e8dddfeb6d003b636b25bf6fc9"


class FakeGitLabCI(FakeCI):
    def __init__(
        self,
        outcome: Outcome = "pass",
        delay: float = 0.0,
        *,
        project_id: int = 21,
        path: str = "rpmgate/packstack",
        trigger_token: str = "glptt-6d056f63e50fe6f8c5f8f4aa10edb7",
        access_token: str = "glpat-cancel-0123456789",
        refs: tuple[str, ...] = ("main",),
    ) -> None:
        super().__init__(outcome, delay)
        self.project_id, self.path = project_id, path
        self.trigger_token, self.access_token = trigger_token, access_token
        self.refs = refs
        self.pipelines: dict[int, dict[str, Any]] = {}
        #: trigger calls answered 502 before the next is served (GitLab behind a proxy
        #: while Puma restarts answers the proxy's 502 page)
        self.unavailable = 0

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/v4/projects/{id}/trigger/pipeline", self.trigger),
            web.post("/api/v4/projects/{id}/pipelines/{pipeline_id}/cancel", self.cancel),
        ]

    def _project(self, request: web.Request) -> bool:
        # aiohttp hands the path segment decoded: "group%2Fproject" -> "group/project"
        given = request.match_info["id"]
        return given in (str(self.project_id), self.path)

    async def trigger(self, request: web.Request) -> web.Response:
        if self.unavailable:
            self.unavailable -= 1
            return web.Response(status=502, text="<html><body>502 Bad Gateway</body></html>")
        params: dict[str, Any] = dict(request.query)
        variables: dict[str, Any] = {}
        if request.content_type == "application/json":
            body = await request.json()
            params.update({k: v for k, v in body.items() if k != "variables"})
            variables = body.get("variables") or {}
        else:
            form = await request.post()
            for key, value in form.items():
                match = re.fullmatch(r"variables\[(.+)\]", key)
                if match:
                    variables[match.group(1)] = value
                else:
                    params[key] = value
        if "ref" not in params or "token" not in params:
            missing = "ref" if "ref" not in params else "token"
            return web.json_response({"error": f"{missing} is missing"}, status=400)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in variables.items()):
            return _message(400, "variables needs to be a map of key-valued strings")
        if not self._project(request) or params["token"] != self.trigger_token:
            return _message(404, "404 Not Found")
        if params["ref"] not in self.refs:
            return web.json_response({"message": {"base": ["Reference not found"]}}, status=400)
        pipeline_id = 250 + len(self.pipelines) + 1
        now = datetime.now(UTC).isoformat()
        pipeline = {
            "id": pipeline_id,
            "iid": len(self.pipelines) + 1,
            "project_id": self.project_id,
            "sha": SHA,
            "ref": params["ref"],
            "status": "created",
            "source": "trigger",
            "before_sha": "0" * 40,
            "tag": False,
            "yaml_errors": None,
            "user": None,
            "created_at": now,
            "updated_at": now,
            "started_at": None,
            "finished_at": None,
            "committed_at": None,
            "duration": None,
            "queued_duration": None,
            "coverage": None,
            "web_url": f"{self.url}/{self.path}/-/pipelines/{pipeline_id}",
        }
        self.pipelines[pipeline_id] = pipeline
        self.accepted(Received(pipeline_id, {str(k): str(v) for k, v in variables.items()}))
        return web.json_response(pipeline, status=201)

    async def cancel(self, request: web.Request) -> web.Response:
        if request.headers.get("PRIVATE-TOKEN") != self.access_token:
            return _message(401, "401 Unauthorized")
        if not self._project(request):
            return _message(404, "404 Project Not Found")
        try:
            pipeline = self.pipelines[int(request.match_info["pipeline_id"])]
        except (KeyError, ValueError):
            return _message(404, "404 Not found")
        if pipeline["status"] in ("created", "pending", "running"):
            pipeline["status"] = "canceled"
        for received in self.received:
            if received.remote_id == pipeline["id"]:
                received.cancelled = True
        return web.json_response(pipeline, status=200)


def _message(status: int, message: str) -> web.Response:
    return web.Response(
        text=json.dumps({"message": message}), status=status, content_type="application/json"
    )
