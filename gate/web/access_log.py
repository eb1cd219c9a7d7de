"""The daemon's access log, with secrets in URLs left out.

Gerrit's webhooks plugin has no signature header, so a Gerrit connection's
secret is a segment of the URL it posts to (``/api/sources/<name>/events/<token>``,
gate/sources/gerrit/source.py).  aiohttp's default access log writes the request
line as received (``%r``), which would put that secret (and a wrong one someone
tried) into the log of every delivery.  :class:`AccessLogger` writes what the
default format does, with every URL variable whose name says it is a secret and
every such query parameter replaced by ``***``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, Request, StreamResponse
from yarl import URL

#: URL variables and query parameters never written to the log, by name
SECRET_NAMES = frozenset({"token", "secret", "key", "password", "private_token", "access_token"})
REDACTED = "***"


def redacted_path(request: BaseRequest) -> str:
    """The request's path and query, secrets replaced by :data:`REDACTED`; ``-`` for a
    request refused before it was routed (malformed), whose path is not written (no
    route says which part of it would be a secret)."""
    try:
        return _redacted(request)
    except Exception:  # a log line must never fail a response
        return "-"


def _redacted(request: BaseRequest) -> str:
    url = URL(request.path_qs)
    path = request.path
    if isinstance(request, Request):
        match = request.match_info  # (asserts when the request was never routed)
        secrets = {v for k, v in match.items() if k.lower() in SECRET_NAMES and v}
        if secrets:
            path = "/".join(REDACTED if part in secrets else part for part in path.split("/"))
    query = [(k, REDACTED if k.lower() in SECRET_NAMES else v) for k, v in url.query.items()]
    return str(URL.build(path=path, query=query, encoded=False)) if query else path


class AccessLogger(AbstractAccessLogger):
    """``remote [time] "METHOD path HTTP/x.y" status size "referer" "agent" seconds``,
    as aiohttp's default format, with :func:`redacted_path` as the path."""

    def __init__(self, logger: logging.Logger, log_format: str = "") -> None:
        super().__init__(logger, log_format)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        version = f"HTTP/{request.version.major}.{request.version.minor}"
        now = datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S %z")
        self.logger.info(
            '%s [%s] "%s %s %s" %d %d "%s" "%s" %.6f',
            request.remote or "-",
            now,
            request.method,
            redacted_path(request),
            version,
            response.status,
            response.body_length,
            request.headers.get("Referer", "-"),
            request.headers.get("User-Agent", "-"),
            time,
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
