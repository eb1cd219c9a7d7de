"""The Koji backend against the fake hub: real koji.ClientSession, real HTTP, real rpmbuild."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import koji
import pytest
import requests

from gate.builders import koji_watch
from gate.builders.base import BackendError, BuildError, TaskLost, TransientBackendError
from gate.builders.koji import UNHEALTHY_AFTER, KojiBackend
from gate.builders.koji_config import KojiConfig, KojiConfigError
from repo_state.pool import Pool, sha256_file
from tests.fakekoji import Failure, FakeKoji
from tests.fakekoji.distgit import SCM_PREFIX, Distgit, spec
from tests.fakekoji.tls import make_pki

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
DIST = ".lib1"


def config_for(fk: FakeKoji, **overrides: Any) -> KojiConfig:
    settings: dict[str, Any] = {
        "server": fk.url,
        "weburl": fk.weburl,
        "topurl": fk.topurl,
        "authtype": "password",
        "user": "rpmgate",
        "password": "secret",
        "poll_interval": 0.1,
        "retry_initial": 0.05,
        "retry_max_interval": 0.2,
        "retry_deadline": 20,
        "call_timeout": 10,
    }
    settings.update(overrides)
    return KojiConfig(**settings)


def start_hub(root: Path, git_root: Path, **options: Any) -> FakeKoji:
    fk = FakeKoji(root, **options).start()
    fk.hub.add_package("liberty-candidate", "hello")
    fk.hub.set_dist("liberty-build", DIST)
    fk.hub.builder.scm_roots[SCM_PREFIX] = git_root
    return fk


@pytest.fixture
def fake_koji(tmp_path: Path) -> Iterator[FakeKoji]:
    fk = start_hub(tmp_path / "hub", tmp_path / "git")
    yield fk
    fk.stop()


@pytest.fixture
def repo(tmp_path: Path) -> Distgit:
    return Distgit.create(tmp_path / "git", "hello")


@pytest.fixture
async def backends(
    tmp_path: Path, fake_koji: FakeKoji
) -> AsyncIterator[Callable[..., KojiBackend]]:
    made: list[KojiBackend] = []

    def make(state: str = "state", fk: FakeKoji | None = None, **overrides: Any) -> KojiBackend:
        backend = KojiBackend(
            config_for(fk or fake_koji, **overrides), Pool(tmp_path / "pool"), tmp_path / state
        )
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


async def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        await asyncio.sleep(0.05)


def build_tasks(fk: FakeKoji) -> list[int]:
    return fk.run(lambda: sorted(t.id for t in fk.hub.state.tasks.values() if t.method == "build"))


# -- scratch builds -------------------------------------------------------------


async def test_scratch_build_uploads_srpm_and_pools_verified_rpms_from_task_dirs(
    tmp_path: Path, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    # task ids cross 20000, so the work/tasks/<id % 10000>/<id> layout is exercised
    fk = start_hub(tmp_path / "hub2", tmp_path / "git", first_task_id=19998)
    try:
        backend = backends(fk=fk)
        request = repo.request(repo.commit(spec()))

        ref = await backend.submit(request)
        outcome = await backend.wait(ref)

        assert outcome.ok, outcome.reason
        assert outcome.nvr == f"hello-1.0-1{DIST}"
        assert sorted(a.nevra for a in outcome.artifacts) == [
            f"hello-0:1.0-1{DIST}.noarch",
            f"hello-0:1.0-1{DIST}.src",
        ]
        build = fk.hub.calls[[c.method for c in fk.hub.calls].index("build")]
        src, target, opts = build.args
        assert src == (
            f"cli-build/rpmgate-scratch-0123456789abcdef-{request.tree}/hello-1.0-1.src.rpm"
        )
        assert (target, opts) == ("liberty-candidate", {"scratch": True})
        assert fk.hub.count("rawUpload") >= 1 and fk.hub.count("checkUpload") >= 1
        # the binary RPM came from buildArch task 20000's dir: work/tasks/0/20000/
        binary = next(a for a in outcome.artifacts if a.arch == "noarch")
        on_hub = fk.hub.topdir / "work/tasks/0/20000" / binary.filename
        assert sha256_file(on_hub) == binary.checksum
        # kojihub moveBuildToScratch left a relative symlink into scratch/<owner>/task_<id>/,
        # which the download followed over HTTP
        assert on_hub.is_symlink()
        assert os.readlink(on_hub) == f"../../../../scratch/rpmgate/task_{ref}/{binary.filename}"
        for artifact in outcome.artifacts:
            pooled = backend.pool.path_for(artifact.checksum)
            assert (
                sha256_file(pooled) == artifact.checksum and artifact.size == pooled.stat().st_size
            )
        assert outcome.log == f"{fk.weburl}/taskinfo?taskID={ref}"
    finally:
        fk.stop()


async def test_scratch_build_from_scm_url_uploads_nothing(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    backend = backends(scratch_source="scm")
    request = repo.request(repo.commit(spec()))

    outcome = await backend.wait(await backend.submit(request))

    assert outcome.ok, outcome.reason
    assert fake_koji.hub.count("rawUpload") == 0
    build = next(c for c in fake_koji.hub.calls if c.method == "build")
    assert build.args[0] == f"git+{SCM_PREFIX}hello.git#{request.commit}"
    methods = fake_koji.run(lambda: sorted(t.method for t in fake_koji.hub.state.tasks.values()))
    assert methods == ["build", "buildArch", "buildSRPMFromSCM"]


async def test_same_scratch_key_is_submitted_once(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    backend = backends()
    request = repo.request(repo.commit(spec()))
    fake_koji.hold()

    refs = await asyncio.gather(*(backend.submit(request) for _ in range(3)))
    fake_koji.release()
    outcome = await backend.wait(refs[0])
    again = await backend.submit(request)

    assert outcome.ok
    assert len(set(refs)) == 1 and again == refs[0]
    assert fake_koji.hub.count("build") == 1


async def test_lost_reply_to_build_does_not_submit_twice(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    backend = backends()
    request = repo.request(repo.commit(spec()))
    # the hub creates the task, then the connection drops before the reply;
    # koji replays the call (same call number: RetryError), then we search
    fake_koji.hub.drop_reply("build")

    ref = await backend.submit(request)

    assert build_tasks(fake_koji) == [int(ref)]
    assert fake_koji.hub.count("listTasks") >= 1
    assert (await backend.wait(ref)).ok


async def test_real_build_failure_reports_arch_fault_and_log_links_without_retry(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    backend = backends()
    request = repo.request(repo.commit(spec(build="echo 'make: *** [all] Error 2'; exit 1")))

    outcome = await backend.wait(await backend.submit(request))

    assert not outcome.ok
    child = outcome.extra["failed_task"]
    assert outcome.extra["failed_arch"] == "noarch"
    assert "buildArch" in outcome.reason and "(noarch)" in outcome.reason
    assert "BuildError: error building package (arch noarch)" in outcome.reason
    task_dir = f"{fake_koji.topurl}/work/tasks/{int(child) % 10000}/{child}"
    assert outcome.log == f"{task_dir}/build.log"
    assert outcome.extra["root_log"] == f"{task_dir}/root.log"
    with urllib.request.urlopen(outcome.log) as response:
        assert b"Error 2" in response.read()
    assert fake_koji.hub.count("build") == 1


async def test_failure_names_the_failing_arch_among_several(
    tmp_path: Path, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    fk = start_hub(tmp_path / "hub2", tmp_path / "git", arches="x86_64 i686")
    try:
        fk.hub.builder.failures.append(
            Failure(
                "buildArch",
                "error building package (arch i686), mock exited with status 30; "
                "see root.log for more information",
                arch="i686",
            )
        )
        backend = backends(fk=fk)
        request = repo.request(repo.commit(spec(noarch=False)))

        outcome = await backend.wait(await backend.submit(request))

        assert not outcome.ok
        assert outcome.extra["failed_arch"] == "i686"
        assert "(arch i686), mock exited with status 30" in outcome.reason
    finally:
        fk.stop()


async def test_reset_cancels_the_obsolete_scratch_task(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    backend = backends()
    request = repo.request(repo.commit(spec(build="sleep 60")))
    ref = await backend.submit(request)
    waiter = asyncio.create_task(backend.wait(ref))

    def building() -> bool:
        return "OPEN" in [
            fake_koji.task_states()[t]
            for t in fake_koji.run(
                lambda: [
                    c.id for c in fake_koji.hub.state.children(int(ref)) if c.method == "buildArch"
                ]
            )
        ]

    await eventually(building)
    started = time.monotonic()
    await backend.cancel(ref)
    await backend.cancel(ref)  # idempotent
    outcome = await asyncio.wait_for(waiter, 10)

    assert not outcome.ok and "canceled" in outcome.reason
    assert fake_koji.hub.count("cancelTask") == 2
    states = fake_koji.task_states()
    methods = fake_koji.run(lambda: {t.id: t.method for t in fake_koji.hub.state.tasks.values()})
    assert {methods[t]: s for t, s in states.items()} == {
        "build": "CANCELED",
        "rebuildSRPM": "CLOSED",
        "buildArch": "CANCELED",
    }
    # the rpmbuild sleeping in %build was killed with the task
    await eventually(lambda: fake_koji.run(lambda: not fake_koji.hub.builder._jobs), timeout=5)
    assert time.monotonic() - started < 10


# -- faults and outages ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["503", "offline", "reset"])
async def test_hub_outage_mid_build_is_ridden_out_and_visible_in_status(
    mode: str, fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    backend = backends()
    request = repo.request(repo.commit(spec()))
    fake_koji.hold()
    ref = await backend.submit(request)
    waiter = asyncio.create_task(backend.wait(ref))
    await backend.watcher.wait_cycles(1)

    fake_koji.hub.outage = mode
    fake_koji.release()
    await eventually(lambda: fake_koji.task_states()[int(ref)] == "CLOSED")
    await eventually(lambda: backend.status()["consecutive_failures"] >= 3)
    status = backend.status()
    assert status["retrying"] and status["unreachable_since"] is not None
    assert status["last_error"]
    assert not waiter.done()
    fake_koji.hub.outage = None
    outcome = await asyncio.wait_for(waiter, 20)

    assert outcome.ok, outcome.reason
    assert not backend.status()["retrying"]
    assert fake_koji.hub.count("build") == 1


async def test_submit_retries_transient_faults_with_backoff(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    backend = backends()
    request = repo.request(repo.commit(spec()))
    fake_koji.hub.fail_requests(2, "503")
    fake_koji.hub.fail_requests(2, "offline")

    ref = await backend.submit(request)

    assert backend.status()["transient_failures"] >= 4
    assert build_tasks(fake_koji) == [int(ref)]


async def test_outage_longer_than_the_deadline_raises_a_transient_error(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    backend = backends(retry_deadline=0.5)
    request = repo.request(repo.commit(spec()))
    fake_koji.hub.outage = "503"

    with pytest.raises(TransientBackendError, match="503"):
        await backend.submit(request)
    fake_koji.hub.outage = None
    # the intent was recorded before the outage; nothing reached the hub
    assert build_tasks(fake_koji) == []
    assert await backend.recover(request) is None


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        # kojihub's unexpected-error path, and a code the client library does not know:
        # both reach us as raw xmlrpc.client.Fault
        (1, "<class 'KeyError'>: 'boom'", "fault 1: <class 'KeyError'>: 'boom'"),
        (4242, "plugin said no", "fault 4242: plugin said no"),
        (koji.ActionNotAllowed.faultCode, "not for you", "ActionNotAllowed: not for you"),
    ],
)
async def test_faults_that_are_answers_are_not_retried(
    code: int,
    text: str,
    expected: str,
    fake_koji: FakeKoji,
    repo: Distgit,
    backends: Callable[..., KojiBackend],
) -> None:
    backend = backends()
    request = repo.request(repo.commit(spec()))
    fake_koji.hub.fault_next("build", code, text)

    with pytest.raises(BuildError) as caught:
        await backend.submit(request)

    assert expected in str(caught.value)
    assert fake_koji.hub.count("build") == 1
    assert build_tasks(fake_koji) == []


async def test_a_fault_while_polling_a_task_does_not_lose_it(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    backend = backends()
    request = repo.request(repo.commit(spec()))
    ref = await backend.submit(request)
    # "lost" would make the daemon submit again; a fault is not an answer about the task
    fake_koji.hub.fault_next("getTaskInfo", 1, "<class 'psycopg2.OperationalError'>: db", times=3)

    outcome = await backend.wait(ref)

    assert outcome.ok, outcome.reason
    assert fake_koji.hub.count("build") == 1


async def test_a_bug_in_a_poll_cycle_stops_the_watch_loudly_instead_of_retrying(
    fake_koji: FakeKoji,
    repo: Distgit,
    backends: Callable[..., KojiBackend],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reply the client cannot read is not an outage: no silent retry loop."""
    backend = backends()
    request = repo.request(repo.commit(spec()))
    ref = await backend.submit(request)

    def unreadable(info: dict[str, Any], found: dict[Any, Any]) -> Any:
        raise KeyError("method")

    monkeypatch.setattr(koji_watch, "_child", unreadable)
    with pytest.raises(BackendError, match=r"^Koji backend error: KeyError: 'method' \(at "):
        await backend.wait(ref)

    status = backend.status()
    assert status["error"].startswith("KeyError: 'method' (at test_koji_backend.py:")
    assert status["last_error"] == status["error"]
    assert not status["retrying"]
    assert backend.problem() == f"Koji backend error: {status['error']}"
    assert fake_koji.hub.count("build") == 1


