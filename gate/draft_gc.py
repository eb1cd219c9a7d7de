"""Unpromoted drafts deleted by policy (``backends.<name>.draft_retention``).

A draft is the final build of one tested tree, started ahead of the tip
(``gate.tip``).  When its item is reset onto another tree, or leaves the queue
without reaching the tip, the draft is never promoted: on Koji it stays a
draft build (tagged into the target's destination tag by its build task), on
the local backend a private record under ``drafts/``.  It may be of use again
(an item reset back onto the same tree gets it back, by key), so it is kept
for the backend's ``draft_retention`` after the last moment an item could use
it, then deleted; ``keep`` leaves every draft to the hub's own collection
(``koji-gc``) or an admin.

Which drafts go is read from the database, never from timers in memory, so a
restart or a long stop loses nothing.  A draft build row is collected when

* it is a passed ``draft`` row that was not promoted (no ``final`` row of its
  key records ``promoted:<its task>``);
* no active item references it: not as its current attempt's draft or final
  build, and not by tree (an active item of its project whose current
  attempt's tree is the draft's asks for this very draft when its jobs pass).
  An item at the tip promoting it references it until its final build is
  recorded, across a restart too: a draft being promoted is never collected;
* its backend's retention has passed since it was last of use: the latest of
  when it was built and, for each item it was built for, when that item
  finished (inactive) or started its current attempt on another tree (active).

The decision is a conditional ``UPDATE`` (``passed`` -> ``collecting``, only
while no active item references the row), taken after the backend forgot the
draft (:meth:`~gate.builders.base.BuildBackend.forget_draft`: a later draft of
the same key is built anew, never handed the one being deleted).  From then
on ``Builds.ensure`` builds that key again instead of reusing the row
(``gate.queue_rules.build_reusable``).  The deletion itself runs off the
planning loop (:meth:`DraftSweep.remove_collecting`) and ends in
``collected``, with the backend's words in ``reason``: deleted, or left on the
backend and why (Koji refuses to delete a build tagged elsewhere, or used in
buildroots).  A row left ``collecting`` by a crash is deleted at the next
sweep (deletion is idempotent).  A backend that refuses every deletion (Koji:
``deleteBuild`` needs the ``admin`` permission) is asked once: it is logged
once, shown in its status (``draft_removal``), its rows go back to ``passed``
and it is not asked again until the daemon restarts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from functools import partial

from sqlalchemy import and_, exists, literal, or_, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import aliased
from sqlalchemy.sql.expression import Exists
from sqlmodel import col, select

from gate.builders.base import BuildBackend, Draft, DraftRemoval, DraftRemovalRefused
from gate.faults import is_transient, until_it_lands
from gate.model import BuildState
from gate.plumbing import Plumbing
from repo_state.db import session
from repo_state.models import BuildRow, ItemRow, epoch

log = logging.getLogger(__name__)

#: seconds between sweeps (the loop runs at least every 30 s)
SWEEP_INTERVAL = 60.0


def unused_since(row: BuildRow, items: Mapping[int, ItemRow]) -> float:
    """When the draft ``row`` was last of use to an item (seconds since the epoch).

    ``items``: the rows of the items it was built for (``row.includes``); an
    active one of them does not reference the draft any more (the caller made
    sure), so it moved to another tree when its current attempt started.
    """
    times = [epoch(row.finished_at or row.created_at)]
    for item_id in json.loads(row.includes):
        item = items.get(item_id)
        if item is None:
            continue
        moment = item.attempt_started_at if item.active else item.finished_at
        if moment is not None:
            times.append(epoch(moment))
    return max(times)


def promoted_draft(row: type[BuildRow]) -> Exists:
    """SQL: the draft ``row`` was promoted (a ``final`` row of its key records
    ``promoted:<its task>``)."""
    final = aliased(BuildRow)
    return exists(
        select(final.id).where(
            final.purpose == "final",
            final.key == row.key,
            final.task_ref == literal("promoted:") + row.task_ref,
        )
    )


def _referenced_by_an_active_item(row: BuildRow) -> Exists:
    """SQL: an active item uses ``row``, or will ask for it (same project and tree)."""
    return exists(
        select(ItemRow.id).where(
            col(ItemRow.active),
            or_(
                col(ItemRow.draft_build_id) == row.id,
                col(ItemRow.final_build_id) == row.id,
                and_(col(ItemRow.project) == row.project, col(ItemRow.merge_tree) == row.tree),
            ),
        )
    )


class DraftSweep:
    def __init__(
        self, engine: Engine, plumbing: Plumbing, backends: Mapping[str, BuildBackend]
    ) -> None:
        self.engine, self.plumbing, self.backends = engine, plumbing, backends
        #: backend name -> why it refuses every deletion (not asked again until a restart)
        self.refused: dict[str, str] = {}
        self._last = float("-inf")
        self._removal: asyncio.Task[int] | None = None

    # -- deciding (in the planning loop) ---------------------------------------------------
    async def sweep_if_due(self) -> int:
        """Sweep when :data:`SWEEP_INTERVAL` passed since the last sweep (the first: now)."""
        if time.monotonic() - self._last < SWEEP_INTERVAL:
            return 0
        self._last = time.monotonic()
        marked = self.sweep()
        self.start_removal()
        return marked

    def retentions(self) -> dict[str, float]:
        """Backend name -> its retention, for the backends that delete drafts now."""
        out = {}
        for name, backend in self.backends.items():
            retention = backend.draft_retention()
            if retention is not None and name not in self.refused:
                out[name] = retention
        return out

    def candidates(self) -> list[BuildRow]:
        """Passed, unpromoted drafts of the backends that delete drafts."""
        retentions = self.retentions()
        if not retentions:
            return []
        promoted = promoted_draft(BuildRow)
        with session(self.engine) as s:
            return list(
                s.exec(
                    select(BuildRow).where(
                        BuildRow.purpose == "draft",
                        BuildRow.state == BuildState.PASSED,
                        col(BuildRow.backend).in_(sorted(retentions)),
                        ~promoted,
                    )
                )
            )

    def sweep(self, now: float | None = None) -> int:
        """Mark every draft due for deletion ``collecting``; returns how many.

        ``now``: seconds since the epoch (default: the clock).
        """
        now = time.time() if now is None else now
        rows = self.candidates()
        if not rows:
            return 0
        retentions = self.retentions()
        ids = {i for r in rows for i in json.loads(r.includes)}
        with session(self.engine) as s:
            items = {
                r.id: r
                for r in s.exec(select(ItemRow).where(col(ItemRow.id).in_(sorted(ids))))
                if r.id is not None
            }
            busy = s.exec(
                select(
                    ItemRow.draft_build_id,
                    ItemRow.final_build_id,
                    ItemRow.project,
                    ItemRow.merge_tree,
                ).where(col(ItemRow.active))
            ).all()
        used = {b for d, f, _, _ in busy for b in (d, f) if b is not None}
        trees = {(p, t) for _, _, p, t in busy if t}
        marked = 0
        for row in rows:
            if row.id in used or (row.project, row.tree) in trees:
                continue
            retention = retentions[row.backend]
            if unused_since(row, items) + retention > now:
                continue
            if self._mark(row, retention):
                marked += 1
        if marked:
            log.info("%d unpromoted drafts past their retention are deleted", marked)
        return marked

    def _mark(self, row: BuildRow, retention: float) -> bool:
        """``passed`` -> ``collecting`` if no active item references the row now."""
        # first, so no later submit of the key takes this draft back (harmless if
        # the row turns out to be in use: a passed row is reused without a submit)
        self.backends[row.backend].forget_draft(row.key)
        # a bulk UPDATE, which gate.planning_rows does not see: fine for draft rows
        # only (planning keeps scratch and final rows); never widen it to those
        with session(self.engine) as s:
            result = s.execute(
                update(BuildRow)
                .where(
                    col(BuildRow.id) == row.id,
                    col(BuildRow.state) == BuildState.PASSED.value,
                    ~_referenced_by_an_active_item(row),
                )
                .values(
                    state=BuildState.COLLECTING.value,
                    reason=f"unused for {retention:g} s (draft_retention): being deleted",
                )
            )
            s.commit()
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # -- deleting (off the loop) -------------------------------------------------------------
    def start_removal(self) -> None:
        """Delete what is ``collecting``, in a task of its own (one at a time)."""
        if self._removal is None or self._removal.done():
            self._removal = self.plumbing.spawn(self.remove_collecting(), "draft-removal")

    async def remove_collecting(self) -> int:
        """Ask each ``collecting`` draft's backend to delete it; returns how many ended
        ``collected``.  A transient fault leaves the row for the next sweep."""
        with session(self.engine) as s:
            rows = s.exec(
                select(BuildRow).where(
                    BuildRow.purpose == "draft", BuildRow.state == BuildState.COLLECTING
                )
            ).all()
        done = 0
        for row in rows:
            backend = self.backends.get(row.backend)
            if backend is None or row.backend in self.refused:
                continue
            draft = Draft(nvr=row.nvr, task_ref=row.task_ref or "")
            try:
                removal = await backend.remove_draft(row.key, row.target, draft)
            except asyncio.CancelledError:
                raise
            except DraftRemovalRefused as exc:
                self._refuse(row, str(exc))
                continue
            except Exception as exc:
                if is_transient(exc):
                    log.warning("draft build %s: cannot delete it now: %s", row.id, exc)
                    continue
                log.exception("draft build %s: deleting it failed", row.id)
                self._refuse(row, f"{type(exc).__name__}: {exc}")
                continue
            await until_it_lands(partial(self._record, row, removal), f"draft {row.id}")
            done += 1
        return done

    def _record(self, row: BuildRow, removal: DraftRemoval) -> None:
        reason = (
            "unpromoted draft deleted (draft_retention)"
            if removal.outcome == "deleted"
            else f"unpromoted draft left on the {row.backend} backend: {removal.reason}"
        )
        if removal.outcome == "deleted" and removal.reason:
            reason += f": {removal.reason}"
        if self._set(row, BuildState.COLLECTED, reason):
            log.info("draft build %s (%s): %s", row.id, row.nvr, reason)
            self._emit(row, removal.outcome, reason)

    def _refuse(self, row: BuildRow, why: str) -> None:
        """The backend refuses every deletion: say it once, give the row back."""
        if row.backend not in self.refused:
            log.warning("backend %s refuses to delete drafts: %s", row.backend, why)
            self._emit(row, "refused", why)
        self.refused[row.backend] = why
        with session(self.engine) as s:
            s.execute(
                update(BuildRow)
                .where(
                    col(BuildRow.backend) == row.backend,
                    col(BuildRow.purpose) == "draft",
                    col(BuildRow.state) == BuildState.COLLECTING.value,
                )
                .values(state=BuildState.PASSED.value, reason="")
            )
            s.commit()

    def _set(self, row: BuildRow, state: BuildState, reason: str) -> bool:
        with session(self.engine) as s:
            result = s.execute(
                update(BuildRow)
                .where(
                    col(BuildRow.id) == row.id,
                    col(BuildRow.state) == BuildState.COLLECTING.value,
                )
                .values(state=state.value, reason=reason)
            )
            s.commit()
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def _emit(self, row: BuildRow, result: str, reason: str) -> None:
        self.plumbing.emit(
            "draft-removal",
            build=row.id,
            project=row.project,
            backend=row.backend,
            nvr=row.nvr,
            result=result,
            reason=reason,
        )
