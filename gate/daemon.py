"""The daemon: runs the planner on events and executes what it decides.

The loop reads top to bottom::

    wait for a wake-up (an event, a finished build/job, a timer)
    ingest stored deliveries into changes and items
    for each queue: load its state, plan, execute the actions

Every action records its intent in the database before any side effect and
its outcome after, so :meth:`Gate.start` can resume after ``kill -9``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from gate import ingest, testing, tip
from gate.builders.base import BuildBackend
from gate.builders.local import LocalBackend
from gate.builders.sandbox import Sandbox
from gate.builds import Builds
from gate.config import Config, KojiBackendConfig, LocalBackendConfig
from gate.merger import Merger
from gate.planner import (
    Action,
    CancelBuild,
    Dequeue,
    FinalBuild,
    MergeChange,
    Prepare,
    Publish,
    RunJobs,
    StartAttempt,
    plan,
)
from gate.queue_view import load_queue_state
from gate.sources.plaingit import PlainGitSource
from publishers.createrepo import Publisher
from repo_state.db import make_engine, migrate, session
from repo_state.models import ChangeRow, Delivery, ItemRow, QueueRow, utcnow
from repo_state.pool import Pool

log = logging.getLogger("rpmgate")

Listener = Callable[[dict[str, Any]], None]


def make_sandbox(config: Config) -> Sandbox:
    """How builds run a change's spec on this host (checked once, at start)."""
    return Sandbox.create(config.sandbox.bubblewrap, config.sandbox.user,
                          hidden=config.secret_paths())


def make_backends(config: Config, pool: Pool,
                  sandbox: Sandbox | None = None) -> dict[str, BuildBackend]:
    sandbox = sandbox or make_sandbox(config)
    backends: dict[str, BuildBackend] = {}
    for name, cfg in config.backends.items():
        if isinstance(cfg, LocalBackendConfig):
            backends[name] = LocalBackend(config.state_dir / "builds" / name, pool, cfg.workers,
                                          sandbox=sandbox)
        elif isinstance(cfg, KojiBackendConfig):
            from gate.builders.koji import KojiBackend

            backends[name] = KojiBackend(cfg.koji_config(), pool,
                                         config.state_dir / "backends" / name, sandbox=sandbox)
    return backends