def held_spec(hold: Path, content: str = "hello") -> str:
    """A spec whose buildArch task keeps running while ``hold`` exists."""
    return spec(build=f"while [ -e {hold} ]; do sleep 0.1; done", content=content)


async def build_arch_child(fk: FakeKoji, parent: int) -> int:
    """The id of ``parent``'s buildArch child, once the builder made it."""

    def find() -> list[int]:
        return fk.run(
            lambda: [
                t.id
                for t in fk.hub.state.tasks.values()
                if t.method == "buildArch" and t.parent == parent
            ]
        )

    [child] = await eventually(find)
    return int(child)


async def test_a_task_the_hub_says_is_gone_fails_its_build_loudly_and_is_not_taken_over(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend], tmp_path: Path
) -> None:
    """kojihub's Task.getResult answers GenericError("No such task") for a task row
    that is gone: after MAX_TASK_FAULTS polls the build fails (a build the gate
    cannot observe is not trusted), shown all along; other tasks are not touched."""
    backend = backends()
    hold = tmp_path / "hold"
    hold.touch()
    request = repo.request(repo.commit(held_spec(hold)))
    ref = await backend.submit(request)
    other = repo.request(repo.commit(spec(content="other")), key="f" * 20)
    other_ref = await backend.submit(other)
    child = await build_arch_child(fake_koji, int(ref))
    fake_koji.run(lambda: fake_koji.hub.fault_task("getTaskResult", child, 1000, "No such task"))
    waiting = asyncio.create_task(backend.wait(ref))
    hold.unlink()

    # loud from the first poll that got the fault: status and /healthz name task and fault
    faults = await eventually(lambda: backend.status()["task_faults"])
    fault = f"getTaskResult of task {child}: GenericError: No such task"
    assert list(faults) == [ref]
    assert faults[ref]["fault"] == fault and faults[ref]["task_gone"]
    assert faults[ref]["gives_up_after"] == koji_watch.MAX_TASK_FAULTS
    assert backend.status()["last_error"] == f"task {ref}: {fault}"
    # /healthz once it repeats (UNHEALTHY_AFTER polls): one poll's fault does not flap it
    assert faults[ref]["polls"] >= UNHEALTHY_AFTER or backend.problem() is None
    problem = await eventually(backend.problem)
    assert problem.startswith(f"Koji answers faults about task {ref} ({fake_koji.weburl}/taskinfo")
    assert fault in problem
    assert backend.status()["task_faults"][ref]["polls"] >= UNHEALTHY_AFTER

    outcome = await waiting
    assert not outcome.ok
    assert outcome.reason.startswith(
        f"Koji can no longer report task {ref}: {fault} "
        f"({koji_watch.MAX_TASK_FAULTS} polls in a row): the hub lost this task or its files"
    ), outcome.reason
    assert outcome.reason.endswith("not a fault of the change")
    assert (await backend.wait(other_ref)).ok  # the fault was about one task only
    assert backend.problem() is None and backend.status()["task_faults"] == {}

    # the journal forgot the task: the same key is built anew, not taken over again
    again = await backend.submit(request)
    assert again not in (ref, other_ref)
    assert fake_koji.hub.count("build") == 3


