"""Pagure's REST API (version 0), the calls the driver makes and nothing else.

Every call names the Pagure source it follows (pagure.io/pagure, mirrored as
github:Pagure/pagure; read at commit bee16830, 2026-03).  Authentication is
``Authorization: token <t>`` (``pagure/utils.py`` ``check_api_acls``).  Pagure
answers an error as ``{"error": <text>, "error_code": "E..."}`` with a 4xx
status (``pagure/api/__init__.py`` ``api_method``): that is a
:class:`PagureError`.  A 5xx or 429 is raised as
:class:`aiohttp.ClientResponseError`, which ``gate.faults`` counts as
transient, as it does connection errors and timeouts.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

import aiohttp

log = logging.getLogger(__name__)


class PagureError(Exception):
    """Pagure refused a call (4xx): its ``error_code`` and words."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"Pagure answered {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _path(project: str) -> str:
    # a project path is "name" or "namespace/name" (checked in the config); the
    # segments are quoted so nothing in them is read as more path
    return "/".join(quote(part, safe="") for part in project.split("/"))


class PagureClient:
    """An aiohttp session on one Pagure instance's ``/api/0``."""

    def __init__(self, url: str, token: str | None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Accept": "application/json", "User-Agent": "rpmgate"}
            if self._token:
                headers["Authorization"] = f"token {self._token}"
            self._session = aiohttp.ClientSession(headers=headers, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self, method: str, path: str, data: dict[str, str] | None = None
    ) -> dict[str, Any]:
        url = f"{self.url}/api/0/{path}"
        if method == "POST" and not self._token:
            raise PagureError(401, "EINVALIDTOK", "no API token configured for this connection")
        # POST bodies as form data: every Pagure API form reads it
        # (pagure/api/__init__.py get_request_data: request.form or JSON)
        async with self._http().request(method, url, data=data) as response:
            text = await response.text()
            if response.status >= 500 or response.status == 429:
                raise aiohttp.ClientResponseError(
                    response.request_info,
                    response.history,
                    status=response.status,
                    message=text[:200],
                    headers=response.headers,
                )
            try:
                doc = json.loads(text) if text else {}
            except ValueError:
                doc = None
            if not isinstance(doc, dict):
                raise PagureError(
                    response.status, "ENOTJSON", f"{method} {path}: not a JSON object"
                )
            if response.status >= 400:
                code = doc.get("error_code")
                message = doc.get("error")
                errors = doc.get("errors")
                words = str(message or "")
                if errors:
                    words = f"{words} ({errors})"
                raise PagureError(response.status, str(code or "EUNKNOWN"), words[:500])
            return doc

    # -- reading --------------------------------------------------------------------------
    async def pull_request(self, project: str, pr: int) -> dict[str, Any]:
        """``GET /api/0/<repo>/pull-request/<id>`` (pagure/api/fork.py
        ``api_pull_request_view``): ``PullRequest.to_json(public=True, api=True)``
        with its comments; 404 ``ENOREQ`` when there is no such PR."""
        return await self._call("GET", f"{_path(project)}/pull-request/{int(pr)}")

    async def pull_request_flags(self, project: str, pr: int) -> list[dict[str, Any]]:
        """``GET /api/0/<repo>/pull-request/<id>/flag`` (pagure/api/fork.py
        ``api_pull_request_get_flag``): the flags of the PR's ``commit_stop``."""
        doc = await self._call("GET", f"{_path(project)}/pull-request/{int(pr)}/flag")
        flags = doc.get("flags")
        return [f for f in flags if isinstance(f, dict)] if isinstance(flags, list) else []

    async def project(self, project: str) -> dict[str, Any]:
        """``GET /api/0/<repo>`` (pagure/api/project.py ``api_project``):
        ``Project.to_json(public=True, api=True)``, with ``access_users`` and
        ``access_groups`` by level (owner, admin, commit, collaborator, ticket)."""
        return await self._call("GET", _path(project))

    async def group_members(self, group: str) -> list[str]:
        """``GET /api/0/group/<group>`` (pagure/api/group.py ``api_view_group``):
        ``members`` is the list of user names; 404 ``ENOGROUP``."""
        doc = await self._call("GET", f"group/{quote(group, safe='')}")
        members = doc.get("members")
        return [m for m in members if isinstance(m, str)] if isinstance(members, list) else []

    # -- acting ---------------------------------------------------------------------------
    async def merge(self, project: str, pr: int) -> dict[str, Any]:
        """``POST /api/0/<repo>/pull-request/<id>/merge`` (pagure/api/fork.py
        ``api_pull_request_merge``; ACL ``pull_request_merge``).  Waits for the merge
        (``wait`` defaults to true): ``{"message": "Changes merged!"}``; 409
        ``EPRCONFLICTS``; 403 ``ENOPRCLOSE`` (the token's user is no committer),
        ``EPRSCORE``, ``ENOTASSIGNED``.  There is no guard on the head commit: the
        caller re-reads the PR just before."""
        return await self._call(
            "POST", f"{_path(project)}/pull-request/{int(pr)}/merge", {"wait": "true"}
        )

    async def flag(
        self,
        project: str,
        pr: int,
        *,
        username: str,
        status: str,
        comment: str,
        url: str,
        uid: str,
    ) -> dict[str, Any]:
        """``POST /api/0/<repo>/pull-request/<id>/flag`` (pagure/api/fork.py
        ``api_pull_request_add_flag``; ACL ``pull_request_flag``): a flag on the PR's
        current ``commit_stop``; the same ``uid`` (at most 32 characters) updates it."""
        return await self._call(
            "POST",
            f"{_path(project)}/pull-request/{int(pr)}/flag",
            {
                "username": username,
                "status": status,
                "comment": comment,
                "url": url,
                "uid": uid[:32],
            },
        )

    async def comment(self, project: str, pr: int, text: str) -> dict[str, Any]:
        """``POST /api/0/<repo>/pull-request/<id>/comment`` (pagure/api/fork.py
        ``api_pull_request_add_comment``; ACL ``pull_request_comment``)."""
        return await self._call(
            "POST", f"{_path(project)}/pull-request/{int(pr)}/comment", {"comment": text}
        )
