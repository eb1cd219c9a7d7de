"""Reload without a restart: SIGHUP, ``POST /api/admin/reload``, and a config repository.

Real git, rpmbuild and createrepo_c; the SIGHUP and config-repository tests run
the real daemon (``rpmgate run``) in its own process.  Queued items are held in
``testing`` by a command job that waits while a file exists, so a reload always
meets items in flight.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlmodel import col, select

from gate.config import load_config
from gate.daemon import Gate
from gate.demo_world import INITIAL, PackageSpec, World, git
from gate.reload import holders
from repo_state.db import session
from repo_state.models import ItemRow
from tests.conftest import CEILO_801, NOVA_1201, propose
from tests.daemon import Daemon, free_port

pytestmark = pytest.mark.slow

GLANCE = PackageSpec("glance", "1.0.0")


def _world(tmp_path: Path) -> World:
    """The four demo projects, and a fifth (glance) with a remote but not in the config."""
    return World(tmp_path / "world", projects={**INITIAL, "glance": GLANCE}).create()


def _job(version: str, block: Path, marker: Path) -> dict[str, Any]:
    """A job that waits while ``block`` exists, then notes which version of it ran."""
    return {
        "type": "command",
        "name": "gatecheck",
        "command": f'while [ -e {block} ]; do sleep 0.1; done; echo "{version} $RPMGATE_ITEM" '
        f">> {marker}",
        "timeout": 300,
    }


def _policy(
    world: World, block: Path, marker: Path, version: str = "v1", glance: bool = False
) -> dict[str, Any]:
    doc = world.config()
    if not glance:
        del doc["projects"]["glance"]
        doc["queues"]["liberty"]["projects"].remove("glance")
    doc["queues"]["liberty"]["jobs"] = ["repoclosure", _job(version, block, marker)]
    return doc


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A state directory the build user (``nobody``, when tests run as root) can reach;
    pytest's own temporary directories are private to their owner."""
    root = Path(tempfile.mkdtemp(prefix="rpmgate-reload-"))
    root.chmod(0o755)
    yield root / "state"
    shutil.rmtree(root, ignore_errors=True)


def _host(state_dir: Path, port: int) -> dict[str, Any]:
    return {
        "state_dir": str(state_dir),
        "listen": {"host": "127.0.0.1", "port": port},
        "sandbox": {"bubblewrap": "off"},
    }


def _wait(what: Callable[[], Any], timeout: float = 180, why: str = "") -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting: {why}")


def _items(daemon: Daemon) -> dict[int, tuple[str, int]]:
    """Each queued item's state and attempt."""
    queue = daemon.get("/api/status")["queues"][0]
    return {i["id"]: (i["state"], i["attempt"]) for i in queue["items"]}


def _post(daemon: Daemon, path: str) -> tuple[int, Any]:
    try:
        return daemon.post(path, {})
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _page(daemon: Daemon) -> str:
    """The status page, as a browser gets it."""
    with urllib.request.urlopen(daemon.base + "/", timeout=10) as resp:
        return str(resp.read().decode())