async def test_a_task_fault_that_does_not_say_the_task_is_gone_holds_the_build_visibly(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend], tmp_path: Path
) -> None:
    """A hub bug (fault 1, as kojixmlrpc answers an unexpected exception) about one
    task may be fixed on the hub: the watch stops with a BackendError (shown, never
    retried in silence, never a failed build), and the journal keeps the task."""
    backend = backends()
    hold = tmp_path / "hold"
    hold.touch()
    request = repo.request(repo.commit(held_spec(hold)))
    ref = await backend.submit(request)
    child = await build_arch_child(fake_koji, int(ref))
    text = "<class 'AttributeError'>: 'NoneType' object has no attribute 'find'"
    fake_koji.run(lambda: fake_koji.hub.fault_task("listTaskOutput", child, 1, text))
    hold.unlink()

    with pytest.raises(BackendError) as caught:
        await backend.wait(ref)

    assert str(caught.value) == (
        f"Koji backend error: the hub keeps answering faults about task {ref}: "
        f"listTaskOutput of task {child}: fault 1: {text} "
        f"({koji_watch.MAX_TASK_FAULTS} polls in a row); the task may be fine, "
        "the watch stops until a restart"
    )
    assert backend.status()["last_error"] == f"task {ref}: listTaskOutput of task {child}: " + (
        f"fault 1: {text}"
    )
    # a restart (a new watch) takes the same task over: nothing is built twice
    assert await backend.submit(request) == ref
    assert fake_koji.hub.count("build") == 1


