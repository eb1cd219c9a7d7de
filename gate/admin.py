"""Release engineers' repository commands: republish and rollback.

Both publish a *new* generation (history is never rewritten) and are
serialised with the gate's own publishing through the queue's generation
counter.  Items under test were tested on the old content, so their bases no
longer normalise and the planner resets them.  While an item is merged but
not yet published, both commands are refused: publishing it first keeps I1.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from sqlmodel import col, select

from gate.ingest import Refused
from repo_state.db import session
from repo_state.models import GenerationRow, ItemRow, QueueRow

if TYPE_CHECKING:
    from gate.daemon import Gate


async def repo_command(gate: Gate, payload: dict[str, Any]) -> str:
    repo, action = payload["repo"], payload["action"]
    queues = [q for q, cfg in gate.config.queues.items() if cfg.repo == repo]
    if repo not in gate.publishers or not queues:
        raise Refused(f"unknown repository {repo!r}")
    queue = queues[0]
    publisher = gate.publishers[repo]
    with session(gate.engine) as s:
        busy = s.exec(select(ItemRow).where(
            ItemRow.queue == queue, col(ItemRow.active),
            col(ItemRow.tip).in_(["merge", "publish", "done"]))).first()
        if busy is not None:
            raise Refused(f"item {busy.id} is being merged or published; try again after it")
        qrow = s.get(QueueRow, queue)
        assert qrow is not None
        number = qrow.generation + 1
    # like the gate's own generations, say which items' builds it added: none
    who = payload.get("_by") or "anonymous"
    produced_by = {"kind": action, "items": [], "by": who,
                   "reason": payload.get("reason") or ""}
    if action == "rollback":
        target = int(payload["to"])
        if publisher.generation(target) is None:
            raise Refused(f"generation {target} of {repo} does not exist (kept: "
                          f"{publisher.generations()})")
        produced_by["from_generation"] = target
        generation = await asyncio.to_thread(publisher.rollback, target, produced_by,
                                             number=number)
    elif action == "republish":
        generation = await asyncio.to_thread(publisher.republish, produced_by, number=number)
    else:
        raise Refused(f"unknown repository action {action!r}")
    await asyncio.to_thread(publisher.gc)
    with session(gate.engine) as s:
        qrow = s.get(QueueRow, queue)
        assert qrow is not None
        s.add(GenerationRow(repo=repo, number=number, kind=action,
                            packages=len(generation.packages), requested_by=who))
        qrow.generation = number
        s.add(qrow)
        s.commit()
    gate.emit("repo", repo=repo, action=action, generation=number, by=who)
    gate.wake()
    by = f" by {payload['_by']}" if payload.get("_by") else ""
    return f"{repo} generation {number} ({action}{by})"
