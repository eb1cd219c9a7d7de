"""A small JSON client for a GitHub-shaped REST API, on aiohttp.

One :class:`aiohttp.ClientSession` per connection, opened on first use and
closed by :meth:`RestClient.close`.  Every answer outside 2xx is raised as
:class:`ApiError`, a :class:`aiohttp.ClientResponseError`, so
``gate.faults.is_transient`` classifies it as every other HTTP fault: 5xx and
429 are transient (retried by the gate), anything else is an outcome.  The
API's own message (``{"message": ...}`` on both systems) is kept on the error:
it is what a refused merge reports.

The token is sent in the ``Authorization`` header only and never logged; a
redirect to another host drops it (aiohttp's default), so a misconfigured
``api_url`` does not hand the token to a third party.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

log = logging.getLogger(__name__)

#: the longest an API call may take before it counts as a (transient) timeout
TIMEOUT = aiohttp.ClientTimeout(total=60, connect=15)
#: pages followed for a list (reviews, comments): a PR with more is not a distgit's
MAX_PAGES = 20
#: the most of an answer body read (a PR document is a few tens of KB)
MAX_ANSWER = 8 << 20

_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="next"')


class ApiError(aiohttp.ClientResponseError):
    """An answer outside 2xx.  ``message``: the API's own words, if it gave any."""

    def __init__(self, method: str, url: str, status: int, message: str, body: Any) -> None:
        super().__init__(
            request_info=aiohttp.RequestInfo(
                url=URL(url),
                method=method,
                headers=CIMultiDictProxy(CIMultiDict()),
                real_url=URL(url),
            ),
            history=(),
            status=status,
            message=message,
        )
        #: the decoded answer (a dict when the API answered JSON)
        self.body = body

    def __str__(self) -> str:
        return f"{self.request_info.method} {self.request_info.url}: {self.status} {self.message}"


class RestClient:
    """JSON calls to ``api_url`` with ``headers`` (authorization) on every request."""

    def __init__(self, api_url: str, headers: Mapping[str, str], *, user_agent: str) -> None:
        self.api_url = api_url.rstrip("/")
        self._headers = {"User-Agent": user_agent, "Accept": "application/json", **headers}
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=TIMEOUT, headers=self._headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def url(self, path: str) -> str:
        return self.api_url + path

    async def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, str] | None = None,
    ) -> tuple[Any, CIMultiDictProxy[str]]:
        """(decoded answer or None for an empty body, answer headers); :class:`ApiError`
        outside 2xx."""
        url = path if path.startswith(("http://", "https://")) else self.url(path)
        async with self._client().request(
            method, url, json=None if body is None else dict(body), params=params
        ) as answer:
            raw = await answer.content.read(MAX_ANSWER)
            doc = _decode(raw)
            if answer.status >= 300:
                message = doc.get("message") if isinstance(doc, dict) else None
                if not isinstance(message, str) or not message:
                    message = answer.reason or ""
                status = answer.status
                if status == 403 and (
                    answer.headers.get("X-RateLimit-Remaining") == "0"
                    or "Retry-After" in answer.headers
                ):
                    # GitHub's rate limits answer 403 as well as 429
                    # (https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api):
                    # a fault that passes, not a refusal
                    status, message = 429, f"rate limited: {message}"
                raise ApiError(method, url, status, message, doc)
            return doc, answer.headers

    async def get(self, path: str, *, params: Mapping[str, str] | None = None) -> Any:
        doc, _ = await self.call("GET", path, params=params)
        return doc

    async def get_all(self, path: str, *, params: Mapping[str, str] | None = None) -> list[Any]:
        """Every page of a list, following ``Link: <...>; rel="next"`` (both systems)."""
        items: list[Any] = []
        url: str | None = path
        query = params
        for _ in range(MAX_PAGES):
            if url is None:
                break
            doc, headers = await self.call("GET", url, params=query)
            if not isinstance(doc, list):
                raise ApiError("GET", self.url(path), 502, "expected a list", doc)
            items.extend(doc)
            url, query = _next_page(headers.get("Link", "")), None
            if url is not None and not url.startswith(self.api_url + "/"):
                raise ApiError("GET", url, 502, "a next page outside the API", None)
        return items

    async def post(self, path: str, body: Mapping[str, Any]) -> Any:
        doc, _ = await self.call("POST", path, body)
        return doc

    async def put(self, path: str, body: Mapping[str, Any]) -> Any:
        doc, _ = await self.call("PUT", path, body)
        return doc


def _decode(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return raw[:500].decode(errors="replace")


def _next_page(link: str) -> str | None:
    found = _NEXT.search(link)
    return found.group(1) if found else None