async def test_a_submission_costs_a_constant_number_of_calls_and_no_recovery_scan(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    backend = backends()
    per_build = []
    for i in range(3):
        request = repo.request(repo.commit(spec(content=f"v{i}")), key=f"{i:020d}")
        before = len(fake_koji.hub.calls)
        ref = await backend.submit(request)
        per_build.append(len(fake_koji.hub.calls) - before)
        assert (await backend.wait(ref)).ok
    assert fake_koji.hub.count("listTasks") == 0
    assert fake_koji.hub.count("getTaskRequest") == 0
    # the first submission also logs in; after that every one costs the same
    assert per_build[1] == per_build[2] <= per_build[0]


async def test_recovery_adopts_only_what_the_journal_names(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    first = backends("state-a")
    request = repo.request(repo.commit(spec()))
    ref = await first.submit(request)
    assert (await first.wait(ref)).ok
    # another daemon (no journal) finds nothing to adopt, and asks the hub nothing
    other = backends("state-b")
    calls = len(fake_koji.hub.calls)
    assert await other.recover(request) is None
    assert len(fake_koji.hub.calls) == calls
    # a journaled task that FAILED is not a result to adopt
    fake_koji.hub.builder.failures.append(Failure("buildArch", "boom"))
    failing = repo.request(repo.commit(spec(content="v2")), key="f" * 20)
    failed_ref = await first.submit(failing)
    assert not (await first.wait(failed_ref)).ok
    assert await first.recover(failing) is None


async def test_expired_session_is_renewed_by_koji(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    backend = backends()
    first = repo.request(repo.commit(spec()), key="a" * 20)
    await backend.submit(first)
    fake_koji.hub.expire_sessions()

    second = repo.request(repo.commit(spec(content="v2")), key="b" * 20)
    await backend.submit(second)

    logins = fake_koji.hub.count("login")
    fake_koji.hub.expire_sessions()
    third = repo.request(repo.commit(spec(content="v3")), key="c" * 20)
    await backend.submit(third)

    assert fake_koji.hub.count("login") > logins
    assert fake_koji.hub.count("build") == 3
    assert fake_koji.hub.count("build") == len(build_tasks(fake_koji))


# -- crash safety ---------------------------------------------------------------


async def test_restart_with_tasks_in_flight_reattaches_without_resubmitting(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    fake_koji.hold()
    before = backends()
    requests_ = [
        repo.request(repo.commit(spec(content=f"v{i}")), key=f"{i:020d}") for i in range(3)
    ]
    refs = [await before.submit(r) for r in requests_]
    await before.close()  # the daemon goes away; its tasks stay on the hub

    after = backends()
    recovered = [await after.recover(r) for r in requests_]
    fake_koji.release()
    outcomes = await asyncio.gather(
        *(after.wait(ref) for ref, r in zip(refs, requests_, strict=True))
    )

    assert recovered == refs
    assert all(o.ok for o in outcomes)
    assert fake_koji.hub.count("build") == 3
    assert await after.submit(requests_[0]) == refs[0]
    assert fake_koji.hub.count("build") == 3


async def test_kill_9_before_the_task_id_is_recorded_is_recovered_from_the_hub(
    tmp_path: Path, fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    request = repo.request(repo.commit(spec()))
    # the hub creates the task but sits on the reply: the submitter is killed
    # after the hub has the task and before the task id reaches its disk
    fake_koji.hub.delay_reply("build", 60)
    settings = {k: v for k, v in asdict(config_for(fake_koji)).items() if v is not None}
    job = {
        "config": settings,
        "pool": str(tmp_path / "pool"),
        "state_dir": str(tmp_path / "state"),
        "request": {**asdict(request), "git_dir": str(request.git_dir), "lookaside": None},
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakekoji.submitter", json.dumps(job)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        await eventually(lambda: fake_koji.hub.count("build") == 1 or proc.poll() is not None)
        assert proc.poll() is None, proc.communicate()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    journal = json.loads(
        next((tmp_path / "state/koji/submissions").glob("scratch-*.json")).read_text()
    )
    assert journal["task_id"] is None

    backend = backends()
    ref = await backend.recover(request)

    assert ref is not None and build_tasks(fake_koji) == [int(ref)]
    assert await backend.submit(request) == ref
    assert (await backend.wait(ref)).ok
    assert fake_koji.hub.count("build") == 1


# -- final builds ---------------------------------------------------------------


async def test_final_build_downloads_from_packages_dir_and_checks_payloadhash(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    fake_koji.hub.builder.allow_srpm_final = True
    backend = backends()
    request = repo.request(repo.commit(spec()), purpose="final")

    outcome = await backend.wait(await backend.submit(request))

    assert outcome.ok, outcome.reason
    assert outcome.nvr == f"hello-1.0-1{DIST}"
    build = next(c for c in fake_koji.hub.calls if c.method == "build")
    assert build.args[2] == {}
    assert fake_koji.hub.count("getBuild") == 1 and fake_koji.hub.count("listRPMs") == 1
    binary = next(a for a in outcome.artifacts if a.arch == "noarch")
    published = fake_koji.hub.topdir / f"packages/hello/1.0/1{DIST}/noarch" / binary.filename
    assert sha256_file(published) == binary.checksum
    existing = await backend.find_final(outcome.nvr)
    assert existing is not None and existing.state == "COMPLETE"
    assert existing.source == request.tree and existing.task_ref == outcome.extra["task_id"]
    assert existing.artifacts == outcome.artifacts


async def test_corrupt_download_is_refused_and_not_pooled(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    fake_koji.hub.builder.allow_srpm_final = True
    backend = backends()
    request = repo.request(repo.commit(spec()), purpose="final")
    outcome = await backend.wait(await backend.submit(request))
    binary = next(a for a in outcome.artifacts if a.arch == "noarch")
    on_hub = fake_koji.hub.topdir / f"packages/hello/1.0/1{DIST}/noarch" / binary.filename
    data = bytearray(on_hub.read_bytes())
    data[-100] ^= 0xFF  # same size, one bit of payload flipped
    on_hub.write_bytes(bytes(data))
    fresh_pool = Pool(backend.state_dir / "other-pool")
    other = backends("state-b")
    other.downloader.pool = fresh_pool

    with pytest.raises(TransientBackendError, match="digests do not match"):
        await other.find_final(outcome.nvr)
    source = next(a for a in outcome.artifacts if a.is_source)
    assert {p.stem for p in fresh_pool.root.rglob("*.rpm")} <= {source.checksum}


async def test_final_build_of_same_sources_is_taken_over_after_a_restart(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    fake_koji.hub.builder.allow_srpm_final = True
    request = repo.request(repo.commit(spec(build="sleep 1.5")), purpose="final")
    first = backends("state-a")
    ref = await first.submit(request)
    # the build row exists and is BUILDING while buildArch runs
    await eventually(
        lambda: fake_koji.run(
            lambda: any(
                b.state == koji.BUILD_STATES["BUILDING"]
                for b in fake_koji.hub.state.builds.values()
            )
        )
    )

    # a daemon without the first one's journal re-attaches to the BUILDING build ...
    second = backends("state-b")
    assert await second.submit(request) == ref
    outcome = await second.wait(ref)
    assert outcome.ok
    # ... and a third, after it completed, adopts the COMPLETE one
    third = backends("state-c")
    assert await third.submit(request) == ref
    assert (await third.wait(ref)).artifacts == outcome.artifacts
    assert fake_koji.hub.count("build") == 1


async def test_final_build_of_an_nvr_built_from_other_sources_fails_clearly(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    fake_koji.hub.builder.allow_srpm_final = True
    backend = backends()
    old = repo.request(repo.commit(spec(content="old")), purpose="final", key="o" * 20)
    assert (await backend.wait(await backend.submit(old))).ok

    new = repo.request(repo.commit(spec(content="new")), purpose="final", key="n" * 20)
    with pytest.raises(BuildError) as caught:
        await backend.submit(new)

    message = str(caught.value)
    assert f"hello-1.0-1{DIST} already exists in Koji" in message
    assert old.tree in message and new.tree in message and "bump the Release" in message
    assert fake_koji.hub.count("build") == 1


async def test_failed_final_build_may_be_built_again(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    fake_koji.hub.builder.allow_srpm_final = True
    fake_koji.hub.builder.failures.append(Failure("buildArch", "builder ran out of disk"))
    backend = backends()
    request = repo.request(repo.commit(spec()), purpose="final")
    failed = await backend.wait(await backend.submit(request))
    assert not failed.ok and "out of disk" in failed.reason

    fake_koji.hub.builder.failures.clear()
    ref = await backend.submit(request)
    outcome = await backend.wait(ref)

    assert outcome.ok, outcome.reason
    assert fake_koji.hub.count("build") == 2
    second_src = [c.args[0] for c in fake_koji.hub.calls if c.method == "build"][1]
    assert second_src.split("/")[1].endswith("-1")  # a fresh upload dir for the new attempt


async def test_hub_refusing_final_builds_from_srpm_says_what_to_change(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    backend = backends()
    request = repo.request(repo.commit(spec()), purpose="final")

    outcome = await backend.wait(await backend.submit(request))

    assert not outcome.ok
    assert "policy violation (build_from_srpm)" in outcome.reason
    assert "final_source" in outcome.reason


async def test_final_build_from_scm_then_tagged_after_publish_once(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    fake_koji.hub.add_package("liberty-release", "hello")
    backend = backends(final_source="scm", tag_after_publish="liberty-release")
    request = repo.request(repo.commit(spec()), purpose="final")

    outcome = await backend.wait(await backend.submit(request))
    assert outcome.ok, outcome.reason
    await backend.after_publish(outcome.nvr)
    await backend.after_publish(outcome.nvr)  # a retried publish step

    assert fake_koji.hub.count("rawUpload") == 0
    assert fake_koji.hub.count("tagBuild") == 1
    tags = fake_koji.run(
        lambda: sorted(t.name for t in fake_koji.hub.state.tags.values() if t.builds)
    )
    assert tags == ["liberty-candidate", "liberty-release"]
    # an SCM build's source is its URL: same commit, so it is adopted, not rebuilt
    assert await backends("state-b", final_source="scm").submit(request) == outcome.extra["task_id"]


async def test_tagging_refused_by_the_hub_is_a_build_error(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    fake_koji.hub.builder.allow_srpm_final = True
    backend = backends()
    request = repo.request(repo.commit(spec()), purpose="final")
    outcome = await backend.wait(await backend.submit(request))

    # kojihub RootExports.tagBuild: TagError "Package %s not in list for %s" (the tag name)
    with pytest.raises(BuildError, match="Package hello not in list for liberty-release"):
        await backend.tag_build("liberty-release", outcome.nvr)


# -- polling cost ---------------------------------------------------------------


@pytest.mark.parametrize("in_flight", [1, 50, 200])
async def test_http_requests_per_poll_cycle_stay_flat(
    in_flight: int,
    fake_koji: FakeKoji,
    repo: Distgit,
    backends: Callable[..., KojiBackend],
    capsys: pytest.CaptureFixture[str],
) -> None:
    backend = backends(scratch_source="scm", max_concurrent_calls=8)
    commit = repo.commit(spec())
    reqs = [repo.request(commit, key=f"{i:020d}") for i in range(in_flight)]
    fake_koji.hold()
    refs = await asyncio.gather(*(backend.submit(r) for r in reqs))
    waiters = [asyncio.create_task(backend.wait(ref)) for ref, r in zip(refs, reqs, strict=True)]

    await backend.watcher.wait_cycles(1)
    before = fake_koji.hub.http_requests
    await backend.watcher.wait_cycles(5)
    steady = (fake_koji.hub.http_requests - before) / 5

    # all tasks finish at once: details of finished tasks cost one request per cycle
    fake_koji.hub.builder.failures.append(Failure("buildSRPMFromSCM", "no such commit"))
    before_finish = fake_koji.hub.http_requests
    cycles_before = backend.watcher.cycles
    fake_koji.release()
    outcomes = await asyncio.wait_for(asyncio.gather(*waiters), 60)
    finishing = fake_koji.hub.http_requests - before_finish
    cycles = backend.watcher.cycles - cycles_before

    with capsys.disabled():
        print(
            f"\n[koji poll] {in_flight} in flight: {steady:.1f} HTTP requests per steady "
            f"cycle; {finishing} requests in the {cycles} cycles until all finished"
        )
    assert steady == 1
    assert all(not o.ok and "no such commit" in o.reason for o in outcomes)
    assert finishing <= 2 * cycles


# -- authentication and configuration -------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    return make_pki(tmp_path_factory.mktemp("pki"))


async def test_ssl_client_certificate_login_and_https_downloads(
    tmp_path: Path, pki, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    fk = start_hub(tmp_path / "tls-hub", tmp_path / "git", ssl_context=pki.server_context())
    try:
        backend = backends(
            fk=fk,
            authtype="ssl",
            user=None,
            password=None,
            cert=str(pki.client_pem),
            serverca=str(pki.ca),
        )
        request = repo.request(repo.commit(spec()))

        outcome = await backend.wait(await backend.submit(request))

        assert outcome.ok, outcome.reason
        assert fk.hub.count("sslLogin") >= 1 and fk.hub.count("login") == 0
        sessions = {(s.user.name, s.authtype) for s in fk.hub.state.sessions.values()}
        assert sessions == {("rpmgate", koji.AUTHTYPES["SSL"])}
    finally:
        fk.stop()


async def test_gssapi_login_uses_principal_and_keytab(
    tmp_path: Path,
    pki,
    repo: Distgit,
    backends: Callable[..., KojiBackend],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}

    class FakeKerberosAuth(requests.auth.AuthBase):
        """Stands in for requests_gssapi: sends the principal where a token would go."""

        def __init__(self, principal: str | None = None, **kwargs: Any) -> None:
            seen["principal"] = principal
            seen["keytab"] = os.environ.get("KRB5_CLIENT_KTNAME")

        def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
            r.headers["Authorization"] = (
                "Negotiate " + base64.b64encode(seen["principal"].encode()).decode()
            )
            return r

    monkeypatch.setattr(koji.reqgssapi, "HTTPKerberosAuth", FakeKerberosAuth)
    fk = start_hub(tmp_path / "tls-hub", tmp_path / "git", ssl_context=pki.server_context())
    try:
        backend = backends(
            fk=fk,
            authtype="kerberos",
            user=None,
            password=None,
            principal="rpmgate@EXAMPLE.COM",
            keytab="/etc/rpmgate.keytab",
            serverca=str(pki.ca),
        )
        fk.hold()
        await backend.submit(repo.request(repo.commit(spec())))

        assert seen == {"principal": "rpmgate@EXAMPLE.COM", "keytab": "/etc/rpmgate.keytab"}
        sessions = {(s.user.name, s.authtype) for s in fk.hub.state.sessions.values()}
        assert sessions == {("rpmgate", koji.AUTHTYPES["GSSAPI"])}
    finally:
        fk.stop()


async def test_anonymous_backend_reads_but_cannot_submit(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    backend = backends(authtype="noauth", user=None, password=None)

    assert await backend.find_final("hello-9-9") is None
    with pytest.raises(BuildError, match="noauth"):
        await backend.submit(repo.request(repo.commit(spec())))
    assert fake_koji.hub.count("build") == 0


async def test_wrong_password_is_a_build_error_not_an_outage(
    fake_koji: FakeKoji, repo: Distgit, backends: Callable[..., KojiBackend]
) -> None:
    backend = backends(password="wrong")

    # kojihub auth.Session.login: AuthError 'invalid username or password'
    with pytest.raises(BuildError, match="invalid username or password"):
        await backend.submit(repo.request(repo.commit(spec())))


def test_config_reads_the_koji_profile_and_applies_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".koji").mkdir(parents=True)
    (home / ".koji" / "client.pem").write_text("cert")
    (home / ".koji" / "config").write_text(
        "[liberty]\n"
        "server = https://koji.example.com/kojihub\n"
        "weburl = https://koji.example.com/koji\n"
        "topurl = https://kojipkgs.example.com\n"
        "authtype = ssl\n"
        "cert = ~/.koji/client.pem\n"
        "serverca = ~/.koji/ca.pem\n"
    )
    monkeypatch.setenv("HOME", str(home))

    conn = KojiConfig(profile="liberty", topurl="https://mirror.example.com/koji/").resolve()

    assert conn.server == "https://koji.example.com/kojihub"
    assert conn.weburl == "https://koji.example.com/koji"
    assert conn.topurl == "https://mirror.example.com/koji"
    assert conn.authtype == "ssl"
    assert conn.cert == str(home / ".koji/client.pem")
    assert conn.serverca == str(home / ".koji/ca.pem")
    assert KojiConfig(profile="liberty", authtype="kerberos").resolve().authtype == "gssapi"
    with pytest.raises(KojiConfigError, match="no configuration for profile name: nope"):
        KojiConfig(profile="nope").resolve()
    with pytest.raises(KojiConfigError, match="topurl"):
        KojiConfig(server="https://koji.example.com/kojihub").resolve()


def test_config_without_authtype_infers_it_like_the_koji_cli(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("cert")
    base = {"server": "https://k/kojihub", "topurl": "https://k/files"}

    assert KojiConfig(**base, cert=str(cert)).resolve().authtype == "ssl"
    assert KojiConfig(**base, user="me", password="pw").resolve().authtype == "password"
    assert KojiConfig(**base, principal="me@EXAMPLE.COM").resolve().authtype == "gssapi"
    assert KojiConfig(**base).resolve().authtype == "noauth"


async def test_unknown_task_reference_is_task_lost(
    backends: Callable[..., KojiBackend],
) -> None:
    backend = backends()
    with pytest.raises(TaskLost):
        await backend.wait("424242")
    with pytest.raises(TaskLost):
        await backend.wait("not-a-task")
