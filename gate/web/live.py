"""Live updates: the gate's events as Server-Sent Events, and the status document cached
per state version.

:class:`EventStream` is a listener of :class:`~gate.plumbing.Plumbing`: every
event the stages emit gets the next number and is kept in a ring of the last
:data:`KEEP` events.  ``GET /api/events`` (:func:`serve_events`) sends them
as ``text/event-stream``; a client that reconnects with ``Last-Event-ID``
(browsers' ``EventSource`` does so by itself) gets what it missed, or a
``reset`` event when that is no longer kept (or the daemon restarted: ids
carry the process's start) and should read ``/api/status`` again.

The event number, with the number of database commits (:class:`Commits`) and
what the backends say of themselves, is the status document's version:
``GET /api/status`` is built once per version (:class:`StatusCache`), in a
worker thread with a fixed number of queries (``gate.web.status.related``),
encoded and gzipped once, and answers ``If-None-Match`` with ``304``.  Nothing
is re-read per request, and the event loop (``/healthz``, the gate itself) is
never held by a build.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

#: events kept for clients that reconnect
KEEP = 2000
#: seconds between keep-alive comments on an idle stream (proxies close silent ones)
HEARTBEAT = 15.0
#: streams open at once; more answer 503 (each holds a connection)
MAX_CLIENTS = 100
#: what a browser waits before reconnecting, in milliseconds
RETRY_MS = 3000


class EventStream:
    """The last :data:`KEEP` events, numbered, and the streams waiting for the next."""

    def __init__(self, keep: int = KEEP) -> None:
        #: ids of this process's events start with when it started: a reconnect
        #: after a restart is told to read everything again
        self.epoch = str(time.time_ns())
        self.seq = 0
        self._frames: deque[tuple[int, bytes]] = deque(maxlen=keep)
        self._next = asyncio.Event()
        self.clients = 0
        self.closing = False

    @property
    def version(self) -> str:
        """Changes whenever an event was emitted (the status document's version)."""
        return f"{self.epoch}-{self.seq}"

    def publish(self, event: dict[str, Any]) -> None:
        """A :data:`~gate.plumbing.Listener`: number the event and wake the streams."""
        self.seq += 1
        topic = str(event.get("topic", "event"))
        data = json.dumps(event, default=str, sort_keys=True)  # one line: JSON escapes newlines
        frame = f"id: {self.epoch}-{self.seq}\nevent: {topic}\ndata: {data}\n\n"
        self._frames.append((self.seq, frame.encode()))
        self._wake()

    def _wake(self) -> None:
        woken, self._next = self._next, asyncio.Event()
        woken.set()

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        self.closing = True
        self._wake()

    def resume(self, last_event_id: str | None) -> tuple[int, bool]:
        """Where a stream starts: (the last number it has seen, whether it must reset).

        No id: from now.  An id of this process still kept: from there.  Anything
        else (another process's, one no longer kept, garbage): from now, with a reset.
        """
        if not last_event_id:
            return self.seq, False
        epoch, _, number = last_event_id.strip().partition("-")
        if epoch != self.epoch or not (number.isascii() and number.isdigit()):
            return self.seq, True
        seen = int(number)
        oldest = self._frames[0][0] if self._frames else self.seq + 1
        if seen > self.seq or seen < oldest - 1:
            return self.seq, True
        return seen, False

    def after(self, seen: int) -> tuple[list[bytes], int]:
        """Frames newer than ``seen``, and the number of the last one; a stream that
        fell behind what is kept gets a reset frame first."""
        oldest = self._frames[0][0] if self._frames else self.seq + 1
        frames = [frame for seq, frame in self._frames if seq > seen]
        if seen < oldest - 1:
            frames.insert(0, _reset_frame())
        return frames, self.seq

    async def wait(self, timeout: float) -> None:
        """Until the next event (or close), at most ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._next.wait(), timeout)


def _reset_frame() -> bytes:
    return b'event: reset\ndata: {"read": "/api/status"}\n\n'


async def serve_events(request: web.Request, stream: EventStream) -> web.StreamResponse:
    """``GET /api/events``: the gate's events as Server-Sent Events, until the client goes."""
    if stream.clients >= MAX_CLIENTS or stream.closing:
        return web.json_response(
            {"error": "too many event streams; try again later"},
            status=503,
            headers={"Retry-After": "10"},
        )
    last = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    seen, reset = stream.resume(last)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: pass each event on at once
        }
    )
    stream.clients += 1
    try:
        await response.prepare(request)
        await response.write(f"retry: {RETRY_MS}\n\n".encode() + (_reset_frame() if reset else b""))
        while not stream.closing:
            frames, seen = stream.after(seen)
            if frames:
                await response.write(b"".join(frames))
            else:
                await stream.wait(HEARTBEAT)
                if stream.seq == seen and not stream.closing:
                    await response.write(b": keep-alive\n\n")
    except ConnectionResetError:
        pass  # the client went away
    finally:
        stream.clients -= 1
    return response