def _rpmgate_reload(daemon: Daemon) -> subprocess.CompletedProcess[str]:
    """``rpmgate reload`` against the daemon, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "gate.cli", "reload", "--url", daemon.base],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(daemon.config_path.parent)},  # no client profile
    )


def _hold_two_items(daemon: Daemon, world: World, block: Path) -> dict[int, tuple[str, int]]:
    """nova 12.0.1 and ceilometer 8.0.1 proposed, both held in testing by ``block``."""
    _wait(lambda: daemon.get("/api/repos/liberty")["current"] and not daemon.busy(), why="boot")
    block.touch()
    for title, project, spec in (("A", "nova", NOVA_1201), ("B", "ceilometer", CEILO_801)):
        ref = world.propose(project, spec, title)
        status, _ = daemon.post(
            "/api/changes", {"project": project, "ref": ref, "title": title, "approve": True}
        )
        assert status == 202
    return _wait(
        lambda: (
            (items := _items(daemon))
            and len(items) == 2
            and {state for state, _ in items.values()} == {"testing"}
            and items
        ),
        why="two items testing",
    )


def _config_check(daemon: Daemon) -> dict[str, Any]:
    health = daemon.get("/healthz")
    return next(c for c in health["checks"] if c["name"] == "config")


def _current_manifest(world: World) -> dict[str, Any]:
    root = world.root / "repos" / "liberty"
    return json.loads((root / "current" / "manifest.json").read_text())


def _assert_kept(held: dict[int, tuple[str, int]], queue: dict[str, Any]) -> None:
    """Nothing lost by a reload: the held items are still queued. The reload itself
    starts no new attempt; the added project's bootstrap (polled at once) may already
    have gone ahead of them, which re-bases each once (post items go first)."""
    items = {i["id"]: (i["state"], i["attempt"]) for i in queue["items"]}
    for i, (state, attempt) in held.items():
        assert i in items, f"item {i} lost by the reload"
        now_state, now_attempt = items[i]
        assert (now_state, now_attempt) == (state, attempt) or (
            now_attempt == attempt + 1 and "fail" not in now_state
        ), (i, items[i], held[i])


def test_sighup_adds_a_project_and_changes_a_job_without_losing_queued_items(
    tmp_path: Path, state_dir: Path
) -> None:
    world = _world(tmp_path)
    block, marker = tmp_path / "block", tmp_path / "marker"
    port = free_port()
    path = tmp_path / "rpmgate.yaml"
    path.write_text(yaml.safe_dump({**_policy(world, block, marker), **_host(state_dir, port)}))
    daemon = Daemon(path, f"http://127.0.0.1:{port}", tmp_path / "daemon.log")
    daemon.start()
    try:
        held = _hold_two_items(daemon, world, block)
        assert daemon.get("/api/status")["config"]["version"] == 1

        # a new project and a changed job, by SIGHUP
        policy = _policy(world, block, marker, version="v2", glance=True)
        path.write_text(yaml.safe_dump({**policy, **_host(state_dir, port)}))
        assert daemon.proc is not None
        os.kill(daemon.proc.pid, signal.SIGHUP)
        status = _wait(
            lambda: (doc := daemon.get("/api/status"))["config"]["version"] == 2 and doc,
            why="configuration 2 applied",
        )
        queue = status["queues"][0]
        assert "glance" in queue["projects"]
        _assert_kept(held, queue)

        # a broken config is refused; the one in force stays, and says so
        broken = copy.deepcopy({**policy, **_host(state_dir, port)})
        broken["queues"]["liberty"]["projects"].append("keystone")
        path.write_text(yaml.safe_dump(broken))
        os.kill(daemon.proc.pid, signal.SIGHUP)
        refused = _wait(
            lambda: (doc := daemon.get("/api/status")["config"])["last_refused"] and doc,
            why="refusal reported",
        )
        assert refused["version"] == 2 and refused["newest_refused"]
        assert refused["last_refused"]["trigger"] == "SIGHUP"
        assert any("keystone" in f for f in refused["last_refused"]["findings"])
        check = _config_check(daemon)
        assert check["ok"] and check["newest_refused"] and "keystone" in check["detail"]
        assert "refused, the running one stays in force" in (tmp_path / "daemon.log").read_text()
        # and by the API, with the findings in a 422
        code, answer = _post(daemon, "/api/admin/reload")
        assert code == 422 and not answer["applied"]
        assert any("keystone" in f for f in answer["findings"])
        # and by `rpmgate reload`, which says so and exits 1
        cli = _rpmgate_reload(daemon)
        assert cli.returncode == 1, cli.stderr
        assert cli.stderr.startswith("refused: configuration 2 stays in force\n")
        assert "keystone" in cli.stderr and cli.stdout == ""

        # the file fixed back: the gate runs to the end with the new project and job
        path.write_text(yaml.safe_dump({**policy, **_host(state_dir, port)}))
        cli = _rpmgate_reload(daemon)
        assert (cli.returncode, cli.stdout) == (0, "unchanged: configuration 2 is in force\n")

        # glance's bootstrap goes ahead of the held items (post items go first): they are
        # re-based on it, their v1 runs cancelled, before the jobs are let through
        def rebased() -> bool:
            queue = daemon.get("/api/status")["queues"][0]
            attempts = {i["id"]: i["attempt"] for i in queue["items"]}
            return all(attempts.get(i, 0) > attempt for i, (_, attempt) in held.items())

        _wait(rebased, why="the held items re-based behind glance's bootstrap")
        block.unlink()
        _wait(lambda: not daemon.busy(), why="queue drained")
        results = {r["id"]: r["state"] for r in daemon.get("/api/status")["queues"][0]["recent"]}
        assert all(results[i] == "merged" for i in held), results
        published = daemon.get("/api/repos/liberty")["current"]["builds"]
        assert published["glance"].startswith("glance-1.0.0")
        assert published["nova"].startswith("nova-12.0.1")
        # glance's bootstrap went ahead of the held items (post items go first), so
        # they were tested again on a base with glance: with the new job, as glance was
        lines = marker.read_text().split()
        ran = set(zip(lines[1::2], lines[0::2], strict=True))
        glance = next(i for i in results if i not in held)
        assert {(str(i), "v2") for i in [*held, glance]} <= ran
        assert not {(str(i), "v1") for i in held} & ran  # the old runs were cancelled
        assert _current_manifest(world)["produced_by"]["config"]["version"] == 2
    finally:
        daemon.stop()


async def test_removing_a_project_with_queued_items_is_refused_with_their_list(
    tmp_path: Path, state_dir: Path
) -> None:
    world = _world(tmp_path)
    block, marker = tmp_path / "block", tmp_path / "marker"
    path = tmp_path / "rpmgate.yaml"
    host = {"state_dir": str(state_dir), "sandbox": {"bubblewrap": "off"}}
    path.write_text(yaml.safe_dump({**_policy(world, block, marker), **host}))
    gate = Gate(load_config(path))
    assert gate.reloader is not None
    await gate.start()
    try:
        await gate.wait_idle(120)
        block.touch()
        propose(gate, world, "nova", NOVA_1201, "A")
        gate.wake()
        for _ in range(600):
            with session(gate.engine) as s:
                nova = s.exec(
                    select(ItemRow).where(col(ItemRow.active), ItemRow.project == "nova")
                ).first()
            if nova is not None and nova.jobs != "none":
                break
            await asyncio.sleep(0.1)
        assert nova is not None
        before = gate.config

        # nova taken out: refused, naming the queued item
        policy = _policy(world, block, marker)
        del policy["projects"]["nova"]
        policy["queues"]["liberty"]["projects"].remove("nova")
        path.write_text(yaml.safe_dump({**policy, **host}))
        code, answer = await gate.reloader.reload("test")
        assert code == 409 and not answer.applied
        assert answer.findings == [
            f"projects.nova: removed while it has queued items: item {nova.id} (nova); wait "
            "until they are done, or dequeue them (rpmgate dequeue ITEM), then reload"
        ]
        assert gate.config is before and "nova" in gate.runtime.config.projects

        # a named build (another target) for the queue's items: refused the same way
        policy = _policy(world, block, marker)
        policy["queues"]["liberty"]["builds"] = {"el9": {"target": "cloud9s-candidate"}}
        path.write_text(yaml.safe_dump({**policy, **host}))
        code, answer = await gate.reloader.reload("test")
        assert code == 409 and not answer.applied
        assert answer.findings[0].startswith(
            f"queues.liberty.builds: changed while the queue has queued items: item {nova.id} "
        )
        assert gate.config is before

        # a key only a restart applies: refused too, the rest is not applied either
        policy = _policy(world, block, marker, version="v2", glance=True)
        path.write_text(yaml.safe_dump({**policy, **host, "listen": {"port": 9999}}))
        code, answer = await gate.reloader.reload("test")
        assert code == 409
        assert answer.findings[0].startswith("listen: changed, and only a restart applies it")
        assert "glance" not in gate.config.projects

        # the same without the listener: applied, and every part sees the new config
        path.write_text(yaml.safe_dump({**policy, **host}))
        code, answer = await gate.reloader.reload("test")
        assert code == 200 and answer.applied, answer
        assert "projects.glance: added" in answer.changes
        assert "queues.liberty: projects, jobs changed" in answer.changes
        stale = [
            type(obj).__name__
            for obj in holders(gate)
            if any(value is before for value in vars(obj).values())
        ]
        assert stale == []
        assert gate.sources["git"].projects["glance"].git == str(world.remote("glance"))  # type: ignore[attr-defined]
        with session(gate.engine) as s:
            again = s.get(ItemRow, nova.id)
        assert again is not None and again.active and again.attempt == nova.attempt
        block.unlink()
        await gate.wait_idle(180)
        assert gate.publishers["liberty"].state().get("glance") is not None
    finally:
        block.unlink(missing_ok=True)
        await gate.stop()


def _commit(work: Path, doc: dict[str, Any], message: str) -> str:
    """Commit ``doc`` as the config repository's policy (the host's keys left out)."""
    doc = {k: v for k, v in doc.items() if k not in ("state_dir", "listen")}
    (work / "rpmgate.yaml").write_text(yaml.safe_dump(doc))
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message)
    git(work, "push", "-q", "origin", "HEAD:refs/heads/main")
    return git(work, "rev-parse", "HEAD")


def test_the_gate_follows_its_config_repository_and_refuses_a_broken_commit(
    tmp_path: Path, state_dir: Path
) -> None:
    world = _world(tmp_path)
    block, marker = tmp_path / "block", tmp_path / "marker"
    bare, work = tmp_path / "config.git", tmp_path / "config"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(tmp_path, "clone", "-q", str(bare), str(work))
    first = _commit(work, _policy(world, block, marker), "gate policy")
    port = free_port()
    path = tmp_path / "local.yaml"
    local = {
        **_host(state_dir, port),
        "config_repo": {"git": str(bare), "branch": "main", "poll_interval": 0.3},
    }
    path.write_text(yaml.safe_dump(local))
    daemon = Daemon(path, f"http://127.0.0.1:{port}", tmp_path / "daemon.log")
    daemon.start()
    try:
        held = _hold_two_items(daemon, world, block)
        config = daemon.get("/api/status")["config"]
        assert (config["version"], config["commit"]) == (1, first)

        second = _commit(
            work, _policy(world, block, marker, version="v2", glance=True), "glance joins"
        )
        status = _wait(
            lambda: (doc := daemon.get("/api/status"))["config"]["commit"] == second and doc,
            why="commit 2 applied",
        )
        assert status["config"]["version"] == 2
        _assert_kept(held, status["queues"][0])

        # a commit that tries to move the database is refused, and reported
        hostile = {**_policy(world, block, marker, "v2", True), "database_url": "sqlite:////x"}
        third = _commit(work, hostile, "move the database")
        refused = _wait(
            lambda: (doc := daemon.get("/api/status")["config"])["last_refused"] and doc,
            why="commit 3 refused",
        )
        assert refused["commit"] == second and refused["last_refused"]["commit"] == third
        assert refused["last_refused"]["trigger"] == "config_repo"
        assert refused["last_refused"]["findings"][0].startswith(
            "database_url: set in the config repository, but only the local file"
        )
        check = _config_check(daemon)
        assert check["newest_refused"] and third[:12] in check["detail"]
        # the status page says it above the queues, findings and all
        page = _page(daemon)
        assert (
            f"<strong>Configuration refused:</strong> commit {third[:12]} (asked by config_repo"
        ) in page
        assert f"configuration 2 (commit {second[:12]}) stays in force" in page
        assert "<li>database_url: set in the config repository, but only the local file" in page

        fixed = _commit(
            work, _policy(world, block, marker, version="v2", glance=True), "put it back"
        )
        _wait(
            lambda: daemon.get("/api/status")["config"]["commit"] == fixed,
            why="fixed commit in force",
        )
        assert "Configuration refused" not in _page(daemon)  # the newest is in force
        block.unlink()
        _wait(lambda: not daemon.busy(), why="queue drained")
        gated = _current_manifest(world)["produced_by"]["config"]
        assert gated["commit"] == fixed and gated["version"] == 2
        assert (state_dir / "config-repo" / "applied").read_text().strip() == fixed
    finally:
        daemon.stop()
