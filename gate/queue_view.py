"""Load what the planner sees of a queue from the database."""

from __future__ import annotations

import json
import time

from sqlmodel import Session, col, select

from gate.model import (
    Base,
    ItemKind,
    ItemView,
    QueueState,
    RunningBuild,
    Step,
    TipStep,
)
from repo_state.models import BuildRow, GenerationRow, ItemRow, QueueRow

_BUILD_STEP = {"running": Step.RUNNING, "passed": Step.PASSED, "failed": Step.FAILED}


def active_items(s: Session, queue: str) -> list[ItemRow]:
    """Active items in queue order (see :func:`_rank`)."""
    rows = s.exec(select(ItemRow).where(ItemRow.queue == queue, col(ItemRow.active))).all()
    return sorted(rows, key=lambda r: (_rank(r), r.seq, r.id or 0))


def _rank(row: ItemRow) -> int:
    """Merged (or merging) gate items, then post items, then the gate items under test.

    A gate item whose merge is being pushed or published was tested without
    the post items seen since; publishing it first keeps what it publishes
    equal to what it was tested on.
    """
    if row.kind == ItemKind.GATE and row.tip in ("merge", "publish", "done"):
        return 0
    return 1 if row.kind == ItemKind.POST else 2


def base_of(row: ItemRow) -> Base | None:
    if row.base_generation is None:
        return None
    return Base(row.base_generation, tuple(json.loads(row.base_ahead)))


def load_queue_state(s: Session, queue: str, projects: tuple[str, ...], repo: str) -> QueueState:
    qrow = s.get(QueueRow, queue)
    assert qrow is not None, f"queue {queue} not initialised"
    items = active_items(s, queue)
    keys = {r.build_key for r in items if r.build_key}
    builds: dict[str, BuildRow] = {}
    if keys:
        for b in s.exec(select(BuildRow).where(BuildRow.purpose == "scratch",
                                               col(BuildRow.key).in_(keys))):
            builds[b.key] = b
    running = {
        b.key: RunningBuild(b.project, frozenset(json.loads(b.includes)))
        for b in s.exec(select(BuildRow).where(BuildRow.purpose == "scratch",
                                               BuildRow.state == "running",
                                               col(BuildRow.project).in_(projects)))
    }
    oldest = min((r.base_generation for r in items if r.base_generation is not None),
                 default=qrow.generation)
    producers = {
        g.number: tuple(json.loads(g.items))
        for g in s.exec(select(GenerationRow).where(GenerationRow.repo == repo,
                                                    GenerationRow.number > oldest))
    }
    views = []
    for r in items:
        build = builds.get(r.build_key or "")
        views.append(ItemView(
            id=r.id or 0,
            kind=ItemKind(r.kind),
            project=r.project,
            base=base_of(r),
            merge=Step(r.merge),
            build_key=r.build_key,
            build=_BUILD_STEP.get(build.state, Step.NONE) if build else Step.NONE,
            jobs=Step(r.jobs),
            tip=TipStep(r.tip),
            tip_state=Step(r.tip_state),
            not_before=r.not_before,
            failure=r.failure or (build.reason if build and build.state == "failed" else ""),
        ))
    return QueueState(
        name=queue,
        items=tuple(views),
        generation=qrow.generation,
        producers=producers,
        window=qrow.window,
        running_builds=running,
        now=time.time(),
    )
