"""The process groups the daemon starts, recorded so that a restart can end them.

Every command the daemon runs (rpmbuild, a command job, git) leads a session
of its own, so that cancelling it kills everything it started with one
``killpg``.  The flip side: a ``kill -9`` of the daemon leaves those sessions
running, and a restarted daemon would run on top of them: over its worker
limit, with a final build nobody recorded still going.  systemd's
``KillMode=control-group`` would end them, and bubblewrap's
``--die-with-parent`` ends a sandboxed build; the daemon relies on neither.

:class:`ProcessGroups` keeps one small file per live group under
``<state_dir>/run/pgroups/``: the group id (its leader's pid), the leader's
start time (``/proc/<pid>/stat`` field 22, clock ticks after boot), the boot
id, and the daemon process that started it (pid and start time).  The file is
written like every state file (temporary file, fsync, ``rename(2)``, fsync of
the directory) and removed once the leader has been reaped and the rest of
its group killed.

**Recorded before it runs.**  A process can be recorded only once it exists
(its pid and start time are known only then), yet it must do nothing before
the record is on disk.  So every command starts as a tiny ``/bin/sh``
wrapper that blocks reading a pipe; once the record is written the daemon
writes ``go`` to the pipe, and the wrapper ``exec``s the command, which keeps
the pid, group, session and start time that were recorded.  If the record
cannot be written (disk full, ...), the daemon closes the pipe, kills the
wrapper and raises: the command never ran.  If the daemon dies before saying
``go``, the pipe reaches end-of-file and the wrapper exits without running
anything.  (Writing the record in the child between fork and exec, with
``preexec_fn``, would save the exec but is unsafe in a process with threads,
and the daemon has ``asyncio.to_thread`` workers.)  The pipe is the wrapper's
stdin; the command gets ``/dev/null`` or the descriptor its caller gave.

**Dies with the daemon.**  The wrapper execs the command through ``setpriv
--pdeathsig KILL`` (util-linux; skipped where missing), so the leader gets
SIGKILL the moment the daemon dies: an rpmbuild cannot finish packaging in
the seconds between a ``kill -9`` and the restart.  This only reaches the
leader, not what it started (a ``%build`` scriptlet, a job's children): the
restart below kills the rest, and it alone is what the daemon relies on.

**Ended at start.**  :meth:`ProcessGroups.kill_leftovers` runs when the
runtime is created, before the database, the drivers or the HTTP server.  For
each record:

* another boot id: the group ended with the previous boot; forgotten;
* the daemon process that recorded it still runs (same pid and start time):
  left alone, it is that process's (a tool or test on the same state dir);
* a process holds the group's pid with another start time: the pid was reused,
  which the kernel does only once no process is left in the group or the
  session; forgotten, nothing is signalled;
* otherwise every live process of the group or the session that started no
  earlier than the leader gets SIGKILL, through a pidfd opened after its start
  time was checked again, and the start waits until none is left.

One case rests on timing rather than identity: a leader that exited while
members of its group live on (the daemon died between reaping a command and
sweeping its group).  Its members are killed as the group's, which would be
wrong only if the whole group had died and the kernel had cycled through
every pid back to this one, and the new owner of that number had started a
group and exited, all while the daemon was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from asyncio.subprocess import Process
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from repo_state.durable import write_atomically

log = logging.getLogger(__name__)

#: what a recorded command starts as: wait for "go" on stdin, then exec the command
#: with the stdin named by $1 (the "go" pipe is fd 0: dash cannot name fds above 9)
_WAIT_FOR_GO = 'IFS= read -r go || go=; [ "$go" = go ] || exit 125; in=$1; shift; exec "$@" <"$in"'

#: process states that are no longer running anything (zombie, dead)
_ENDED = frozenset({"Z", "X", "x"})
#: how long the start waits for killed processes to disappear
KILL_WAIT_S = 10.0
#: a temporary file (a record write cut short) older than this is removed at start
_STALE_TMP_S = 60.0


class RecordError(OSError):
    """A command could not be recorded, so it was not run."""


@dataclass(frozen=True)
class ProcessInfo:
    """One line of ``/proc/<pid>/stat``, the fields this module uses."""

    pid: int
    state: str
    ppid: int
    pgid: int
    sid: int
    #: clock ticks after boot; with the pid, a process's identity
    start_time: int

    @property
    def running(self) -> bool:
        return self.state not in _ENDED


def process_info(pid: int) -> ProcessInfo | None:
    """What ``/proc/<pid>/stat`` says of ``pid`` now; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # field 2, the command name, may hold spaces and ")": the rest follows the last ")"
    fields = raw[raw.rindex(b")") + 2 :].split()
    return ProcessInfo(
        pid=pid,
        state=fields[0].decode(),
        ppid=int(fields[1]),
        pgid=int(fields[2]),
        sid=int(fields[3]),
        start_time=int(fields[19]),
    )


