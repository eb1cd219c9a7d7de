"""External jobs in a whole gate: real git, real rpmbuild, the gate's HTTP server on
127.0.0.1, and a fake CI (``tests/fakeci``) that calls the result URL back.

* in this process: a failing external job rejects its item with the CI's log URL
  in the item, resets the item behind, whose run is cancelled on the CI; the
  item behind passes on its new run; the result endpoint is outside API tokens;
* a real daemon (``rpmgate run``) stopped and killed with SIGKILL while the CI
  runs the job: after each restart the run is the same, nothing is sent again,
  and the result the CI posts at the end gates the change.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from sqlmodel import col, select

from gate.config import parse_config
from gate.daemon import Gate
from gate.demo_world import PackageSpec, World
from gate.web.app import make_app
from repo_state.db import session
from repo_state.models import ChangeRow, ExternalRunRow, ItemRow
from tests.conftest import NOVA_1201, propose
from tests.daemon import Daemon, free_port
from tests.fakeci import Received
from tests.fakeci.gitlab import FakeGitLabCI
from tests.fakeci.webhook import FakeWebhookCI
from tests.invariants import check_invariants, failure_of, results

pytestmark = pytest.mark.slow

API_TOKEN = "api-token-0123456789abcdef"
CEILO_802 = PackageSpec("ceilometer", "8.0.2")


def gitlab_job(fake: FakeGitLabCI) -> dict[str, Any]:
    return {
        "type": "external",
        "name": "packstack",
        "timeout": 300,
        "trigger": {
            "kind": "gitlab",
            "url": fake.url,
            "project": str(fake.project_id),
            "token": fake.trigger_token,
            "cancel_token": fake.access_token,
        },
    }


@asynccontextmanager
async def served_gate(world: World, **overrides: Any) -> AsyncIterator[tuple[Gate, str]]:
    """A gate with its web app on a real port (the CI calls it back there)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = world.config(listen={"host": "127.0.0.1", "port": port}, public_url=base, **overrides)
    gate = Gate(parse_config(config))
    runner = web.AppRunner(make_app(gate.runtime), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await gate.start()
        await gate.wait_idle(120)
        yield gate, base
    finally:
        await gate.stop()
        await runner.cleanup()


async def until(predicate: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def item_of(gate: Gate, title: str) -> int:
    with session(gate.engine) as s:
        change = s.exec(select(ChangeRow).where(ChangeRow.title == title)).one()
        item = s.exec(select(ItemRow).where(ItemRow.change_id == change.id)).one()
        return item.id or 0


def runs_of(received: list[Received], item: int) -> list[Received]:
    return [r for r in received if r.variables["RPMGATE_ITEM"] == str(item)]


async def test_a_failing_external_job_rejects_with_its_log_and_cancels_the_run_behind(
    world: World,
) -> None:
    fake = FakeGitLabCI("pass")  # the bootstrap of the branch heads passes
    await fake.start()
    try:
        queue = world.config()["queues"]["liberty"]
        queues = {"liberty": {**queue, "jobs": ["repoclosure", gitlab_job(fake)]}}
        async with served_gate(world, queues=queues, auth={"api_tokens": [API_TOKEN]}) as (
            gate,
            base,
        ):
            fake.outcome = "hold"
            propose(gate, world, "nova", NOVA_1201, "A")
            propose(gate, world, "ceilometer", CEILO_802, "B")
            gate.wake()
            await until(lambda: len(results(gate).get("active", [])) == 2)
            a, b = item_of(gate, "A"), item_of(gate, "B")
            await until(lambda: bool(runs_of(fake.received, a) and runs_of(fake.received, b)))
            (a_run,) = runs_of(fake.received, a)
            (b_first,) = runs_of(fake.received, b)
            assert a_run.variables["RPMGATE_REPO_URL"] == f"{base}/speculative/{a}-1/"
            assert b_first.variables["RPMGATE_PROJECT"] == "ceilometer"

            # the result endpoint is outside the API's tokens: the run token is enough
            assert (await fake.report(a_run, False))[0] == 200
            await until(lambda: len(runs_of(fake.received, b)) == 2)
            # B was reset: its first pipeline was cancelled, its late result refused
            assert fake.pipelines[b_first.remote_id]["status"] == "canceled"
            late = await fake.report(b_first, True)
            assert late[0] == 409
            b_second = runs_of(fake.received, b)[1]
            assert b_second.variables["RPMGATE_ATTEMPT"] != b_first.variables["RPMGATE_ATTEMPT"]
            assert (await fake.report(b_second, True))[0] == 200
            await gate.wait_idle(120)

            assert results(gate) == {"rejected": ["A"], "merged": ["B"]}
            log_url = f"{fake.log_base}/{a_run.remote_id}/console.log"
            assert failure_of(gate, "A") == (
                f"packstack: packstack failed on x86_64 (log: {log_url})"
            )
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{base}/api/items/{a}") as resp,
            ):
                doc = await resp.json()
            (job,) = [j for j in doc["jobs"] if j["name"] == "packstack"]
            assert job["state"] == "failed"
            assert f"log: {log_url}" in job["details"]
            assert "tempest: 3 tests failed" in job["details"]
            with session(gate.engine) as s:
                runs = s.exec(select(ExternalRunRow).order_by(col(ExternalRunRow.id))).all()
                states = {
                    item: [(r.attempt, r.state) for r in runs if r.item_id == item]
                    for item in (a, b)
                }
            assert states == {a: [(1, "failed")], b: [(1, "cancelled"), (2, "passed")]}, [
                (r.item_id, r.attempt, r.state, r.summary) for r in runs
            ]
            check_invariants(gate)
    finally:
        await fake.stop()


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A state directory the build user (``nobody``, when tests run as root) can reach
    (as in tests/test_crash_recovery.py)."""
    root = Path(tempfile.mkdtemp(prefix="rpmgate-external-"))
    root.chmod(0o755)
    yield root / "state"
    shutil.rmtree(root, ignore_errors=True)


def test_a_restarted_daemon_keeps_waiting_for_the_same_run(
    tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_SECRET", "hook-secret")
    world = World(tmp_path / "world").create()
    fake = FakeWebhookCI("pass", secret="hook-secret")  # the bootstrap passes
    with fake.threaded():
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        config = world.config(
            listen={"host": "127.0.0.1", "port": port},
            public_url=base,
            state_dir=str(state_dir),
            sandbox={"bubblewrap": "off"},
        )
        config["queues"]["liberty"]["jobs"] = [
            "repoclosure",
            {
                "type": "external",
                "name": "packstack",
                "timeout": 600,
                "trigger": {
                    "kind": "webhook",
                    "url": f"{fake.url}/hooks/rpmgate",
                    "secret": "${HOOK_SECRET}",
                },
            },
        ]
        config_path = tmp_path / "rpmgate.yaml"
        config_path.write_text(yaml.safe_dump(config))
        daemon = Daemon(config_path, base, tmp_path / "daemon.log")
        daemon.start()
        try:
            _wait(daemon, lambda: not daemon.busy())
            fake.outcome = "hold"
            bootstrap = len(fake.received)
            ref = world.propose("nova", NOVA_1201, "A")
            status, _ = daemon.post(
                "/api/changes", {"project": "nova", "ref": ref, "title": "A", "approve": True}
            )
            assert status == 202
            _wait(daemon, lambda: len(fake.received) > bootstrap)
            (received,) = fake.received[bootstrap:]
            token = received.token

            doc = received.document
            assert doc is not None
            job_log = state_dir / "logs" / "jobs" / f"{doc['item']}-{doc['attempt']}-packstack.log"

            def adopted() -> int:
                return job_log.read_text().count("webhook has the request")

            daemon.stop()  # SIGTERM: the task is cancelled, the attempt is still current
            assert [c for c in fake.cancels if c["run"] == received.run] == []
            daemon.start()
            _wait(daemon, lambda: adopted() == 1)  # the job runs again and waits
            daemon.kill9()
            daemon.start()
            _wait(daemon, lambda: adopted() == 2)

            # one request in all: the restarted daemon waited for the run it had sent
            assert len(fake.received) == bootstrap + 1 and received.document is not None
            assert received.document["request"] == 1 and received.token == token
            assert [c for c in fake.cancels if c["run"] == received.run] == []
            status, answer = fake.report_threadsafe(received, True)
            assert status == 200, answer
            _wait(daemon, lambda: not daemon.busy())
            text = job_log.read_text()
            assert text.count("sending the request") == 1, text
            assert ": passed: " in text and "ended already" not in text, text
        finally:
            daemon.stop()
        log = daemon.log.read_text()
        assert token not in log and "hook-secret" not in log

    gate = Gate(parse_config(config))
    try:
        assert results(gate) == {"merged": ["A"]}
        check_invariants(gate)
    finally:
        gate.engine.dispose()


def _wait(daemon: Daemon, done: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if done():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out; log tail:\n{daemon.log.read_text()[-3000:]}")
