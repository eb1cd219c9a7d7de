"""Transient faults are retried, never recorded as outcomes; nothing answered 202 is lost.

The faults are real: PostgreSQL connections terminated with
``pg_terminate_backend`` from another session while the classic case runs,
SQLite's write lock held by another connection past the gate's busy timeout,
a git daemon stopped while a change is proposed, ``ENOSPC`` from ``/dev/full``.
"""

from __future__ import annotations

import asyncio
import errno
import random
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlmodel import select

from gate.attempts import Attempts
from gate.builds import Builds
from gate.config import parse_config
from gate.daemon import Gate
from gate.deliveries import store_delivery
from gate.demo_world import CLASSIC_CHANGES as CLASSIC
from gate.demo_world import World
from gate.faults import is_transient, until_it_lands
from gate.merger import GitError, Merger, RefNotFound
from repo_state.db import make_engine, session
from repo_state.models import BuildRow, Delivery
from tests.conftest import CEILO_801, NOVA_1201, POSTGRES_URL, postgres_schema, propose_classic
from tests.invariants import check_invariants, failure_of, results

CLASSIC_OUTCOME = {"merged": ["A", "B"], "rejected": ["C", "D"]}


# -- classification ------------------------------------------------------------------------


def test_a_locked_sqlite_database_is_transient(tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    engine = make_engine(f"sqlite:///{db}?timeout=0.1")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    holder = sqlite3.connect(db)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(OperationalError) as caught, engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
        assert "database is locked" in str(caught.value)
        assert is_transient(caught.value)
    finally:
        holder.rollback()
        holder.close()
        engine.dispose()


def test_a_full_disk_is_transient_and_a_missing_file_is_not(tmp_path: Path) -> None:
    with pytest.raises(OSError) as full, open("/dev/full", "wb") as out:
        out.write(b"x")
        out.flush()
    assert full.value.errno == errno.ENOSPC
    assert is_transient(full.value)
    with pytest.raises(FileNotFoundError) as missing:
        (tmp_path / "nope").read_bytes()
    assert not is_transient(missing.value)
    assert not is_transient(ValueError("a bug"))


async def test_an_unreachable_git_remote_is_transient_and_a_missing_ref_is_not(
    world: World, tmp_path: Path
) -> None:
    merger = Merger(tmp_path / "git")
    with socket_refusing() as port, pytest.raises(GitError) as down:
        await merger.branch_head("nova", f"http://127.0.0.1:{port}/nova.git", "main")
    assert is_transient(down.value), down.value.stderr
    with pytest.raises(RefNotFound) as missing:
        await merger.resolve("nova", str(world.remote("nova")), "refs/heads/no-such-branch")
    assert not is_transient(missing.value)


class socket_refusing:
    """A TCP port on 127.0.0.1 that nothing listens on (connections are refused)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None


async def test_until_it_lands_retries_only_transient_faults() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return "landed"

    assert await until_it_lands(flaky, "test write") == "landed"
    assert len(calls) == 3

    def buggy() -> None:
        calls.append(1)
        raise KeyError("a bug")

    calls.clear()
    with pytest.raises(KeyError):
        await until_it_lands(buggy, "test write")
    assert len(calls) == 1


# -- the gate under faults ---------------------------------------------------------------


def all_deliveries_done_without_error(gate: Gate) -> list[Delivery]:
    with session(gate.engine) as s:
        rows = list(s.exec(select(Delivery)).all())
    assert rows
    assert [(d.id, d.error) for d in rows if d.processed_at is None or d.error] == []
    return rows


def classic_outcome_holds(gate: Gate) -> None:
    assert results(gate) == CLASSIC_OUTCOME
    assert "rpmbuild failed" in failure_of(gate, "C")
    assert failure_of(gate, "D") == (
        "repoclosure: 1 unresolved dependency: horizon-9.0.0-1.noarch requires python-django-compat"
    )
    nvrs = gate.publishers["liberty"].state().nvrs()
    assert (nvrs["nova"], nvrs["ceilometer"]) == ("nova-12.0.1-1", "ceilometer-8.0.1-1")
    check_invariants(gate)


class Killer(threading.Thread):
    """Terminates every connection of one application, at random intervals, until stopped."""

    def __init__(self, admin_url: str, application: str, every: tuple[float, float]) -> None:
        super().__init__(daemon=True)
        self.admin = make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
        self.application = application
        self.every = every
        self.killed = 0
        self.halt = threading.Event()

    def run(self) -> None:
        rng = random.Random(0)
        while not self.halt.wait(rng.uniform(*self.every)):
            with self.admin.connect() as conn:
                self.killed += conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = :app AND pid <> pg_backend_pid()"
                    ),
                    {"app": self.application},
                ).scalar_one()

    def stop(self) -> None:
        self.halt.set()
        self.join(10)
        self.admin.dispose()


@pytest.fixture
def pg_faulty() -> Iterator[tuple[str, str]]:
    """A fresh PostgreSQL schema and a URL whose connections carry a unique application name."""
    if not POSTGRES_URL:
        pytest.skip("set RPMGATE_TEST_DATABASE_URL=postgresql://... to run the PostgreSQL tests")
    application = f"rpmgate-faults-{uuid.uuid4().hex[:8]}"
    with postgres_schema(application) as (_, url):
        yield url, application


@pytest.mark.slow
@pytest.mark.postgres
async def test_terminated_postgresql_connections_lose_no_request(
    world: World, pg_faulty: tuple[str, str]
) -> None:
    """Issue 8, 1 and 2: connections killed over and over while the classic case runs;
    every delivery is processed with its real outcome, the queue never stalls."""
    url, application = pg_faulty
    assert POSTGRES_URL is not None
    gate = Gate(parse_config(world.config(database_url=url)))
    killer = Killer(POSTGRES_URL, application, every=(0.05, 0.4))
    await gate.start()
    try:
        refs = {label: world.propose(project, spec, label) for label, project, spec, _ in CLASSIC}
        killer.start()
        for label, project, _, _ in CLASSIC:
            payload = {"project": project, "ref": refs[label], "title": label, "approve": True}
            await asyncio.to_thread(store_with_retries, gate, payload, f"classic-{label}")
        gate.wake()
        await gate.wait_idle(300)
        killer.stop()
        assert killer.killed >= 10, f"only {killer.killed} connections were terminated"
        rows = all_deliveries_done_without_error(gate)
        assert len(rows) == 4
        classic_outcome_holds(gate)
    finally:
        killer.stop()
        await gate.stop()


def store_with_retries(gate: Gate, payload: dict[str, Any], key: str) -> None:
    """A client's retries after a 5xx: the same request, with the same key, until taken."""
    for tries in range(1, 200):
        try:
            store_delivery(gate, "api", "change.proposed", payload, key)
            return
        except OperationalError:
            time.sleep(min(1.0, 0.05 * tries))
    raise AssertionError("the request was never taken")


class Locker(threading.Thread):
    """Holds SQLite's write lock for ``hold`` seconds out of every ``period``."""

    def __init__(self, db: Path, hold: float, period: float) -> None:
        super().__init__(daemon=True)
        self.db, self.hold, self.period = db, hold, period
        self.locked = 0
        self.halt = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self.db, timeout=30, isolation_level=None)
        try:
            while not self.halt.wait(self.period - self.hold):
                conn.execute("BEGIN IMMEDIATE")
                self.locked += 1
                self.halt.wait(self.hold)
                conn.execute("COMMIT")
        finally:
            conn.close()

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


