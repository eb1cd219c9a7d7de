"""Health checks: what ``/healthz`` answers, each check named, measured and explained.

The checks, in the order of the answer (limits from the config's ``health``
section, what to do about each in docs/runbook.md):

* ``database`` -- a real query (what the queue checks read: the active items
  with a step running and post items, a count of the others per queue, the
  running builds), in a thread of its own and bounded by ``check_timeout``: a
  database that hangs fails the check instead of hanging ``/healthz``;
* ``loop`` -- the age of the gate loop's last iteration, at most ``loop_max_age``;
* ``queue:<name>`` -- the queue moves.  Work recorded as running (a build, a
  speculative merge, jobs, a tip step) that no live task of this process
  owns fails at once: nothing will ever finish it.  Otherwise, a queue with
  active items fails when no item changed state for ``stall_after`` seconds
  while none of its work runs (runnable work nobody does), or for
  ``stall_after_busy`` seconds while some does (a build, a job or a push that
  never ends);
* ``disk:state_dir``, ``disk:publisher:<name>`` -- free space on the
  filesystem of the state directory and of each repository root, at least
  ``min_free_bytes`` and ``min_free_percent``;
* ``backend:<name>`` -- the error the backend recorded (``problem()``), else
  its active probe (``probe()``), reused for ``probe_interval`` seconds and
  bounded by ``probe_timeout``;
* ``stuck_builds`` -- builds whose watch stopped on a backend error, and drafts
  whose promotion did (a locked tag: ``gate.builds`` ``_promotion_stuck``);
* ``config`` -- the configuration in force (its version and config repository
  commit) and the last one refused, if any (``gate.reload``).  It passes even
  when the newest configuration was refused: the gate runs on the one before,
  and a probe that restarted the daemon on it would turn a bad commit into an
  outage; alert on ``newest_refused`` instead.

Slow checks run at most once at a time: a request arriving while one is
under way waits for that one rather than starting another, so a hung
database or hub costs one thread, however often ``/healthz`` is polled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, SerializeAsAny
from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Engine
from sqlmodel import col

from gate.builders.base import BuildBackend
from gate.builds import build_owner
from gate.config import HealthConfig
from gate.config_status import ConfigStatus
from gate.items import step_owner
from gate.model import BuildState, ItemKind, ItemView, Step, TipStep
from gate.runtime import Runtime
from repo_state.models import BuildRow, ItemRow, epoch

log = logging.getLogger(__name__)

T = TypeVar("T")

#: reads of the database a task starting or ending may disturb (see Health._reading)
_READS = 3


# -- the answer ------------------------------------------------------------------------------


class Check(BaseModel):
    """One named check: passed or not, in a sentence, with what it measured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    ok: bool
    detail: str


class DatabaseCheck(Check):
    #: how long the query took (None: it did not answer)
    seconds: float | None


class LoopCheck(Check):
    #: seconds since the loop last began an iteration (None: it has not run yet)
    age_seconds: float | None
    max_age_seconds: float


class QueueCheck(Check):
    queue: str
    active_items: int
    #: work recorded as running with a live task doing it
    running: list[str]
    #: work recorded as running with no live task (fails the check at once)
    orphaned: list[str]
    #: seconds since an item of the queue last changed state
    idle_seconds: float | None
    #: how long it may stay so: stall_after, or stall_after_busy while work runs
    limit_seconds: float


class DiskCheck(Check):
    path: str
    free_bytes: int | None
    total_bytes: int | None
    free_percent: float | None
    min_free_bytes: int
    min_free_percent: float


class BackendCheck(Check):
    backend: str
    #: seconds since the probe behind this answer ran (None: no probe, see detail)
    probed_seconds_ago: float | None
    #: how long that probe took
    probe_seconds: float | None


class StuckBuildsCheck(Check):
    builds: list[int]


class ConfigCheck(Check):
    """The configuration in force, and the last one refused (``gate.reload``)."""

    version: int
    #: the config repository's commit in force (None: no ``config_repo``)
    commit: str | None
    #: the newest configuration asked for was refused: the one before runs
    newest_refused: bool
    #: why the last refused configuration was refused (empty: none was)
    refused: list[str]


