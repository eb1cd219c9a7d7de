"""The RPM pool collected: files no build the gate may use and no kept generation serves.

``<state_dir>/pool`` holds every RPM the gate built or downloaded, once, by
checksum (:class:`repo_state.pool.Pool`).  Without collection it grows by every
scratch build of every change.  What still needs a pool file:

* a build row that is not ``collected``: a reuse by key or by inputs, a
  speculative tree and a publication link its artifacts from the pool;
* a generation a publisher keeps: a rollback, a republish and the next
  generation read their packages there;
* a build in flight, whose RPMs are pooled before its row lists them.

A sweep (every :data:`SWEEP_INTERVAL`, the first :data:`FIRST_SWEEP_AFTER` after
the start, off the planning loop) does two things,
with the top-level ``pool_retention`` (``keep``: never):

1. *Let go of builds.*  A passed build row with artifacts (scratch, final, or a
   promoted draft: unpromoted drafts are :mod:`gate.draft_gc`'s) becomes
   ``collected`` when no active item references it (as its scratch build,
   draft, final build, or any build of its current attempt's set, or by its
   tree), it was last of use more than ``pool_retention`` ago (the latest of
   when it finished and when each item it served finished), and no kept
   generation serves any of its RPMs.  The change is one conditional
   ``UPDATE`` (only while no active item references the row), so an item that
   reaches for the build meanwhile keeps it; from then on ``Builds.ensure``
   builds its key again (:func:`gate.queue_rules.build_reusable`) and the
   reuse by inputs (``gate.package_builds``) looks only at passed rows.
2. *Delete files.*  The live set (the artifacts of every row not ``collected``
   and what every kept generation serves) is read after step 1; a pool file
   outside it whose mtime is older than ``pool_retention`` is deleted.  The
   mtime guards a build in flight (:meth:`Pool.add` refreshes it when a file
   is pooled again), and a file a row names again is in the live set.

Everything is read from the database and the disk, never from timers kept in
memory: a restart or a long stop loses nothing.  A build row's outcome stays
in its ``reason``; its log stays with the backend.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy import and_, exists, or_, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import aliased
from sqlalchemy.sql.expression import ColumnElement
from sqlmodel import col, select

from gate.draft_gc import promoted_draft
from gate.faults import is_transient
from gate.model import BuildState
from repo_state.db import session
from repo_state.models import BuildRow, ItemBuildRow, ItemRow, epoch
from repo_state.pool import Pool

log = logging.getLogger(__name__)

#: seconds between sweeps, and from the daemon's start to its first (a start has
#: enough to do; a sweep reads every kept generation's state)
SWEEP_INTERVAL = 3600.0
FIRST_SWEEP_AFTER = 300.0
#: build ids per query
_CHUNK = 500

#: what a collected row's ``reason`` gains
COLLECTED_NOTE = "its RPMs left the pool (pool_retention)"


class ServesPackages(Protocol):
    def served_checksums(self) -> set[str]: ...


@dataclass(frozen=True)
class Swept:
    builds: int = 0
    files: int = 0
    bytes: int = 0


def checksums(artifacts: str) -> set[str]:
    """The checksums a build row's ``artifacts`` (JSON) names."""
    return {a["checksum"] for a in json.loads(artifacts or "[]") if a.get("checksum")}


def _referenced(row: type[BuildRow]) -> ColumnElement[bool]:
    """SQL: an active item uses the build ``row`` now, or will ask for it by tree."""
    current = aliased(ItemRow)
    in_a_set = exists(
        select(ItemBuildRow.id).where(
            ItemBuildRow.build_id == row.id,
            ItemBuildRow.item_id == current.id,
            ItemBuildRow.attempt == current.attempt,
            col(current.active),
        )
    )
    by_item = exists(
        select(ItemRow.id).where(
            col(ItemRow.active),
            or_(
                col(ItemRow.draft_build_id) == row.id,
                col(ItemRow.final_build_id) == row.id,
                col(ItemRow.build_key) == row.key,
                and_(col(ItemRow.project) == row.project, col(ItemRow.merge_tree) == row.tree),
            ),
        )
    )
    return or_(in_a_set, by_item)


def last_used(row: BuildRow, finished: Mapping[int, datetime | None]) -> float:
    """When ``row`` was last of use (seconds since the epoch): the latest of when it
    finished and when each item it served finished (``finished``: item id -> its
    ``finished_at``, None while active)."""
    times = [epoch(row.finished_at or row.created_at)]
    for moment in finished.values():
        times.append(time.time() if moment is None else epoch(moment))
    return max(times)