class Commits:
    """Counts the commits on one engine that wrote to the tables a document reads: the
    database's part of the state version.  A few writes change the status document
    without an event (a build's task id, a job row starting); each is a commit, so
    none is missed, while a commit of other tables only (a webhook delivery stored
    or marked processed) leaves the document as it is.

    Every write of the gate goes through an ORM session (``s.add``; no bulk
    ``UPDATE``), so ``after_flush`` sees each written row's table.  ``after_commit``
    runs once the DBAPI commit returned, so a document built after the count was
    read never predates the commits it counted.
    """

    _KEY = "rpmgate.tables_written"

    def __init__(self, engine: Engine, tables: frozenset[str]) -> None:
        self.engine = engine
        self.tables = tables
        self.count = 0

    def start(self) -> None:
        for name, listener in self._listeners():
            event.listen(Session, name, listener)

    def stop(self) -> None:
        for name, listener in self._listeners():
            if event.contains(Session, name, listener):
                event.remove(Session, name, listener)

    def _listeners(self) -> list[tuple[str, Callable[..., None]]]:
        return [
            ("after_flush", self._after_flush),
            ("after_commit", self._after_commit),
            ("after_rollback", self._after_rollback),
        ]

    def _after_flush(self, session: Session, _context: Any) -> None:
        if session.bind is self.engine:
            written = session.info.setdefault(self._KEY, set())
            for row in (*session.new, *session.dirty, *session.deleted):
                written.add(getattr(row, "__tablename__", ""))

    def _after_commit(self, session: Session) -> None:
        if session.bind is self.engine and session.info.pop(self._KEY, set()) & self.tables:
            self.count += 1

    def _after_rollback(self, session: Session) -> None:
        session.info.pop(self._KEY, None)


@dataclass(frozen=True)
class Rendered:
    """The status document of one state version, encoded and compressed once."""

    version: Hashable
    #: the document itself (shared: read it, never change it), e.g. for the HTML page
    document: dict[str, Any]
    body: bytes
    gzipped: bytes
    etag: str


def render(version: Hashable, build: Callable[[], dict[str, Any]]) -> Rendered:
    """Build, encode and compress a document (in a worker thread: it reads the database)."""
    document = build()
    body = json.dumps(document).encode()
    return Rendered(
        version=version,
        document=document,
        body=body,
        gzipped=gzip.compress(body, compresslevel=5),
        etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
    )


class StatusCache:
    """The status document, built at most once per state version, off the event loop.

    A request that finds the version it was asked at already rendered gets it at
    once.  Otherwise it waits for the one build under way (every request waiting
    shares it; a request that goes away does not cancel it), and, if that build
    started at an older version, for the next one: a request is never answered with
    a state older than the one it arrived at.  The event loop only hashes a version
    and writes bytes; the queries and the encoding run in a worker thread.
    """

    def __init__(self) -> None:
        self.rendered: Rendered | None = None
        self.builds = 0
        self._building: asyncio.Task[Rendered] | None = None
        self._building_version: Hashable = None

    async def current(self, version: Hashable, build: Callable[[], dict[str, Any]]) -> Rendered:
        """The document of ``version`` (read by the caller before any query of the build)."""
        while True:
            if self.rendered is not None and self.rendered.version == version:
                return self.rendered
            if self._building is None:
                self._building = asyncio.ensure_future(self._render(version, build))
                self._building_version = version
            task, built_for = self._building, self._building_version
            rendered = await asyncio.shield(task)
            if built_for == version:
                return rendered

    async def _render(self, version: Hashable, build: Callable[[], dict[str, Any]]) -> Rendered:
        try:
            rendered = await asyncio.to_thread(render, version, build)
        finally:
            self._building = None
        self.rendered = rendered
        self.builds += 1
        return rendered


def etag_matches(header: str | None, etag: str) -> bool:
    """``If-None-Match``: ``*`` or a list of tags, weak (``W/``) ones compared weakly."""
    if not header:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in header.split(",")]
    return "*" in tags or etag in tags