def config_check(status: ConfigStatus) -> ConfigCheck:
    in_force = f"configuration {status.version} in force" + (
        f" (commit {status.commit[:12]})" if status.commit else ""
    )
    refused = status.last_refused
    if refused is None:
        detail = in_force
    else:
        what = f"commit {refused.commit[:12]}" if refused.commit else "a configuration"
        when = "newest" if status.newest_refused else "earlier"
        detail = (
            f"{in_force}; {what} ({refused.trigger}, {refused.at}) was refused, the "
            f"{when} one asked for: {'; '.join(refused.findings)[:500]}"
        )
    return ConfigCheck(
        name="config",
        ok=True,
        detail=detail,
        version=status.version,
        commit=status.commit,
        newest_refused=status.newest_refused,
        refused=list(refused.findings) if refused else [],
    )


class HeldBackCheck(Check):
    """Post items held out of the repository: git and the repository disagree.

    Fails while a project's bootstrap is held back (the project is missing from
    the repository); a blocked push only shows (it waits for people, see
    docs/runbook.md).
    """

    queue: str
    #: "item <id> (<project>): <why>" for each blocked bootstrap
    bootstraps: list[str]
    #: the same for each blocked push
    pushes: list[str]


class HealthReport(BaseModel):
    """The ``/healthz`` document: ``ok`` when every check passed."""

    ok: bool
    #: names of the checks that failed, in the order of ``checks``
    failing: list[str]
    checks: list[SerializeAsAny[Check]]
    # The first /healthz document's keys, which clients and probes read.
    database: bool
    loop_age_seconds: float | None
    #: backend name -> "ok", or why not
    backends: dict[str, str]
    stuck_builds: list[int]
    uptime_seconds: float


# -- what the database says --------------------------------------------------------------------


@dataclass(frozen=True)
class ItemFacts:
    id: int
    queue: str
    project: str
    merge: str
    jobs: str
    tip: str
    tip_state: str
    enqueued_at: float
    kind: str = ItemKind.GATE.value
    bootstrap: bool = False
    forced: bool = False
    failure: str = ""

    @property
    def blocked(self) -> bool:
        """Held out of the repository, waiting for people (``ItemView.blocked``)."""
        view = ItemView(
            id=self.id,
            kind=ItemKind(self.kind),
            project=self.project,
            jobs=Step(self.jobs),
            tip=TipStep(self.tip),
            tip_state=Step(self.tip_state),
            bootstrap=self.bootstrap,
            forced=self.forced,
        )
        return view.blocked


@dataclass(frozen=True)
class BuildFacts:
    id: int
    project: str
    purpose: str
    #: set when the watch stopped on a backend error (a stuck build)
    error: str


@dataclass(frozen=True)
class QueueCount:
    """A queue's active gate items (not post items) taken together."""

    count: int
    #: when the newest of them was enqueued
    newest: float


@dataclass(frozen=True)
class Facts:
    """What the checks use, as few rows as that takes: the active items with a step
    running and every active post item (a post item may be blocked), one count per
    queue of its gate items, and the running builds.

    Not every active item: with hundreds queued, reading each one's columns ten
    times a second (a probe's rate) was CPU the event loop waited for.
    """

    items: tuple[ItemFacts, ...]
    builds: tuple[BuildFacts, ...]
    seconds: float
    #: queue -> its active gate items (post items are all in ``items``)
    gate_items: dict[str, QueueCount] = field(default_factory=dict)


