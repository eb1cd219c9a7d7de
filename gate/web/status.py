"""The status document: queues -> items, each with its change, base, builds, jobs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, select

from gate.flaky import flaky_jobs, flaky_note, flaky_notes
from gate.items import view_of
from gate.model import BuildState, ItemState, outside_window
from gate.pipeline import stages_of
from gate.queue_view import active_items, item_view
from gate.reporting import file_url
from gate.runtime import Runtime
from repo_state.models import BuildRow, ChangeRow, GenerationRow, ItemRow, JobRunRow, QueueRow


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def item_label(item: ItemRow, build: BuildRow | None, outside_window: bool = False) -> str:
    """Where the item is, in a word or two (``gate.model.ItemState``), or how it ended;
    ``outside_window`` as ``gate.model.outside_window`` says of the queue."""
    if not item.active:
        return item.result or "finished"
    if outside_window:
        return ItemState.OUTSIDE_WINDOW.value
    return item_view(item, build).state.value


def waiting_items(s: Session, queue: str, active: list[ItemRow]) -> frozenset[int]:
    """The queue's items outside its window (``active``: its active items in order)."""
    qrow = s.get(QueueRow, queue)
    return outside_window([view_of(r) for r in active], qrow.window if qrow else 0)


def build_doc(rt: Runtime, row: BuildRow | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "id": row.id,
        "purpose": row.purpose,
        "state": row.state,
        "nvr": row.nvr,
        "key": row.key,
        "backend": row.backend,
        "task": row.task_ref,
        "tree": row.tree,
        "reason": row.reason,
        "error": row.error or None,
        "log_url": log_url(rt, row.log),
        "submissions": row.submissions,
        "created_at": _iso(row.created_at),
        "finished_at": _iso(row.finished_at),
    }


def log_url(rt: Runtime, path: str) -> str | None:
    return file_url(rt.state_dir, rt.config.base_url, path)


def change_doc(change: ChangeRow) -> dict[str, Any]:
    return {
        "id": change.id,
        "project": change.project,
        "ref": change.ref,
        "sha": change.sha,
        "title": change.title,
        "state": change.state,
        "source": change.source,
        "review": change.review,
        "url": change.url or None,
        "owner": change.owner or None,
        "depends_on": json.loads(change.depends_on),
    }


def item_doc(
    rt: Runtime, s: Session, item: ItemRow, position: int | None, outside_window: bool = False
) -> dict[str, Any]:
    change = s.get(ChangeRow, item.change_id)
    scratch = (
        s.exec(
            select(BuildRow).where(BuildRow.purpose == "scratch", BuildRow.key == item.build_key)
        ).first()
        if item.build_key
        else None
    )
    final = s.get(BuildRow, item.final_build_id) if item.final_build_id else None
    jobs = s.exec(
        select(JobRunRow)
        .where(JobRunRow.item_id == item.id, JobRunRow.attempt == item.attempt)
        .order_by(col(JobRunRow.id))
    ).all()
    spec_name = f"{item.id}-{item.attempt}"
    # a build whose watch stopped on a backend error holds the item up: say so
    stuck = next(
        (
            b.error
            for b in (final, scratch)
            if b is not None and b.state == BuildState.RUNNING and b.error
        ),
        "",
    )
    return {
        "id": item.id,
        "position": position,
        "queue": item.queue,
        "kind": item.kind,
        "state": "stuck: backend error"
        if stuck and item.active
        else item_label(item, scratch, outside_window),
        "change": change_doc(change) if change else None,
        "attempt": item.attempt,
        "base": {"generation": item.base_generation, "ahead": json.loads(item.base_ahead)}
        if item.base_generation is not None
        else None,
        "merge": {"state": item.merge, "commit": item.merge_commit, "tree": item.merge_tree},
        "build": build_doc(rt, scratch),
        "final_build": build_doc(rt, final),
        "jobs": [
            {
                "name": j.name,
                "arch": j.arch,
                "stage": j.stage,
                "try_number": j.try_number,
                "tries": j.tries,
                "flaky": bool(flaky_note(j)),
                "state": j.state,
                "summary": j.summary,
                "details": json.loads(j.details),
                "warnings": json.loads(j.warnings),
                "log_url": log_url(rt, j.log_path),
                "started_at": _iso(j.started_at),
                "finished_at": _iso(j.finished_at),
            }
            for j in jobs
        ],
        "flaky": flaky_notes(jobs),
        "tip": {"step": item.tip, "state": item.tip_state},
        "speculative_repo": f"{rt.config.base_url}/speculative/{spec_name}/"
        if item.tested_state and item.active
        else None,
        "failure": item_view(item, scratch).failure or stuck or None,
        "bootstrap": item.bootstrap,
        "forced_by": item.forced_by,
        "result": item.result,
        "generation": item.generation,
        "enqueued_at": _iso(item.enqueued_at),
        "attempt_started_at": _iso(item.attempt_started_at),
        "finished_at": _iso(item.finished_at),
    }


