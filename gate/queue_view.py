"""Load what the planner sees of a queue from the database."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import replace

from sqlmodel import Session, col, select

from gate.item_builds import BUILD_STEP, Member, aggregate, scratch_sets
from gate.items import view_of
from gate.model import BuildState, ItemKind, ItemView, QueueState, RunningBuild, Step
from gate.queue_rules import queue_order
from repo_state.models import BuildRow, ChangeRow, GenerationRow, ItemRow, ProjectRow, QueueRow


def item_view(
    row: ItemRow, build: BuildRow | None, builds: Mapping[Member, BuildRow] | None = None
) -> ItemView:
    """The item with its scratch build's outcome: the one derivation of its state and
    failure reason, used by the planner, the status API, the CLI and the page.

    ``builds``: its scratch builds by name when the queue has several named
    builds (``gate.item_builds``); they count as one build, failed as soon as one is.
    """
    if builds is not None and len(builds) > 1:
        summary = aggregate(builds)
        return view_of(row, summary.step, failure=row.failure or summary.failure)
    step = BUILD_STEP.get(BuildState(build.state), Step.NONE) if build else Step.NONE
    failed_build = ""
    if build is not None and build.state == BuildState.FAILED:
        # the build's own words, as the item is rejected with them
        failed_build = build.reason or f"scratch build {build.id} failed"
    return view_of(row, step, failure=row.failure or failed_build)


def active_items(s: Session, queue: str) -> list[ItemRow]:
    """Active items in queue order (``gate.queue_rules.queue_order``)."""
    rows = s.exec(select(ItemRow).where(ItemRow.queue == queue, col(ItemRow.active))).all()
    ordered = queue_order((view_of(r), r.seq) for r in rows)
    by_id = {r.id: r for r in rows}
    return [by_id[v.id] for v in ordered]


def _moved_on(s: Session, item: ItemRow) -> str:
    """Why a post item's commit is no longer its branch's head ("" while it is)."""
    change = s.get(ChangeRow, item.change_id)
    project = s.get(ProjectRow, item.project)
    head = project.branch_head if project else None
    if change is None or not head or head == change.sha:
        return ""
    return f"superseded: {item.project}'s branch moved on from {change.sha[:12]} to {head[:12]}"


def running_build(b: BuildRow) -> RunningBuild:
    """A running scratch build as the planner sees it (what it includes)."""
    return RunningBuild(b.project, frozenset(json.loads(b.includes)))


def load_queue_state(s: Session, queue: str, projects: tuple[str, ...], repo: str) -> QueueState:
    """Everything read from the database (``gate.planning_rows`` keeps most of it in memory
    while the gate runs; this is the reference it must agree with)."""
    items = active_items(s, queue)
    keys = {r.build_key for r in items if r.build_key}
    builds: dict[str, BuildRow] = {}
    if keys:
        for b in s.exec(
            select(BuildRow).where(BuildRow.purpose == "scratch", col(BuildRow.key).in_(keys))
        ):
            builds[b.key] = b
    running = {
        b.key: running_build(b)
        for b in s.exec(
            select(BuildRow).where(
                BuildRow.purpose == "scratch",
                BuildRow.state == BuildState.RUNNING,
                col(BuildRow.project).in_(projects),
            )
        )
    }
    sets = scratch_sets(s, items)
    views = [item_view(r, builds.get(r.build_key or ""), sets.get(r.id or 0)) for r in items]
    return queue_state_of(s, queue, repo, views, running, {r.id or 0: r for r in items})


def queue_state_of(
    s: Session,
    queue: str,
    repo: str,
    views: list[ItemView],
    running: dict[str, RunningBuild],
    rows: dict[int, ItemRow],
) -> QueueState:
    """The queue's state from its active items' views (in queue order) and running
    builds; reads the few rows that are not kept: the queue, the generations its
    items' bases need, the heads post items are compared with."""
    qrow = s.get(QueueRow, queue)
    assert qrow is not None, f"queue {queue} not initialised"
    oldest = min((v.base.generation for v in views if v.base is not None), default=qrow.generation)
    producers = {
        g.number: tuple(json.loads(g.items))
        for g in s.exec(
            select(GenerationRow).where(GenerationRow.repo == repo, GenerationRow.number > oldest)
        )
    }
    views = [
        replace(v, superseded_by=_moved_on(s, rows[v.id])) if v.kind is ItemKind.POST else v
        for v in views
    ]
    return QueueState(
        name=queue,
        items=tuple(views),
        generation=qrow.generation,
        producers=producers,
        window=qrow.window,
        running_builds=running,
        now=time.time(),
    )
