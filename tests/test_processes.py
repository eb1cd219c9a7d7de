"""ProcessGroups: real processes, real sessions, real SIGKILL; nothing of the kernel faked.

A "previous run" is a real Python process that starts groups through the
registry and is then killed with SIGKILL, as the daemon is in
``tests/test_crash_recovery.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from gate.builders import local
from gate.builders.base import BuildRequest
from gate.builders.local import LocalBackend
from gate.builders.sandbox import Sandbox
from gate.jobs.base import JobContext
from gate.jobs.command import CommandJob
from gate.merger import Merger
from gate.processes import (
    GroupRecord,
    ProcessGroups,
    RecordError,
    _dies_with_parent,
    all_processes,
    boot_id,
    process_info,
)
from repo_state.pool import Pool

#: a daemon of a previous run: starts each argument as a recorded ``/bin/sh -c``
#: group, prints their pids, then waits to be killed (on a host without
#: ``setpriv --pdeathsig`` when RPMGATE_TEST_NO_PDEATHSIG is set)
PREVIOUS_RUN = """
import asyncio, os, sys
from pathlib import Path
import gate.processes
from gate.processes import ProcessGroups

if os.environ.get("RPMGATE_TEST_NO_PDEATHSIG"):
    gate.processes._dies_with_parent = lambda: ()