def read_facts(engine: Engine) -> Facts:
    """Query the database (in a thread: this blocks)."""
    started = time.monotonic()
    active = col(ItemRow.active)
    with engine.connect() as conn:
        items = conn.execute(
            select(
                col(ItemRow.id),
                col(ItemRow.queue),
                col(ItemRow.project),
                col(ItemRow.merge),
                col(ItemRow.jobs),
                col(ItemRow.tip),
                col(ItemRow.tip_state),
                col(ItemRow.enqueued_at),
                col(ItemRow.kind),
                col(ItemRow.bootstrap),
                col(ItemRow.forced_by),
                col(ItemRow.failure),
            ).where(
                active,
                or_(
                    col(ItemRow.kind) == ItemKind.POST.value,
                    col(ItemRow.merge) == Step.RUNNING.value,
                    col(ItemRow.jobs) == Step.RUNNING.value,
                    col(ItemRow.tip_state) == Step.RUNNING.value,
                ),
            )
        ).all()
        counts = conn.execute(
            select(col(ItemRow.queue), func.count(), func.max(col(ItemRow.enqueued_at)))
            .where(active, col(ItemRow.kind) != ItemKind.POST.value)
            .group_by(col(ItemRow.queue))
        ).all()
        builds = conn.execute(
            select(
                col(BuildRow.id), col(BuildRow.project), col(BuildRow.purpose), col(BuildRow.error)
            ).where(
                or_(
                    col(BuildRow.state) == BuildState.RUNNING.value,
                    # a promotion stopped on a backend error (gate.builds
                    # _promotion_stuck): the draft, passed, carries the error
                    and_(col(BuildRow.purpose) == "draft", col(BuildRow.error) != ""),
                )
            )
        ).all()
    return Facts(
        items=tuple(
            ItemFacts(i or 0, q, p, m, j, t, ts, epoch(e), k, b, f is not None, why)
            for i, q, p, m, j, t, ts, e, k, b, f, why in items
        ),
        builds=tuple(BuildFacts(i or 0, p, pu, e or "") for i, p, pu, e in builds),
        seconds=time.monotonic() - started,
        gate_items={q: QueueCount(n, epoch(newest) if newest else 0.0) for q, n, newest in counts},
    )


@dataclass(frozen=True)
class Work:
    """One piece of work recorded as running, and the task that must be doing it."""

    owner: str
    what: str


def item_work(item: ItemFacts) -> Iterator[Work]:
    """An item's running steps; each is done by a task registered as ``step_owner``."""
    who = f"item {item.id} ({item.project})"
    if item.merge == Step.RUNNING:
        yield Work(step_owner("merge", item.id), f"{who}: speculative merge")
    if item.jobs == Step.RUNNING:
        yield Work(step_owner("jobs", item.id), f"{who}: jobs")
    if item.tip_state == Step.RUNNING:
        yield Work(step_owner("tip", item.id), f"{who}: tip step {item.tip}")


def build_work(build: BuildFacts) -> Work:
    return Work(build_owner(build.id), f"build {build.id} ({build.purpose}, {build.project})")


@dataclass(frozen=True)
class Reading:
    """The database's facts and which of their work had a live owner, as of one instant."""

    facts: Facts | None
    #: why there are no facts
    error: str = ""
    owned: frozenset[str] = frozenset()
    #: False when tasks kept starting or ending during every read (orphans not judged)
    consistent: bool = False


# -- the checks, as pure verdicts ----------------------------------------------------------------


def database_check(reading: Reading) -> DatabaseCheck:
    if reading.facts is None:
        return DatabaseCheck(name="database", ok=False, detail=reading.error, seconds=None)
    seconds = reading.facts.seconds
    return DatabaseCheck(
        name="database", ok=True, detail=f"answered in {seconds:.3f} s", seconds=seconds
    )


def loop_check(seen_at: float, now: float, cfg: HealthConfig) -> LoopCheck:
    if not seen_at:
        return LoopCheck(
            name="loop",
            ok=False,
            detail="the loop has not run yet (the daemon is starting: recovery, first branch poll)",
            age_seconds=None,
            max_age_seconds=cfg.loop_max_age,
        )
    age = now - seen_at
    ok = age < cfg.loop_max_age
    return LoopCheck(
        name="loop",
        ok=ok,
        detail=f"last iteration {age:.0f} s ago"
        + ("" if ok else f", more than {cfg.loop_max_age:g} s: the loop is wedged or dead"),
        age_seconds=age,
        max_age_seconds=cfg.loop_max_age,
    )


