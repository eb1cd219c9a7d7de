"""CommandJob: real processes, real process groups, real signals."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gate.jobs.base import JobContext
from gate.jobs.command import CommandJob


def make_ctx(tmp_path: Path, **env: str) -> JobContext:
    return JobContext(
        item_id=42,
        attempt=3,
        repo_path=tmp_path / "repo",
        repo_url="http://gate.example.invalid/items/42/repo",
        arches=("x86_64", "aarch64"),
        base_repos=("file:///srv/centos/BaseOS",),
        log_path=tmp_path / "logs" / "job.log",
        env=env,
    )


def process_gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie nobody reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_gone(pid):
            return True
        time.sleep(0.02)
    return False


async def wait_for_file(path: Path, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


async def test_command_sees_item_and_repo_in_its_environment(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, FROM_ITEM="item-value")
    job = CommandJob("env", "env | grep -E '^(RPMGATE_|FROM_)' | sort", 30, {"FROM_JOB": "job"})

    result = await job.run(ctx)

    assert result.passed, result
    assert result.name == "env"
    assert result.log_path == str(ctx.log_path)
    log = ctx.log_path.read_text()
    assert f"RPMGATE_REPO_PATH={tmp_path / 'repo'}\n" in log
    assert "RPMGATE_REPO_URL=http://gate.example.invalid/items/42/repo\n" in log
    assert "RPMGATE_ITEM=42\n" in log
    assert "RPMGATE_ATTEMPT=3\n" in log
    assert "RPMGATE_ARCHES=x86_64 aarch64\n" in log
    assert "RPMGATE_BASE_REPOS=file:///srv/centos/BaseOS\n" in log
    assert "RPMGATE_JOB=env\n" in log
    assert "FROM_ITEM=item-value\n" in log
    assert "FROM_JOB=job\n" in log


async def test_item_env_cannot_override_gate_variables(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, RPMGATE_ITEM="999")
    result = await CommandJob("env", ["sh", "-c", 'test "$RPMGATE_ITEM" = 42'], 30).run(ctx)
    assert result.passed, result


async def test_nonzero_exit_fails_with_exit_code_and_last_log_lines(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    command = "for i in $(seq 1 100); do echo line $i; done; echo 'nova is too old' >&2; exit 3"

    result = await CommandJob("smoke", command, 30, tail_lines=5).run(ctx)

    assert not result.passed
    assert result.summary == "exit code 3"
    assert result.details == ("line 97", "line 98", "line 99", "line 100", "nova is too old")
    log = ctx.log_path.read_text()
    assert "line 1\n" in log and "nova is too old\n" in log
    assert "exit code 3" in log.splitlines()[-1]


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    pidfile = tmp_path / "child.pid"
    job = CommandJob("slow", f"sleep 60 & echo $! > {pidfile}; wait", 0.5)

    started = time.monotonic()
    result = await job.run(ctx)

    assert time.monotonic() - started < 10
    assert not result.passed
    assert result.summary == "timed out after 0.5s"
    assert wait_gone(int(pidfile.read_text()))


async def test_timeout_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    pidfile = tmp_path / "child.pid"
    command = f"trap '' TERM; sleep 60 & echo $! > {pidfile}; wait; wait"
    job = CommandJob("stubborn", command, 0.5, kill_grace_s=0.3)

    result = await job.run(ctx)

    assert result.summary == "timed out after 0.5s"
    assert wait_gone(int(pidfile.read_text()))


async def test_cancelling_the_job_kills_the_process_group(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    pidfile = tmp_path / "child.pid"
    job = CommandJob("cancelled", f"sleep 60 & echo $! > {pidfile}; wait", 60)

    task = asyncio.create_task(job.run(ctx))
    child = int(await wait_for_file(pidfile))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert wait_gone(child)
    assert "cancelled" in ctx.log_path.read_text()


async def test_background_processes_do_not_outlive_a_passing_command(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    pidfile = tmp_path / "daemon.pid"
    job = CommandJob("leaky", f"sleep 60 >/dev/null 2>&1 & echo $! > {pidfile}", 30)

    result = await job.run(ctx)

    assert result.passed
    assert result.details == ()
    assert wait_gone(int(pidfile.read_text()))


async def test_command_killed_by_a_signal_says_which(tmp_path: Path) -> None:
    result = await CommandJob("crash", "kill -9 $$", 30).run(make_ctx(tmp_path))
    assert not result.passed
    assert result.summary == "killed by signal SIGKILL"


async def test_missing_executable_is_a_failed_result(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    result = await CommandJob("missing", [str(tmp_path / "no-such-tool")], 30).run(ctx)
    assert not result.passed
    assert result.summary.startswith("cannot start command:")
    assert "no-such-tool" in ctx.log_path.read_text()


def test_command_job_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        CommandJob("empty", [], 10)
    with pytest.raises(ValueError):
        CommandJob("never", "true", 0)


async def test_daemon_secrets_do_not_reach_commands(tmp_path, monkeypatch) -> None:
    from gate.jobs.base import JobContext
    from gate.jobs.command import CommandJob

    monkeypatch.setenv("RPMGATE_API_TOKEN", "do-not-leak-this-token")
    monkeypatch.setenv("KOJI_PASSWORD", "hunter2-hunter2")
    ctx = JobContext(
        item_id=1,
        attempt=1,
        repo_path=tmp_path,
        repo_url="http://x/",
        arches=("x86_64",),
        base_repos=(),
        log_path=tmp_path / "env.log",
    )
    job = CommandJob("env", "env", timeout_s=30, env={"EXTRA": "given"})
    result = await job.run(ctx)
    log = (tmp_path / "env.log").read_text()
    assert result.passed
    assert "do-not-leak-this-token" not in log and "hunter2" not in log
    assert "EXTRA=given" in log and "PATH=" in log and "RPMGATE_ITEM=1" in log
