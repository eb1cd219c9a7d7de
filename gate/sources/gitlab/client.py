"""The REST v4 calls the driver makes, on aiohttp, as the bot.

A project is named by its URL-encoded path (``redhat%2Fcentos-stream%2Frpms%2Fnova``,
https://docs.gitlab.com/ee/api/rest/index.html#namespaced-paths), so multi-level
namespaces need no id lookup.  The token travels as ``PRIVATE-TOKEN`` (personal,
project and group access tokens) or ``Authorization: Bearer`` (OAuth) and is never
logged.

Faults: a 5xx or 429 answer raises :class:`aiohttp.ClientResponseError`, which
``gate.faults`` counts as transient (the gate retries); connection errors and
timeouts are aiohttp's own, transient too.  Any other error answer is
:class:`GitLabError`, with GitLab's message: the outcome, not a fault.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

log = logging.getLogger(__name__)

#: pages of a list read at most (100 entries each)
MAX_PAGES = 20


class GitLabError(Exception):
    """GitLab answered a call with a client error (4xx other than 429)."""

    def __init__(self, status: int, message: str, call: str) -> None:
        super().__init__(f"{call}: HTTP {status}: {message}")
        self.status = status
        self.message = message


def project_ref(path: str) -> str:
    """A project's path as an id in a URL: every ``/`` encoded."""
    return quote(path, safe="")


def _message(body: Any) -> str:
    """GitLab's error text: ``{"message": …}`` or ``{"error": …}`` (a string, a list, a dict)."""
    value = body.get("message", body.get("error", body)) if isinstance(body, dict) else body
    if isinstance(value, dict):
        value = "; ".join(f"{k}: {v}" for k, v in value.items())
    elif isinstance(value, list):
        value = "; ".join(map(str, value))
    return str(value)[:500]


class GitLabClient:
    def __init__(
        self, api: str, token: str, *, bearer: bool = False, timeout: float = 30.0
    ) -> None:
        self.api = api.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if bearer else {"PRIVATE-TOKEN": token}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _open(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = aiohttp.ClientSession(
                headers={**self._headers, "User-Agent": "rpmgate"}, timeout=self._timeout
            )
            self._loop = loop
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def url(self, path: str, *parts: str | int) -> URL:
        tail = "/".join(quote(str(p), safe="") for p in parts)
        return URL(f"{self.api}/projects/{project_ref(path)}/{tail}", encoded=True)

    async def call(
        self,
        method: str,
        url: URL,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[Any, Mapping[str, str]]:
        """One call: (parsed body, headers); errors raised as described above."""
        what = f"{method} {url.raw_path}"
        async with self._open().request(method, url, json=json, params=params) as resp:
            try:
                body: Any = await resp.json(content_type=None)
            except ValueError:
                body = (await resp.text())[:500]
            if resp.status >= 500 or resp.status == 429:
                raise aiohttp.ClientResponseError(
                    resp.request_info, (), status=resp.status, message=_message(body)
                )
            if resp.status >= 400:
                raise GitLabError(resp.status, _message(body), what)
            return body, resp.headers

    async def get(self, url: URL, params: dict[str, str] | None = None) -> Any:
        return (await self.call("GET", url, params=params))[0]

    async def get_list(self, url: URL, params: dict[str, str] | None = None) -> list[Any]:
        """Every page of a list (offset pagination, ``X-Next-Page``)."""
        out: list[Any] = []
        page = "1"
        for _ in range(MAX_PAGES):
            body, headers = await self.call(
                "GET", url, params={**(params or {}), "per_page": "100", "page": page}
            )
            if not isinstance(body, list):
                raise GitLabError(200, "expected a list", f"GET {url.path}")
            out.extend(body)
            page = headers.get("X-Next-Page", "")
            if not page.isdigit():
                break
        return out

    # -- merge requests: https://docs.gitlab.com/ee/api/merge_requests.html ------------------
    async def merge_request(self, path: str, iid: int) -> dict[str, Any]:
        """#get-single-mr"""
        body = await self.get(self.url(path, "merge_requests", iid))
        if not isinstance(body, dict):
            raise GitLabError(200, "expected an object", "GET merge request")
        return body

    async def approvals(self, path: str, iid: int) -> dict[str, Any]:
        """https://docs.gitlab.com/ee/api/merge_request_approvals.html#for-a-merge-request"""
        body = await self.get(self.url(path, "merge_requests", iid, "approvals"))
        return body if isinstance(body, dict) else {}

    async def versions(self, path: str, iid: int) -> list[Any]:
        """#get-merge-request-diff-versions (newest first)"""
        return await self.get_list(self.url(path, "merge_requests", iid, "versions"))

    async def notes(self, path: str, iid: int) -> list[Any]:
        """https://docs.gitlab.com/ee/api/notes.html#list-all-merge-request-notes"""
        return await self.get_list(
            self.url(path, "merge_requests", iid, "notes"),
            {"sort": "asc", "order_by": "created_at"},
        )

    async def member(self, path: str, user_id: int) -> dict[str, Any] | None:
        """https://docs.gitlab.com/ee/api/members.html#get-a-member-of-a-group-or-project-including-inherited-and-invited-members"""
        try:
            body = await self.get(self.url(path, "members", "all", user_id))
        except GitLabError as exc:
            if exc.status == 404:
                return None
            raise
        return body if isinstance(body, dict) else None

    async def merge(
        self, path: str, iid: int, sha: str, message: str | None = None
    ) -> tuple[int, Any]:
        """#merge-a-merge-request, with ``sha`` so GitLab refuses (409) if the head moved.

        (status, body): 200 merged; 401 not allowed; 404 no such MR; 405 not
        mergeable (draft, closed, pipeline, approvals); 406/422 cannot be merged
        (conflicts, a merge that failed); 409 the head is not ``sha``.
        """
        params: dict[str, Any] = {"sha": sha, "should_remove_source_branch": False}
        if message:
            params["merge_commit_message"] = message
        try:
            body, _ = await self.call(
                "PUT", self.url(path, "merge_requests", iid, "merge"), json=params
            )
        except GitLabError as exc:
            return exc.status, exc.message
        return 200, body

    async def create_note(self, path: str, iid: int, body: str) -> dict[str, Any]:
        """https://docs.gitlab.com/ee/api/notes.html#create-new-merge-request-note"""
        result, _ = await self.call(
            "POST", self.url(path, "merge_requests", iid, "notes"), json={"body": body}
        )
        return result if isinstance(result, dict) else {}

    # -- commits: https://docs.gitlab.com/ee/api/commits.html ----------------------------------
    async def set_status(
        self,
        path: str,
        sha: str,
        state: str,
        *,
        name: str,
        target_url: str = "",
        description: str = "",
        ref: str | None = None,
    ) -> dict[str, Any]:
        """#set-the-pipeline-status-of-a-commit (``POST /projects/:id/statuses/:sha``)."""
        params: dict[str, Any] = {"state": state, "name": name}
        if target_url:
            params["target_url"] = target_url
        if description:
            params["description"] = description[:255]
        if ref:
            params["ref"] = ref
        result, _ = await self.call("POST", self.url(path, "statuses", sha), json=params)
        return result if isinstance(result, dict) else {}
