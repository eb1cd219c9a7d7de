"""kill -9 of the real daemon at several instants, then a restart (invariant I4).

The daemon runs as ``rpmgate run`` in its own process.  The changes A-D are
proposed through the HTTP API; every 202 means the event was committed.  The
daemon is killed with SIGKILL while the gate is busy (building, testing, at
the tip), restarted, killed again, restarted, and must end exactly as an
uninterrupted run: A and B merged in order, C and D rejected, no accepted
event lost, no final build made twice, and I1-I3 intact.

The local backend builds final builds ahead of the tip as drafts (its
default): the kills then hit a draft being built, a promotion, and the
instant between a promotion and the merge ("draft-tip"); one run keeps the
serial tip (``drafts: off``) so both tips are killed.

Builds run without bubblewrap: its ``--die-with-parent`` would end a
sandboxed rpmbuild with the daemon, and the daemon must not depend on that
(nor on systemd's ``KillMode=control-group``).  A kill at "building" or
"final build" waits until rpmbuild builds the RPMs, a kill at "testing" until
the jobs run.  After each restart no process the killed daemon started may
be alive (``gate.processes`` killed them), and rpmbuild's own output, not the
database, shows each final build made once.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlmodel import select

from gate.config import parse_config
from gate.daemon import Gate
from gate.demo_world import World
from gate.processes import GroupRecord, ProcessGroups, all_processes, process_info
from repo_state.db import session
from repo_state.models import BuildRow
from tests.conftest import CEILO_801, DJANGO_NO_COMPAT, HORIZON_BROKEN, NOVA_1201
from tests.daemon import Daemon, free_port
from tests.invariants import check_invariants, failure_of, results

pytestmark = pytest.mark.slow

#: a job that leaves a process behind in its group, as test suites do (swept when
#: the job ends; a kill -9 during the job leaves it to the restart); in the runs
#: killed at "testing"
STRAGGLER = {"type": "command", "name": "straggler", "command": "sleep 30 & sleep 0.3"}


def _wait(daemon: Daemon, done: Any, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if done():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out; log tail:\n{daemon.log.read_text()[-3000:]}")


def _slow(spec: Any) -> Any:
    return dataclasses.replace(spec, build_seconds=1.0)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A state directory the build user (``nobody``, when tests run as root) can reach;
    pytest's own temporary directories are private to their owner."""
    root = Path(tempfile.mkdtemp(prefix="rpmgate-crash-"))
    root.chmod(0o755)
    yield root / "state"
    shutil.rmtree(root, ignore_errors=True)


def _process_tree(pid: int) -> set[tuple[int, int]]:
    """(pid, start time) of ``pid`` and every process descending from it."""
    processes = all_processes()
    tree, frontier = set(), {pid}
    while frontier:
        found = [p for p in processes if p.ppid in frontier and p.pid not in frontier]
        tree |= {(p.pid, p.start_time) for p in found}
        frontier = {p.pid for p in found}
    return tree


