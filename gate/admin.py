"""Release engineers' repository commands: republish and rollback.

Both publish a *new* generation (history is never rewritten) and are
serialised with the gate's own publishing through the queue's generation
counter.  Items under test were tested on the old content, so their bases no
longer normalise and the planner resets them.  While an item is merged but
not yet published, both commands are refused: publishing it first keeps I1.
In a queue of several named builds, each build's repository follows the
queue's generation numbers: a command on the queue's repository applies to
all of them, with the same number.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from gate.config import Config
from gate.events import Refused, RepoRepublish, RepoRollback
from gate.items import view_of
from gate.plumbing import Plumbing
from publishers.createrepo import Generation, Publisher
from repo_state.db import session
from repo_state.models import GenerationRow, ItemRow, QueueRow


@dataclass(eq=False)
class RepoAdmin:
    engine: Engine
    plumbing: Plumbing
    config: Config
    publishers: Mapping[str, Publisher]

    async def command(self, event: RepoRepublish | RepoRollback) -> str:
        repo = event.repo
        action = "rollback" if isinstance(event, RepoRollback) else "republish"
        queues = [q for q, cfg in self.config.queues.items() if cfg.repo == repo]
        if repo not in self.publishers or not queues:
            raise Refused(f"unknown repository {repo!r}")
        queue = queues[0]
        with session(self.engine) as s:
            active = s.exec(
                select(ItemRow).where(ItemRow.queue == queue, col(ItemRow.active))
            ).all()
            busy = next((i for i in active if view_of(i).at_tip), None)
            if busy is not None:
                raise Refused(f"item {busy.id} is being merged or published; try again after it")
            qrow = s.get(QueueRow, queue)
            assert qrow is not None
            number = qrow.generation + 1
        # like the gate's own generations, say which items' builds it added: none
        who = event.requested_by or "anonymous"
        started = time.monotonic()
        produced_by: dict[str, Any] = {
            "kind": action,
            "items": [],
            "by": who,
            "reason": event.reason or "",
        }
        # a queue of several named builds: each build's repository follows the queue's
        # generation numbers, so the command applies to all of them (docs/pipelines.md)
        repos = list(dict.fromkeys([repo, *self.config.repos_of(queue).values()]))
        if isinstance(event, RepoRollback):
            for name in repos:
                if self.publishers[name].generation(event.to) is None:
                    raise Refused(
                        f"generation {event.to} of {name} does not exist (kept: "
                        f"{self.publishers[name].generations()})"
                    )
            produced_by["from_generation"] = event.to
        made: dict[str, Generation] = {}
        for name in repos:
            made[name] = await asyncio.to_thread(self._act, event, name, produced_by, number)
            await asyncio.to_thread(self.publishers[name].gc)
        with session(self.engine) as s:
            qrow = s.get(QueueRow, queue)
            assert qrow is not None
            for name, generation in made.items():
                s.add(
                    GenerationRow(
                        repo=name,
                        number=number,
                        kind=action,
                        packages=len(generation.packages),
                        requested_by=who,
                    )
                )
            qrow.generation = number
            s.add(qrow)
            s.commit()
        self.plumbing.emit("repo", repo=repo, action=action, generation=number, by=who)
        self.plumbing.emit(
            "generation",
            repo=repo,
            queue=queue,
            generation=number,
            kind=action,
            items=[],
            seconds=time.monotonic() - started,
        )
        self.plumbing.wake()
        by = f" by {event.requested_by}" if event.requested_by else ""
        return f"{repo} generation {number} ({action}{by})"

    def _act(
        self,
        event: RepoRepublish | RepoRollback,
        repo: str,
        produced_by: dict[str, Any],
        number: int,
    ) -> Generation:
        publisher = self.publishers[repo]
        if isinstance(event, RepoRollback):
            return publisher.rollback(event.to, produced_by, number=number)
        return publisher.republish(produced_by, number=number)
