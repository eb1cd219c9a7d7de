"""The rows the planner reads, kept in memory between planning passes.

Every wake-up of the gate loop plans each queue again, and a pass used to read
every active item (and their scratch builds) from the database: with 500
queued items, some 20 ms of ORM work in the event loop per pass, several
passes a second while the queue moves, holding up every request meanwhile
(docs/benchmarks.md, "``GET /api/status`` under load").  Reading them in a
worker thread instead raced the loop's own writes (a state read in the thread
went stale against steps committed meanwhile).

:class:`PlanningRows` keeps the active items and the scratch builds the planner
needs in memory and reads again only the rows written since the last pass.
It learns which those are the way ``gate.web.live.Commits`` does: every write
of the rows it keeps goes through an ORM session (the only bulk ``UPDATE`` of
these tables is ``gate.draft_gc``'s, of draft rows, which are not kept here),
so ``after_flush`` sees each written row, and ``after_commit`` (once the
database has it) marks it to be read again.  What is kept is therefore rows
as committed and read back from the database, never a write still in flight
or an object a stage is changing, and a pass reads them on the loop, in the
loop's order with its own writes.  At start (and whenever the listeners are not
running) everything is read from the database: a crash loses nothing but this
cache.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, col, select

from gate.item_builds import Member, scratch_sets
from gate.model import BuildState, ItemView, QueueState
from gate.queue_rules import queue_order
from gate.queue_view import item_view, load_queue_state, queue_state_of, running_build
from repo_state.models import BuildRow, ItemRow

#: ids in one ``IN (...)`` (well under SQLite's limit of bound parameters)
_CHUNK = 500


def _chunks(values: Iterable[Any]) -> Iterable[list[Any]]:
    ordered = sorted(values)
    for start in range(0, len(ordered), _CHUNK):
        yield ordered[start : start + _CHUNK]


class PlanningRows:
    """Active items and the scratch builds the planner reads, as last committed.

    :meth:`queue_state` answers what ``gate.queue_view.load_queue_state`` does
    (the queue's row, generations and post items' heads are still read each
    pass: a handful of rows; so are the scratch build sets of items built as
    several named builds, ``gate.item_builds.scratch_sets``: one query, which
    finds nothing in a queue with one build).  Used by the gate loop's thread only; the
    listeners may run in any thread that commits (the lock guards what they
    share with it).
    """

    _KEY = "rpmgate.planning_rows_written"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._listening = False
        #: ids written since the last pass (filled by the listeners)
        self._dirty_items: set[int] = set()
        self._dirty_builds: set[int] = set()
        #: False until the first full read after :meth:`start`
        self._loaded = False
        #: queue -> item id -> the active item's row
        self._items: dict[str, dict[int, ItemRow]] = {}
        #: scratch builds by key: every running one, and those of active items
        self._builds: dict[str, BuildRow] = {}
        #: keys of active items known to have no scratch build yet
        self._absent: set[str] = set()
        #: item id -> (its row, its build, their view): made again when either changes
        self._views: dict[int, tuple[ItemRow, BuildRow | None, ItemView]] = {}
        #: passes, and rows read again by them (tests and benchmarks look)
        self.full_reads = 0
        self.rows_read = 0

    # -- the listeners ---------------------------------------------------------------------
    def start(self) -> None:
        """Listen to commits; the next pass reads everything once."""
        if self._listening:
            return
        for name, listener in self._listeners():
            event.listen(OrmSession, name, listener)
        self._listening, self._loaded = True, False

    def stop(self) -> None:
        """Stop listening and forget what is kept (passes read the database again)."""
        for name, listener in self._listeners():
            if event.contains(OrmSession, name, listener):
                event.remove(OrmSession, name, listener)
        self._listening, self._loaded = False, False
        self._forget()

    def _listeners(self) -> list[tuple[str, Callable[..., None]]]:
        return [
            ("after_flush", self._after_flush),
            ("after_commit", self._after_commit),
            ("after_rollback", self._after_rollback),
        ]

    def _after_flush(self, session: OrmSession, _context: Any) -> None:
        if session.bind is not self.engine:
            return
        items, builds = session.info.setdefault(self._KEY, (set(), set()))
        for row in (*session.new, *session.dirty, *session.deleted):
            if isinstance(row, ItemRow) and row.id is not None:
                items.add(row.id)
            elif isinstance(row, BuildRow) and row.id is not None:
                builds.add(row.id)

    def _after_commit(self, session: OrmSession) -> None:
        if session.bind is not self.engine:
            return
        written = session.info.pop(self._KEY, None)
        if written is not None:
            with self._lock:
                self._dirty_items |= written[0]
                self._dirty_builds |= written[1]

    def _after_rollback(self, session: OrmSession) -> None:
        session.info.pop(self._KEY, None)

    # -- a pass ----------------------------------------------------------------------------
    def queue_state(
        self, s: Session, queue: str, projects: tuple[str, ...], repo: str
    ) -> QueueState:
        """What the planner sees of ``queue`` now (``s``: for the few rows read each pass)."""
        if not self._listening:
            return load_queue_state(s, queue, projects, repo)
        self.catch_up(s)
        rows = self._items.get(queue, {})
        # items built as several named builds: their sets are read each pass (not kept)
        sets = scratch_sets(s, rows.values())
        views = [self._view(row, sets.get(row.id or 0)) for row in rows.values()]
        ordered: list[ItemView] = queue_order((v, rows[v.id].seq) for v in views)
        running = {
            key: running_build(b)
            for key, b in self._builds.items()
            if b.state == BuildState.RUNNING and b.project in projects
        }
        return queue_state_of(s, queue, repo, ordered, running, {v.id: rows[v.id] for v in views})

    def catch_up(self, s: Session) -> None:
        """Read again what was committed since the last pass (everything, the first time)."""
        with self._lock:
            items, builds = self._dirty_items, self._dirty_builds
            self._dirty_items, self._dirty_builds = set(), set()
        try:
            if not self._loaded:
                self._read_all(s)
                self._loaded = True
            else:
                self._read_items(s, items)
                self._read_builds(s, builds)
            self._read_missing_builds(s)
        except BaseException:
            # read them again next time (a transient fault: the loop retries)
            with self._lock:
                self._dirty_items |= items
                self._dirty_builds |= builds
            raise
        self._prune()

    def _forget(self) -> None:
        self._items, self._builds, self._absent, self._views = {}, {}, set(), {}

    def _read_all(self, s: Session) -> None:
        self._forget()
        self.full_reads += 1
        for row in s.exec(select(ItemRow).where(col(ItemRow.active))):
            self._keep_item(row)
        for b in s.exec(
            select(BuildRow).where(
                BuildRow.purpose == "scratch", BuildRow.state == BuildState.RUNNING
            )
        ):
            self._keep_build(b)

    def _read_items(self, s: Session, ids: set[int]) -> None:
        found: set[int] = set()
        for chunk in _chunks(ids):
            for row in s.exec(select(ItemRow).where(col(ItemRow.id).in_(chunk))):
                found.add(row.id or 0)
                self._keep_item(row)
        for gone in ids - found:  # never happens (rows are not deleted); be exact anyway
            self._drop_item(gone)
        self.rows_read += len(found)

    def _read_builds(self, s: Session, ids: set[int]) -> None:
        for chunk in _chunks(ids):
            for b in s.exec(
                select(BuildRow).where(col(BuildRow.id).in_(chunk), BuildRow.purpose == "scratch")
            ):
                self._keep_build(b)
                self.rows_read += 1

    def _read_missing_builds(self, s: Session) -> None:
        """Scratch builds of active items not kept yet (a reset may go back to an old key)."""
        wanted = {
            r.build_key for rows in self._items.values() for r in rows.values() if r.build_key
        }
        missing = wanted - self._builds.keys() - self._absent
        if not missing:
            return
        for chunk in _chunks(missing):
            for b in s.exec(
                select(BuildRow).where(BuildRow.purpose == "scratch", col(BuildRow.key).in_(chunk))
            ):
                self._keep_build(b)
                self.rows_read += 1
        self._absent |= missing - self._builds.keys()

    def _keep_item(self, row: ItemRow) -> None:
        self._drop_item(row.id or 0)
        if row.active:
            self._items.setdefault(row.queue, {})[row.id or 0] = row

    def _drop_item(self, item_id: int) -> None:
        for rows in self._items.values():
            rows.pop(item_id, None)
        self._views.pop(item_id, None)

    def _keep_build(self, b: BuildRow) -> None:
        self._builds[b.key] = b
        self._absent.discard(b.key)

    def _prune(self) -> None:
        """Forget builds neither running nor used by an active item, and absent keys no
        active item uses."""
        wanted = {
            r.build_key for rows in self._items.values() for r in rows.values() if r.build_key
        }
        self._builds = {
            key: b
            for key, b in self._builds.items()
            if key in wanted or b.state == BuildState.RUNNING
        }
        self._absent &= wanted

    def _view(self, row: ItemRow, members: Mapping[Member, BuildRow] | None) -> ItemView:
        build = self._builds.get(row.build_key or "")
        if members is not None and len(members) > 1:
            return item_view(row, build, members)
        kept = self._views.get(row.id or 0)
        if kept is not None and kept[0] is row and kept[1] is build:
            return kept[2]
        view = item_view(row, build)
        self._views[row.id or 0] = (row, build, view)
        return view
