"""Work recorded as running with no task doing it: found and resumed.

Every slow piece of work is recorded ``running`` before its task starts, and
the task is registered as its owner (``Plumbing.spawn(owns=…)``).  When the
daemon starts, no task owns anything; while it runs, a task can still die
without recording its outcome (a bug, a fault its retries did not cover).
Both cases are the same to :class:`Reconciler`: a row ``running`` with no
live owner is resumed by the code that resumes it after a crash --

* a build: its watch is re-attached (``Builds.reattach``);
* a speculative merge: redone (``Attempts.interrupted``);
* jobs: run again (``Checks.interrupted``);
* a tip step: decided from the world (``Tip.resume``); a promotion stopped on
  a backend error (its draft's ``error``) is tried again only at start.

So no queue waits on a dead task.  Resuming the same work again and again
(a bug that kills its task at once) backs off, up to 30 s between tries,
and each resumption is logged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, or_, select

from gate.attempts import Attempts
from gate.builds import Builds, build_owner
from gate.checks import Checks
from gate.faults import is_transient
from gate.items import step_owner
from gate.model import BuildState, Step, TipStep
from gate.plumbing import Plumbing
from gate.tip import Tip
from repo_state.db import session
from repo_state.models import BuildRow, ItemRow

log = logging.getLogger(__name__)

#: the longest wait before resuming the same work again
MAX_DELAY = 30.0


@dataclass(eq=False)
class Reconciler:
    engine: Engine
    plumbing: Plumbing
    builds: Builds
    attempts: Attempts
    checks: Checks
    tip: Tip
    #: work resumed while running -> (times, not before)
    _resumed: dict[str, tuple[int, float]] = field(default_factory=dict, init=False)

    async def resume_orphans(self, *, starting: bool = False) -> int:
        """Resume every piece of running work no live task owns; returns how many.

        ``starting``: the daemon is starting, so nothing is owned and builds
        stopped on a backend error are re-attached too (a restart is how an
        operator retries them).
        """
        if starting:
            # promotions stopped on a backend error are tried again (Tip.resume)
            self.builds.clear_promotion_errors()
        with session(self.engine) as s:
            work = self._running(s, starting)
        resumed = 0
        for key, row, step in work:
            if not self._due(key, starting):
                continue
            if isinstance(row, BuildRow):
                self.builds.reattach(row)
                resumed += 1
                continue
            item_id = row.id or 0
            try:
                if step == "merge":
                    self.attempts.interrupted(item_id)
                elif step == "jobs":
                    self.checks.interrupted(item_id)
                elif step == "draft":
                    self.tip.resume_draft(row)
                else:
                    await self.tip.resume(row)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("resuming %s: transient fault, later: %s", key, exc)
                self.plumbing.wake_after(self._delay(key))
                continue
            resumed += 1
        if resumed and not starting:
            self.plumbing.wake()
        return resumed

    def has_orphans(self, s: Session) -> bool:
        """Whether some running work has no live task doing it (it is resumed soon,
        perhaps after a back-off: the gate is not idle)."""
        return any(self.plumbing.owner(key) is None for key, _, _ in self._running(s, False))

    @staticmethod
    def _running(s: Session, starting: bool) -> list[tuple[str, BuildRow | ItemRow, str]]:
        """The work recorded running, each with its owner key: builds (but those held
        on a backend error, unless starting) and the running steps of active items."""
        builds = s.exec(select(BuildRow).where(BuildRow.state == BuildState.RUNNING)).all()
        items = s.exec(
            select(ItemRow).where(
                col(ItemRow.active),
                or_(
                    ItemRow.merge == Step.RUNNING,
                    ItemRow.jobs == Step.RUNNING,
                    ItemRow.tip_state == Step.RUNNING,
                    ItemRow.draft == Step.RUNNING,
                ),
            )
        ).all()
        work: list[tuple[str, BuildRow | ItemRow, str]] = [
            (build_owner(b.id or 0), b, "build") for b in builds if starting or not b.error
        ]
        for item in items:
            for step, running in (
                ("merge", item.merge == Step.RUNNING),
                ("jobs", item.jobs == Step.RUNNING),
                ("tip", item.tip_state == Step.RUNNING),
                ("draft", item.draft == Step.RUNNING and item.tip == TipStep.NONE),
            ):
                if running:
                    work.append((step_owner(step, item.id or 0), item, step))
        return work

    def _due(self, key: str, starting: bool) -> bool:
        """Whether ``key``'s work is unowned and may be resumed now (counting it if so)."""
        if self.plumbing.owner(key) is not None:
            return False
        if starting:
            return True
        times, not_before = self._resumed.get(key, (0, 0.0))
        now = time.monotonic()
        if now > not_before + MAX_DELAY:
            times = 0  # quiet for a while: whatever killed it is over
        if now < not_before:
            self.plumbing.wake_after(not_before - now)
            return False
        log.warning("%s was running with no task doing it: resuming it", key)
        self._resumed[key] = (times + 1, now + self._delay_for(times + 1))
        return True

    def _delay(self, key: str) -> float:
        return self._delay_for(self._resumed.get(key, (1, 0.0))[0])

    @staticmethod
    def _delay_for(times: int) -> float:
        return min(MAX_DELAY, 0.5 * 2.0 ** max(0, times - 1))
