"""A job that runs a command against the speculative repository.

The command runs in its own session (hence its own process group), with
stdout and stderr appended to the job log, and learns about the item from
its environment:

================================  ==============================================
``RPMGATE_JOB``                   the job's name
``RPMGATE_REPO_PATH``             root of the speculative repo (``<root>/<arch>/``)
``RPMGATE_REPO_URL``              the same tree served over HTTP
``RPMGATE_ITEM``                  the item id
``RPMGATE_ATTEMPT``               which run of the item this is (resets re-run jobs)
``RPMGATE_ARCHES``                the arches, separated by spaces
``RPMGATE_BASE_REPOS``            base repositories, separated by spaces
``RPMGATE_BASELINE_REPO_PATH``    root of the baseline repo: the speculative one
                                  without the item's own build (empty if none)
``RPMGATE_BASELINE_REPO_URL``     the baseline served over HTTP (empty if none)
``RPMGATE_ARCH``                  the arch this run tests (in a pipeline, each job
                                  runs once per arch; ``RPMGATE_ARCHES`` is then
                                  that arch alone)
``RPMGATE_ARCH_REPO_PATH``        that arch's tree: ``$RPMGATE_REPO_PATH/<arch>``
``RPMGATE_ARCH_REPO_URL``         the same served over HTTP
``RPMGATE_STAGE``                 the run's pipeline stage (1-based)
``RPMGATE_TRY``, ``RPMGATE_TRIES`` which try this is, of how many (``retries`` + 1)
``RPMGATE_RUNNER``                the matched runner attributes (JSON)
``RPMGATE_RUNNER_TAGS``           their tags, separated by spaces
================================  ==============================================

The runner's ``variables`` are in the environment as they are named.

The whole process group is killed when the command times out (SIGTERM, then
SIGKILL after a grace period) or when the job is cancelled (SIGKILL at once),
and swept with SIGKILL after the command exits, so a test that leaves a
daemon behind does not outlive its job.  The group is recorded in
``ctx.processes`` before the command runs (``gate.processes``), so a daemon
restarted after ``kill -9`` kills what its predecessor's jobs left running.
Processes that start a session of their own escape this, as they escape any
job runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, BinaryIO, Literal

from pydantic import Field

from gate.jobs.base import Job, JobConfig, JobContext, JobResult
from gate.processes import RecordError, spawn_group

#: how much of the end of the log is searched for the lines shown in a failure
_TAIL_BYTES = 64 * 1024


#: what a command inherits from the daemon's environment (plus LC_*)
INHERITED_ENV = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "SHELL", "TERM"}
)


class CommandJobConfig(JobConfig):
    type: Literal["command"] = "command"
    #: shell command; sees RPMGATE_REPO_PATH, RPMGATE_REPO_URL, RPMGATE_ITEM, ...
    command: str
    timeout: Annotated[float, Field(gt=0)] = 3600.0
    env: dict[str, str] = Field(default_factory=dict)


class CommandJob(Job):
    """Run ``command`` (an argv list, or a string for ``/bin/sh -c``) with a timeout."""

    def __init__(
        self,
        name: str,
        command: str | Sequence[str],
        timeout_s: float,
        env: Mapping[str, str] | None = None,
        *,
        cwd: Path | None = None,
        kill_grace_s: float = 5.0,
        tail_lines: int = 20,
    ) -> None:
        if isinstance(command, str):
            argv = ["/bin/sh", "-c", command]
        else:
            argv = [str(arg) for arg in command]
        if not argv or not argv[-1]:
            raise ValueError(f"job {name!r}: empty command")
        if timeout_s <= 0:
            raise ValueError(f"job {name!r}: timeout must be positive, got {timeout_s}")
        self.name = name
        self.argv: tuple[str, ...] = tuple(argv)
        self.timeout_s = timeout_s
        self.env: dict[str, str] = dict(env or {})
        self.cwd = cwd
        self.kill_grace_s = kill_grace_s
        self.tail_lines = tail_lines

    def environment(self, ctx: JobContext) -> dict[str, str]:
        """The command's environment: a few of ours, the job's, the item's, then RPMGATE_*.

        Only the variables a shell needs are inherited from the daemon: its
        environment holds the secrets the config refers to (API tokens, Koji
        passwords), and a job's log must never be able to print them.  A job
        that needs more names it in its ``env``.
        """
        inherited = {
            k: v for k, v in os.environ.items() if k in INHERITED_ENV or k.startswith("LC_")
        }
        return {
            **inherited,
            **self.env,
            **ctx.env,
            "RPMGATE_JOB": self.name,
            "RPMGATE_REPO_PATH": str(ctx.repo_path),
            "RPMGATE_REPO_URL": ctx.repo_url,
            "RPMGATE_ITEM": str(ctx.item_id),
            "RPMGATE_ATTEMPT": str(ctx.attempt),
            "RPMGATE_ARCHES": " ".join(ctx.arches),
            "RPMGATE_BASE_REPOS": " ".join(ctx.base_repos),
            "RPMGATE_BASELINE_REPO_PATH": str(ctx.baseline_path or ""),
            "RPMGATE_BASELINE_REPO_URL": ctx.baseline_url or "",
            "RPMGATE_BUILD": ctx.build,
            "RPMGATE_ARCH": ctx.arch,
            "RPMGATE_ARCH_REPO_PATH": str(ctx.repo_path / ctx.arch) if ctx.arch else "",
            "RPMGATE_ARCH_REPO_URL": f"{ctx.repo_url.rstrip('/')}/{ctx.arch}/" if ctx.arch else "",
            "RPMGATE_STAGE": str(ctx.stage),
            "RPMGATE_TRY": str(ctx.try_number),
            "RPMGATE_TRIES": str(ctx.tries),
            "RPMGATE_RUNNER": json.dumps(dict(ctx.attributes), sort_keys=True),
            "RPMGATE_RUNNER_TAGS": " ".join(str(t) for t in ctx.attributes.get("tags", ())),
        }

    async def run(self, ctx: JobContext) -> JobResult:
        ctx.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(ctx.log_path, "wb") as log:
            _log(log, f"$ {shlex.join(self.argv)}")
            output_start = log.tell()
            started = time.monotonic()
            try:
                proc = await spawn_group(
                    ctx.processes,
                    *self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.environment(ctx),
                    cwd=self.cwd,
                )
            except RecordError:
                raise  # the daemon's disk, not the command: a transient fault, retried
            except OSError as exc:
                summary = f"cannot start command: {exc}"
                _log(log, f"--- rpmgate: {summary}")
                return self._result(ctx, False, summary)

            timed_out = False
            try:
                try:
                    await asyncio.wait_for(proc.wait(), self.timeout_s)
                except TimeoutError:
                    timed_out = True
                    await self._terminate(proc)
            except asyncio.CancelledError:
                _kill_group(proc.pid, signal.SIGKILL)
                await _reap(proc)
                _log(log, "--- rpmgate: cancelled, process group killed")
                raise
            finally:
                # Whatever the command left running in its group goes with it.
                # (The leader is reaped by now; its pid cannot be reused as a
                # group id while any member of the group is alive.)
                _kill_group(proc.pid, signal.SIGKILL)

            elapsed = time.monotonic() - started
            returncode = proc.returncode
            if timed_out:
                summary = f"timed out after {self.timeout_s:g}s"
            elif returncode == 0:
                summary = f"command succeeded in {elapsed:.1f}s"
            elif returncode is not None and returncode < 0:
                summary = f"killed by signal {_signal_name(-returncode)}"
            else:
                summary = f"exit code {returncode}"
            log.flush()
            tail = () if returncode == 0 and not timed_out else self._tail(log, output_start)
            _log(log, f"--- rpmgate: {summary} (ran {elapsed:.1f}s)")
        return self._result(ctx, returncode == 0 and not timed_out, summary, tail)

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM the group, give it ``kill_grace_s`` to exit, then SIGKILL it."""
        _kill_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), self.kill_grace_s)
        _kill_group(proc.pid, signal.SIGKILL)
        await _reap(proc)

    def _tail(self, log: BinaryIO, output_start: int) -> tuple[str, ...]:
        """The last ``tail_lines`` lines the command wrote."""
        with open(log.name, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            start = max(output_start, end - _TAIL_BYTES)
            f.seek(start)
            text = f.read().decode("utf-8", errors="replace")
        lines = text.splitlines()
        if start > output_start and lines:
            lines = lines[1:]  # probably cut in the middle
        while lines and not lines[-1].strip():
            lines.pop()
        return tuple(lines[-self.tail_lines :]) if self.tail_lines else ()

    def _result(
        self, ctx: JobContext, passed: bool, summary: str, details: tuple[str, ...] = ()
    ) -> JobResult:
        return JobResult(
            name=self.name,
            passed=passed,
            summary=summary,
            log_path=str(ctx.log_path),
            details=details,
        )


def _log(log: BinaryIO, line: str) -> None:
    log.write(line.encode() + b"\n")
    log.flush()


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _reap(proc: asyncio.subprocess.Process) -> None:
    # After SIGKILL the leader exits promptly; bound the wait anyway so a
    # process stuck in uninterruptible sleep cannot hang the daemon.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), 10)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