def queue_check(
    queue: str,
    projects: frozenset[str],
    reading: Reading,
    last_change: float,
    now: float,
    cfg: HealthConfig,
    judge_orphans: bool,
) -> QueueCheck:
    """The queue's verdict; ``last_change`` is when an item of it last changed state."""
    name = f"queue:{queue}"
    if reading.facts is None:
        return QueueCheck(
            name=name,
            ok=False,
            detail="unknown: the database did not answer",
            queue=queue,
            active_items=0,
            running=[],
            orphaned=[],
            idle_seconds=None,
            limit_seconds=cfg.stall_after,
        )
    # a blocked post item waits for people, not for the gate (held_back_check)
    items = [i for i in reading.facts.items if i.queue == queue and not i.blocked]
    gate_items = reading.facts.gate_items.get(queue, QueueCount(0, 0.0))
    # the gate items read one by one (a step running) are in the count too
    posts = [i for i in items if i.kind == ItemKind.POST.value]
    work = [w for i in items for w in item_work(i)] + [
        build_work(b) for b in reading.facts.builds if b.project in projects and not b.error
    ]
    running = [w.what for w in work if w.owner in reading.owned]
    orphaned = [w.what for w in work if w.owner not in reading.owned]
    newest = max((i.enqueued_at for i in posts), default=gate_items.newest)
    newest = max(newest, gate_items.newest)
    count = gate_items.count + len(posts)  # active items not blocked
    idle = now - max(last_change, newest)
    limit = cfg.stall_after_busy if running else cfg.stall_after
    doc: dict[str, Any] = {
        "name": name,
        "queue": queue,
        "active_items": count,
        "running": running,
        "orphaned": orphaned if judge_orphans else [],
        "idle_seconds": idle,
        "limit_seconds": limit,
    }
    if orphaned and judge_orphans:
        detail = f"recorded as running with no task of this process doing it: {'; '.join(orphaned)}"
        return QueueCheck(ok=False, detail=detail, **doc)
    if not count:
        return QueueCheck(ok=True, detail="no active items", **doc)
    doing = f"running: {'; '.join(running)}" if running else "nothing running"
    active = f"{count} active item{'' if count == 1 else 's'}"
    if idle > limit:
        detail = f"{active} and no item changed state for {idle:.0f} s (limit {limit:g} s, {doing})"
        return QueueCheck(ok=False, detail=detail, **doc)
    detail = f"{active}, last change {idle:.0f} s ago, {doing}"
    if orphaned:
        # starting (recovery attaches the tasks), or tasks kept starting and
        # ending while the database was read: judged at the next request
        detail += f"; not yet judged: {'; '.join(orphaned)}"
    return QueueCheck(ok=True, detail=detail, **doc)


@dataclass(frozen=True)
class DiskFacts:
    path: Path
    free: int
    total: int


def measure_disk(path: Path) -> DiskFacts:
    """``statvfs`` of ``path``, or of its nearest existing parent (a root not made yet)."""
    where = path
    while not where.exists() and where != where.parent:
        where = where.parent
    st = os.statvfs(where)
    # f_bavail: what an unprivileged user may still write (the daemon's user);
    # f_blocks counts the blocks reserved for root too
    return DiskFacts(path=path, free=st.f_bavail * st.f_frsize, total=st.f_blocks * st.f_frsize)


