"""Live updates: the gate's events as Server-Sent Events, and the status document cached
per state version.

:class:`EventStream` is a listener of :class:`~gate.plumbing.Plumbing`: every
event the stages emit gets the next number and is kept in a ring of the last
:data:`KEEP` events.  ``GET /api/events`` (:func:`serve_events`) sends them
as ``text/event-stream``; a client that reconnects with ``Last-Event-ID``
(browsers' ``EventSource`` does so by itself) gets what it missed, or a
``reset`` event when that is no longer kept (or the daemon restarted: ids
carry the process's start) and should read ``/api/status`` again.

The event number is also the status document's version: ``GET /api/status``
is built once per version (:class:`StatusCache`) and answers
``If-None-Match`` with ``304``.  A few writes change the document without an
event (a build's task id, a job row starting), so a cached document is also
rebuilt when older than :data:`STATUS_MAX_AGE`.  It is compressed once per
version for clients that accept gzip.
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

#: events kept for clients that reconnect
KEEP = 2000
#: seconds between keep-alive comments on an idle stream (proxies close silent ones)
HEARTBEAT = 15.0
#: streams open at once; more answer 503 (each holds a connection)
MAX_CLIENTS = 100
#: what a browser waits before reconnecting, in milliseconds
RETRY_MS = 3000
#: the oldest a cached status document is served
STATUS_MAX_AGE = 0.5


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


@dataclass
class StatusCache:
    """The status document of one state version, encoded once."""

    build: Callable[[], dict[str, Any]]
    version: str = ""
    body: bytes = b""
    etag: str = ""
    built_at: float = 0.0
    _gzipped: bytes | None = None

    def current(self, version: str) -> tuple[bytes, str]:
        """(body, ETag) of ``version``, built now if it is not the cached one or too old."""
        if version != self.version or time.monotonic() - self.built_at > STATUS_MAX_AGE:
            self.body = json.dumps(self.build()).encode()
            self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'
            self.version, self.built_at = version, time.monotonic()
            self._gzipped = None
        return self.body, self.etag

    def gzipped(self) -> bytes:
        """The current body compressed once, for every client that accepts gzip."""
        if self._gzipped is None:
            self._gzipped = gzip.compress(self.body, compresslevel=5)
        return self._gzipped


def etag_matches(header: str | None, etag: str) -> bool:
    """``If-None-Match``: ``*`` or a list of tags, weak (``W/``) ones compared weakly."""
    if not header:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in header.split(",")]
    return "*" in tags or etag in tags
