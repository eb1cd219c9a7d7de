"""``/healthz`` through the HTTP app: each check failing for real, named in the answer.

A real gate on the demo world (git, rpmbuild, createrepo_c, SQLite) behind
aiohttp's test client; the database that hangs is a real PostgreSQL client
talking to a port that never answers, the Koji hub the fake one, stopped.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pydantic import ByteSize
from sqlmodel import select

import gate.builders.sandbox as sandbox_mod
import gate.daemon as daemon_mod
from gate.config import HealthConfig, parse_config
from gate.daemon import Gate
from gate.demo_world import PackageSpec, World
from gate.health import (
    DiskFacts,
    Reading,
    disk_check,
    held_back_check,
    queue_check,
    read_facts,
)
from gate.tip import Tip
from gate.web.app import make_app
from repo_state.db import make_engine, migrate, session
from repo_state.models import BuildRow, ChangeRow, ItemRow
from tests.conftest import CEILO_801, NOVA_1201
from tests.koji_gate import koji_config_doc, start_hub
from tests.served import ClientFactory, served

pytestmark = pytest.mark.slow

CHECKS = [
    "database",
    "loop",
    "queue:liberty",
    "held_back:liberty",
    "disk:state_dir",
    "disk:publisher:liberty",
    "backend:local",
    "stuck_builds",
    "config",
]


# -- helpers ----------------------------------------------------------------------------------


async def healthz(client: TestClient) -> tuple[int, dict[str, Any]]:
    resp = await client.get("/healthz")
    return resp.status, await resp.json()


def check(doc: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [c for c in doc["checks"] if c["name"] == name]
    return found


async def eventually(
    probe: Callable[[], Awaitable[Any]], timeout: float = 120, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def answer_where(
    client: TestClient, condition: Callable[[int, dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """The first /healthz document for which ``condition(status, doc)`` holds."""

    async def probe() -> dict[str, Any] | None:
        status, doc = await healthz(client)
        return doc if condition(status, doc) else None

    found: dict[str, Any] = await eventually(probe, what=what)
    return found


async def propose(client: TestClient, world: World, project: str, spec: PackageSpec) -> None:
    ref = world.propose(project, spec, f"{project} {spec.version}")
    resp = await client.post("/api/changes", json={"project": project, "ref": ref, "approve": True})
    assert resp.status == 202, await resp.text()


def active_items(gate: Gate) -> list[ItemRow]:
    with session(gate.engine) as s:
        return list(s.exec(select(ItemRow).where(ItemRow.active)).all())


@contextmanager
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel does) and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()  # connections still queued are reset


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# -- all passing --------------------------------------------------------------------------------


async def test_a_healthy_gate_answers_200_with_every_check_named_and_measured(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with served(world, aiohttp_client) as (gate, client):
        status, doc = await healthz(client)
        assert status == 200, doc
        assert doc["ok"] is True and doc["failing"] == []
        assert [c["name"] for c in doc["checks"]] == CHECKS
        assert all(c["ok"] and c["detail"] for c in doc["checks"])
        assert check(doc, "database")["seconds"] < 5
        assert 0 <= check(doc, "loop")["age_seconds"] < 120
        queue = check(doc, "queue:liberty")
        assert queue["active_items"] == 0 and queue["detail"] == "no active items"
        state = check(doc, "disk:state_dir")
        assert state["path"] == str(gate.state_dir)
        assert 0 < state["free_bytes"] <= state["total_bytes"]
        assert state["min_free_bytes"] == 2 * 1024**3
        local = check(doc, "backend:local")
        assert local["detail"] == "reachable" and local["probe_seconds"] < 10
        # the first document's keys, which probes and clients read
        assert doc["database"] is True and doc["backends"] == {"local": "ok"}
        assert doc["stuck_builds"] == [] and doc["uptime_seconds"] > 0

        # probes are reused for probe_interval (30 s): no second rpmbuild run
        _, again = await healthz(client)
        assert check(again, "backend:local")["probe_seconds"] == local["probe_seconds"]
        assert check(again, "backend:local")["probed_seconds_ago"] > local["probed_seconds_ago"]


# -- disk ---------------------------------------------------------------------------------------


async def test_free_space_below_the_floor_fails_healthz_naming_each_filesystem(
    world: World, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    st = os.statvfs(tmp_path)
    # more than the disk has free, with room for other processes freeing space meanwhile
    floor = st.f_bavail * st.f_frsize + 2**30
    async with served(world, aiohttp_client, health={"min_free_bytes": floor}) as (_, client):
        status, doc = await healthz(client)
        assert status == 503
        assert doc["ok"] is False
        assert doc["failing"] == ["disk:state_dir", "disk:publisher:liberty"]
        for name in doc["failing"]:
            disk = check(doc, name)
            assert disk["min_free_bytes"] == floor
            assert 0 < disk["free_bytes"] < floor
            assert abs(disk["free_bytes"] - st.f_bavail * st.f_frsize) < 2**30
            assert disk["detail"].startswith(f"{disk['free_bytes'] / 2**30:.1f} GiB free of ")
            assert disk["detail"].endswith(
                f" at {disk['path']}, below the floor {floor / 2**30:.1f} GiB and 1 %"
            )


def test_the_percent_floor_fails_a_filesystem_with_bytes_to_spare() -> None:
    cfg = HealthConfig(min_free_bytes=ByteSize(0), min_free_percent=10)
    facts = DiskFacts(path=Path("/srv/repos"), free=5 * 2**30, total=100 * 2**30)
    disk = disk_check("disk:publisher:liberty", facts.path, facts, cfg)
    assert not disk.ok and disk.free_percent == 5.0
    assert disk.detail == (
        "5.0 GiB free of 100.0 GiB (5.0 %) at /srv/repos, below the floor 0 B and 10 %"
    )
    assert disk_check("d", facts.path, facts, HealthConfig(min_free_percent=5)).ok


# -- database -----------------------------------------------------------------------------------


async def test_a_database_that_hangs_fails_healthz_within_the_timeout_then_unreachable(
    world: World, aiohttp_client: ClientFactory
) -> None:
    health = {"check_timeout": 1}
    # not started: the loop is the database's other user, and it would hang too
    async with served(world, aiohttp_client, start=False, health=health) as (gate, client):
        _, doc = await healthz(client)
        assert check(doc, "database")["ok"] is True
        sqlite = gate.runtime.engine
        try:
            with silent_server() as port:
                gate.runtime.engine = make_engine(f"postgresql://rpmgate:pw@127.0.0.1:{port}/gate")
                started = time.monotonic()
                status, doc = await healthz(client)
                assert time.monotonic() - started < 5
                assert status == 503
                database = check(doc, "database")
                assert database["ok"] is False and database["seconds"] is None
                assert database["detail"].startswith("no answer within 1 s")
                assert doc["database"] is False
                queue = check(doc, "queue:liberty")
                assert queue["detail"] == "unknown: the database did not answer"
                assert not check(doc, "stuck_builds")["ok"]

                # polled again: the hung query is waited for, not doubled
                _, doc = await healthz(client)
                assert "is still waiting" in check(doc, "database")["detail"]
                hung = [t for t in threading.enumerate() if t.name == "health-database"]
                assert len(hung) == 1

            # the listener is gone: its queued connection is reset, the port refuses
            gate.runtime.engine = make_engine(
                f"postgresql://rpmgate:pw@127.0.0.1:{free_port()}/gate"
            )

            async def refused() -> dict[str, Any] | None:
                _, doc = await healthz(client)
                database = check(doc, "database")
                # (the hung query, reset, may answer first: "server closed the connection")
                return database if "Connection refused" in database["detail"] else None

            database = await eventually(refused, timeout=30, what="a refused connection")
            assert database["detail"].startswith("OperationalError: (psycopg2.OperationalError)")
            assert "pw" not in database["detail"]
        finally:
            gate.runtime.engine.dispose()
            gate.runtime.engine = sqlite
        _, doc = await healthz(client)
        assert check(doc, "database")["ok"] is True


# -- queues -------------------------------------------------------------------------------------


async def test_a_final_build_whose_task_died_fails_its_queue_at_once(
    world: World, aiohttp_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's case: the head item sat in "final build running" with /healthz ok."""

    async def dies(self: Tip, item_id: int, attempt: int, build_id: int) -> None:
        raise RuntimeError("the task waiting for the final build died")

    async with served(world, aiohttp_client) as (gate, client):
        status, _ = await healthz(client)
        assert status == 200
        monkeypatch.setattr(Tip, "await_final", dies)
        await propose(client, world, "nova", NOVA_1201)

        doc = await answer_where(
            client,
            lambda status, doc: status == 503 and "queue:liberty" in doc["failing"],
            what="the queue failing",
        )
        [item] = active_items(gate)
        assert item.tip == "final_build" and item.tip_state == "running"
        queue = check(doc, "queue:liberty")
        assert queue["orphaned"] == [f"item {item.id} (nova): tip step final_build"]
        assert queue["detail"] == (
            "recorded as running with no task of this process doing it: "
            f"item {item.id} (nova): tip step final_build"
        )
        assert queue["active_items"] == 1