def disk_check(name: str, path: Path, facts: DiskFacts | str, cfg: HealthConfig) -> DiskCheck:
    floor_bytes, floor_percent = int(cfg.min_free_bytes), cfg.min_free_percent
    floor = f"floor {_size(floor_bytes)}" + (f" and {floor_percent:g} %" if floor_percent else "")
    if isinstance(facts, str):
        return DiskCheck(
            name=name,
            ok=False,
            detail=f"{path}: {facts}",
            path=str(path),
            free_bytes=None,
            total_bytes=None,
            free_percent=None,
            min_free_bytes=floor_bytes,
            min_free_percent=floor_percent,
        )
    percent = 100.0 * facts.free / facts.total if facts.total else 0.0
    ok = facts.free >= floor_bytes and percent >= floor_percent
    return DiskCheck(
        name=name,
        ok=ok,
        detail=f"{_size(facts.free)} free of {_size(facts.total)} ({percent:.1f} %) at {path}"
        + ("" if ok else f", below the {floor}"),
        path=str(path),
        free_bytes=facts.free,
        total_bytes=facts.total,
        free_percent=percent,
        min_free_bytes=floor_bytes,
        min_free_percent=floor_percent,
    )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def held_back_check(queue: str, reading: Reading) -> HeldBackCheck:
    name = f"held_back:{queue}"
    if reading.facts is None:
        detail = "unknown: the database did not answer"
        return HeldBackCheck(
            name=name, ok=False, detail=detail, queue=queue, bootstraps=[], pushes=[]
        )
    blocked = [i for i in reading.facts.items if i.queue == queue and i.blocked]
    bootstraps = [f"item {i.id} ({i.project}): {i.failure}" for i in blocked if i.bootstrap]
    pushes = [f"item {i.id} ({i.project}): {i.failure}" for i in blocked if not i.bootstrap]
    if bootstraps:
        projects = ", ".join(sorted({i.project for i in blocked if i.bootstrap}))
        detail = f"not in the repository, their bootstrap failed: {projects}"
    elif pushes:
        projects = ", ".join(sorted({i.project for i in blocked}))
        detail = f"git ahead of the repository, pushes held back: {projects}"
    else:
        detail = "git and the repository agree"
    return HeldBackCheck(
        name=name,
        ok=not bootstraps,
        detail=detail,
        queue=queue,
        bootstraps=bootstraps,
        pushes=pushes,
    )


def stuck_builds_check(reading: Reading) -> StuckBuildsCheck:
    if reading.facts is None:
        return StuckBuildsCheck(
            name="stuck_builds",
            ok=False,
            detail="unknown: the database did not answer",
            builds=[],
        )
    stuck = [b for b in reading.facts.builds if b.error]
    if not stuck:
        return StuckBuildsCheck(
            name="stuck_builds", ok=True, detail="no build stopped on a backend error", builds=[]
        )
    detail = "; ".join(f"build {b.id} ({b.purpose}, {b.project}): {b.error}" for b in stuck)
    return StuckBuildsCheck(
        name="stuck_builds", ok=False, detail=detail, builds=[b.id for b in stuck]
    )


# -- running slow checks ------------------------------------------------------------------------


def describe(exc: BaseException) -> str:
    """The exception in one line (a database error's first line: no SQL, no parameters)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


async def in_own_thread(fn: Callable[[], T], name: str) -> T:
    """``fn()`` in a daemon thread of its own, named ``name``.

    Not the loop's default executor: a call that never returns (a database
    or a network filesystem that hangs) must neither hold a thread the
    daemon's work shares nor keep the process from exiting.  Each name has
    one thread that runs its calls in turn (:class:`_Lane`; the checks run one
    at a time, ``Flight``): ``threading.Thread.start`` waits until the new
    thread runs, which on a busy machine held the event loop for milliseconds
    per ``/healthz`` (docs/benchmarks.md).  A call made while the name's
    thread is busy (hung) gets a new thread, as every call used to.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():  # the caller gave up
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def run() -> None:
        value: Any
        try:
            value, ok = fn(), True
        except BaseException as exc:
            value, ok = exc, False
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(settle, ok, value)

    lane = _lanes.setdefault(name, _Lane(name))
    if not lane.offer(run):
        threading.Thread(target=run, name=name, daemon=True).start()
    return await future


class _Lane:
    """One daemon thread that runs the calls it is given, one at a time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._busy = False
        self._thread: threading.Thread | None = None

    def offer(self, call: Callable[[], None]) -> bool:
        """Run ``call`` in the lane's thread if it is idle; False if it is busy."""
        with self._lock:
            if self._busy:
                return False
            self._busy = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._thread.start()
        self._calls.put(call)
        return True

    def _serve(self) -> None:
        while True:
            call = self._calls.get()
            try:
                call()
            finally:
                with self._lock:
                    self._busy = False


