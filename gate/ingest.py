"""From stored deliveries to changes and items; branch polling for direct pushes.

Deliveries are committed by the web layer before they are acknowledged; here
they are processed in order, each in its own transaction, and marked done
with what they produced or why they failed.  Dispatch is by the declared
event type through one table; an unknown type is kept and reported, never
dropped silently.

Events are hints: before enqueuing an approved change the change is re-read
from its repository (a ref that moved means a new patchset).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, col, func, select

from gate.merger import GitError
from gate.model import ItemKind
from repo_state.db import session
from repo_state.models import ChangeRow, Delivery, ItemRow, ProjectRow, utcnow

if TYPE_CHECKING:
    from gate.daemon import Gate

log = logging.getLogger(__name__)


class Refused(Exception):
    """The event is understood but cannot be applied (reported on the delivery)."""


async def process_deliveries(gate: Gate) -> int:
    with session(gate.engine) as s:
        pending = s.exec(select(Delivery).where(col(Delivery.processed_at).is_(None))
                         .order_by(col(Delivery.id))).all()
    for delivery in pending:
        handler = HANDLERS.get(delivery.event_type)
        result, error = None, None
        try:
            if handler is None:
                raise Refused(f"unknown event type {delivery.event_type!r}")
            payload = json.loads(delivery.payload)
            payload["_delivery"] = delivery.id
            payload["_by"] = delivery.requested_by
            result = await handler(gate, payload)
        except (Refused, GitError, KeyError, ValueError) as exc:
            error = str(exc)
            log.warning("delivery %s (%s) refused: %s", delivery.id, delivery.event_type, exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an I/O fault: report it, keep the gate going
            error = f"{type(exc).__name__}: {exc}"
            log.exception("delivery %s (%s) failed", delivery.id, delivery.event_type)
        with session(gate.engine) as s:
            row = s.get(Delivery, delivery.id)
            assert row is not None
            row.processed_at, row.result, row.error = utcnow(), result, error
            s.add(row)
            s.commit()
        gate.emit("delivery", delivery=delivery.id, event_type=delivery.event_type,
                  result=result, error=error)
    return len(pending)


# -- handlers -----------------------------------------------------------------------------
async def _change_proposed(gate: Gate, payload: dict[str, Any]) -> str:
    project_name = payload["project"]
    project = gate.config.projects.get(project_name)
    if project is None:
        raise Refused(f"unknown project {project_name!r}")
    ref = payload["ref"]
    with session(gate.engine) as s:
        # a restart may process the same delivery again: never make a second change
        change = s.exec(select(ChangeRow).where(
            ChangeRow.delivery_id == payload["_delivery"])).first()
    if change is None:
        sha = await gate.source.resolve(project_name, ref)
        with session(gate.engine) as s:
            change = ChangeRow(project=project_name, ref=ref, sha=sha,
                               title=payload.get("title") or ref,
                               delivery_id=payload["_delivery"])
            s.add(change)
            s.commit()
            s.refresh(change)
    gate.emit("change", change=change.id, project=project_name, state="proposed",
              sha=change.sha, title=change.title)
    if payload.get("approve"):
        await _enqueue(gate, change.id or 0)
    return f"change {change.id}"


async def _change_approved(gate: Gate, payload: dict[str, Any]) -> str:
    change_id = int(payload["change"])
    with session(gate.engine) as s:
        change = s.get(ChangeRow, change_id)
        if change is None:
            raise Refused(f"no change {change_id}")
    sha = await gate.source.resolve(change.project, change.ref)
    if sha != change.sha:
        with session(gate.engine) as s:
            row = s.get(ChangeRow, change_id)
            assert row is not None
            log.info("change %s: %s moved %s -> %s (new patchset)", change_id, change.ref,
                     change.sha[:12], sha[:12])
            row.sha, row.updated_at = sha, utcnow()
            s.add(row)
            s.commit()
    return await _enqueue(gate, change_id)


async def _change_enqueue(gate: Gate, payload: dict[str, Any]) -> str:
    return await _enqueue(gate, int(payload["change"]))


async def _enqueue(gate: Gate, change_id: int) -> str:
    with session(gate.engine) as s:
        change = s.get(ChangeRow, change_id)
        if change is None:
            raise Refused(f"no change {change_id}")
        if change.state in ("merged", "pushed"):
            raise Refused(f"change {change_id} is {change.state} already")
        existing = s.exec(select(ItemRow).where(ItemRow.change_id == change_id,
                                                col(ItemRow.active))).first()
        if existing is not None:
            return f"item {existing.id} (already queued)"
        queue = gate.config.queue_of(change.project)
        item = ItemRow(queue=queue, change_id=change_id, project=change.project,
                       kind=ItemKind.GATE, seq=_next_seq(s, queue))
        change.state, change.updated_at = "queued", utcnow()
        s.add_all([item, change])
        s.commit()
        s.refresh(item)
    gate.emit("item", item=item.id, queue=queue, project=change.project, state="enqueued",
              change=change_id, title=change.title)
    return f"item {item.id}"


async def _item_dequeue(gate: Gate, payload: dict[str, Any]) -> str:
    item_id = int(payload["item"])
    with session(gate.engine) as s:
        item = s.get(ItemRow, item_id)
        if item is None or not item.active:
            raise Refused(f"item {item_id} is not in a queue")
        merging = item.tip == "merge" and item.tip_state in ("running", "passed")
        if item.kind == ItemKind.POST or item.tip in ("publish", "done") or merging:
            raise Refused(f"item {item_id} is merged already; it can only be published")
    reason = payload.get("reason") or "dequeued by an administrator"
    who = payload.get("_by")
    gate.dequeue(item.queue, item_id, "dequeued", reason + (f" (by {who})" if who else ""))
    return f"item {item_id} dequeued"


async def _item_promote(gate: Gate, payload: dict[str, Any]) -> str:
    item_id = int(payload["item"])
    with session(gate.engine) as s:
        item = s.get(ItemRow, item_id)
        if item is None or not item.active or item.kind != ItemKind.GATE:
            raise Refused(f"item {item_id} is not a queued gate item")
        if item.tip in ("merge", "publish", "done"):
            raise Refused(f"item {item_id} is being merged or published already")
        first = s.exec(select(func.min(ItemRow.seq)).where(
            ItemRow.queue == item.queue, col(ItemRow.active), ItemRow.kind == "gate",
            ItemRow.tip == "none")).one()
        item.seq = (first or 0) - 1
        s.add(item)
        s.commit()
    who = payload.get("_by")
    return f"item {item_id} promoted" + (f" by {who}" if who else "")


async def _ref_updated(gate: Gate, payload: dict[str, Any]) -> str:
    project = payload["project"]
    if project not in gate.config.projects:
        raise Refused(f"unknown project {project!r}")
    created = await poll_project(gate, project, force=bool(payload.get("force")))
    return f"post item {created}" if created else "no new commits"


async def _repo_command(gate: Gate, payload: dict[str, Any]) -> str:
    from gate import admin

    return await admin.repo_command(gate, payload)


Handler = Callable[["Gate", dict[str, Any]], Awaitable[str]]
HANDLERS: dict[str, Handler] = {
    "change.proposed": _change_proposed,
    "change.approved": _change_approved,
    "change.enqueue": _change_enqueue,
    "item.dequeue": _item_dequeue,
    "item.promote": _item_promote,
    "ref.updated": _ref_updated,
    "repo.republish": _repo_command,
    "repo.rollback": _repo_command,
}


def _not_queued(s: Session, project: str, sha: str) -> bool:
    active = s.exec(select(ItemRow).join(ChangeRow, col(ChangeRow.id) == ItemRow.change_id)
                    .where(ItemRow.project == project, col(ItemRow.active),
                           ChangeRow.sha == sha)).first()
    return active is None


def _next_seq(s: Session, queue: str) -> float:
    last = s.exec(select(func.max(ItemRow.seq)).where(ItemRow.queue == queue)).one()
    return (last or 0) + 1


# -- branch polling ----------------------------------------------------------------------------
async def poll_queue(gate: Gate, queue: str) -> None:
    for project in gate.config.queues[queue].projects:
        try:
            await poll_project(gate, project)
        except (GitError, OSError) as exc:
            log.warning("polling %s failed: %s", project, exc)


async def poll_forever(gate: Gate, queue: str) -> None:
    """Poll the queue's branches every ``poll_interval`` seconds (0: never)."""
    interval = gate.config.queues[queue].poll_interval
    while interval > 0:
        await asyncio.sleep(interval)
        await poll_queue(gate, queue)


