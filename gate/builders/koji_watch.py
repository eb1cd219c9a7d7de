"""Watch every in-flight Koji task with a few multicall requests per poll cycle.

One loop polls all watched tasks together, so the load on the hub does not
grow with the number of builds in the gate:

1. one multicall with ``getTaskInfo`` and ``getTaskChildren`` for every
   watched task (``multicall_batch`` calls per HTTP request, 1000 by default);
2. for the tasks that finished since the last cycle, one multicall with
   ``getTaskResult`` of their failed children (the fault text) and of their
   ``buildArch`` children (the RPMs they wrote), ``listTaskOutput`` of those
   children (file sizes), and ``listBuilds(taskID=...)`` (non-scratch builds);
3. for finished final builds, one multicall with ``listRPMs`` of each build.

Waiters get a :class:`TaskReport` with everything the backend needs to turn
a finished task into a ``BuildOutcome`` without further hub calls.  Polling
retries through outages for as long as they last (the tasks keep running on
the hub); the hub's health record shows the outage meanwhile.  Anything else
that breaks a cycle (a fault on the multicall itself, a reply this module
cannot read) is not retried: every waiter gets a :class:`BackendError` and the
health record keeps the error, so it shows instead of looping in silence.

A fault the hub answers to one call about one task (the multicall itself went
through) shows from the first poll (:meth:`TaskWatcher.task_faults`, the
backend's status and ``/healthz``).  After :data:`MAX_TASK_FAULTS` polls in a
row the wait ends: with :class:`TaskUnreadable` when kojihub's fault says the
task or its output is gone (the build cannot be observed, so it cannot be
trusted), else with a :class:`BackendError` (the watch stops, visibly, until a
restart: a fault that says nothing about the task is the hub's, and must not
reject a change).

Rows are read by Koji's documented contract, not by what one hub happens to
send: ``listBuilds`` rows carry ``build_id`` (only ``getBuild`` also has
``id``), a ``buildArch`` child's build arch is its ``label`` (its ``arch`` is
the host arch that took it), and no list comes back in any particular order
(kojihub's queries have no ``ORDER BY`` unless asked).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import xmlrpc.client
from dataclasses import dataclass, field
from typing import Any

import koji

from gate.builders.base import BackendError, TaskLost, TransientBackendError
from gate.builders.koji_session import Call, HubSession, describe, is_transient

log = logging.getLogger(__name__)

DONE_STATES = ("CLOSED", "FAILED", "CANCELED")
#: cycles in a row a task may get faults from the hub before its waiters give up
MAX_TASK_FAULTS = 10
#: kojihub's own words (koji 2083513a) for a task whose record or output is gone,
#: matched in a per-task call's fault: nothing else says the task itself is lost
TASK_GONE_FAULTS = (
    # kojihub/kojihub.py Task.getResult: the task row is gone (koji-sweep-db
    # --scratch-builds deletes a scratch build's tasks; a DBA may too)
    "No such task",
    # Task.getInfo(strict=True), Task.getRequest, Task.isFinished: executeOne(strict)
    "query returned no rows",
    # list_task_output(strict=True)
    "Task doesn't exist",
    # list_task_output: os.stat of an output file whose target was purged (a scratch
    # build's files moved to scratch/ and cleaned from there); not a GenericError,
    # kojixmlrpc answers it as fault 1 "<class 'FileNotFoundError'>: [Errno 2] ..."
    "FileNotFoundError",
)


def says_task_is_gone(fault: BaseException) -> bool:
    """Does a hub fault about one task say the task (or its output) is gone?

    Only a Koji fault counts (a transport error is an outage, retried elsewhere,
    and never ends up here); :data:`TASK_GONE_FAULTS` are kojihub's texts."""
    if is_transient(fault):
        return False
    text = fault.faultString if isinstance(fault, xmlrpc.client.Fault) else str(fault)
    return any(words in text for words in TASK_GONE_FAULTS)


class TaskUnreadable(BackendError):
    """The hub says a watched task, or what it wrote, is gone: its outcome can no
    longer be read (:func:`says_task_is_gone`, :data:`MAX_TASK_FAULTS` polls in a row)."""

    def __init__(self, task_id: int, problem: str, polls: int) -> None:
        super().__init__(
            f"Koji can no longer report task {task_id}: {problem} ({polls} polls in a row)"
        )
        self.task_id = task_id
        self.problem = problem
        self.polls = polls


def _state_name(code: Any) -> str:
    try:
        return str(koji.TASK_STATES[int(code)])
    except (KeyError, TypeError, ValueError):
        return f"UNKNOWN({code})"