async def test_a_running_build_no_task_watches_fails_its_queue_at_once(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with served(world, aiohttp_client) as (gate, client):
        status, _ = await healthz(client)
        assert status == 200
        with session(gate.engine) as s:
            row = BuildRow(
                purpose="scratch",
                key="left-running-by-a-dead-task",
                project="nova",
                package="nova",
                backend="local",
                commit="0" * 40,
                tree="0" * 40,
                target="liberty-candidate",
                state="running",
            )
            s.add(row)
            s.commit()
            s.refresh(row)
        status, doc = await healthz(client)
        assert status == 503
        assert doc["failing"] == ["queue:liberty"]
        assert check(doc, "queue:liberty")["orphaned"] == [f"build {row.id} (scratch, nova)"]


async def test_a_queue_without_progress_fails_after_stall_after_idle_or_busy(
    world: World,
    aiohttp_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    hold = tmp_path / "hold"
    queues = world.config()["queues"]
    queues["liberty"]["jobs"] = [
        "repoclosure",
        {
            "name": "hold",
            "timeout": 300,
            "env": {"HOLD": str(hold), "BOOTSTRAP": str(len(world.projects))},
            # the bootstrap's post items (1..N) pass at once
            "command": '[ "$RPMGATE_ITEM" -le "$BOOTSTRAP" ] || '
            'until [ -e "$HOLD" ]; do sleep 0.05; done',
        },
    ]
    health = {"stall_after": 1, "stall_after_busy": 2}
    async with served(world, aiohttp_client, queues=queues, health=health) as (gate, client):
        # a planner that never proposes the next step: runnable work nobody does
        monkeypatch.setattr(daemon_mod, "plan", lambda state: [])
        await propose(client, world, "nova", NOVA_1201)
        doc = await answer_where(
            client, lambda status, doc: status == 503, what="the idle queue failing"
        )
        assert doc["failing"] == ["queue:liberty"]
        queue = check(doc, "queue:liberty")
        assert queue["active_items"] == 1 and queue["running"] == []
        assert queue["limit_seconds"] == 1 and queue["idle_seconds"] > 1
        assert queue["detail"].startswith("1 active item and no item changed state for ")
        assert queue["detail"].endswith("(limit 1 s, nothing running)")

        # the planner back: the item moves, then its jobs run past stall_after_busy
        monkeypatch.undo()
        gate.wake()
        [item] = active_items(gate)
        jobs = f"item {item.id} (nova): jobs"

        def stalled_on_jobs(status: int, doc: dict[str, Any]) -> bool:
            return status == 503 and check(doc, "queue:liberty")["running"] == [jobs]

        doc = await answer_where(client, stalled_on_jobs, what="the busy queue failing")
        queue = check(doc, "queue:liberty")
        assert queue["limit_seconds"] == 2
        assert queue["detail"].endswith(f"(limit 2 s, running: {jobs})")

        hold.touch()
        await gate.wait_idle(120)
        status, doc = await healthz(client)
        assert status == 200, doc["failing"]


async def test_polled_through_a_run_healthz_never_sees_work_without_a_task(
    world: World, aiohttp_client: ClientFactory
) -> None:
    """Work is recorded before its task starts and ended before the task ends; the
    check reads the database between two looks at the live tasks, so no answer
    may mistake work starting or finishing for work nobody does."""
    async with served(world, aiohttp_client) as (gate, client):
        answers: list[dict[str, Any]] = []
        done = asyncio.Event()

        async def poll() -> None:
            while not done.is_set():
                answers.append((await healthz(client))[1])
                await asyncio.sleep(0.01)

        poller = asyncio.create_task(poll())
        await propose(client, world, "nova", NOVA_1201)
        await propose(client, world, "ceilometer", CEILO_801)
        await gate.wait_idle(120)
        done.set()
        await poller
        queues = [check(doc, "queue:liberty") for doc in answers]
        assert any(q["running"] for q in queues), "the poll saw no work at all"
        assert [q for q in queues if q["orphaned"] or not q["ok"]] == []
        assert {n for doc in answers for n in doc["failing"]} == set()


# -- backends -----------------------------------------------------------------------------------


async def test_a_koji_hub_that_goes_down_fails_healthz_naming_the_backend(
    world: World, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    fk = start_hub(tmp_path / "hub", world)
    stopped = False
    try:
        doc = koji_config_doc(world, fk, health={"probe_interval": 2, "probe_timeout": 5})
        gate = Gate(parse_config(doc))
        try:
            client = await aiohttp_client(make_app(gate.runtime))
            await gate.start()
            await gate.wait_idle(120)
            pings = fk.hub.count("getAPIVersion")
            answers = await asyncio.gather(*(healthz(client) for _ in range(10)))
            for _ in range(10):
                answers.append(await healthz(client))
            assert {status for status, _ in answers} == {200}
            assert check(answers[0][1], "backend:koji")["detail"] == "reachable"
            # twenty answers, one probe: concurrent requests share it, later ones reuse it
            assert fk.hub.count("getAPIVersion") == pings + 1

            url = fk.url
            fk.stop()
            stopped = True
            doc503 = await answer_where(
                client, lambda status, doc: status == 503, what="the backend failing"
            )
            assert doc503["failing"] == ["backend:koji"]
            koji = check(doc503, "backend:koji")
            assert koji["detail"].startswith(f"Koji hub {url} unreachable: ConnectionError")
            assert doc503["backends"]["koji"] == koji["detail"]
        finally:
            await gate.stop()
    finally:
        if not stopped:
            fk.stop()


async def test_a_local_backend_without_rpmbuild_fails_healthz(
    world: World,
    aiohttp_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    health = {"probe_interval": 0.1}
    async with served(world, aiohttp_client, health=health) as (_, client):
        status, _ = await healthz(client)
        assert status == 200
        # builds find rpmbuild on their own PATH, never the daemon's
        empty = tmp_path / "bin"
        empty.mkdir()
        monkeypatch.setattr(sandbox_mod, "SAFE_PATH", str(empty))
        doc = await answer_where(
            client, lambda status, doc: status == 503, what="the backend failing"
        )
        assert doc["failing"] == ["backend:local"]
        assert check(doc, "backend:local")["detail"] == (
            f"rpmbuild is not installed: not found on the builds' PATH {empty}"
        )
        monkeypatch.undo()
        await answer_where(client, lambda status, doc: status == 200, what="the backend back")


def test_the_queue_check_counts_what_it_does_not_read_one_by_one(tmp_path: Path) -> None:
    """``read_facts`` reads the items it judges (a step running, post items) and counts
    the other gate items per queue in SQL: the verdicts are those of every item read."""
    engine = make_engine(f"sqlite:///{tmp_path / 'gate.db'}")
    migrate(engine)
    t0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    with session(engine) as s:
        change = ChangeRow(project="nova", ref="refs/changes/1", sha="a" * 40)
        s.add(change)
        s.commit()
        rows = [
            # liberty: 3 waiting gate items, one with jobs running, one inactive
            *(ItemRow(queue="liberty", change_id=change.id or 0, project="nova") for _ in range(3)),
            ItemRow(queue="liberty", change_id=change.id or 0, project="nova", jobs="running"),
            ItemRow(queue="liberty", change_id=change.id or 0, project="nova", active=False),
            # a post item held back (blocked), and one that is not; the newest item
            ItemRow(
                queue="liberty", change_id=change.id or 0, project="nova", kind="post",
                jobs="failed", enqueued_at=t0 + timedelta(minutes=9),
            ),
            ItemRow(
                queue="liberty", change_id=change.id or 0, project="glance", kind="post",
                enqueued_at=t0 + timedelta(minutes=5),
            ),
            # another queue: one gate item, newer than every other
            ItemRow(
                queue="zed", change_id=change.id or 0, project="horizon",
                enqueued_at=t0 + timedelta(minutes=20),
            ),
        ]  # fmt: skip
        for n, row in enumerate(rows[:5]):
            row.enqueued_at = t0 + timedelta(minutes=n)
        s.add_all(rows)
        s.commit()
    facts = read_facts(engine)
    # read one by one: the running gate item and the two post items, nothing else
    assert sorted((i.queue, i.kind, i.jobs) for i in facts.items) == [
        ("liberty", "gate", "running"),
        ("liberty", "post", "failed"),
        ("liberty", "post", "none"),
    ]
    reading = Reading(facts, owned=frozenset(), consistent=True)
    cfg = HealthConfig()
    now = (t0 + timedelta(minutes=30)).timestamp()
    liberty = queue_check("liberty", frozenset({"nova", "glance"}), reading, 0.0, now, cfg, True)
    zed = queue_check("zed", frozenset({"horizon"}), reading, 0.0, now, cfg, False)
    # 4 gate items and the post item not blocked; the newest of them is glance's (5 min)
    assert liberty.active_items == 5
    assert liberty.idle_seconds == pytest.approx(25 * 60)
    # the one item read for its running step: no task of this process runs its jobs
    assert liberty.running == [] and liberty.orphaned == [f"item {rows[3].id} (nova): jobs"]
    assert zed.active_items == 1 and zed.idle_seconds == pytest.approx(10 * 60)
    held = held_back_check("liberty", reading)
    assert held.pushes == [f"item {rows[5].id} (nova): "] and held.bootstraps == []
    engine.dispose()
