"""The daemon's task plumbing: background tasks, wake-ups, listeners, liveness.

Every stage that starts slow work (a build watch, a job run, a push) spawns
it here, bound to an item when the work belongs to the item's current
attempt, so a reset can cancel it; every recorded outcome wakes the loop; and
every transition is emitted to listeners (the demo's output, tests, status
streams).  ``/healthz`` (``gate.health``) reads the liveness kept here: when
the loop last ran, when each queue last progressed, and which tasks are alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from functools import partial
from typing import Any

log = logging.getLogger("rpmgate")

Listener = Callable[[dict[str, Any]], None]


class Plumbing:
    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: tasks doing work for one item's current attempt, cancelled on reset/dequeue
        self._item_tasks: dict[int, set[asyncio.Task[Any]]] = {}
        #: recorded work (``"build:7"``) -> the task doing it
        self._owners: dict[str, asyncio.Task[Any]] = {}
        self.started_at = time.time()
        #: when the loop last began an iteration (0: never); /healthz reads it
        self.loop_seen_at = 0.0
        #: when an item of each queue last changed state (see :meth:`note_progress`)
        self.progress_at: dict[str, float] = {}
        #: the daemon is stopping: tasks are cancelled because it stops, not because
        #: their work was superseded (an external job then leaves its run for the next start)
        self.stopping = False

    def spawn(
        self,
        coro: Coroutine[Any, Any, Any],
        name: str,
        item_id: int | None = None,
        owns: Iterable[str] = (),
    ) -> asyncio.Task[Any]:
        """Run ``coro`` in the background.

        ``item_id`` binds the task to an item's current attempt (a reset
        cancels it); ``owns`` names the recorded work the task is responsible
        for (``"build:7"``, ``"tip:3"``): :meth:`owner` says whether a live
        task holds it, which is how a row left ``running`` by a task that died
        is found (``gate.reconcile``).
        """
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        if item_id is not None:
            self._item_tasks.setdefault(item_id, set()).add(task)
            task.add_done_callback(lambda t: self._item_tasks.get(item_id, set()).discard(t))
        for key in owns:
            self._owners[key] = task
            task.add_done_callback(partial(self._disown, key))
        return task

    def owner(self, key: str) -> asyncio.Task[Any] | None:
        """The live task responsible for the work named ``key``, if any."""
        task = self._owners.get(key)
        return task if task is not None and not task.done() else None

    def _disown(self, key: str, task: asyncio.Task[Any]) -> None:
        if self._owners.get(key) is task:
            del self._owners[key]

    def wake_after(self, delay: float) -> None:
        """Wake the loop in ``delay`` seconds (a retry that is due then)."""
        asyncio.get_running_loop().call_later(delay, self.wake)

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

    def note_progress(self, queue: str) -> None:
        """An item of ``queue`` changed state (``/healthz`` fails a queue that stops doing so)."""
        self.progress_at[queue] = time.time()

    def live_tasks(self) -> frozenset[asyncio.Task[Any]]:
        """The tasks alive now; ``/healthz`` compares two of these around a database read
        to know that no work started or ended while it read."""
        return frozenset(t for t in self._tasks if not t.done())

    async def wait_for_wake(self, timeout: float) -> None:
        """Sleep until :meth:`wake` or ``timeout`` seconds; then clear the wake-up."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    def emit(self, topic: str, **fields: Any) -> None:
        """Tell listeners what just happened."""
        event = {"topic": topic, "time": time.time(), **fields}
        log.debug("event %s", event)
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("listener failed")

    async def settle(self) -> None:
        """Wait until every task, and every task those start, has ended (tests, tools)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def settle_named(self, prefix: str) -> None:
        """Wait until every task named ``prefix…`` has ended, those it starts included
        (tests: every report sent while the jobs are held)."""
        while tasks := [t for t in self._tasks if t.get_name().startswith(prefix)]:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self) -> None:
        """Cancel every task and wait for them."""
        self.stopping = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
