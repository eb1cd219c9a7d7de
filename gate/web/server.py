"""Serving the web app on a socket, with the limits aiohttp itself does not set.

aiohttp closes idle keep-alive connections (``keepalive_timeout``) but waits
for ever for a request's headers, and accepts as many connections as the
process has descriptors: 200 clients sending one header byte a minute hold
200 connections for as long as they like.  :class:`GuardedConnection` wraps
each connection's protocol:

* a request's headers must be complete within ``header_timeout`` of the
  connection opening, or within ``keepalive_timeout + header_timeout`` of the
  previous response; otherwise the connection is closed;
* beyond ``max_connections`` open connections, a new one is answered 503 and
  closed at once.

The body is bounded by ``body_timeout`` where it is read (``gate.web.app``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gate.config import ListenConfig

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LINGER_SECONDS = 2.0
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: 50\r\n\r\n"
    b'{"error": "too many connections; try again later"}'
)


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 10.0
    keepalive_timeout: float = 15.0
    max_connections: int = 512


def limits_of(listen: ListenConfig) -> Limits:
    return Limits(
        header_timeout=listen.header_timeout,
        keepalive_timeout=listen.keepalive_timeout,
        max_connections=listen.max_connections,
    )


@dataclass
class Guards:
    """The open connections' guards, by transport (the request middleware finds them here)."""

    limits: Limits
    by_transport: dict[int, GuardedConnection] = field(default_factory=dict)

    def find(self, transport: Any) -> GuardedConnection | None:
        return self.by_transport.get(id(transport)) if transport is not None else None


GUARDS: web.AppKey[Guards] = web.AppKey("connection-guards")


class GuardedConnection(asyncio.Protocol):
    """A connection's protocol (aiohttp's ``RequestHandler``) behind a header deadline."""

    def __init__(self, inner: asyncio.Protocol, guards: Guards) -> None:
        self.inner = inner
        self.guards = guards
        self.transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self.peer: Any = None

    # -- called by the request middleware ------------------------------------------
    def request_started(self) -> None:
        """The headers of a request are in: no deadline while it is handled."""
        self._disarm()

    def request_finished(self) -> None:
        """The next request may idle for keepalive_timeout, then has header_timeout."""
        limits = self.guards.limits
        self._arm(limits.keepalive_timeout + limits.header_timeout)

    # -- asyncio.Protocol --------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        if len(self.guards.by_transport) >= self.guards.limits.max_connections:
            log.warning(
                "refused a connection from %s: %d connections open",
                self.peer,
                len(self.guards.by_transport),
            )
            transport.write(_BUSY)
            transport.close()
            return
        self.guards.by_transport[id(transport)] = self
        self._arm(self.guards.limits.header_timeout)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if id(self.transport) in self.guards.by_transport:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if id(self.transport) in self.guards.by_transport:
            return self.inner.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.guards.by_transport.pop(id(self.transport), None) is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # -- the deadline ----------------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = asyncio.get_running_loop().call_later(seconds, self._expired, seconds)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, seconds: float) -> None:
        self._deadline = None
        log.warning("closed the connection from %s: no complete request in %gs", self.peer, seconds)
        if self.transport is not None:
            self.transport.abort()


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection's guard that a request is being handled, and when it ends."""
    guards = request.app.get(GUARDS)
    guard = guards.find(request.transport) if guards is not None else None
    if guard is not None:
        guard.request_started()
    try:
        return await handler(request)
    finally:
        if guard is not None:
            guard.request_finished()


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs each request it cannot parse (a URL over 8 KiB, a bad header) as an
    ERROR with a traceback: anyone could fill the log with them.  Such a request was
    the client's fault and got a 400: log one WARNING line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "refused a malformed request from %s: %s"
            record.args = (peer, str(exc.message)[:200])
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


_MALFORMED = MalformedRequestFilter()


class Served:
    """A listening socket serving an app; :meth:`close` stops it and its connections."""

    def __init__(self, runner: web.AppRunner, server: asyncio.Server) -> None:
        self.runner = runner
        self.server = server

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        self.server.close()
        await self.runner.cleanup()
        await self.server.wait_closed()


async def serve(
    app: web.Application, host: str, port: int, limits: Limits, **runner_kwargs: Any
) -> Served:
    """Start serving ``app`` on ``host:port`` (0: any free port) behind :class:`Limits`."""
    server_log = logging.getLogger("aiohttp.server")
    if _MALFORMED not in server_log.filters:
        server_log.addFilter(_MALFORMED)
    guards = Guards(limits)
    app[GUARDS] = guards
    # lingering_time: after answering a request whose body was not read (a 408,
    # a 413), aiohttp reads and drops what still comes for this long, then closes
    runner = web.AppRunner(
        app,
        keepalive_timeout=limits.keepalive_timeout,
        lingering_time=LINGER_SECONDS,
        **runner_kwargs,
    )
    await runner.setup()
    handler = runner.server
    assert handler is not None
    server = await asyncio.get_running_loop().create_server(
        lambda: GuardedConnection(handler(), guards), host, port, reuse_address=True
    )
    return Served(runner, server)
