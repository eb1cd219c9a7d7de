"""Items as rows: the one reading of an item's state, transitions applied, dequeue.

:func:`view_of` is the only place that reads an item row's step columns; it
returns the pure :class:`~gate.model.ItemView` the planner, the status API,
ingest and admin all ask.  :meth:`Items.step` applies a transition
(``gate.transitions``) to the row, guarded by the attempt it was started for:
work for an attempt that was reset meanwhile must not overwrite the new
attempt's state, so its outcome is dropped.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, func, select

from gate.config import Config
from gate.model import Base, ItemKind, ItemView, Step, TipStep
from gate.plumbing import Plumbing
from gate.queue_rules import window_after_dequeue
from gate.reporting import Reporter, phase_of
from gate.sources.base import ChangeSource
from repo_state.db import session
from repo_state.models import ChangeRow, ItemRow, QueueRow, utcnow

log = logging.getLogger("rpmgate")

Transition = Callable[[ItemView], ItemView]


def step_owner(step: str, item_id: int) -> str:
    """The name of the task doing an item's running ``step`` (``merge``, ``jobs``, ``tip``).

    Stages spawn that work with ``owns=(step_owner(...),)``; ``gate.reconcile``
    finds a step left running with no live owner.
    """
    return f"{step}:{item_id}"


def base_of(row: ItemRow) -> Base | None:
    if row.base_generation is None:
        return None
    return Base(row.base_generation, tuple(json.loads(row.base_ahead)))


def view_of(row: ItemRow, build: Step = Step.NONE, failure: str | None = None) -> ItemView:
    """The item as the pure core sees it; ``build`` is its build's step, if known."""
    return ItemView(
        id=row.id or 0,
        kind=ItemKind(row.kind),
        project=row.project,
        base=base_of(row),
        merge=Step(row.merge),
        build_key=row.build_key,
        build=build,
        jobs=Step(row.jobs),
        tip=TipStep(row.tip),
        tip_state=Step(row.tip_state),
        not_before=row.not_before,
        failure=row.failure if failure is None else failure,
        attempt=row.attempt,
        bootstrap=row.bootstrap,
        forced=row.forced_by is not None,
        draft=Step(row.draft),
    )


def store(row: ItemRow, view: ItemView) -> None:
    """Write what transitions change back to the row (the enums' values)."""
    row.attempt = view.attempt
    if view.base is None:
        row.base_generation, row.base_ahead = None, "[]"
    else:
        row.base_generation, row.base_ahead = (
            view.base.generation,
            json.dumps(list(view.base.ahead)),
        )
    row.merge, row.build_key, row.jobs = view.merge.value, view.build_key, view.jobs.value
    row.tip, row.tip_state = view.tip.value, view.tip_state.value
    row.not_before, row.failure = view.not_before, view.failure
    row.draft = view.draft.value


@dataclass(eq=False)
class Items:
    engine: Engine
    plumbing: Plumbing
    config: Config
    source_of: Callable[[str], ChangeSource]
    speculative_dir: Path
    #: tells a change's owners at each step that matters to them
    reporter: Reporter = field(init=False)

    def __post_init__(self) -> None:
        self.reporter = Reporter(self.engine, self.plumbing, self.config, self.source_of)

    def get(self, item_id: int) -> ItemRow:
        with session(self.engine) as s:
            row = s.get(ItemRow, item_id)
        if row is None:
            raise LookupError(f"no item {item_id}")
        return row

    def step(
        self, item_id: int, transition: Transition, attempt: int | None = None, **fields: Any
    ) -> ItemRow | None:
        """Apply ``transition`` (and set shell ``fields``); None if the attempt is gone."""
        with session(self.engine) as s:
            row = s.get(ItemRow, item_id)
            assert row is not None
            if attempt is not None and (row.attempt != attempt or not row.active):
                return None
            store(row, transition(view_of(row)))
            for name, value in fields.items():
                setattr(row, name, value)
            s.add(row)
            s.commit()
            s.refresh(row)
        self.plumbing.note_progress(row.queue)
        self.plumbing.wake()
        return row

    def update(self, item_id: int, attempt: int | None = None, **fields: Any) -> ItemRow | None:
        """Set shell-only fields (merge commit, tested state, ...); same attempt guard."""
        return self.step(item_id, lambda view: view, attempt, **fields)

    def behind_post_items(self, queue: str) -> float:
        """A sequence number that puts a post item behind the queue's other post items."""
        with session(self.engine) as s:
            last = s.exec(
                select(func.max(ItemRow.seq)).where(
                    ItemRow.queue == queue, col(ItemRow.active), ItemRow.kind == ItemKind.POST
                )
            ).one()
        return (last or 0.0) + 1

    def drop_speculative_repos(self, item_id: int) -> None:
        """Remove the speculative repos of an item's attempts (nothing tests on them)."""
        for path in self.speculative_dir.glob(f"{item_id}-*"):
            shutil.rmtree(path, ignore_errors=True)

    def dequeue(self, queue: str, item_id: int, result: str, reason: str = "") -> None:
        """Remove an item and report it; adjust the window by the queue's rule (Zuul's)."""
        window = self.config.queues[queue].window
        rule = window.rule()
        with session(self.engine) as s:
            item = s.get(ItemRow, item_id)
            if item is None or not item.active:
                return
            item.active, item.result, item.finished_at = False, result, utcnow()
            if reason:
                item.failure = reason
            change = s.get(ChangeRow, item.change_id)
            if change is not None:
                change.state = result
                change.reason, change.updated_at = reason, utcnow()
                s.add(change)
            qrow = s.get(QueueRow, queue)
            assert qrow is not None
            passed_tests = view_of(item).jobs is Step.PASSED
            qrow.window = window_after_dequeue(
                qrow.window, ItemKind(item.kind), result, rule, passed_tests
            )
            s.add_all([item, qrow])
            s.commit()
        self.plumbing.note_progress(queue)
        self.plumbing.cancel_item_tasks(item_id)
        if self.config.speculative_retention == 0:
            self.drop_speculative_repos(item_id)  # else kept, then swept (gate.retention)
        if change is not None:
            self.reporter.report(item_id, phase_of(result), reason)
        self.plumbing.emit(
            "item",
            item=item_id,
            queue=queue,
            project=item.project,
            kind=item.kind,
            state=result,
            reason=reason,
            change=item.change_id,
            generation=item.generation,
            finished=True,
        )
        log.info(
            "item %s (%s) %s%s", item_id, item.project, result, f": {reason}" if reason else ""
        )
        if result != "merged" and change is not None:
            self._dequeue_dependents(change.id or 0, f"item {item_id} ({item.project})", result)

    def _dequeue_dependents(self, change_id: int, what: str, result: str) -> None:
        """Items whose changes depend on a change that left the queue unmerged leave too."""
        with session(self.engine) as s:
            rows = s.exec(
                select(ItemRow, ChangeRow)
                .join(ChangeRow, col(ChangeRow.id) == col(ItemRow.change_id))
                .where(col(ItemRow.active), ChangeRow.depends_on != "[]")
            ).all()
        for item, change in rows:
            if change_id in json.loads(change.depends_on) and not view_of(item).committed:
                self.dequeue(
                    item.queue, item.id or 0, "dequeued", f"depends on {what}, which was {result}"
                )
