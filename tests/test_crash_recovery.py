"""kill -9 of the real daemon at several instants, then a restart (invariant I4).

The daemon runs as ``rpmgate run`` in its own process.  The changes A-D are
proposed through the HTTP API; every 202 means the event was committed.  The
daemon is killed with SIGKILL while the gate is busy (building, testing, at
the tip), restarted, killed again, restarted, and must end exactly as an
uninterrupted run: A and B merged in order, C and D rejected, no accepted
event lost, no final build made twice, and I1-I3 intact.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gate.config import parse_config
from gate.daemon import Gate
from gate.demo_world import World
from tests.conftest import CEILO_801, DJANGO_NO_COMPAT, HORIZON_BROKEN, NOVA_1201
from tests.daemon import Daemon, free_port
from tests.invariants import check_invariants, failure_of, results

pytestmark = pytest.mark.slow


def _wait(daemon: Daemon, done: Any, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if done():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out; log tail:\n{daemon.log.read_text()[-3000:]}")


def _slow(spec: Any) -> Any:
    return dataclasses.replace(spec, build_seconds=1.5)


def _wait_for_state(daemon: Daemon, wanted: str, timeout: float = 60) -> list[str]:
    """Poll until an item shows ``wanted``; return the states seen at that moment."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        states = daemon.states()
        if any(s.startswith(wanted) for s in states):
            return states
        if not states:
            return []
        time.sleep(0.02)
    return []


@pytest.mark.parametrize(
    "kill_at",
    [
        ("building", "testing", "final build"),
        ("final build", "merging", "publishing"),
        ("passed", "building", "final build"),
    ],
    ids=["scratch-then-tip", "tip-steps", "waiting-then-tip"],
)
def test_kill_9_and_restart_lose_nothing_and_build_nothing_twice(
    tmp_path: Path, kill_at: tuple[str, ...]
) -> None:
    world = World(tmp_path / "world").create()
    port = free_port()
    config = world.config(listen={"host": "127.0.0.1", "port": port})
    config_path = tmp_path / "rpmgate.yaml"
    config_path.write_text(yaml.safe_dump(config))
    daemon = Daemon(config_path, f"http://127.0.0.1:{port}", tmp_path / "daemon.log")
    daemon.start()
    try:
        _wait(daemon, lambda: not daemon.busy() and daemon.get("/api/repos/liberty")["current"])
        accepted = []
        for title, project, spec in (
            ("A", "nova", NOVA_1201),
            ("B", "ceilometer", CEILO_801),
            ("C", "horizon", HORIZON_BROKEN),
            ("D", "python-django", DJANGO_NO_COMPAT),
        ):
            ref = world.propose(project, _slow(spec), title)
            status, body = daemon.post(
                "/api/changes", {"project": project, "ref": ref, "title": title, "approve": True}
            )
            assert status == 202
            accepted.append(body["delivery"])
        seen: list[list[str]] = []
        for wanted in kill_at:
            states = _wait_for_state(daemon, wanted)
            if not states:
                continue  # the run got past this point before we saw it
            seen.append(states)
            daemon.kill9()
            daemon.start()
        # every kill hit a gate with work in flight, and at least two kills happened
        assert len(seen) >= 2 and all(seen), seen
        _wait(
            daemon,
            lambda: (
                all(daemon.get(f"/api/deliveries/{d}")["state"] != "pending" for d in accepted)
                and not daemon.busy()
            ),
        )
        for delivery in accepted:
            assert daemon.get(f"/api/deliveries/{delivery}")["state"] == "processed"
    finally:
        daemon.stop()

    gate = Gate(parse_config(config))
    try:
        assert results(gate) == {"merged": ["A", "B"], "rejected": ["C", "D"]}, seen
        assert "nova >= 12.0.1" not in failure_of(gate, "B")
        check_invariants(gate)
        # the local build store holds each published NVR exactly once
        store = tmp_path / "world" / "state" / "builds" / "local" / "builds"
        nvrs = sorted(
            p.parent.parent.name + "-" + p.parent.name + "-" + p.name
            for p in store.glob("*/*/*")
            if (p / "build.json").exists()
        )
        assert len(nvrs) == len(set(nvrs))
        assert "nova-12.0.1-1" in nvrs and "ceilometer-8.0.1-1" in nvrs
    finally:
        gate.engine.dispose()
