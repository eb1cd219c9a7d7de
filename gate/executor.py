"""The planner's actions and who carries each out: one table.

The planner (pure) names actions; each row of :meth:`Executor.table` maps an
action class to the stage that records its intent and starts the work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gate.attempts import Attempts
from gate.builds import Builds
from gate.checks import Checks
from gate.items import Items
from gate.planner import (
    Action,
    CancelBuild,
    Dequeue,
    DraftBuild,
    FinalBuild,
    MergeChange,
    Prepare,
    PromoteDraft,
    Publish,
    RunJobs,
    StartAttempt,
)
from gate.publishing import Publishing
from gate.tip import Tip


@dataclass(eq=False)
class Actions:
    items: Items
    attempts: Attempts
    checks: Checks
    builds: Builds
    tip: Tip
    publishing: Publishing

    def table(self) -> dict[type[Any], Callable[[str, Any], Awaitable[bool]]]:
        return {
            StartAttempt: self._start_attempt,
            Prepare: self._prepare,
            RunJobs: self._run_jobs,
            DraftBuild: self._draft_build,
            FinalBuild: self._final_build,
            PromoteDraft: self._promote,
            MergeChange: self._merge,
            Publish: self._publish,
            Dequeue: self._dequeue,
            CancelBuild: self._cancel_build,
        }

    async def execute(self, queue: str, action: Action) -> bool:
        return await self.table()[type(action)](queue, action)

    async def _start_attempt(self, queue: str, action: StartAttempt) -> bool:
        self.attempts.start(action.item_id, action.base)
        return True

    async def _prepare(self, queue: str, action: Prepare) -> bool:
        self.attempts.prepare(queue, action.item_id)
        return True

    async def _run_jobs(self, queue: str, action: RunJobs) -> bool:
        self.checks.run_jobs(queue, action.item_id)
        return True

    async def _final_build(self, queue: str, action: FinalBuild) -> bool:
        self.tip.final_build(queue, action.item_id)
        return True

    async def _draft_build(self, queue: str, action: DraftBuild) -> bool:
        self.tip.draft_build(queue, action.item_id)
        return True

    async def _promote(self, queue: str, action: PromoteDraft) -> bool:
        self.tip.promote(queue, action.item_id)
        return True

    async def _merge(self, queue: str, action: MergeChange) -> bool:
        self.tip.merge_change(queue, action.item_id)
        return True

    async def _publish(self, queue: str, action: Publish) -> bool:
        self.publishing.publish(queue, action.item_ids)
        return True

    async def _dequeue(self, queue: str, action: Dequeue) -> bool:
        result = "merged" if action.merged else "superseded" if action.superseded else "rejected"
        self.items.dequeue(queue, action.item_id, result, action.reason)
        return True

    async def _cancel_build(self, queue: str, action: CancelBuild) -> bool:
        await self.builds.cancel(action.key)
        return False  # the planner's view of the queue is unchanged
