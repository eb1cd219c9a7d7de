"""Branch polling: a branch head the gate did not push becomes a post item.

Each queue's projects are read every ``poll_interval`` seconds (and at once on
a ``ref.updated`` event).  On first sight of a project whose package is not
published yet, its head becomes a post item too, marked *bootstrap*: that is
how a new repository is bootstrapped (all or nothing, see ``gate.planner``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from gate.config import Config
from gate.merger import GitError
from gate.model import ItemKind, TipStep
from gate.plumbing import Plumbing
from gate.sources.base import ChangeSource
from publishers.createrepo import Publisher
from repo_state.db import session
from repo_state.models import ChangeRow, ItemRow, ProjectRow

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Polling:
    engine: Engine
    plumbing: Plumbing
    config: Config
    source_of: Callable[[str], ChangeSource]
    publishers: Mapping[str, Publisher]

    async def poll_queue(self, queue: str) -> None:
        cfg = self.config.queues.get(queue)  # None: a reload removed it meanwhile
        for project in cfg.projects if cfg is not None else ():
            if project not in self.config.projects:
                continue  # removed by a reload while the others were polled
            try:
                await self.poll_project(project)
            except (GitError, OSError) as exc:
                log.warning("polling %s failed: %s", project, exc)

    async def poll_forever(self, queue: str) -> None:
        """Poll the queue's branches every ``poll_interval`` seconds (0: never).

        The interval is read again each time (a reload may change it); the
        poller ends when a reload removes the queue or sets the interval to 0.
        """
        while True:
            cfg = self.config.queues.get(queue)
            if cfg is None or cfg.poll_interval <= 0:
                return
            await asyncio.sleep(cfg.poll_interval)
            if queue in self.config.queues:
                await self.poll_queue(queue)

    async def poll_project(self, project: str, force: bool = False) -> int | None:
        """Make a post item of the branch head if the gate did not put it there.

        ``force`` makes a post item of the head even when it was seen already:
        the release engineer's retry after a direct push's final build failed.
        """
        cfg = self.config.projects[project]
        head = await self.source_of(project).branch_head(project)
        queue = self.config.queue_of(project)
        publisher = self.publishers[self.config.queues[queue].repo]
        with session(self.engine) as s:
            row = s.get(ProjectRow, project)
            known = row.branch_head if row else None
            if known == head and not (force and _not_queued(s, project, head)):
                return None
            pushing = s.exec(
                select(ItemRow).where(
                    ItemRow.project == project,
                    col(ItemRow.active),
                    ItemRow.tip == TipStep.MERGE.value,
                )
            ).first()
            if pushing is not None:
                return None  # our own push may be landing; the tip step records the new head
            package = self.config.package_of(project)
            published = publisher.state().get(package) is not None
            if known is None and published:
                s.add(ProjectRow(name=project, branch_head=head))
                s.commit()
                return None
            change = ChangeRow(
                project=project,
                ref=f"refs/heads/{cfg.branch}",
                sha=head,
                title=f"{cfg.branch} at {head[:12]}",
                state="pushed",
            )
            s.add(change)
            s.flush()
            item = ItemRow(
                queue=queue,
                change_id=change.id or 0,
                project=project,
                kind=ItemKind.POST.value,
                seq=0,
                # the repository has no package of the project yet: see gate.planner
                bootstrap=not published,
            )
            project_row = row or ProjectRow(name=project)
            project_row.branch_head = head
            s.add_all([item, project_row])
            s.commit()
            s.refresh(item)
        log.info(
            "%s: branch moved to %s outside the gate: post item %s", project, head[:12], item.id
        )
        self.plumbing.emit(
            "item",
            item=item.id,
            queue=queue,
            project=project,
            kind=ItemKind.POST.value,
            state="enqueued",
            change=change.id,
            title=change.title,
        )
        self.plumbing.wake()
        return item.id


def _not_queued(s: Session, project: str, sha: str) -> bool:
    active = s.exec(
        select(ItemRow)
        .join(ChangeRow, col(ChangeRow.id) == ItemRow.change_id)
        .where(ItemRow.project == project, col(ItemRow.active), ChangeRow.sha == sha)
    ).first()
    return active is None