#: name -> its lane (process-wide: a lane serves any event loop, each call settles its own)
_lanes: dict[str, _Lane] = {}


class Flight(Generic[T]):
    """At most one run of ``work`` at a time; callers share the run under way."""

    def __init__(self, work: Callable[[], Coroutine[Any, Any, T]], name: str) -> None:
        self._work = work
        self._name = name
        self._task: asyncio.Task[T] | None = None
        self._started = 0.0

    async def result(self, timeout: float) -> T:
        """The result of the run under way, or of a new one; TimeoutError after ``timeout``."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._work(), name=self._name)
            self._task.add_done_callback(_retrieved)
            self._started = time.monotonic()
        return await asyncio.wait_for(asyncio.shield(self._task), timeout)

    def waited(self) -> float:
        """Seconds the run under way has been going."""
        return time.monotonic() - self._started

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _retrieved(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # every caller may have given up: not "never retrieved"


@dataclass
class _Probe:
    """A backend's last probe: its answer, when it ran, how long it took."""

    problem: str | None
    at: float
    seconds: float


class Health:
    """Computes the report for one runtime; keeps probe results and runs in flight."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._reads = Flight(self._read_consistently, "health-database")
        self._disks = Flight(self._measure_disks, "health-disks")
        self._probes: dict[str, _Probe] = {}
        self._probing = {
            name: Flight(partial(self._probe, name, backend), f"health-probe-{name}")
            for name, backend in rt.backends.items()
        }
        #: the failing checks of the last report, logged when they change
        self._failing: dict[str, str] = {}

    @property
    def cfg(self) -> HealthConfig:
        return self.rt.config.health

    async def report(self) -> HealthReport:
        reading, disks, backends = await asyncio.gather(
            self._reading(), self._disk_checks(), self._backend_checks()
        )
        plumbing, config, now = self.rt.plumbing, self.rt.config, time.time()
        judge_orphans = plumbing.loop_seen_at > 0 and reading.consistent
        queues = [
            queue_check(
                name,
                frozenset(queue.projects),
                reading,
                max(plumbing.progress_at.get(name, 0.0), plumbing.started_at),
                now,
                self.cfg,
                judge_orphans,
            )
            for name, queue in config.queues.items()
        ]
        database, loop = database_check(reading), loop_check(plumbing.loop_seen_at, now, self.cfg)
        stuck = stuck_builds_check(reading)
        held = [held_back_check(name, reading) for name in config.queues]
        configured = config_check(self.rt.config_status)
        checks: list[Check] = [
            database, loop, *queues, *held, *disks, *backends, stuck, configured
        ]  # fmt: skip
        self._log_changes(checks)
        return HealthReport(
            ok=all(c.ok for c in checks),
            failing=[c.name for c in checks if not c.ok],
            checks=checks,
            database=database.ok,
            loop_age_seconds=loop.age_seconds,
            backends={c.backend: "ok" if c.ok else c.detail for c in backends},
            stuck_builds=stuck.builds,
            uptime_seconds=now - plumbing.started_at,
        )

    def _log_changes(self, checks: list[Check]) -> None:
        """Log a check that starts failing (with why) or passes again; not every poll."""
        failing = {c.name: c.detail for c in checks if not c.ok}
        for name in failing.keys() - self._failing.keys():
            log.warning("health check %s failing: %s", name, failing[name])
        for name in self._failing.keys() - failing.keys():
            log.info("health check %s passes again", name)
        self._failing = failing

    async def close(self) -> None:
        """Cancel the checks under way (the web app is shutting down)."""
        flights: list[Flight[Any]] = [self._reads, self._disks, *self._probing.values()]
        for flight in flights:
            await flight.close()

    # -- database ------------------------------------------------------------------------------
    async def _reading(self) -> Reading:
        timeout = self.cfg.check_timeout
        try:
            return await self._reads.result(timeout)
        except TimeoutError:
            return Reading(None, f"no answer within {timeout:g} s ({self._waiting(self._reads)})")
        except Exception as exc:
            return Reading(None, describe(exc))

    async def _read_consistently(self) -> Reading:
        """Read the database so that its running work and the live tasks agree.

        Work is recorded as running before its task starts and as finished
        before its task ends, so a read that no task started or ended around
        sees exactly the work the live tasks own; otherwise it reads again.
        """
        plumbing = self.rt.plumbing
        for _ in range(_READS):
            before = plumbing.live_tasks()
            facts = await in_own_thread(partial(read_facts, self.rt.engine), "health-database")
            if plumbing.live_tasks() == before:
                return Reading(facts, owned=self._owned(facts), consistent=True)
        return Reading(facts, owned=self._owned(facts), consistent=False)

    def _owned(self, facts: Facts) -> frozenset[str]:
        work = [w for i in facts.items for w in item_work(i)] + [
            build_work(b) for b in facts.builds
        ]
        return frozenset(w.owner for w in work if self.rt.plumbing.owner(w.owner) is not None)

    # -- disks ---------------------------------------------------------------------------------
    def _disk_paths(self) -> list[tuple[str, Path]]:
        return [("disk:state_dir", self.rt.state_dir)] + [
            (f"disk:publisher:{name}", Path(publisher.root))
            for name, publisher in self.rt.publishers.items()
        ]

    async def _measure_disks(self) -> list[DiskFacts | str]:
        def measure_all() -> list[DiskFacts | str]:
            out: list[DiskFacts | str] = []
            for _, path in self._disk_paths():
                try:
                    out.append(measure_disk(path))
                except OSError as exc:
                    out.append(f"cannot measure: {describe(exc)}")
            return out

        return await in_own_thread(measure_all, "health-disks")

    async def _disk_checks(self) -> list[DiskCheck]:
        paths, timeout = self._disk_paths(), self.cfg.check_timeout
        measured: list[DiskFacts | str]
        try:
            measured = await self._disks.result(timeout)
        except TimeoutError:
            waiting = f"statvfs did not answer within {timeout:g} s ({self._waiting(self._disks)})"
            measured = [waiting] * len(paths)
        return [
            disk_check(name, path, facts, self.cfg)
            for (name, path), facts in zip(paths, measured, strict=True)
        ]

    # -- backends ------------------------------------------------------------------------------
    async def _probe(self, name: str, backend: BuildBackend) -> _Probe:
        started = time.monotonic()
        try:
            problem = await asyncio.wait_for(backend.probe(), self.cfg.probe_timeout)
        except TimeoutError:
            problem = f"the probe did not finish within {self.cfg.probe_timeout:g} s"
        except Exception as exc:
            problem = f"the probe failed: {describe(exc)}"
        probe = _Probe(problem, time.monotonic(), time.monotonic() - started)
        self._probes[name] = probe
        return probe

    async def _backend_checks(self) -> list[BackendCheck]:
        return list(
            await asyncio.gather(*(self._backend_check(n, b) for n, b in self.rt.backends.items()))
        )

    async def _backend_check(self, name: str, backend: BuildBackend) -> BackendCheck:
        check = partial(BackendCheck, name=f"backend:{name}", backend=name)
        problem = backend.problem()
        if problem is not None:
            return check(ok=False, detail=problem, probed_seconds_ago=None, probe_seconds=None)
        probe = self._probes.get(name)
        if probe is None or time.monotonic() - probe.at >= self.cfg.probe_interval:
            try:
                # the probe bounds itself; the margin only covers its cancellation
                probe = await self._probing[name].result(self.cfg.probe_timeout + 5)
            except TimeoutError:
                detail = f"the probe did not end within {self.cfg.probe_timeout:g} s"
                return check(ok=False, detail=detail, probed_seconds_ago=None, probe_seconds=None)
        return check(
            ok=probe.problem is None,
            detail=probe.problem or "reachable",
            probed_seconds_ago=time.monotonic() - probe.at,
            probe_seconds=probe.seconds,
        )

    @staticmethod
    def _waiting(flight: Flight[Any]) -> str:
        return f"the check started {flight.waited():.0f} s ago is still waiting"