def _child_arch(child: dict[str, Any]) -> str:
    """A child's arch as the status page shows it: a ``buildArch`` child's is its
    ``label`` (the arch it builds for; its ``arch`` is the host arch that took it)."""
    label = child.get("label")
    return str(label if child.get("method") == "buildArch" and label else child.get("arch"))


@dataclass(frozen=True)
class ChildTask:
    """A child of a watched task (``buildArch``, ``rebuildSRPM``, ``tagBuild`` ...)."""

    id: int
    method: str
    arch: str
    state: str
    #: "<fault class>: <text>" of a failed child
    fault: str = ""
    #: ``getTaskResult`` of a closed ``buildArch`` child (``rpms``, ``srpms``, ``logs``)
    result: dict[str, Any] | None = None
    #: file name -> size, from ``listTaskOutput(stat=True)``
    output: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskReport:
    """A finished task as the hub describes it."""

    id: int
    method: str
    state: str
    fault: str = ""
    fault_code: int | None = None
    children: tuple[ChildTask, ...] = ()
    #: the builds this task made (non-scratch ``build`` tasks), with their RPM lists
    builds: tuple[dict[str, Any], ...] = ()
    rpms: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass
class _Watched:
    waiters: list[asyncio.Future[TaskReport]] = field(default_factory=list)
    state: str = "?"
    children: list[dict[str, Any]] = field(default_factory=list)
    #: cycles in a row in which a call about this task came back as a fault
    faults: int = 0
    #: the last such fault: "<call>: <fault>", and whether it says the task is gone
    problem: str = ""
    gone: bool = False