async def main():
    groups = ProcessGroups(Path(sys.argv[1]))
    for command in sys.argv[2:]:
        proc = await groups.spawn("/bin/sh", "-c", command)
        print(proc.pid, flush=True)
    print("ready", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""

#: a daemon that dies (SIGKILL) after starting its command, before saying "go"
DIES_BEFORE_GO = """
import asyncio, os, signal, sys
from pathlib import Path
from gate.processes import ProcessGroups

def die(self, pid, program):
    print(pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

ProcessGroups._record = die
asyncio.run(ProcessGroups(Path(sys.argv[1])).spawn("/bin/sh", "-c", sys.argv[2]))
"""


def running(pid: int, start_time: int | None = None) -> bool:
    info = process_info(pid)
    if info is None or not info.running:
        return False
    return start_time is None or info.start_time == start_time


def wait_until(done: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def in_sessions(sessions: set[int]) -> list[tuple[int, int]]:
    """(pid, start time) of every running process of these sessions."""
    return [(p.pid, p.start_time) for p in all_processes() if p.running and p.sid in sessions]


@pytest.fixture
def previous_runs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start_previous_run(
    runs: list[subprocess.Popen[str]], directory: Path, *commands: str, pdeathsig: bool = True
) -> list[int]:
    env = dict(os.environ)
    if not pdeathsig:
        env["RPMGATE_TEST_NO_PDEATHSIG"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-c", PREVIOUS_RUN, str(directory), *commands],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    runs.append(proc)
    assert proc.stdout is not None
    pids = []
    for line in proc.stdout:
        if line.strip() == "ready":
            return pids
        pids.append(int(line))
    raise AssertionError(f"the previous run died: {proc.wait()}")


def forge(directory: Path, record: GroupRecord) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / record.file_name
    path.write_text(json.dumps(asdict(record)))
    return path


def dead_owner() -> tuple[int, int]:
    """The identity of a process that has ended."""
    proc = subprocess.Popen(["sleep", "0.1"])
    info = process_info(proc.pid)
    assert info is not None
    proc.wait()
    return proc.pid, info.start_time


# -- starting and forgetting ---------------------------------------------------------


async def test_a_command_is_recorded_before_it_runs_and_forgotten_once_reaped(
    tmp_path: Path,
) -> None:
    groups = ProcessGroups(tmp_path / "pgroups")
    proc = await groups.spawn(
        "sh", "-c", f"ls {tmp_path / 'pgroups'}; exec cat /proc/self/stat", stdout=subprocess.PIPE
    )
    out, _ = await proc.communicate()
    listing, stat = out.decode().splitlines()
    # the command itself saw its record, under the pid, session and start time it runs with
    fields = stat.rsplit(")", 1)[1].split()
    assert int(fields[2]) == int(fields[3]) == proc.pid  # it leads its group and session
    assert listing == f"{proc.pid}-{fields[19]}.json"
    for _ in range(50):
        if not groups.records():
            break
        await asyncio.sleep(0.01)
    assert groups.records() == []


async def test_a_command_that_cannot_be_recorded_never_runs(tmp_path: Path) -> None:
    # The registry's directory cannot be made (a file is in the way): as good
    # as a full disk for the record, and real.
    (tmp_path / "run").write_text("not a directory")
    groups = ProcessGroups(tmp_path / "run" / "pgroups")
    marker = tmp_path / "it-ran"
    with pytest.raises(RecordError):
        await groups.spawn("sh", "-c", f"touch {marker}")
    await asyncio.sleep(0.3)
    assert not marker.exists()
    leftovers = [p for p in all_processes() if p.running and str(marker) in _cmdline(p.pid)]
    assert leftovers == []


def test_a_command_whose_daemon_dies_before_go_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "it-ran"
    daemon = subprocess.run(
        [sys.executable, "-c", DIES_BEFORE_GO, str(tmp_path / "pgroups"), f"touch {marker}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert daemon.returncode == -signal.SIGKILL
    wrapper = int(daemon.stdout)
    wait_until(lambda: not running(wrapper))
    assert not marker.exists()


async def test_a_missing_program_raises_as_starting_it_directly_would(tmp_path: Path) -> None:
    groups = ProcessGroups(tmp_path / "pgroups")
    with pytest.raises(FileNotFoundError):
        await groups.spawn(str(tmp_path / "no-such-tool"))
    with pytest.raises(FileNotFoundError):
        await groups.spawn("no-such-tool-anywhere", env={"PATH": "/usr/bin:/bin"})
    assert groups.records() == []


async def test_a_command_job_records_its_group_and_still_reports_its_signal(
    tmp_path: Path,
) -> None:
    groups = ProcessGroups(tmp_path / "pgroups")
    ctx = job_context(tmp_path, groups)
    listed = await CommandJob("ls", f"ls {groups.directory}", 30).run(ctx)
    assert listed.passed
    assert ".json" in ctx.log_path.read_text()
    killed = await CommandJob("crash", "kill -9 $$", 30).run(ctx)
    assert killed.summary == "killed by signal SIGKILL"


def job_context(tmp_path: Path, groups: ProcessGroups) -> JobContext:
    return JobContext(
        item_id=1,
        attempt=1,
        repo_path=tmp_path,
        repo_url="http://gate.example.invalid/",
        arches=("x86_64",),
        base_repos=(),
        log_path=tmp_path / "job.log",
        processes=groups,
    )


async def test_a_job_that_cannot_be_recorded_is_a_fault_not_a_failed_check(
    tmp_path: Path,
) -> None:
    """Raised, so that the gate retries it (gate.faults), rather than failing the change."""
    (tmp_path / "run").write_text("not a directory")
    ctx = job_context(tmp_path, ProcessGroups(tmp_path / "run" / "pgroups"))
    with pytest.raises(RecordError):
        await CommandJob("ls", "ls", 30).run(ctx)


@pytest.mark.slow
async def test_a_local_build_that_cannot_be_recorded_waits_then_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "RECORD_RETRY_S", 0.05)
    (tmp_path / "run").write_text("the disk is full")
    groups = ProcessGroups(tmp_path / "run" / "pgroups")
    backend = LocalBackend(
        tmp_path / "state", Pool(tmp_path / "pool"), sandbox=Sandbox.create(processes=groups)
    )
    repo = tmp_path / "hello"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "hello.spec").write_text(HELLO_SPEC)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "hello"], check=True)
    sha, tree = (
        subprocess.run(
            [*git, "rev-parse", rev], check=True, capture_output=True, text=True
        ).stdout.strip()
        for rev in ("HEAD", "HEAD^{tree}")
    )
    request = BuildRequest(
        project="hello",
        package="hello",
        purpose="scratch",
        key="k",
        git_dir=repo,
        commit=sha,
        tree=tree,
        spec_path="hello.spec",
        target="t",
    )
    try:
        ref = await backend.submit(request)
        await asyncio.sleep(0.5)
        assert backend.rebuild_count() == 0  # nothing ran, nothing failed
        (tmp_path / "run").unlink()  # space again
        outcome = await asyncio.wait_for(backend.wait(ref), 60)
        assert outcome.ok, outcome.reason
        assert outcome.nvr == "hello-1.0-1"
    finally:
        await backend.close()


HELLO_SPEC = """\
Name: hello
Version: 1.0
Release: 1
Summary: hello
License: MIT
BuildArch: noarch

%description
Hello.

%install
mkdir -p %{buildroot}/usr/share/hello
echo hello > %{buildroot}/usr/share/hello/hello.txt

%files
/usr/share/hello/hello.txt
"""


async def test_git_through_a_recorded_merger_reads_its_stdin(tmp_path: Path) -> None:
    """``git archive | tar``: tar's stdin is a pipe, handed through the wrapper."""
    remote = tmp_path / "remote"
    subprocess.run(["git", "init", "-q", "-b", "main", str(remote)], check=True)
    (remote / "a.spec").write_text("Name: a\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "-C", str(remote), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(remote), "commit", "-qm", "a"], check=True, env=env)
    merger = Merger(tmp_path / "git", processes=ProcessGroups(tmp_path / "pgroups"))
    head = await merger.branch_head("a", str(remote), "main")
    dest = tmp_path / "export"
    dest.mkdir()
    await merger.export_tree("a", head, dest)
    assert (dest / "a.spec").read_text() == "Name: a\n"


# -- ending what a previous run left --------------------------------------------------


def test_groups_a_killed_daemon_left_running_are_killed_at_start(
    tmp_path: Path, previous_runs: list[subprocess.Popen[str]]
) -> None:
    """On a host where nothing dies with the daemon (no ``setpriv --pdeathsig``)."""
    directory = tmp_path / "pgroups"
    fifo = tmp_path / "leader-may-exit"
    os.mkfifo(fifo)
    pids = start_previous_run(
        previous_runs,
        directory,
        # a build: the leader and a background child
        "sleep 300 & exec sleep 301",
        # a job that made a group of its own inside its session
        f"{sys.executable} -c 'import os, time; os.setpgid(0, 0); time.sleep(300)' & "
        "exec sleep 302",
        # a leader that exits, leaving an orphan in its group
        f"sleep 303 & read line < {fifo}",
        pdeathsig=False,
    )
    wait_until(lambda: len(in_sessions(set(pids))) == 6)
    left = in_sessions(set(pids))
    previous_runs[0].kill()
    previous_runs[0].wait()
    with open(fifo, "w") as leader:
        leader.write("exit now\n")
    wait_until(lambda: not running(pids[2]))
    assert all(running(pid, start) for pid, start in left if pid != pids[2])

    killed = ProcessGroups(directory).kill_leftovers()

    assert killed == 5
    assert [(pid, start) for pid, start in left if running(pid, start)] == []
    assert in_sessions(set(pids)) == []
    assert ProcessGroups(directory).records() == []


@pytest.mark.skipif(not _dies_with_parent(), reason="no setpriv --pdeathsig on this host")
def test_a_leader_dies_with_its_daemon_and_the_rest_of_its_group_at_start(
    tmp_path: Path, previous_runs: list[subprocess.Popen[str]]
) -> None:
    directory = tmp_path / "pgroups"
    (leader,) = start_previous_run(previous_runs, directory, "sleep 300 & exec sleep 301")
    wait_until(lambda: len(in_sessions({leader})) == 2)
    ((child, child_start),) = [p for p in in_sessions({leader}) if p[0] != leader]
    previous_runs[0].kill()
    previous_runs[0].wait()

    # at once, without a restart: an rpmbuild would not finish packaging
    wait_until(lambda: not running(leader), timeout=2)
    assert running(child, child_start)  # a %build scriptlet would still run...

    assert ProcessGroups(directory).kill_leftovers() == 1  # ...until the restart
    assert in_sessions({leader}) == []


@pytest.mark.parametrize("offset", [-1, 1], ids=["started-before", "started-after"])
def test_a_record_whose_pid_now_names_another_process_is_left_alone(
    tmp_path: Path, offset: int
) -> None:
    unrelated = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        info = process_info(unrelated.pid)
        assert info is not None
        owner_pid, owner_start = dead_owner()
        record = GroupRecord(
            pgid=unrelated.pid,
            start_time=info.start_time + offset,  # the group this pid led is gone
            boot_id=boot_id(),
            owner_pid=owner_pid,
            owner_start_time=owner_start,
            program="rpmbuild",
        )
        forge(tmp_path / "pgroups", record)

        assert ProcessGroups(tmp_path / "pgroups").kill_leftovers() == 0

        assert unrelated.poll() is None
        assert running(unrelated.pid, info.start_time)
        assert ProcessGroups(tmp_path / "pgroups").records() == []
    finally:
        unrelated.kill()
        unrelated.wait()


def test_records_of_ended_groups_and_of_other_boots_are_dropped(tmp_path: Path) -> None:
    ended = subprocess.Popen(["true"], start_new_session=True)
    ended_info = process_info(ended.pid)
    ended.wait()
    unrelated = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        info = process_info(unrelated.pid)
        assert info is not None and ended_info is not None
        owner_pid, owner_start = dead_owner()
        mine = GroupRecord(
            pgid=ended.pid,
            start_time=ended_info.start_time,
            boot_id=boot_id(),
            owner_pid=owner_pid,
            owner_start_time=owner_start,
            program="git",
        )
        forge(tmp_path / "pgroups", mine)
        # the same pid and start time, but counted from another boot
        forge(
            tmp_path / "pgroups",
            replace(mine, pgid=unrelated.pid, start_time=info.start_time, boot_id="other-boot"),
        )
        (tmp_path / "pgroups" / "garbled.json").write_text("{")

        assert ProcessGroups(tmp_path / "pgroups").kill_leftovers() == 0

        assert running(unrelated.pid, info.start_time)
        assert list((tmp_path / "pgroups").iterdir()) == []
    finally:
        unrelated.kill()
        unrelated.wait()


def test_groups_of_a_daemon_that_still_runs_are_left_alone(
    tmp_path: Path, previous_runs: list[subprocess.Popen[str]]
) -> None:
    directory = tmp_path / "pgroups"
    (pid,) = start_previous_run(previous_runs, directory, "exec sleep 300", pdeathsig=False)
    info = process_info(pid)
    assert info is not None

    assert ProcessGroups(directory).kill_leftovers() == 0
    assert running(pid, info.start_time)
    assert len(ProcessGroups(directory).records()) == 1

    previous_runs[0].kill()
    previous_runs[0].wait()
    assert ProcessGroups(directory).kill_leftovers() == 1
    assert not running(pid, info.start_time)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