class PoolSweep:
    def __init__(
        self,
        engine: Engine,
        pool: Pool,
        publishers: Mapping[str, ServesPackages],
        retention: Callable[[], float | None],
    ) -> None:
        """``retention``: reads ``pool_retention`` of the config in force (None: keep)."""
        self.engine, self.pool, self.publishers = engine, pool, publishers
        self.retention = retention
        self._last = time.monotonic() - SWEEP_INTERVAL + FIRST_SWEEP_AFTER
        self._task: asyncio.Task[Swept] | None = None

    def start_if_due(self) -> None:
        """Start a sweep in a thread when :data:`SWEEP_INTERVAL` passed since the last."""
        if self.retention() is None or time.monotonic() - self._last < SWEEP_INTERVAL:
            return
        if self._task is not None and not self._task.done():
            return
        self._last = time.monotonic()
        # the publishers in force now (a reload changes the mapping in the loop)
        publishers = list(self.publishers.values())
        self._task = asyncio.get_running_loop().create_task(self._run(publishers))

    async def _run(self, publishers: list[ServesPackages]) -> Swept:
        try:
            return await asyncio.to_thread(self.sweep, None, publishers)
        except Exception as exc:
            if not is_transient(exc):
                log.exception("pool sweep failed; tried again in %.0f s", SWEEP_INTERVAL)
            else:
                log.warning("pool sweep: transient fault, tried again later: %s", exc)
            return Swept()

    async def wait(self) -> None:
        """Wait for a sweep in progress (stopping the daemon, tests)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    # -- the sweep (a thread) ---------------------------------------------------------------
    def sweep(
        self, now: float | None = None, publishers: list[ServesPackages] | None = None
    ) -> Swept:
        """Let go of the builds due, then delete the pool files nothing needs.

        ``now``: seconds since the epoch (default: the clock); ``publishers``:
        default all of them.
        """
        retention = self.retention()
        if retention is None:
            return Swept()
        now = time.time() if now is None else now
        served: set[str] = set()
        for publisher in list(self.publishers.values()) if publishers is None else publishers:
            served |= publisher.served_checksums()
        builds = self._let_go(served, now - retention)
        live = served | self._named_by_builds()
        files, size = self._delete_files(live, now - retention)
        if builds or files:
            log.info(
                "pool: let go of %d builds, deleted %d files (%.1f MiB) past pool_retention",
                builds,
                files,
                size / 2**20,
            )
        return Swept(builds, files, size)

    def _let_go(self, served: set[str], before: float) -> int:
        with session(self.engine) as s:
            rows = s.exec(
                select(BuildRow).where(
                    BuildRow.state == BuildState.PASSED,
                    BuildRow.artifacts != "[]",
                    or_(col(BuildRow.purpose) != "draft", promoted_draft(BuildRow)),
                    ~_referenced(BuildRow),
                )
            ).all()
            ids = sorted({r.id for r in rows if r.id is not None})
            served_by: dict[int, dict[int, datetime | None]] = {i: {} for i in ids}
            for start in range(0, len(ids), _CHUNK):  # within any database's bound parameters
                for build_id, item_id, active, finished in s.exec(
                    select(
                        ItemBuildRow.build_id, ItemRow.id, ItemRow.active, ItemRow.finished_at
                    ).where(
                        col(ItemBuildRow.build_id).in_(ids[start : start + _CHUNK]),
                        ItemBuildRow.item_id == ItemRow.id,
                    )
                ):
                    if item_id is not None:
                        served_by[build_id][item_id] = None if active else finished
        marked = 0
        for row in rows:
            assert row.id is not None
            if last_used(row, served_by[row.id]) > before:
                continue
            if checksums(row.artifacts) & served:
                continue  # a kept generation serves it: reusing it is right
            if self._mark(row):
                marked += 1
        return marked

    def _mark(self, row: BuildRow) -> bool:
        """``passed`` -> ``collected``, only while no active item references the row."""
        reason = f"{row.reason}; {COLLECTED_NOTE}" if row.reason else COLLECTED_NOTE
        with session(self.engine) as s:
            result = s.execute(
                update(BuildRow)
                .where(
                    col(BuildRow.id) == row.id,
                    col(BuildRow.state) == BuildState.PASSED,
                    ~_referenced(BuildRow),
                )
                .values(state=BuildState.COLLECTED, reason=reason)
            )
            s.commit()
        return bool(getattr(result, "rowcount", 0))

    def _named_by_builds(self) -> set[str]:
        """Every checksum a build row that is not collected names."""
        names: set[str] = set()
        with session(self.engine) as s:
            for artifacts in s.exec(
                select(BuildRow.artifacts).where(
                    BuildRow.state != BuildState.COLLECTED, BuildRow.artifacts != "[]"
                )
            ):
                names |= checksums(artifacts)
        return names

    def _delete_files(self, live: set[str], before: float) -> tuple[int, int]:
        count = size = 0
        for path in _pool_files(self.pool.root):
            checksum = path.name.removesuffix(".rpm")
            if checksum in live:
                continue
            freed = self.pool.remove_if_unused_since(checksum, before)
            if freed is not None:
                count, size = count + 1, size + freed
        return count, size


def _pool_files(root: Path) -> Iterable[Path]:
    """``<root>/<2 hex>/<sha256>.rpm`` (anything else under the pool is not a pooled RPM)."""
    try:
        shards = [d for d in root.iterdir() if len(d.name) == 2 and d.is_dir()]
    except FileNotFoundError:
        return
    for shard in shards:
        with os.scandir(shard) as entries:
            for entry in entries:
                name = entry.name
                if name.endswith(".rpm") and len(name) == 68 and entry.is_file():
                    yield Path(entry.path)