class TaskWatcher:
    """Polls watched tasks in batches and wakes their waiters when they finish."""

    def __init__(self, hub: HubSession, poll_interval: float) -> None:
        self.hub = hub
        self.poll_interval = poll_interval
        self._watched: dict[int, _Watched] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._cycle_done = asyncio.Condition()
        #: completed poll cycles since start
        self.cycles = 0
        #: multicall HTTP requests the last cycle needed (1 to 3)
        self.last_cycle_requests = 0

    def __len__(self) -> int:
        return len(self._watched)

    def progress(self) -> dict[int, dict[str, Any]]:
        """Last seen state of each watched task and its children, for the status page."""
        return {
            task_id: {
                "state": w.state,
                "children": {
                    f"{c.get('method')} {_child_arch(c)}": _state_name(c.get("state"))
                    for c in w.children
                },
            }
            for task_id, w in self._watched.items()
        }

    def task_faults(self) -> dict[int, dict[str, Any]]:
        """Watched tasks whose calls came back as faults in the last poll, for the
        status page and ``/healthz``: the call and the hub's fault, polls in a row,
        and whether the fault says the task is gone."""
        return {
            task_id: {
                "fault": w.problem,
                "polls": w.faults,
                "task_gone": w.gone,
                "gives_up_after": MAX_TASK_FAULTS,
            }
            for task_id, w in sorted(self._watched.items())
            if w.faults
        }

    async def wait(self, task_id: int) -> TaskReport:
        """Wait until ``task_id`` is CLOSED, FAILED or CANCELED; raise TaskLost if unknown."""
        future: asyncio.Future[TaskReport] = asyncio.get_running_loop().create_future()
        self._watched.setdefault(task_id, _Watched()).waiters.append(future)
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._run(), name="koji-task-watcher")
        try:
            return await future
        finally:
            watched = self._watched.get(task_id)
            if watched is not None and future in watched.waiters:
                watched.waiters.remove(future)
                if not watched.waiters:
                    del self._watched[task_id]

    async def wait_cycles(self, n: int = 1) -> None:
        """Return once ``n`` more poll cycles have completed (tests, benchmarks)."""
        target = self.cycles + n
        async with self._cycle_done:
            await self._cycle_done.wait_for(lambda: self.cycles >= target)

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for watched in self._watched.values():
            for future in watched.waiters:
                future.cancel()
        self._watched.clear()

    # -- the loop -------------------------------------------------------------

    async def _run(self) -> None:
        while self._watched:
            try:
                await self._cycle()
            except Exception as exc:
                # Transient faults are retried inside the multicall for as long
                # as they last; what gets here is a refusal of the poll itself
                # or a bug.  The builds may be fine: waiters get a backend error
                # (shown, not retried), never a build failure.
                log.exception("koji task watcher cycle failed")
                error = self.hub.health.record_error(exc)
                cls = TransientBackendError if is_transient(exc) else BackendError
                self._fail_all(cls(f"Koji backend error: {error}"))
            self.cycles += 1
            async with self._cycle_done:
                self._cycle_done.notify_all()
            if self._watched:
                await asyncio.sleep(self.poll_interval)

    def _fail_all(self, exc: BaseException) -> None:
        for watched in self._watched.values():
            for future in watched.waiters:
                if not future.done():
                    future.set_exception(exc)

    async def _cycle(self) -> None:
        ids = sorted(self._watched)
        calls: list[Call] = []
        for task_id in ids:
            calls.append(("getTaskInfo", (task_id,), {}))
            calls.append(("getTaskChildren", (task_id,), {}))
        results = await self.hub.multicall(calls, forever=True)
        self.last_cycle_requests = 1
        finished: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        for i, task_id in enumerate(ids):
            info, children = results[2 * i], results[2 * i + 1]
            watched = self._watched.get(task_id)
            if watched is None:  # its waiters went away during the call
                continue
            if info is None:
                self._resolve(task_id, exc=TaskLost(f"Koji has no task {task_id}"))
                continue
            if isinstance(info, Exception):
                # a fault is not "no such task": losing the task here could get
                # it submitted twice, so keep watching unless it persists
                self._task_fault(task_id, f"getTaskInfo: {describe(info)}", info)
                continue
            if isinstance(children, Exception):
                # without its children a finished task's report would lack its RPMs
                self._task_fault(task_id, f"getTaskChildren: {describe(children)}", children)
                continue
            watched.state = _state_name(info["state"])
            watched.children = children if isinstance(children, list) else []
            if watched.state in DONE_STATES:
                finished.append((info, watched.children))
            else:
                watched.faults = 0  # a task still running answered: no fault this poll
        if finished:
            reports, problems = await self._reports(finished)
            for report in reports:
                self._resolve(report.id, report=report)
            for task_id, (problem, fault) in problems.items():
                self._task_fault(task_id, problem, fault)

    def _task_fault(self, task_id: int, problem: str, fault: BaseException) -> None:
        """One more poll in which the hub answered a call about ``task_id`` with a fault.

        Shown at once (:meth:`task_faults`, the health record's ``last_error``);
        after :data:`MAX_TASK_FAULTS` polls in a row the waiters get
        :class:`TaskUnreadable` if the fault says the task is gone, else a
        :class:`BackendError` (never a transient error: that would be retried
        every few seconds for ever, in silence).
        """
        watched = self._watched.get(task_id)
        if watched is None:
            return
        watched.faults += 1
        watched.problem, watched.gone = problem, says_task_is_gone(fault)
        self.hub.health.last_error = f"task {task_id}: {problem}"
        log.warning("koji task %d: %s (%d in a row)", task_id, problem, watched.faults)
        if watched.faults < MAX_TASK_FAULTS:
            return
        exc: BackendError
        if watched.gone:
            exc = TaskUnreadable(task_id, problem, watched.faults)
        else:
            exc = BackendError(
                f"Koji backend error: the hub keeps answering faults about task {task_id}: "
                f"{problem} ({watched.faults} polls in a row); the task may be fine, "
                "the watch stops until a restart"
            )
        self._resolve(task_id, exc=exc)

    def _resolve(
        self, task_id: int, report: TaskReport | None = None, exc: BaseException | None = None
    ) -> None:
        watched = self._watched.pop(task_id, None)
        if watched is None:
            return
        for future in watched.waiters:
            if future.done():
                continue
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(report)  # type: ignore[arg-type]

    # -- details of finished tasks -----------------------------------------------

    async def _reports(
        self, finished: list[tuple[dict[str, Any], list[dict[str, Any]]]]
    ) -> tuple[list[TaskReport], dict[int, tuple[str, BaseException]]]:
        """Reports for finished tasks, and the tasks whose details came back as faults
        (what failed and the fault)."""
        calls: list[Call] = []
        slots: list[tuple[str, int]] = []  # what each call is for: (kind, task id)
        for info, children in finished:
            state = _state_name(info["state"])
            if state == "FAILED":
                calls.append(("getTaskResult", (info["id"],), {}))
                slots.append(("parent_result", info["id"]))
            if state == "CLOSED" and info["method"] == "build":
                calls.append(("listBuilds", (), {"taskID": info["id"]}))  # rows: build_id
                slots.append(("builds", info["id"]))
            for child in children:
                child_state = _state_name(child["state"])
                if child_state == "FAILED" or (
                    state == "CLOSED" and child["method"] == "buildArch"
                ):
                    calls.append(("getTaskResult", (child["id"],), {}))
                    slots.append(("child_result", child["id"]))
                if state == "CLOSED" and child["method"] == "buildArch":
                    calls.append(("listTaskOutput", (child["id"],), {"stat": True}))
                    slots.append(("child_output", child["id"]))
        results = await self.hub.multicall(calls, forever=True) if calls else []
        if calls:
            self.last_cycle_requests += 1
        found: dict[tuple[str, int], Any] = dict(zip(slots, results, strict=True))

        problems: dict[int, tuple[str, BaseException]] = {}
        for info, children in finished:
            bad = _missing_details(info, children, found)
            if bad is not None:
                problems[info["id"]] = bad
        builds_by_task: dict[int, list[dict[str, Any]]] = {}
        for (kind, task_id), value in found.items():
            if kind == "builds" and isinstance(value, list) and task_id not in problems:
                builds_by_task[task_id] = value
        rpms = await self._rpms([b for bs in builds_by_task.values() for b in bs])
        for task_id, builds in builds_by_task.items():
            failed = [build_id(b) for b in builds if isinstance(rpms.get(build_id(b)), Exception)]
            if failed:
                fault = rpms[failed[0]]
                problems[task_id] = (f"listRPMs of build {failed[0]}: {describe(fault)}", fault)

        reports = []
        for info, children in finished:
            if info["id"] in problems:
                continue
            parent_result = found.get(("parent_result", info["id"]))
            task_builds = tuple(builds_by_task.get(info["id"], ()))
            reports.append(
                TaskReport(
                    id=info["id"],
                    method=info["method"],
                    state=_state_name(info["state"]),
                    fault=describe(parent_result) if isinstance(parent_result, Exception) else "",
                    fault_code=getattr(parent_result, "faultCode", None),
                    children=tuple(_child(c, found) for c in children),
                    builds=task_builds,
                    rpms={build_id(b): rpms.get(build_id(b), []) for b in task_builds},
                )
            )
        return reports, problems

    async def _rpms(self, builds: list[dict[str, Any]]) -> dict[int, Any]:
        """``listRPMs`` of each build: a list, or the fault as an exception."""
        if not builds:
            return {}
        calls: list[Call] = [("listRPMs", (), {"buildID": build_id(b)}) for b in builds]
        results = await self.hub.multicall(calls, forever=True)
        self.last_cycle_requests += 1
        return {build_id(b): value for b, value in zip(builds, results, strict=True)}