def status(rt: Runtime, s: Session, recent: int = 20) -> dict[str, Any]:
    queues = []
    for name, cfg in rt.config.queues.items():
        qrow = s.get(QueueRow, name)
        arches = rt.config.arches_of(name)
        items = active_items(s, name)
        waiting = waiting_items(s, name, items)
        finished = s.exec(
            select(ItemRow)
            .where(ItemRow.queue == name, col(ItemRow.active).is_(False))
            .order_by(col(ItemRow.finished_at).desc())
            .limit(recent)
        ).all()
        queues.append(
            {
                "name": name,
                "repo": cfg.repo,
                "projects": list(cfg.projects),
                "window": qrow.window if qrow else None,
                "generation": qrow.generation if qrow else None,
                "items": [
                    item_doc(rt, s, item, i, item.id in waiting) for i, item in enumerate(items)
                ],
                "recent": [item_doc(rt, s, item, None) for item in finished],
                "held_back": held_back(s, items),
                "arches": list(arches),
                "pipeline": stages_of(cfg.pipeline, cfg.jobs),
                "flaky_jobs": flaky_jobs(
                    s, name, [j.name for j in cfg.jobs], cfg.flaky, len(arches)
                ),
            }
        )
    backends = {
        name: health
        for name, backend in rt.backends.items()
        if (health := backend.status()) is not None
    }
    return {
        "queues": queues,
        "backends": backends,
        "config": rt.config_status.model_dump(mode="json"),
    }


def held_back(s: Session, items: list[ItemRow]) -> list[dict[str, Any]]:
    """Blocked post items: where git and the repository disagree, and why."""
    out = []
    for item in items:
        if not view_of(item).blocked:
            continue
        change = s.get(ChangeRow, item.change_id)
        out.append(
            {
                "item": item.id,
                "project": item.project,
                "commit": change.sha if change else None,
                "bootstrap": item.bootstrap,
                "reason": item.failure,
                "git_and_repository": "the project is missing from the repository"
                if item.bootstrap
                else "the branch has commits the repository was not built from",
                "actions": ["publish", "dequeue", "retry"],
            }
        )
    return out


def repo_doc(rt: Runtime, s: Session, name: str) -> dict[str, Any] | None:
    publisher = rt.publishers.get(name)
    if publisher is None:
        return None
    current = publisher.current()
    history = s.exec(
        select(GenerationRow)
        .where(GenerationRow.repo == name)
        .order_by(col(GenerationRow.number).desc())
        .limit(20)
    ).all()
    url = rt.config.publishers[name].url or f"{rt.config.base_url}/repos/{name}"
    return {
        "name": name,
        "url": url,
        "current": None
        if current is None
        else {
            "number": current.number,
            "path": str(current.path),
            "produced_by": current.manifest.get("produced_by"),
            "created": current.manifest.get("created"),
            # the publisher's cached state: no re-reading of state.json per request
            "packages": sorted(publisher.state(current.number).nevras()),
            "builds": publisher.state(current.number).nvrs(),
        },
        "kept": publisher.generations(),
        "history": [
            {
                "number": g.number,
                "kind": g.kind,
                "items": json.loads(g.items),
                "package_count": g.packages,
                "created_at": _iso(g.created_at),
            }
            for g in history
        ],
    }