def _leftovers(
    tree: set[tuple[int, int]], groups: list[GroupRecord], started_before: int
) -> list[str]:
    """Running processes of a daemon that is gone: in its process tree when it went,
    or in a group or session it recorded, and started before ``started_before`` (clock
    ticks after boot, as /proc counts; after it, a new group may reuse a number)."""
    processes = [p for p in all_processes() if p.running and p.start_time < started_before]
    found = {p for p in processes if (p.pid, p.start_time) in tree}
    for record in groups:
        found.update(record.members(processes))
    return [f"{p.pid} (group {p.pgid}): {_cmdline(p.pid)}" for p in sorted(found, key=str)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
    except OSError:
        return "(gone)"


def _busy_with(daemon: Daemon, wanted: str, logs: Path, timeout: float = 5) -> bool:
    """Wait until the daemon runs the process that makes state ``wanted`` worth a kill:
    ``rpmbuild --rebuild`` of a scratch or final build (whose leftover would build an
    NVR a second time), the straggler job; False if none came."""
    purpose = {
        "building": "scratch",
        "final build": "final",
        "passed, final build as a draft": "draft",
    }.get(wanted)
    if purpose is None and wanted != "testing":
        return True
    assert daemon.proc is not None
    deadline = time.time() + timeout
    while time.time() < deadline:
        for pid, _ in _process_tree(daemon.proc.pid):
            cmdline = _cmdline(pid)
            if purpose is None and cmdline.startswith("sleep 30"):
                return True
            task = re.search(r"^rpmbuild --rebuild .*/tasks/([0-9a-f]+)/", cmdline)
            log = logs / f"{task.group(1)}.log" if task else None
            if log and log.exists() and log.read_text().startswith(f"# rpmgate local {purpose}"):
                return True
        time.sleep(0.02)
    return False


def _final_rpmbuild_runs(logs: Path) -> Counter[str]:
    """NVRs that an ``rpmbuild --rebuild`` of a final build (or of a draft, the final
    build made ahead of the tip) wrote binary RPMs of, counted from rpmbuild's own
    output: a run the daemon lost track of still writes its log."""
    runs: Counter[str] = Counter()
    for log in logs.glob("*.log"):
        text = log.read_text(errors="replace")
        if not text.startswith(("# rpmgate local final build", "# rpmgate local draft build")):
            continue
        wrote = re.findall(r"^Wrote: \S*/([^/\s]+)\.([^./\s]+)\.rpm$", text, re.M)
        for nvr in {nvr for nvr, arch in wrote if arch != "src"}:
            runs[nvr] += 1
    return runs


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


#: two named builds, each published by its own publisher (docs/pipelines.md): every
#: build of an item's set is re-attached after a kill
TWO_BUILDS = {"el9": {"target": "el9-label"}, "el10": {"target": "el10-label", "repo": "el10"}}


@pytest.mark.parametrize(
    ("kill_at", "drafts", "builds"),
    [
        (("building", "testing", "final build"), "auto", None),
        (("final build", "merging", "publishing"), "off", None),
        (("passed", "building", "final build"), "auto", None),
        # the promotion and the merge after a draft take a moment: on a busy machine both
        # may pass between two polls, so the draft itself (slowed) is killed twice first
        (
            (
                "passed, final build as a draft",
                "passed, final build as a draft",
                "final build",
                "merging",
            ),
            "auto",
            None,
        ),
        (("building", "final build", "publishing"), "off", TWO_BUILDS),
    ],
    ids=["scratch-then-tip", "tip-steps", "waiting-then-tip", "draft-tip", "named-builds"],
)
def test_kill_9_and_restart_lose_nothing_and_build_nothing_twice(
    tmp_path: Path,
    state_dir: Path,
    kill_at: tuple[str, ...],
    drafts: str,
    builds: dict[str, Any] | None,
) -> None:
    world = World(tmp_path / "world").create()
    port = free_port()
    config = world.config(
        listen={"host": "127.0.0.1", "port": port},
        state_dir=str(state_dir),
        sandbox={"bubblewrap": "off"},
    )
    if builds:
        el10 = {**config["publishers"]["liberty"], "root": str(state_dir.parent / "el10")}
        config["publishers"]["el10"] = el10
        config["queues"]["liberty"]["builds"] = builds
    if "testing" in kill_at:
        config["queues"]["liberty"]["jobs"].append(STRAGGLER)
    config["backends"]["local"]["drafts"] = drafts
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
        registry = ProcessGroups.under(state_dir)
        logs = state_dir / "builds" / "local" / "logs"
        for wanted in kill_at:
            states = _wait_for_state(daemon, wanted)
            if not states:
                continue  # the run got past this point before we saw it
            _busy_with(daemon, wanted, logs)
            seen.append(states)
            assert daemon.proc is not None
            tree = _process_tree(daemon.proc.pid)
            daemon.kill9()
            groups = [record for _, record in registry.records()]
            daemon.start()
            # /healthz answers once the daemon has started: what it killed is gone
            restarted = process_info(daemon.proc.pid)
            assert restarted is not None
            assert _leftovers(tree, groups, restarted.start_time) == [], (wanted, states)
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
        assert daemon.proc is not None
        tree = _process_tree(daemon.proc.pid)
    finally:
        daemon.stop()
    # a stopped daemon leaves nothing running either
    stopped = int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))
    assert _leftovers(tree, [record for _, record in registry.records()], stopped) == []
    # rpmbuild's own output: each final build ran to the end once, by anyone
    runs = _final_rpmbuild_runs(logs)
    assert {nvr for nvr, n in runs.items() if n > 1} == set(), runs
    assert runs["nova-12.0.1-1"] == runs["ceilometer-8.0.1-1"] == 1

    gate = Gate(parse_config(config))
    try:
        assert results(gate) == {"merged": ["A", "B"], "rejected": ["C", "D"]}, seen
        assert "nova >= 12.0.1" not in failure_of(gate, "B")
        check_invariants(gate)
        if builds:  # each named build's repository has what was merged
            for repo in ("liberty", "el10"):
                nvrs = gate.publishers[repo].state().nvrs()
                assert (nvrs["nova"], nvrs["ceilometer"]) == (
                    "nova-12.0.1-1",
                    "ceilometer-8.0.1-1",
                ), repo
        # the local build store holds each published NVR exactly once
        store = state_dir / "builds" / "local" / "builds"
        nvrs = sorted(
            p.parent.parent.name + "-" + p.parent.name + "-" + p.name
            for p in store.glob("*/*/*")
            if (p / "build.json").exists()
        )
        assert len(nvrs) == len(set(nvrs))
        assert "nova-12.0.1-1" in nvrs and "ceilometer-8.0.1-1" in nvrs
        with session(gate.engine) as s:
            finals = s.exec(select(BuildRow).where(BuildRow.purpose == "final")).all()
        promoted = {b.nvr for b in finals if (b.task_ref or "").startswith("promoted:")}
        if drafts == "auto":  # the published final builds are promoted drafts
            assert {"nova-12.0.1-1", "ceilometer-8.0.1-1"} <= promoted, finals
            assert not any((store.parent / "drafts").glob("*/build.json"))  # none left
        else:
            assert promoted == set()
    finally:
        gate.engine.dispose()