def all_processes() -> list[ProcessInfo]:
    """Every process /proc shows now."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            info = process_info(int(name))
            if info is not None:
                found.append(info)
    return found


@cache
def boot_id() -> str:
    """This boot's id: records from another boot name groups that are gone."""
    return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()


@dataclass(frozen=True)
class GroupRecord:
    """One process group the daemon started, as its file holds it."""

    #: the group (and session) id: the leader's pid
    pgid: int
    #: the leader's start time (``/proc/<pid>/stat`` field 22)
    start_time: int
    boot_id: str
    #: the daemon process that started it
    owner_pid: int
    owner_start_time: int
    #: the command's program, for the log (never its arguments: URLs may hold credentials)
    program: str

    @property
    def file_name(self) -> str:
        return f"{self.pgid}-{self.start_time}.json"

    def members(self, processes: Iterable[ProcessInfo]) -> list[ProcessInfo]:
        """The running processes of this group or session among ``processes``."""
        processes = list(processes)
        for proc in processes:
            if proc.pid == self.pgid and proc.start_time != self.start_time:
                return []  # the pid was reused: nothing of the group or session is left
        return [
            p
            for p in processes
            if p.running and self.pgid in (p.pgid, p.sid) and p.start_time >= self.start_time
        ]


class ProcessGroups:
    """The daemon's process groups, one record file each under ``directory``.

    The files are the registry: two handles on one directory see the same
    groups.  A command started by :meth:`spawn` is recorded before it runs
    and forgotten when its group is gone; :meth:`kill_leftovers` ends what a
    previous run left alive.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._reapers: set[asyncio.Task[None]] = set()

    @classmethod
    def under(cls, state_dir: Path) -> ProcessGroups:
        """The registry of the daemon whose state directory is ``state_dir``."""
        return cls(Path(state_dir) / "run" / "pgroups")

    async def spawn(self, program: str, *args: str, **kwargs: Any) -> Process:
        """Start ``program`` leading a new session, recorded before it runs.

        ``kwargs`` are :func:`asyncio.create_subprocess_exec` keywords
        (``stdout``, ``stderr``, ``env``, ``cwd``, ``user``...); ``stdin`` is
        ``DEVNULL`` (the default) or the descriptor of a pipe or file, which
        the command reopens through ``/proc/self/fd``.  Raises
        :class:`FileNotFoundError` when ``program`` cannot be found (as
        starting it would) and :class:`RecordError` when the record cannot be
        written; either way nothing ran.
        """
        _check_executable(program, kwargs.get("env"), kwargs.get("cwd"))
        stdin = kwargs.pop("stdin", asyncio.subprocess.DEVNULL)
        pass_fds: tuple[int, ...]
        if stdin in (None, asyncio.subprocess.DEVNULL):
            stdin_path, pass_fds = os.devnull, ()
        elif isinstance(stdin, int) and stdin >= 0:
            stdin_path, pass_fds = f"/proc/self/fd/{stdin}", (stdin,)
        else:
            raise ValueError(f"stdin {stdin!r}: DEVNULL or a descriptor")
        go_read, go_write = os.pipe()
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    "/bin/sh",
                    "-c",
                    _WAIT_FOR_GO,
                    "rpmgate-spawn",
                    stdin_path,
                    *_dies_with_parent(),
                    program,
                    *args,
                    stdin=go_read,
                    pass_fds=pass_fds,
                    start_new_session=True,
                    **kwargs,
                )
            finally:
                os.close(go_read)
            try:
                path = self._record(proc.pid, program)
            except OSError as exc:
                # Without "go" the wrapper cannot run the command; end it now.
                os.close(go_write)
                go_write = -1
                _kill_group(proc.pid)
                await proc.wait()
                raise RecordError(
                    exc.errno or errno.EIO, f"cannot record {program}'s process group: {exc}"
                ) from exc
            with contextlib.suppress(BrokenPipeError):  # killed meanwhile: it is reaped below
                os.write(go_write, b"go\n")
        finally:
            if go_write >= 0:
                os.close(go_write)
        reaper = asyncio.create_task(self._forget_when_reaped(proc, path))
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)
        return proc

    def records(self) -> list[tuple[Path, GroupRecord]]:
        """The recorded groups (a file that cannot be read is removed)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.iterdir()):
            if path.name.startswith("."):
                _remove_stale_tmp(path)
                continue
            try:
                record = GroupRecord(**json.loads(path.read_text(encoding="utf-8")))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, TypeError) as exc:
                log.warning("removing unreadable process group record %s: %s", path.name, exc)
                _forget(path)
                continue
            found.append((path, record))
        return found

    def kill_leftovers(self, timeout: float = KILL_WAIT_S) -> int:
        """SIGKILL the groups a previous run left alive, wait until they are gone,
        forget the records of groups that ended; return how many processes were killed.

        Groups still alive after ``timeout`` (a process stuck in the kernel) are
        logged and kept on record for the next start.
        """
        records = self.records()
        if not records:
            return 0
        processes = all_processes()
        running = {(p.pid, p.start_time) for p in processes if p.running}
        doomed: dict[Path, GroupRecord] = {}
        for path, record in records:
            if record.boot_id != boot_id():
                _forget(path)
            elif (record.owner_pid, record.owner_start_time) in running:
                continue  # its daemon still runs: not ours to end
            elif members := record.members(processes):
                log.warning(
                    "killing process group %d (%s) left running by a previous run: %d processes",
                    record.pgid,
                    record.program,
                    len(members),
                )
                doomed[path] = record
            else:
                _forget(path)
        killed: set[tuple[int, int]] = set()
        deadline = time.monotonic() + timeout
        while doomed:
            processes = all_processes()
            for path, record in list(doomed.items()):
                members = record.members(processes)
                if not members:
                    _forget(path)
                    del doomed[path]
                for proc in members:
                    if _kill_process(proc):
                        killed.add((proc.pid, proc.start_time))
            if doomed and time.monotonic() > deadline:
                log.error(
                    "process groups %s survive SIGKILL after %gs; kept on record",
                    ", ".join(str(r.pgid) for r in doomed.values()),
                    timeout,
                )
                break
            if doomed:
                time.sleep(0.01)
        return len(killed)

    # -- one group ------------------------------------------------------------------

    def _record(self, pid: int, program: str) -> Path:
        leader = process_info(pid)
        owner = _owner()
        if leader is None or not leader.running:
            raise ProcessLookupError(errno.ESRCH, f"process {pid} ended before it was recorded")
        record = GroupRecord(
            pgid=pid,
            start_time=leader.start_time,
            boot_id=boot_id(),
            owner_pid=owner.pid,
            owner_start_time=owner.start_time,
            program=os.path.basename(program),
        )
        path = self.directory / record.file_name
        write_atomically(path, json.dumps(asdict(record), sort_keys=True) + "\n")
        return path

    async def _forget_when_reaped(self, proc: Process, path: Path) -> None:
        await proc.wait()
        # Whatever the command left in its group has no reason to outlive it
        # (and would otherwise outlive its record).
        _kill_group(proc.pid)
        _forget(path)