class Gate:
    """One gate daemon: its queues, their state, the parts that do the work."""

    def __init__(self, config: Config, *, backends: dict[str, BuildBackend] | None = None,
                 window_override: int | None = None) -> None:
        self.config = config
        self.state_dir = Path(config.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(config.db_url)
        migrate(self.engine)
        self.pool = Pool(self.state_dir / "pool")
        self.merger = Merger(self.state_dir / "git")
        #: where changes come from and are merged to (one driver so far: plain git)
        self.source = PlainGitSource(config, self.merger)
        self.backends = backends if backends is not None else make_backends(config, self.pool)
        self.publishers = {
            name: Publisher(p.root, self.pool, arches=p.arches, keep=p.keep)
            for name, p in config.publishers.items()
        }
        self.builds = Builds(self)
        self.listeners: list[Listener] = []
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: tasks doing work for one item's current attempt, cancelled on reset/dequeue
        self._item_tasks: dict[int, set[asyncio.Task[Any]]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._pollers: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._stopping = False
        self.started_at = time.time()
        self.last_loop_at = 0.0
        self._init_queues(window_override)

    # -- plumbing used by the other modules -----------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, Any], name: str,
              item_id: int | None = None) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        if item_id is not None:
            self._item_tasks.setdefault(item_id, set()).add(task)
            task.add_done_callback(lambda t: self._item_tasks.get(item_id, set()).discard(t))
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())
        self.wake()

    def cancel_item_tasks(self, item_id: int) -> None:
        for task in list(self._item_tasks.pop(item_id, ())):
            task.cancel()

    def wake(self) -> None:
        self._wake.set()

    def emit(self, topic: str, **fields: Any) -> None:
        """Tell listeners (demo output, tests, status streams) what just happened."""
        event = {"topic": topic, "time": time.time(), **fields}
        log.debug("event %s", event)
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("listener failed")

    def publisher_for(self, queue: str) -> Publisher:
        return self.publishers[self.config.queues[queue].repo]

    # -- life cycle ----------------------------------------------------------------------
    def _init_queues(self, window_override: int | None) -> None:
        with session(self.engine) as s:
            for name, queue in self.config.queues.items():
                row = s.get(QueueRow, name)
                if row is None:
                    current = self.publishers[queue.repo].current()
                    s.add(QueueRow(name=name, window=window_override or queue.window.start,
                                   generation=current.number if current else 0))
            s.commit()

    async def start(self) -> None:
        """Resume where the last run stopped, then start the loop and branch pollers."""
        self._stopping = False
        await tip.recover(self)
        testing.recover(self)
        resumed = self.builds.recover()
        swept = await self.builds.sweep_branches()
        log.info("started: %d builds re-attached, %d leftover build branches deleted",
                 resumed, swept)
        for name in self.config.queues:
            await ingest.poll_queue(self, name)
        self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name="gate-loop")
        for name in self.config.queues:
            self._pollers.append(asyncio.get_running_loop().create_task(
                ingest.poll_forever(self, name), name=f"poll-{name}"))
        self.wake()

    async def stop(self) -> None:
        """Stop taking work; cancel what runs here (Koji tasks keep running on the hub)."""
        self._stopping = True
        for task in [*self._pollers, *([self._loop_task] if self._loop_task else [])]:
            task.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._pollers, *self._tasks,
                             *([self._loop_task] if self._loop_task else []),
                             return_exceptions=True)
        self._pollers.clear()
        for backend in self.backends.values():
            await backend.close()
        self.engine.dispose()

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until no delivery is pending and every queue is empty (tests, demo)."""
        async def idle() -> None:
            while not self.is_idle():
                self._idle.clear()
                await self._idle.wait()
        await asyncio.wait_for(idle(), timeout)

    def is_idle(self) -> bool:
        with session(self.engine) as s:
            unprocessed = col(Delivery.processed_at).is_(None)
            pending = s.exec(select(Delivery.id).where(unprocessed)).first()
            active = s.exec(select(ItemRow.id).where(col(ItemRow.active))).first()
        return pending is None and active is None

    # -- the loop --------------------------------------------------------------------------
    async def _loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._next_timer())
            self._wake.clear()
            self.last_loop_at = time.time()
            try:
                await ingest.process_deliveries(self)
                for name in self.config.queues:
                    await self._run_queue(name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gate loop iteration failed; retrying")
                await asyncio.sleep(1)
                self.wake()
            self._idle.set()

    def _next_timer(self) -> float:
        with session(self.engine) as s:
            times = s.exec(select(ItemRow.not_before).where(
                col(ItemRow.active), ItemRow.not_before > 0)).all()
        soon = min(times, default=time.time() + 30) - time.time()
        return max(0.05, min(soon, 30.0))

    async def _run_queue(self, name: str) -> None:
        queue = self.config.queues[name]
        for _ in range(200):
            with session(self.engine) as s:
                state = load_queue_state(s, name, queue.projects, queue.repo)
            actions = plan(state)
            if not actions:
                return
            changed = False
            for action in actions:
                changed |= await self._execute(name, action)
            if not changed:
                return
        log.error("queue %s: planner did not settle after 200 rounds", name)

    async def _execute(self, queue: str, action: Action) -> bool:
        match action:
            case StartAttempt(item_id, base):
                testing.start_attempt(self, item_id, base)
            case Prepare(item_id):
                testing.prepare(self, queue, item_id)
            case RunJobs(item_id):
                testing.run_jobs(self, queue, item_id)
            case FinalBuild(item_id):
                tip.final_build(self, queue, item_id)
            case MergeChange(item_id):
                tip.merge_change(self, queue, item_id)
            case Publish(item_ids):
                tip.publish(self, queue, item_ids)
            case Dequeue(item_id, merged, reason):
                self.dequeue(queue, item_id, "merged" if merged else "rejected", reason)
            case CancelBuild(key):
                await self.builds.cancel(key)
                return False
        return True

    # -- queue bookkeeping -------------------------------------------------------------------
    def update_item(self, item_id: int, attempt: int | None = None, **fields: object) -> ItemRow:
        """Update an item and wake the loop; with ``attempt``, only if it is still on it.

        Work for an attempt that was reset meanwhile must not overwrite the
        new attempt's state: its outcome is simply dropped.
        """
        with session(self.engine) as s:
            item = s.get(ItemRow, item_id)
            assert item is not None
            if attempt is not None and (item.attempt != attempt or not item.active):
                return item
            for name, value in fields.items():
                setattr(item, name, value)
            s.add(item)
            s.commit()
            s.refresh(item)
        self.wake()
        return item

    def dequeue(self, queue: str, item_id: int, result: str, reason: str = "") -> None:
        """Remove an item and report it; adjust the window like Zuul does."""
        from gate.planner import window_after_failure, window_after_merge

        window = self.config.queues[queue].window
        with session(self.engine) as s:
            item = s.get(ItemRow, item_id)
            if item is None or not item.active:
                return
            item.active, item.result, item.finished_at = False, result, utcnow()
            if reason:
                item.failure = reason
            change = s.get(ChangeRow, item.change_id)
            if change is not None:
                change.state = {"merged": "merged", "rejected": "rejected"}.get(result, result)
                change.reason, change.updated_at = reason, utcnow()
                s.add(change)
            qrow = s.get(QueueRow, queue)
            assert qrow is not None
            if item.kind == "gate" and result == "merged":
                qrow.window = window_after_merge(qrow.window, window.increase)
            elif result == "rejected":
                qrow.window = window_after_failure(qrow.window, window.floor,
                                                   window.decrease_factor)
            s.add_all([item, qrow])
            s.commit()
        self.cancel_item_tasks(item_id)
        testing.drop_speculative_repos(self, item_id)
        if change is not None:
            self.spawn(self.source.report(item.project, change.ref, result, reason),
                       f"report-{item_id}")
        self.emit("item", item=item_id, queue=queue, project=item.project, kind=item.kind,
                  state=result, reason=reason, change=item.change_id,
                  generation=item.generation)
        log.info("item %s (%s) %s%s", item_id, item.project, result,
                 f": {reason}" if reason else "")