async def poll_project(gate: Gate, project: str, force: bool = False) -> int | None:
    """Turn a branch head the gate did not push into a post item.

    On first sight of a project whose package is not published yet, its head
    becomes a post item too: that is how a new repository is bootstrapped.
    ``force`` makes a post item of the head even when it was seen already: the
    release engineer's retry after a direct push's final build failed.
    """
    cfg = gate.config.projects[project]
    head = await gate.source.branch_head(project)
    queue = gate.config.queue_of(project)
    with session(gate.engine) as s:
        row = s.get(ProjectRow, project)
        known = row.branch_head if row else None
        if known == head and not (force and _not_queued(s, project, head)):
            return None
        pushing = s.exec(select(ItemRow).where(
            ItemRow.project == project, col(ItemRow.active), ItemRow.tip == "merge")).first()
        if pushing is not None:
            return None  # our own push may be landing; the tip step records the new head
        if known is None and gate.publisher_for(queue).state().get(gate.config.package_of(
                project)) is not None:
            s.add(ProjectRow(name=project, branch_head=head))
            s.commit()
            return None
        change = ChangeRow(project=project, ref=f"refs/heads/{cfg.branch}", sha=head,
                           title=f"{cfg.branch} at {head[:12]}", state="pushed")
        s.add(change)
        s.flush()
        item = ItemRow(queue=queue, change_id=change.id or 0, project=project,
                       kind=ItemKind.POST, seq=0)
        project_row = row or ProjectRow(name=project)
        project_row.branch_head = head
        s.add_all([item, project_row])
        s.commit()
        s.refresh(item)
    log.info("%s: branch moved to %s outside the gate: post item %s", project, head[:12], item.id)
    gate.emit("item", item=item.id, queue=queue, project=project, kind="post",
              state="enqueued", change=change.id, title=change.title)
    gate.wake()
    return item.id