async def spawn_group(
    groups: ProcessGroups | None, program: str, *args: str, **kwargs: Any
) -> Process:
    """Start ``program`` leading a new session: recorded in ``groups`` when given
    (the daemon always gives it), else unrecorded (tests, one-off tools)."""
    if groups is not None:
        return await groups.spawn(program, *args, **kwargs)
    return await asyncio.create_subprocess_exec(program, *args, start_new_session=True, **kwargs)


@cache
def _dies_with_parent() -> tuple[str, ...]:
    """The command prefix that makes a process get SIGKILL when the daemon dies."""
    setpriv = shutil.which("setpriv")
    prefix = (setpriv, "--pdeathsig", "KILL", "--") if setpriv else ()
    try:
        works = bool(prefix) and subprocess.run([*prefix, "true"], timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        works = False
    if not works:
        log.info(
            "no setpriv --pdeathsig here: a command outlives a killed daemon until it restarts"
        )
        return ()
    return prefix


def _owner() -> ProcessInfo:
    """This process, as its records name it."""
    me = process_info(os.getpid())
    assert me is not None
    return me


def _check_executable(program: str, env: Mapping[str, str] | None, cwd: Any) -> None:
    """Raise FileNotFoundError, as starting ``program`` directly would, when there is none
    (the wrapper would only exit 127)."""
    if os.sep in program:
        found = os.path.join(str(cwd or "."), program)
        ok = os.path.isfile(found) and os.access(found, os.X_OK)
    else:
        path = (os.environ if env is None else env).get("PATH", os.defpath)
        ok = shutil.which(program, path=path) is not None
    if not ok:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _kill_process(proc: ProcessInfo) -> bool:
    """SIGKILL ``proc`` if it is still the process it was (pid and start time)."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return False
    except OSError:  # no pidfds (Linux before 5.3): check, then signal by pid
        now = process_info(proc.pid)
        if now is None or now.start_time != proc.start_time:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        return True
    try:
        # The pidfd names one process for good: if that one started when
        # ``proc`` did, the signal cannot reach a process that reused the pid.
        now = process_info(proc.pid)
        if now is None or now.start_time != proc.start_time:
            return False
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False
    except PermissionError as exc:
        log.error("cannot kill process %d: %s", proc.pid, exc)
        return False
    finally:
        os.close(pidfd)


def _forget(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _remove_stale_tmp(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if time.time() - path.stat().st_mtime > _STALE_TMP_S:
            path.unlink()
