"""The daemon: wires the parts, recovers after a crash, runs the loop, stops.

The loop reads top to bottom::

    wait for a wake-up (an event, a finished build/job, a timer)
    ingest stored deliveries into changes and items
    for each queue: load its state, plan, execute the actions

Every action records its intent in the database before any side effect and
its outcome after, so :meth:`Gate.start` can resume after ``kill -9``.  The
stages each get the parts they use (``gate.runtime``); none imports this
module.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from gate import transitions
from gate.admin import RepoAdmin
from gate.attempts import Attempts
from gate.builders.base import BuildBackend
from gate.builds import Builds
from gate.checks import Checks
from gate.config import Config
from gate.draft_gc import DraftSweep
from gate.executor import Actions
from gate.faults import backoff, is_transient
from gate.ingest import Ingest
from gate.items import Items, view_of
from gate.jobs.external import cancel_abandoned_runs
from gate.merger import GitError, Merger
from gate.model import QueueState
from gate.planner import Dequeue, plan
from gate.planning_rows import PlanningRows
from gate.plumbing import Listener, Plumbing
from gate.polling import Polling
from gate.pool_gc import PoolSweep
from gate.publishing import Publishing
from gate.reconcile import Reconciler
from gate.reload import Loader, Reloader, file_loader
from gate.retention import SpeculativeSweep
from gate.runtime import Runtime
from gate.sources.base import ChangeSource
from gate.tip import Tip
from publishers.createrepo import Publisher
from repo_state.db import session
from repo_state.models import Delivery, ItemRow, QueueRow
from repo_state.pool import Pool

log = logging.getLogger("rpmgate")

#: rounds of plan-and-execute per wake-up before the loop gives up on a queue
MAX_ROUNDS = 200


class Gate:
    """One gate daemon: its parts, its stages, its loop."""

    def __init__(
        self,
        config: Config,
        *,
        backends: dict[str, BuildBackend] | None = None,
        sources: dict[str, ChangeSource] | None = None,
        window_override: int | None = None,
        runtime: Runtime | None = None,
        load: Loader | None = None,
    ) -> None:
        rt = runtime or Runtime.create(config, backends=backends, sources=sources)
        self.runtime = rt
        source_of = rt.source_of
        self.items = Items(
            rt.engine, rt.plumbing, rt.config, source_of, rt.state_dir / "speculative"
        )
        self.builds = Builds(rt.engine, rt.plumbing, rt.config, rt.backends, source_of, rt.merger)
        self.attempts = Attempts(
            rt.engine, rt.plumbing, rt.config, self.items, self.builds, rt.merger, source_of
        )
        self.checks = Checks(
            rt.engine, rt.plumbing, rt.config, self.items, rt.pool, rt.publishers, rt.state_dir
        )
        self.tip = Tip(
            rt.engine, rt.plumbing, rt.config, self.items, self.builds, rt.merger, source_of
        )
        self.publishing = Publishing(
            rt.engine, rt.plumbing, rt.config, self.items, rt.publishers, rt.backends
        )
        self.publishing.gated_by = lambda: self.runtime.config_status.gated_by()
        self.polling = Polling(rt.engine, rt.plumbing, rt.config, source_of, rt.publishers)
        self.admin = RepoAdmin(rt.engine, rt.plumbing, rt.config, rt.publishers)
        self.ingest = Ingest(
            rt.engine,
            rt.plumbing,
            rt.config,
            self.items,
            rt.sources,
            source_of,
            self.admin,
            self.polling,
            rt.merger,
        )
        self.actions = Actions(
            self.items, self.attempts, self.checks, self.builds, self.tip, self.publishing
        )
        self.reconciler = Reconciler(
            rt.engine, rt.plumbing, self.builds, self.attempts, self.checks, self.tip
        )
        self.retention = SpeculativeSweep(
            rt.engine,
            rt.plumbing,
            rt.state_dir / "speculative",
            lambda: self.config.speculative_retention,  # the config in force (reloads)
        )
        #: unpromoted drafts deleted by their backend's ``draft_retention``
        self.draft_sweep = DraftSweep(rt.engine, rt.plumbing, rt.backends)
        self.pool_sweep = PoolSweep(
            rt.engine,
            rt.pool,
            rt.publishers,
            lambda: None if self.config.pool_retention == "keep" else self.config.pool_retention,
        )
        #: the rows each planning pass reads, kept between passes while the loop runs
        self.planning_rows = PlanningRows(rt.engine)
        self._loop_task: asyncio.Task[None] | None = None
        #: queue -> its final builds start ahead of the tip as drafts (``detect_drafts``;
        #: a queue added by a reload is not in it: serial tip until a restart)
        self.drafts: dict[str, bool] = {}
        #: each queue's branch poller (``follow_queues``), and the config repository's
        self._pollers: dict[str, asyncio.Task[None]] = {}
        if load is None and config.source is not None:
            load = file_loader(config.source)
        #: reads, checks and applies the configuration again (None: built in code)
        self.reloader = Reloader(self, load) if load is not None else None
        rt.reloader = self.reloader.reload if self.reloader is not None else None
        self._idle = asyncio.Event()
        #: held by each iteration of the loop (ingest, plan, execute): a reload swaps
        #: the configuration between two iterations, never during one
        self.planning = asyncio.Lock()
        self._stopping = False
        self._init_queues(window_override)

    # -- the parts, by the names the web layer and tests use ---------------------------------
    @property
    def config(self) -> Config:
        return self.runtime.config

    @property
    def engine(self) -> Engine:
        return self.runtime.engine

    @property
    def pool(self) -> Pool:
        return self.runtime.pool

    @property
    def merger(self) -> Merger:
        return self.runtime.merger

    @property
    def sources(self) -> dict[str, ChangeSource]:
        return self.runtime.sources

    @property
    def backends(self) -> dict[str, BuildBackend]:
        return self.runtime.backends

    @property
    def publishers(self) -> dict[str, Publisher]:
        return self.runtime.publishers

    @property
    def plumbing(self) -> Plumbing:
        return self.runtime.plumbing

    @property
    def state_dir(self) -> Path:
        return self.runtime.state_dir

    @property
    def listeners(self) -> list[Listener]:
        return self.runtime.plumbing.listeners

    def wake(self) -> None:
        self.runtime.plumbing.wake()

    def emit(self, topic: str, **fields: Any) -> None:
        self.runtime.plumbing.emit(topic, **fields)

    # -- life cycle ----------------------------------------------------------------------
    def _init_queues(self, window_override: int | None) -> None:
        with session(self.engine) as s:
            for name, queue in self.config.queues.items():
                if s.get(QueueRow, name) is None:
                    current = self.publishers[queue.repo].current()
                    s.add(
                        QueueRow(
                            name=name,
                            window=window_override or queue.window.start,
                            generation=current.number if current else 0,
                        )
                    )
            s.commit()

    async def detect_drafts(self) -> None:
        """Which queues build final builds ahead of the tip as drafts: their backend
        says so (``draft_support``); the others keep a serial tip."""
        for name, queue in self.config.queues.items():
            try:
                why_not = await self.backends[queue.backend].draft_support()
            except Exception as exc:  # an unreachable hub: serial tip until a restart
                why_not = f"draft support unknown: {exc}"
            self.drafts[name] = why_not is None
            if why_not is None:
                log.info("queue %s: final builds start ahead of the tip as drafts", name)
            else:
                log.info("queue %s: serial tip (%s)", name, why_not)

    def queue_state(self, s: Session, name: str) -> QueueState:
        queue = self.config.queues[name]
        state = self.planning_rows.queue_state(s, name, queue.projects, queue.repo)
        return replace(
            state,
            drafts=self.drafts.get(name, False),
            draft_with_jobs=queue.draft_start == "with-jobs",
        )

    async def start(self) -> None:
        """Resume where the last run stopped, then start the loop and branch pollers."""
        self._stopping = False
        self.planning_rows.start()
        await self.detect_drafts()
        resumed = await self.reconciler.resume_orphans(starting=True)
        self.retry_reconfigured_bootstraps()
        swept = await self.builds.sweep_branches()
        abandoned = await cancel_abandoned_runs(
            self.engine, {name: q.jobs for name, q in self.config.queues.items()}
        )
        log.info(
            "started: %d pieces of running work resumed, %d leftover build branches deleted, "
            "%d abandoned external runs cancelled",
            resumed,
            swept,
            abandoned,
        )
        for name in self.config.queues:
            await self.polling.poll_queue(name)
        for source in self.runtime.sources.values():
            await source.start()
        loop = asyncio.get_running_loop()
        self._loop_task = loop.create_task(self._loop(), name="gate-loop")
        self.follow_queues()
        self.wake()

    def follow_queues(self) -> None:
        """A poller for each queue that polls and has none running (at start, and
        after a reload added a queue or gave one a ``poll_interval``)."""
        if self._stopping:
            return
        loop = asyncio.get_running_loop()
        for name, queue in self.config.queues.items():
            task = self._pollers.get(name)
            if queue.poll_interval > 0 and (task is None or task.done()):
                self._pollers[name] = loop.create_task(
                    self.polling.poll_forever(name), name=f"poll-{name}"
                )

    def follow_config(self, follower: Coroutine[Any, Any, None]) -> None:
        """Run the config repository's follower (``gate.config_repo``) until stop."""
        task = asyncio.get_running_loop().create_task(follower, name="config-repo")
        self._pollers[" config-repo"] = task  # not a queue name (names have no space)

    def poll_soon(self, projects: list[str]) -> None:
        """Look at these projects' branches now: a project added by a reload is
        bootstrapped (or its head recorded) as at start."""
        if projects and not self._stopping:
            self.plumbing.spawn(self._poll_projects(projects), name="poll-added-projects")

    async def _poll_projects(self, projects: list[str]) -> None:
        for project in projects:
            if project not in self.config.projects:
                continue
            try:
                await self.polling.poll_project(project)
            except (GitError, OSError) as exc:
                log.warning("polling %s failed: %s", project, exc)

    def retry_reconfigured_bootstraps(self) -> None:
        """A blocked bootstrap whose project's build settings changed since it was built
        is tried again: the change (a fixed lookaside URL, target) may be the fix."""
        with session(self.engine) as s:
            rows = s.exec(select(ItemRow).where(col(ItemRow.active), col(ItemRow.bootstrap))).all()
        for row in rows:
            if not view_of(row).blocked or row.queue not in self.config.queues:
                continue
            if row.project not in self.config.queues[row.queue].projects:
                continue
            if row.config_digest != self.config.build_digest(row.project):
                log.info("item %s: %s's build settings changed", row.id, row.project)
                self.items.step(row.id or 0, transitions.retry)

    async def stop(self) -> None:
        """Stop taking work; cancel what runs here (Koji tasks keep running on the hub)."""
        self._stopping = True
        loops = [*self._pollers.values(), *([self._loop_task] if self._loop_task else [])]
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await self.plumbing.stop()
        await self.pool_sweep.wait()  # a thread: it ends, then the engine goes
        self._pollers.clear()
        for backend in self.backends.values():
            await backend.close()
        for source in self.runtime.sources.values():
            try:
                await source.close()
            except Exception:
                log.exception("closing source %s failed", source.name)
        await self.runtime.deliveries.close()  # accepts taken are committed and answered
        self.planning_rows.stop()
        self.engine.dispose()

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until no delivery is pending and every queue is empty (tests, demo)."""

        async def idle() -> None:
            while not self.is_idle():
                self._idle.clear()
                await self._idle.wait()

        await asyncio.wait_for(idle(), timeout)

    def is_idle(self) -> bool:
        """Nothing for the gate to do until something happens: no pending delivery, no
        work running, no timer due, and no queue with a next step.  Items may be
        left, waiting for people: a blocked post item, or what a blocked bootstrap
        holds back."""
        if self.plumbing.live_tasks():
            return False
        try:
            with session(self.engine) as s:
                unprocessed = col(Delivery.processed_at).is_(None)
                if s.exec(select(Delivery.id).where(unprocessed)).first() is not None:
                    return False
                if s.exec(select(ItemRow.id).where(col(ItemRow.active))).first() is None:
                    return True
                if self.reconciler.has_orphans(s):
                    return False  # a task died: its work is resumed by the loop
                for name in self.config.queues:
                    state = self.queue_state(s, name)
                    if plan(state) or any(i.not_before > state.now for i in state.items):
                        return False
        except Exception as exc:
            if not is_transient(exc):
                raise
            return False  # cannot tell now; the loop wakes the waiter again
        return True

    # -- the loop --------------------------------------------------------------------------
    async def _loop(self) -> None:
        faults = 0
        while not self._stopping:
            await self.plumbing.wait_for_wake(self._next_timer())
            self.plumbing.loop_seen_at = time.time()
            try:
                async with self.planning:
                    await self.ingest.process_deliveries()
                    await self.reconciler.resume_orphans()
                    for name in list(self.config.queues):
                        await self._run_queue(name)
                    await self.retention.sweep_if_due()
                    await self.draft_sweep.sweep_if_due()
                    self.pool_sweep.start_if_due()
                faults = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                faults += 1
                if is_transient(exc):
                    log.warning("gate loop: transient fault (%d in a row): %s", faults, exc)
                else:
                    log.exception("gate loop iteration failed; retrying")
                await backoff(faults)
                self.wake()
            self._idle.set()

    def _next_timer(self) -> float:
        try:
            with session(self.engine) as s:
                times = s.exec(
                    select(ItemRow.not_before).where(col(ItemRow.active), ItemRow.not_before > 0)
                ).all()
        except Exception as exc:
            if not is_transient(exc):
                raise
            return 1.0  # the database is away: look again soon
        soon = min(times, default=time.time() + 30) - time.time()
        return max(0.05, min(soon, 30.0))

    async def _run_queue(self, name: str) -> None:
        for _ in range(MAX_ROUNDS):
            queue = self.config.queues.get(name)
            if queue is None:
                return  # a reload removed it (it had no queued item)
            with session(self.engine) as s:
                state = self.queue_state(s, name)
            actions = plan(state)
            if not actions:
                return
            changed = False
            for action in actions:
                changed |= await self.actions.execute(name, action)
                if isinstance(action, Dequeue):
                    # a dequeue may take others with it (their dependencies left):
                    # the rest of this plan was made for a queue that is gone
                    break
            if not changed:
                return
        log.error("queue %s: planner did not settle after %d rounds", name, MAX_ROUNDS)
