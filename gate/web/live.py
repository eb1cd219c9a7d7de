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
worker thread, from the rows kept since the last build with those the commits
wrote read again (``gate.web.status_rows``), encoded and gzipped once, and
answers ``If-None-Match`` with ``304``.  Nothing is re-read per request, and
the event loop (``/healthz``, the gate itself) is never held by a build.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import ORMExecuteState, Session

from repo_state.models import BuildRow, ChangeRow, ItemBuildRow, ItemRow, JobRunRow

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

    It also says which rows those commits wrote (:class:`Written`, taken by
    :meth:`take`), so the status document reads again only those
    (``gate.web.status_rows``).  Every write of the gate goes through an ORM
    session: ``after_flush`` sees each written row; a bulk ``UPDATE`` or ``DELETE``
    through a session (``gate.draft_gc``'s, of draft rows) is seen by
    ``do_orm_execute`` and counts as "everything written".  ``after_commit`` runs
    once the DBAPI commit returned, and marks the rows before it counts the commit,
    so a document built after the count was read never predates the commits it
    counted, nor misses their rows.
    """

    _KEY = "rpmgate.tables_written"

    def __init__(self, engine: Engine, tables: frozenset[str]) -> None:
        self.engine = engine
        self.tables = tables
        self.count = 0
        self.listening = False
        self._lock = threading.Lock()
        self._written = Written()

    def start(self) -> None:
        for name, listener in self._listeners():
            event.listen(Session, name, listener)
        with self._lock:
            # what was committed before is not known: the next reader reads everything
            self._written = Written(everything=True)
        self.listening = True

    def stop(self) -> None:
        self.listening = False
        for name, listener in self._listeners():
            if event.contains(Session, name, listener):
                event.remove(Session, name, listener)

    def take(self) -> Written:
        """The rows written by the commits counted so far (and since the last take)."""
        with self._lock:
            written, self._written = self._written, Written(everything=not self.listening)
        return written

    def _listeners(self) -> list[tuple[str, Callable[..., None]]]:
        return [
            ("after_flush", self._after_flush),
            ("do_orm_execute", self._do_orm_execute),
            ("after_commit", self._after_commit),
            ("after_rollback", self._after_rollback),
        ]

    def _written_by(self, session: Session) -> Written:
        written: Written = session.info.setdefault(self._KEY, Written())
        return written

    def _after_flush(self, session: Session, _context: Any) -> None:
        if session.bind is self.engine:
            written = self._written_by(session)
            for row in (*session.new, *session.dirty, *session.deleted):
                written.note(row)

    def _do_orm_execute(self, state: ORMExecuteState) -> None:
        if state.session.bind is not self.engine or not (state.is_update or state.is_delete):
            return
        tables = {getattr(m.class_, "__tablename__", "") for m in state.all_mappers}
        written = self._written_by(state.session)
        written.tables |= tables or {"?"}
        written.everything = True

    def _after_commit(self, session: Session) -> None:
        if session.bind is not self.engine:
            return
        written: Written | None = session.info.pop(self._KEY, None)
        if written is None or not written.tables & self.tables:
            return
        with self._lock:
            self._written.merge(written)
        self.count += 1

    def _after_rollback(self, session: Session) -> None:
        session.info.pop(self._KEY, None)


@dataclass
class Written:
    """What commits wrote of the rows the status document shows, by the keys the
    document finds them by (``gate.web.status_rows``)."""

    tables: set[str] = field(default_factory=set)
    #: a write whose rows are not known (a bulk UPDATE; the start): read everything
    everything: bool = False
    items: set[int] = field(default_factory=set)
    changes: set[int] = field(default_factory=set)
    builds: set[int] = field(default_factory=set)
    build_keys: set[str] = field(default_factory=set)
    #: items whose job runs or build set entries were written
    item_rows: set[int] = field(default_factory=set)

    def note(self, row: object) -> None:
        self.tables.add(getattr(row, "__tablename__", ""))
        if isinstance(row, ItemRow):
            self.items.add(row.id or 0)
        elif isinstance(row, ChangeRow):
            self.changes.add(row.id or 0)
        elif isinstance(row, BuildRow):
            self.builds.add(row.id or 0)
            self.build_keys.add(row.key)
        elif isinstance(row, JobRunRow | ItemBuildRow):
            self.item_rows.add(row.item_id)

    def merge(self, other: Written) -> None:
        self.tables |= other.tables
        self.everything |= other.everything
        self.items |= other.items
        self.changes |= other.changes
        self.builds |= other.builds
        self.build_keys |= other.build_keys
        self.item_rows |= other.item_rows


@dataclass(frozen=True)
class Rendered:
    """The status document of one state version, encoded and compressed once."""

    version: Hashable
    #: the document itself (shared: read it, never change it), e.g. for the HTML page
    document: dict[str, Any]
    body: bytes
    gzipped: bytes
    etag: str


@dataclass(frozen=True)
class Encoded:
    """A document and its JSON (``json.dumps(document).encode()``), made together."""

    document: dict[str, Any]
    body: bytes


#: what builds a status document: the document, or the document already encoded
Build = Callable[[], "dict[str, Any] | Encoded"]


def render(version: Hashable, build: Build) -> Rendered:
    """Build, encode and compress a document (in a worker thread: it reads the database)."""
    built = build()
    if isinstance(built, Encoded):
        document, body = built.document, built.body
    else:
        document, body = built, json.dumps(built).encode()
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
    once, and so does one that finds a build of that version under way.  Otherwise
    it waits for a build that started after it arrived (every request waiting shares
    it; a request that goes away does not cancel it): a request is never answered
    with a state older than the one it arrived at.  Such a build is started at the
    version of the moment (``now``), not at the one its first waiter arrived at,
    so while the state moves, requests wait for the end of the build under way and
    one more, never for a chain of builds, one per version they saw.  The event
    loop only hashes a version and writes bytes; the queries and the encoding run
    in a worker thread.
    """

    def __init__(self) -> None:
        self.rendered: Rendered | None = None
        self.builds = 0
        self._started = 0
        self._building: asyncio.Task[Rendered] | None = None
        self._building_version: Hashable = None
        self._building_number = 0

    async def current(
        self,
        version: Hashable,
        build: Build,
        now: Callable[[], tuple[Hashable, Build]] | None = None,
    ) -> Rendered:
        """The document of ``version`` (read by the caller before any query of the build),
        or of a later one; ``now``: the version and build of the moment (default: these)."""
        if self.rendered is not None and self.rendered.version == version:
            return self.rendered
        if self._building is not None and self._building_version == version:
            return await asyncio.shield(self._building)
        started_before = self._started  # those may have read an older state
        while True:
            if self._building is None:
                if now is not None:
                    version, build = now()
                    if self.rendered is not None and self.rendered.version == version:
                        return self.rendered  # nothing changed since it was read
                self._started += 1
                self._building = asyncio.ensure_future(self._render(version, build))
                self._building_version, self._building_number = version, self._started
            task, number, built_for = (
                self._building,
                self._building_number,
                self._building_version,
            )
            rendered = await asyncio.shield(task)
            if number > started_before or built_for == version:
                return rendered

    async def _render(self, version: Hashable, build: Build) -> Rendered:
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
