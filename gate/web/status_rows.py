"""The rows the status document shows, kept between documents: read again only what
was committed since.

With 500 queued items a status document read some 5,000 rows (items, changes,
builds, job runs, build sets) and made an ``ItemView`` of each item twice, per
document: 25-40 ms of Python in a worker thread, made again several times a
second while the queue moves, holding the GIL while the event loop waited
(docs/benchmarks.md, "``GET /api/status`` under load").

:class:`StatusRows` keeps, per item shown (the active items and the last
finished ones), its row, its view and the rows its document shows
(:class:`~gate.web.status.Related`, that item's share), with a stamp that
changes whenever any of them was read again.  It learns what was written from
:class:`gate.web.live.Commits` (``Written``: items, changes and builds by id,
builds by key, items whose job runs or build sets were written), maps that to
the items concerned, and reads those again with the same queries
(``gate.web.status.related``) a full read uses: so a document made from kept
rows is the one a full read makes.  A bulk write (``Written.everything``), a
failed read, or :class:`~gate.web.live.Commits` not listening: everything is
read again.  Used by one document build at a time (``gate.web.live.StatusCache``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from sqlalchemy import Table
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from gate.flaky import flaky_jobs
from gate.item_builds import Member
from gate.items import view_of
from gate.model import ItemView, Step, outside_window
from gate.pipeline import FlakyConfig
from gate.queue_rules import queue_order
from gate.web.live import Written
from repo_state.models import BuildRow, ChangeRow, ItemBuildRow, ItemRow, JobRunRow

T = TypeVar("T")

#: stamps of :class:`Shown`, unique in the process (``ItemDocs`` may outlive a StatusRows)
_stamps = itertools.count(1)


@dataclass(frozen=True)
class Related:
    """The rows an item's document shows besides the item: loaded per item for one
    document, in a few bulk queries for the status document."""

    changes: dict[int, ChangeRow]
    #: scratch builds by key
    scratch: dict[str, BuildRow]
    #: final builds by id, and the drafts of items promoting one (``promoting``)
    finals: dict[int, BuildRow]
    #: (item id, attempt) -> its job runs in order
    jobs: dict[tuple[int, int], list[JobRunRow]]
    #: item id -> purpose -> (named build, package) -> (build, reused), for items whose
    #: set has several members (``gate.item_builds``; scratch: the current attempt's)
    sets: dict[int, dict[str, dict[Member, tuple[BuildRow, bool]]]] = field(default_factory=dict)


#: ids per ``IN (...)`` list (SQLite's default limit on bound variables is far above)
_CHUNK = 500


def _chunks(values: set[Any]) -> Iterator[list[Any]]:
    ordered = sorted(values)
    for start in range(0, len(ordered), _CHUNK):
        yield ordered[start : start + _CHUNK]


def rows_of(
    s: Session, model: type[T], *where: Any, order: Any = None, limit: int | None = None
) -> list[T]:
    """Rows of ``model`` as read-only result rows, not ORM instances.

    A result row has the model's attributes (its columns, by the same names) and
    costs a few microseconds; sqlmodel builds each instance in about a hundred,
    and the status document reads thousands of rows.  Read them, never change
    them: they belong to no session.
    """
    table: Table = model.__table__  # type: ignore[attr-defined]
    query = sa_select(*table.columns).where(*where)
    if order is not None:
        query = query.order_by(order)
    if limit is not None:
        query = query.limit(limit)
    return cast(list[T], list(s.connection().execute(query)))


def promoting(item: ItemRow) -> int | None:
    """The draft an item is promoting, if any: a promotion stopped on a backend
    error shows on its draft only (``gate.builds`` ``_promotion_stuck``)."""
    if item.final_build_id is None and item.tip_state == Step.RUNNING:
        return item.draft_build_id
    return None


def related(s: Session, items: Sequence[ItemRow]) -> Related:
    """Everything the documents of ``items`` show, in a handful of queries whatever their
    number (not three per item: ``GET /api/status`` reads hundreds)."""
    change_ids = {i.change_id for i in items}
    keys = {i.build_key for i in items if i.build_key}
    final_ids = {i.final_build_id for i in items if i.final_build_id}
    final_ids |= {d for i in items if (d := promoting(i))}
    item_ids = {i.id for i in items if i.id is not None}
    changes: dict[int, ChangeRow] = {}
    for ids in _chunks(change_ids):
        changes.update(
            (c.id, c) for c in rows_of(s, ChangeRow, col(ChangeRow.id).in_(ids)) if c.id is not None
        )
    scratch: dict[str, BuildRow] = {}
    for chunk in _chunks(keys):
        for b in rows_of(
            s,
            BuildRow,
            BuildRow.purpose == "scratch",
            col(BuildRow.key).in_(chunk),
            order=col(BuildRow.id),
        ):
            scratch.setdefault(b.key, b)  # the first, as a lookup by key finds it
    finals: dict[int, BuildRow] = {}
    for ids in _chunks(final_ids):
        finals.update(
            (b.id, b) for b in rows_of(s, BuildRow, col(BuildRow.id).in_(ids)) if b.id is not None
        )
    attempts = {i.id: i.attempt for i in items}
    jobs: dict[tuple[int, int], list[JobRunRow]] = {}
    for ids in _chunks(item_ids):
        for j in rows_of(s, JobRunRow, col(JobRunRow.item_id).in_(ids), order=col(JobRunRow.id)):
            if attempts.get(j.item_id) == j.attempt:
                jobs.setdefault((j.item_id, j.attempt), []).append(j)
    return Related(changes=changes, scratch=scratch, finals=finals, jobs=jobs, sets=_sets(s, items))


def _sets(
    s: Session, items: Sequence[ItemRow]
) -> dict[int, dict[str, dict[Member, tuple[BuildRow, bool]]]]:
    """The build sets of ``items`` (``Related.sets``), in two queries."""
    attempts = {i.id: i.attempt for i in items if i.id is not None}
    entries: list[ItemBuildRow] = []
    for ids in _chunks(set(attempts)):
        entries += rows_of(
            s, ItemBuildRow, col(ItemBuildRow.item_id).in_(ids), order=col(ItemBuildRow.id)
        )
    # a post item's final builds are its own whatever the attempt; the others: this attempt's
    entries = [e for e in entries if e.purpose == "final" or attempts.get(e.item_id) == e.attempt]
    builds: dict[int, BuildRow] = {}
    for ids in _chunks({e.build_id for e in entries}):
        builds.update((b.id, b) for b in rows_of(s, BuildRow, col(BuildRow.id).in_(ids)) if b.id)
    sets: dict[int, dict[str, dict[Member, tuple[BuildRow, bool]]]] = {}
    for e in entries:
        build = builds.get(e.build_id)
        if build is not None:
            member = (e.build_name, e.package)
            by_member = sets.setdefault(e.item_id, {}).setdefault(e.purpose, {})
            by_member.pop(member, None)  # the latest entry wins
            by_member[member] = (build, e.reused)
    return sets


@dataclass(frozen=True)
class Shown:
    """One item as its document shows it: its row, its view, its related rows."""

    row: ItemRow
    view: ItemView
    rel: Related
    #: changes whenever any of the above was read again (``gate.web.status.ItemDocs``)
    stamp: int


class StatusRows:
    """The items of the status document and their rows, as last committed."""

    def __init__(self) -> None:
        self._shown: dict[int, Shown] = {}
        self._loaded = False
        #: changes whenever an active item was read again; queue -> ((that, the
        #: window), its items in order, those outside the window)
        self._active_version = 0
        self._ordered: dict[str, tuple[tuple[int, int], list[Shown], frozenset[int]]] = {}
        #: queue -> (what it was read for, its flaky jobs), until a job run is written
        self._flaky: dict[str, tuple[tuple[Any, ...], list[dict[str, Any]]]] = {}
        #: items read again since the start, and full reads (tests and benchmarks look)
        self.read_again = 0
        self.full_reads = 0

    def refresh(self, s: Session, written: Written) -> None:
        """Read again what ``written`` concerns (everything the first time)."""
        try:
            if not self._loaded or written.everything or written.item_rows:
                self._flaky = {}  # job runs were written (or may have been)
            if not self._loaded or written.everything:
                self.full_reads += 1
                self._shown = {}
                again = [*rows_of(s, ItemRow, col(ItemRow.active))]
            else:
                again = self._rows(s, self._concerned(written))
            if again:
                self._active_version += 1
            for r in again:
                self._shown.pop(r.id or 0, None)
            # an item that left its queue is kept again if it is among the last
            # finished ones (``finished``)
            self._keep(s, [r for r in again if r.active])
            self._loaded = True
        except BaseException:
            self._loaded = False  # read everything next time
            raise

    def active(self, queue: str, window: int) -> tuple[list[Shown], frozenset[int]]:
        """``queue``'s active items in queue order, and those its window leaves waiting
        (made again only once an active item was read again)."""
        kept = self._ordered.get(queue)
        if kept is not None and kept[0] == (self._active_version, window):
            return kept[1], kept[2]
        active = [v for v in self._shown.values() if v.row.active and v.row.queue == queue]
        views = queue_order((a.view, a.row.seq) for a in active)  # as active_items orders
        by_id = {a.row.id: a for a in active}
        ordered = [by_id[v.id] for v in views]
        waiting = outside_window(views, window)
        self._ordered[queue] = ((self._active_version, window), ordered, waiting)
        return ordered, waiting

    def finished(self, s: Session, queue: str, recent: int) -> list[Shown]:
        """The ``recent`` items that left ``queue`` last, newest first (read each time:
        one query of a few rows; their related rows are kept)."""
        rows = rows_of(
            s,
            ItemRow,
            ItemRow.queue == queue,
            col(ItemRow.active).is_(False),
            order=col(ItemRow.finished_at).desc(),
            limit=recent,
        )
        changed = [r for r in rows if (kept := self._shown.get(r.id or 0)) is None or kept.row != r]
        if changed:
            self._keep(s, changed)
        return [self._shown[r.id or 0] for r in rows]

    def flaky(
        self,
        s: Session,
        queue: str,
        jobs: list[str],
        config: FlakyConfig,
        arches: int,
        builds: int = 1,
    ) -> list[dict[str, Any]]:
        """``gate.flaky.flaky_jobs``, read again only once a job run was written."""
        key = (tuple(jobs), config, arches, builds)
        kept = self._flaky.get(queue)
        if kept is None or kept[0] != key:
            kept = (key, flaky_jobs(s, queue, jobs, config, arches, builds))
            self._flaky[queue] = kept
        return kept[1]

    def forget_others(self, keep: Iterable[int]) -> None:
        """Forget finished items no longer shown."""
        wanted = set(keep)
        self._shown = {i: v for i, v in self._shown.items() if v.row.active or i in wanted}

    def _concerned(self, written: Written) -> set[int]:
        """The kept items whose documents show a row ``written`` names, and new ones."""
        ids = set(written.items) | written.item_rows
        if written.changes or written.builds or written.build_keys:
            for item_id, shown in self._shown.items():
                row, rel = shown.row, shown.rel
                if (
                    row.change_id in written.changes
                    or (row.build_key and row.build_key in written.build_keys)
                    or not written.builds.isdisjoint(rel.finals)
                    or any(
                        b.id in written.builds
                        for by_member in rel.sets.get(item_id, {}).values()
                        for b, _ in by_member.values()
                    )
                ):
                    ids.add(item_id)
        return ids

    def _rows(self, s: Session, ids: set[int]) -> list[ItemRow]:
        rows: list[ItemRow] = []
        ordered = sorted(ids)
        for start in range(0, len(ordered), _CHUNK):
            rows += rows_of(s, ItemRow, col(ItemRow.id).in_(ordered[start : start + _CHUNK]))
        for gone in ids - {r.id for r in rows}:  # never happens (rows are not deleted)
            self._shown.pop(gone, None)
        return rows

    def _keep(self, s: Session, rows: Sequence[ItemRow]) -> None:
        """Read the related rows of ``rows`` (in a few queries) and keep each item's share."""
        if not rows:
            return
        rel = related(s, rows)
        self.read_again += len(rows)
        for r in rows:
            self._shown[r.id or 0] = Shown(
                row=r, view=view_of(r), rel=share(rel, r), stamp=next(_stamps)
            )


def share(rel: Related, item: ItemRow) -> Related:
    """``item``'s share of related rows read for several items."""
    item_id = item.id or 0
    change = rel.changes.get(item.change_id)
    scratch = rel.scratch.get(item.build_key) if item.build_key else None
    finals = {
        i: b
        for i in (item.final_build_id, promoting(item))
        if i and (b := rel.finals.get(i)) is not None
    }
    jobs = rel.jobs.get((item_id, item.attempt))
    sets = rel.sets.get(item_id)
    return Related(
        changes={item.change_id: change} if change is not None else {},
        scratch={item.build_key: scratch} if scratch is not None and item.build_key else {},
        finals=finals,
        jobs={(item_id, item.attempt): jobs} if jobs is not None else {},
        sets={item_id: sets} if sets is not None else {},
    )
