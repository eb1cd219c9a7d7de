"""The Gerrit REST API, as the gate uses it.

Every call names the section of
https://gerrit-review.googlesource.com/Documentation/rest-api-changes.html
(or rest-api-projects.html) it follows.  Authenticated calls go under ``/a/``
with the account's HTTP password, sent by basic or digest authentication
(rest-api.html#authentication).  Every JSON answer starts with the ``)]}'``
line that guards against XSSI (rest-api.html#output); it is stripped before
parsing.  Errors are plain text; 5xx and 429 raise a
:class:`aiohttp.ClientResponseError` (:class:`GerritError`), which
``gate.faults`` counts as transient.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

#: what Gerrit writes before every JSON body (rest-api.html#output)
XSSI_PREFIX = ")]}'"

#: ChangeInfo options the gate reads a change with (rest-api-changes.html#query-options):
#: every revision (the kind of each patch set: equivalence), the votes of everyone
#: on the current one (the approval rule), its commit message (Depends-On), and
#: whether Gerrit's submit rules are met
CHANGE_OPTIONS = (
    "ALL_REVISIONS",
    "CURRENT_COMMIT",
    "DETAILED_LABELS",
    "DETAILED_ACCOUNTS",
    "SUBMITTABLE",
)


class GerritError(aiohttp.ClientResponseError):
    """Gerrit answered with an error status; ``message`` is its text."""


def change_id(project: str, number: int) -> str:
    """The ``<project>~<number>`` identifier (rest-api-changes.html#change-id), URL-quoted."""
    return f"{quote(project, safe='')}~{number}"


def strip_xssi(body: str) -> str:
    """The JSON of a Gerrit answer, without the ``)]}'`` line (rest-api.html#output)."""
    if body.startswith(XSSI_PREFIX):
        return body[len(XSSI_PREFIX) :].lstrip("\r\n")
    return body


class GerritClient:
    """One Gerrit server's REST API; one aiohttp session, opened on first use."""

    def __init__(
        self,
        url: str,
        user: str = "",
        password: str = "",
        auth: str = "basic",
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.user = user
        self._password = password
        self._auth = auth
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            kwargs: dict[str, Any] = {"timeout": self._timeout}
            if self.user and self._auth == "digest":
                kwargs["middlewares"] = (aiohttp.DigestAuthMiddleware(self.user, self._password),)
            elif self.user:
                token = base64.b64encode(f"{self.user}:{self._password}".encode()).decode()
                kwargs["headers"] = {"Authorization": f"Basic {token}"}
            self._session = aiohttp.ClientSession(**kwargs)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _endpoint(self, path: str) -> str:
        # rest-api.html#authentication: "/a/" makes Gerrit authenticate the request
        return f"{self.url}{'/a' if self.user else ''}{path}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """Call ``path`` (already quoted) and return the parsed JSON answer."""
        session = self._open()
        async with session.request(
            method,
            self._endpoint(path),
            params=list(params),
            json=dict(body) if body is not None else None,
            headers={"Accept": "application/json"},
        ) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise GerritError(
                    resp.request_info,
                    resp.history,
                    status=resp.status,
                    message=text.strip()[:500] or resp.reason or "",
                )
            if not text.strip():
                return None
            return json.loads(strip_xssi(text))

    # -- changes -------------------------------------------------------------

    async def get_change(
        self, project: str, number: int, options: Sequence[str] = CHANGE_OPTIONS
    ) -> dict[str, Any]:
        """rest-api-changes.html#get-change: ``GET /changes/{change-id}`` with options."""
        answer = await self.request(
            "GET",
            f"/changes/{change_id(project, number)}",
            params=[("o", o) for o in options],
        )
        if not isinstance(answer, dict):
            raise ValueError(f"change {number}: Gerrit answered {type(answer).__name__}")
        return answer

    async def query_changes(
        self, query: str, options: Sequence[str] = (), page: int = 100
    ) -> list[dict[str, Any]]:
        """rest-api-changes.html#list-changes: every page of ``GET /changes/?q=``.

        A page's last ChangeInfo carries ``_more_changes: true`` when another
        follows; ``S`` skips the ones read already.
        """
        found: list[dict[str, Any]] = []
        while True:
            params = [("q", query), ("n", str(page)), ("S", str(len(found)))]
            params += [("o", o) for o in options]
            answer = await self.request("GET", "/changes/", params=params)
            if not isinstance(answer, list):
                raise ValueError(f"query {query!r}: Gerrit answered {type(answer).__name__}")
            found.extend(c for c in answer if isinstance(c, dict))
            if not answer or not answer[-1].get("_more_changes"):
                return found

    async def mergeable(self, project: str, number: int, revision: str) -> dict[str, Any]:
        """rest-api-changes.html#get-mergeable: ``GET .../revisions/{revision-id}/mergeable``."""
        answer = await self.request(
            "GET", f"/changes/{change_id(project, number)}/revisions/{revision}/mergeable"
        )
        return answer if isinstance(answer, dict) else {}

    async def set_review(
        self,
        project: str,
        number: int,
        revision: str,
        *,
        message: str = "",
        labels: Mapping[str, int] | None = None,
        tag: str = "",
    ) -> dict[str, Any]:
        """rest-api-changes.html#set-review: ``POST .../revisions/{revision-id}/review``.

        The body is a ReviewInput (#review-input); ``notify: OWNER`` mails the
        change's owner only, not every reviewer, for a gate's routine comments.
        """
        review: dict[str, Any] = {"notify": "OWNER"}
        if message:
            review["message"] = message
        if labels:
            review["labels"] = dict(labels)
        if tag:
            review["tag"] = tag
        answer = await self.request(
            "POST",
            f"/changes/{change_id(project, number)}/revisions/{revision}/review",
            body=review,
        )
        return answer if isinstance(answer, dict) else {}

    async def submit_revision(self, project: str, number: int, revision: str) -> dict[str, Any]:
        """rest-api-changes.html#submit-revision: ``POST .../revisions/{revision-id}/submit``.

        Naming the revision is the guard: Gerrit answers 409 "revision ... is
        not current revision" if the change moved since it was tested.
        """
        answer = await self.request(
            "POST",
            f"/changes/{change_id(project, number)}/revisions/{revision}/submit",
            body={},
        )
        return answer if isinstance(answer, dict) else {}

    # -- projects ------------------------------------------------------------

    async def branch(self, project: str, branch: str) -> dict[str, Any]:
        """rest-api-projects.html#get-branch: ``GET /projects/{project}/branches/{branch-id}``."""
        answer = await self.request(
            "GET",
            f"/projects/{quote(project, safe='')}/branches/{quote(branch, safe='')}",
        )
        if not isinstance(answer, dict):
            raise ValueError(f"branch {branch}: Gerrit answered {type(answer).__name__}")
        return answer
