"""Testing an item, part 1: attempts and speculative merges (then its scratch build).

Each function records the intent synchronously (a transition to ``running``),
so the planner does not ask for the same work twice, then does the slow part
in a task bound to the item's current attempt.  A reset cancels those tasks;
an outcome that arrives for an older attempt is dropped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from gate import item_builds, transitions
from gate.builds import Builds, scratch_key
from gate.config import Config
from gate.faults import until_it_lands
from gate.item_builds import Member
from gate.items import Items, step_owner
from gate.merger import Merger, MergeResult
from gate.model import Base, BuildState, ItemKind
from gate.package_builds import Made, ensure_packages
from gate.package_plan import MissingSpec
from gate.packages import PackageOrderError
from gate.plumbing import Plumbing
from gate.queue_rules import OtherChange, unmet_dependency
from gate.sources.base import ChangeSource
from repo_state.db import session
from repo_state.models import ChangeRow, ItemRow, ProjectRow, utcnow

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Attempts:
    engine: Engine
    plumbing: Plumbing
    config: Config
    items: Items
    builds: Builds
    merger: Merger
    source_of: Callable[[str], ChangeSource]

    def start(self, item_id: int, base: Base) -> None:
        """Throw the current attempt away and test the item on ``base``."""
        item = self.items.step(
            item_id,
            lambda v: transitions.start_attempt(v, base),
            merge_commit=None,
            merge_tree=None,
            tested_state=None,
            final_build_id=None,
            draft_build_id=None,
            attempt_started_at=utcnow(),
        )
        assert item is not None
        self.plumbing.cancel_item_tasks(item_id)
        self.items.drop_speculative_repos(item_id)
        self.plumbing.emit(
            "item",
            item=item_id,
            project=item.project,
            state="testing",
            queue=item.queue,
            attempt=item.attempt,
            base=list(base.ahead),
            generation=base.generation,
        )

    def prepare(self, queue: str, item_id: int) -> None:
        """The speculative merge of the item's change on its base, then its scratch build."""
        item = self.items.step(item_id, transitions.merge_started)
        assert item is not None
        self.plumbing.spawn(
            self._prepare(queue, item_id, item.attempt),
            f"prepare-{item_id}",
            item_id,
            owns=(step_owner("merge", item_id),),
        )

    async def _prepare(self, queue: str, item_id: int, attempt: int) -> None:
        item, shas, includes, prow = await until_it_lands(
            partial(self._merge_inputs, item_id), f"item {item_id}"
        )
        project = self.config.projects[item.project]
        head = (
            prow.branch_head
            if prow and prow.branch_head
            else (await self.source_of(item.project).branch_head(item.project))
        )
        needs = await self._unmet_dependency(item.project, head, shas, item.change_id)
        if needs is not None:
            await self._merge_failed(item_id, attempt, item.project, needs)
            return
        result = await self.merger.speculative_merge(item.project, project.git, head, shas)
        if result.conflict:
            files = ", ".join(result.files[:5])
            culprit = await self._conflicting(
                item.project, project.git, head, list(zip(includes, shas, strict=True)), result
            )
            reason = f"merge conflict with {culprit}" + (f" in {files}" if files else "")
            await self._merge_failed(item_id, attempt, item.project, reason)
            return
        qcfg = self.config.queues[queue]
        # one scratch build per (named build, package): the item's set (gate.item_builds)
        made: dict[Member, Made] = {}
        try:
            for build_name, target in self.config.builds_of(queue).items():
                for m in await ensure_packages(
                    self.builds,
                    purpose="scratch",
                    key_of=partial(
                        scratch_key, item.project, result.tree, target, qcfg.backend, build_name
                    ),
                    project=item.project,
                    backend=qcfg.backend,
                    commit=result.commit,
                    tree=result.tree,
                    target=target,
                    includes=includes,
                    what=f"scratch build {build_name} of item {item_id}",
                ):
                    made[(build_name, m.package)] = m
        except (MissingSpec, PackageOrderError) as exc:  # the change's tree cannot be built
            await self._merge_failed(item_id, attempt, item.project, f"cannot build: {exc}")
            return
        first = next(iter(made.values())).row
        if len(made) > 1:
            await until_it_lands(
                partial(self._record_set, item_id, attempt, made), f"builds of item {item_id}"
            )
        await until_it_lands(
            lambda: self.items.step(
                item_id,
                lambda v: transitions.merged(v, first.key),
                attempt,
                merge_commit=result.commit,
                merge_tree=result.tree,
            ),
            f"item {item_id}",
        )
        for (build_name, package), m in made.items():
            self.plumbing.emit(
                "item",
                item=item_id,
                project=item.project,
                state="building",
                build=m.row.id,
                reused=m.reused or m.row.submissions > 0 or m.row.state != BuildState.RUNNING,
                **({"named_build": build_name, "package": package} if len(made) > 1 else {}),
            )

    def _merge_inputs(
        self, item_id: int
    ) -> tuple[ItemRow, list[str], list[int], ProjectRow | None]:
        """The item, the commits of it and of the same-project gate items ahead of it
        (in queue order), those items' ids, and its project's row."""
        with session(self.engine) as s:
            item = s.get(ItemRow, item_id)
            assert item is not None
            ahead = [s.get(ItemRow, a) for a in json.loads(item.base_ahead)]
            same_project = [
                a
                for a in ahead
                if a is not None and a.project == item.project and a.kind == ItemKind.GATE
            ]
            shas = [_change_sha(s, a) for a in same_project] + [_change_sha(s, item)]
            includes = [a.id for a in same_project if a.id] + [item_id]
            return item, shas, includes, s.get(ProjectRow, item.project)

    def _record_set(self, item_id: int, attempt: int, made: dict[Member, Made]) -> None:
        """The item's scratch builds, one per (named build, package) (``gate.item_builds``)."""
        with session(self.engine) as s:
            for member, m in made.items():
                item_builds.record(
                    s, item_id, attempt, member, "scratch", m.row.id or 0, reused=m.reused
                )
            s.commit()

    async def _conflicting(
        self,
        project: str,
        git: str,
        head: str,
        changes: list[tuple[int, str]],
        result: MergeResult,
    ) -> str:
        """What the change that failed to merge conflicts with, in words.

        The merger names the change that would not go on top of the others
        (``conflict_with``); when that is the item's own, the other side is the
        branch head or one of the changes ahead: merge it on a growing prefix to
        find the first that makes it conflict.
        """
        own = changes[-1][1]
        if result.conflict_with != own:
            ahead = {sha: item for item, sha in changes}
            item = ahead.get(result.conflict_with)
            return f"{result.conflict_with[:12]}" + (f" (item {item}, ahead)" if item else "")
        for i in range(len(changes)):
            ahead_of_it = [sha for _, sha in changes[:i]]
            trial = await self.merger.speculative_merge(project, git, head, [*ahead_of_it, own])
            if trial.conflict and trial.conflict_with == own:
                if i == 0:
                    branch = self.config.projects[project].branch
                    return f"{head[:12]} (the head of branch {branch})"
                item, sha = changes[i - 1]
                return f"{sha[:12]} (item {item}, ahead)"
        return own[:12]

    async def _merge_failed(self, item_id: int, attempt: int, project: str, reason: str) -> None:
        await until_it_lands(
            lambda: self.items.step(
                item_id, lambda v: transitions.merge_failed(v, reason), attempt
            ),
            f"item {item_id}",
        )
        self.plumbing.emit(
            "item", item=item_id, project=project, state="merge-conflict", reason=reason
        )

    async def _unmet_dependency(
        self, project: str, head: str, shas: list[str], own_change: int
    ) -> str | None:
        url = self.config.projects[project].git
        carried = await self.merger.commits_between(project, url, head, shas[-1])
        if not set(carried) - set(shas):
            return None
        others = await until_it_lands(
            partial(self._proposed, project, carried, own_change), f"change {own_change}"
        )
        proposed = {c.sha: OtherChange(c.id or 0, c.title, c.sha, c.state) for c in others}
        return unmet_dependency(carried, shas, proposed)

    def _proposed(self, project: str, carried: list[str], own_change: int) -> list[ChangeRow]:
        """The other changes of ``project`` whose commits are among ``carried``."""
        with session(self.engine) as s:
            own = s.get(ChangeRow, own_change)
            return [
                c
                for c in s.exec(
                    select(ChangeRow).where(
                        ChangeRow.project == project,
                        col(ChangeRow.sha).in_(carried),
                        ChangeRow.id != own_change,
                    )
                ).all()
                # an earlier revision of the same review (a pull request's first
                # commit under its newest) is this change, superseded, not another one
                if not (own and own.review and (c.source, c.review) == (own.source, own.review))
            ]

    def interrupted(self, item_id: int) -> None:
        """A merge whose task is gone (a crash, a fault): merges are cheap, redo it."""
        self.items.step(item_id, transitions.merge_interrupted)


def _change_sha(s: Session, item: ItemRow) -> str:
    change = s.get(ChangeRow, item.change_id)
    assert change is not None
    return change.sha