@pytest.mark.slow
async def test_a_locked_sqlite_database_loses_no_request(world: World) -> None:
    """The same with SQLite: another process holds the write lock longer than the
    gate's busy timeout, again and again ("database is locked")."""
    db = world.root / "state" / "gate.db"
    config = world.config(database_url=f"sqlite:///{db}?timeout=0.05")
    gate = Gate(parse_config(config))
    locker = Locker(db, hold=0.4, period=0.6)
    await gate.start()
    try:
        propose_classic(gate, world)
        locker.start()
        await gate.wait_idle(300)
        locker.stop()
        assert locker.locked >= 10
        all_deliveries_done_without_error(gate)
        classic_outcome_holds(gate)
    finally:
        locker.stop()
        await gate.stop()


async def test_a_watch_that_dies_is_reattached_and_the_queue_goes_on(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 8, 2: a build watch's final write fails with something no retry covers
    (here: an injected bug, once); the row stays running with no task, and the loop
    re-attaches it instead of waiting for a restart."""
    real_record = Builds._record
    broken: list[int] = []

    def record_once_broken(self: Builds, build_id: int, outcome: Any) -> None:
        if not broken:
            broken.append(build_id)
            raise RuntimeError("injected: the watch dies before recording its outcome")
        real_record(self, build_id, outcome)

    monkeypatch.setattr(Builds, "_record", record_once_broken)
    gate = Gate(parse_config(world.config()))
    await gate.start()
    try:
        from tests.conftest import propose

        propose(gate, world, "nova", NOVA_1201, "A")
        propose(gate, world, "ceilometer", CEILO_801, "B")
        gate.wake()
        await gate.wait_idle(120)
        assert broken, "the injected fault never fired"
        assert results(gate) == {"merged": ["A", "B"]}
        with session(gate.engine) as s:
            row = s.get(BuildRow, broken[0])
        assert row is not None and row.state == "passed"
        assert f"build:{broken[0]} was running with no task doing it" in caplog.text
        check_invariants(gate)
    finally:
        await gate.stop()


async def test_the_gate_is_not_idle_while_a_dead_task_s_work_waits_to_be_resumed(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A speculative merge's task dies three times in a row (an injected bug): the
    reconciler backs off between resumptions, and all that time the merge is
    recorded running with no task.  ``wait_idle`` (what the demo and the tests
    wait on) returns only once the item is through, not in a back-off."""
    real_inputs = Attempts._merge_inputs
    deaths: list[int] = []

    def dies_three_times(self: Attempts, item_id: int) -> Any:
        if len(deaths) < 3:
            deaths.append(item_id)
            raise RuntimeError("injected: the merge task dies before it merges")
        return real_inputs(self, item_id)

    gate = Gate(parse_config(world.config()))
    await gate.start()
    try:
        from tests.conftest import propose

        gate.wake()
        await gate.wait_idle(120)  # the bootstrap: nothing else runs while A's task dies
        monkeypatch.setattr(Attempts, "_merge_inputs", dies_three_times)
        propose(gate, world, "nova", NOVA_1201, "A")
        gate.wake()
        await gate.wait_idle(120)
        assert len(deaths) == 3
        assert results(gate)["merged"][-1] == "A"
        assert caplog.text.count(f"merge:{deaths[0]} was running with no task doing it") == 3
        check_invariants(gate)
    finally:
        await gate.stop()


async def test_an_api_request_during_a_database_outage_gets_503_not_202(
    world: World, tmp_path: Path
) -> None:
    """Nothing is answered 202 unless it is stored: a locked database longer than the
    store's retries answers 503 with Retry-After, and the same request later is taken."""
    from aiohttp.test_utils import TestClient, TestServer

    from gate.web.app import make_app

    db = world.root / "state" / "gate.db"
    gate = Gate(parse_config(world.config(database_url=f"sqlite:///{db}?timeout=0.05")))
    holder: sqlite3.Connection | None = None
    async with TestClient(TestServer(make_app(gate.runtime))) as client:
        try:
            ref = world.propose("nova", NOVA_1201, "A")
            holder = sqlite3.connect(db, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            body = {"project": "nova", "ref": ref, "title": "A"}
            headers = {"Idempotency-Key": "outage-1"}
            resp = await client.post("/api/changes", json=body, headers=headers)
            assert resp.status == 503, await resp.text()
            assert resp.headers["Retry-After"] == "5"
            holder.execute("COMMIT")
            resp = await client.post("/api/changes", json=body, headers=headers)
            assert resp.status == 202, await resp.text()
            with session(gate.engine) as s:
                assert len(s.exec(select(Delivery)).all()) == 1
        finally:
            if holder is not None:
                holder.close()
            await gate.stop()


class GitDaemon:
    """``git daemon`` serving the world's remotes over git:// on a fixed port (restartable)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        with socket_refusing() as port:
            self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "git",
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
                "--listen=127.0.0.1",
                f"--port={self.port}",
                f"--base-path={self.base}",
                str(self.base),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while subprocess.run(
            ["git", "ls-remote", self.url("nova.git")], capture_output=True
        ).returncode:
            assert time.monotonic() < deadline, "git daemon did not come up"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.mark.slow
async def test_a_git_remote_that_is_down_delays_a_delivery_and_refuses_nothing(
    world: World,
) -> None:
    """Issue 8, 1: a network fault while resolving a change's ref is not a refusal: the
    delivery stays pending, saying why, and is processed once the remote is back."""
    daemon = GitDaemon(world.remotes)
    daemon.start()
    config = world.config()
    config["projects"]["nova"]["git"] = daemon.url("nova.git")
    gate = Gate(parse_config(config))
    try:
        await gate.start()
        await gate.wait_idle(60)
        ref = world.propose("nova", NOVA_1201, "A")
        daemon.stop()
        delivery, _ = store_delivery(
            gate,
            "api",
            "change.proposed",
            {"project": "nova", "ref": ref, "title": "A", "approve": True},
            "down-1",
        )
        deadline = time.monotonic() + 60
        while True:
            with session(gate.engine) as s:
                row = s.get(Delivery, delivery.id)
            assert row is not None
            if row.error:
                break
            assert time.monotonic() < deadline, "the fault was never noticed"
            await asyncio.sleep(0.1)
        assert row.processed_at is None
        assert "transient fault" in row.error and "retrying" in row.error, row.error
        daemon.start()
        await gate.wait_idle(120)
        all_deliveries_done_without_error(gate)
        assert results(gate) == {"merged": ["A"]}
        assert gate.publishers["liberty"].state().nvrs()["nova"] == "nova-12.0.1-1"
    finally:
        daemon.stop()
        await gate.stop()