def build_id(build: dict[str, Any]) -> int:
    """A build's id from a ``listBuilds`` row (``build_id``) or ``getBuild`` (``id`` too).

    kojihub/kojihub.py RootExports.listBuilds selects ``build.id AS build_id`` and
    no ``id``; get_build returns both.
    """
    value = build.get("build_id", build.get("id"))
    if value is None:
        raise BackendError(f"Koji build row without build_id: {sorted(build)}")
    return int(value)


def _missing_details(
    info: dict[str, Any], children: list[dict[str, Any]], found: dict[tuple[str, int], Any]
) -> tuple[str, BaseException] | None:
    """What a closed build task's report would lack because a call failed (the call
    and its fault), or None."""
    if _state_name(info["state"]) != "CLOSED":
        return None
    builds = found.get(("builds", info["id"]))
    if isinstance(builds, Exception):
        return f"listBuilds: {describe(builds)}", builds
    for child in children:
        for kind, call in (("child_result", "getTaskResult"), ("child_output", "listTaskOutput")):
            value = found.get((kind, child["id"]))
            if isinstance(value, Exception):
                return f"{call} of task {child['id']}: {describe(value)}", value
    return None


def _child(info: dict[str, Any], found: dict[tuple[str, int], Any]) -> ChildTask:
    result = found.get(("child_result", info["id"]))
    output = found.get(("child_output", info["id"]))
    sizes: dict[str, int] = {}
    if isinstance(output, dict):
        for name, st in output.items():
            with contextlib.suppress(KeyError, TypeError, ValueError):
                sizes[name] = int(st["st_size"])
    # kojid labels a buildArch child with its build arch; "arch" is the arch
    # that chose the host (i386 for i686, a concrete arch for noarch)
    arch = info.get("label") if info.get("method") == "buildArch" else None
    return ChildTask(
        id=info["id"],
        method=info["method"],
        arch=arch or info.get("arch") or "",
        state=_state_name(info["state"]),
        fault=describe(result) if isinstance(result, Exception) else "",
        result=result if isinstance(result, dict) else None,
        output=sizes,
    )
