"""Turn a distgit commit into a source RPM with ``git archive`` and ``rpmbuild -bs``.

This is the first half of every local build and the upload step of Koji
scratch builds from SRPM.  The tree is exported (not checked out) so the
repository the gate keeps is never touched, and every rpmbuild directory is
pointed into ``workdir`` so builds running side by side share nothing.

Subprocesses run in their own process group: cancelling the coroutine kills
the whole group (rpmbuild, its ``/bin/sh`` scriptlets and whatever they
started), so an obsolete build stops burning CPU at once.  Each group is
recorded (``gate.processes``) before it runs, so a restart after ``kill -9``
ends what the dead daemon left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gate.builders import lookaside as lookaside_mod
from gate.builders.base import BuildRequest
from gate.builders.sandbox import Sandbox, minimal_environment
from gate.processes import ProcessGroups, spawn_group

_HEX_ID = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_QUERY_FORMAT = "%{NAME}\\n%{EPOCHNUM}\\n%{VERSION}\\n%{RELEASE}\\n"


class SrpmError(Exception):
    """The SRPM could not be made; ``reason`` is one line, ``log`` the full output."""

    def __init__(self, reason: str, log: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.log = log


@dataclass(frozen=True)
class SrpmResult:
    """A built source RPM and what its header says."""

    path: Path
    name: str
    epoch: int
    version: str
    release: str
    #: the spec's BuildRequires (``rpmlib(...)`` features left out)
    build_requires: tuple[str, ...]
    #: output of git archive, lookaside fetches and rpmbuild -bs
    log: str

    @property
    def nvr(self) -> str:
        return f"{self.name}-{self.version}-{self.release}"


def _command_env() -> dict[str, str]:
    # Trusted tools (git, rpm queries) get no more of the daemon's environment
    # than a sandboxed build does: it holds the secrets the config refers to.
    return minimal_environment(os.environ.get("HOME") or "/")


def kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL ``proc``'s process group (it leads one: ``start_new_session``)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _reap(proc: asyncio.subprocess.Process) -> int:
    """Wait for ``proc``; if we are cancelled meanwhile, kill its group first."""
    try:
        returncode = await proc.wait()
    except asyncio.CancelledError:
        kill_group(proc)
        await asyncio.shield(proc.wait())
        raise
    # A scriptlet may have left a background process holding the build dir;
    # the build is over, so nothing in its group has a reason to live.
    kill_group(proc)
    return returncode


@dataclass(frozen=True)
class Confined:
    """Where a change-controlled command runs: ``sandbox``, writing only ``writable``."""

    sandbox: Sandbox
    writable: Path
    readable: tuple[Path, ...] = ()


async def _spawn(
    argv: Sequence[str], confined: Confined | None, processes: ProcessGroups | None, **io: Any
) -> asyncio.subprocess.Process:
    """Start ``argv``: confined (change-controlled code; recorded in the sandbox's
    ``processes``), or plainly with a minimal environment (the gate's own tools:
    git, rpm queries; recorded in ``processes``)."""
    if confined is not None:
        return await confined.sandbox.spawn(
            argv, confined.writable, confined.readable, stdin=asyncio.subprocess.DEVNULL, **io
        )
    return await spawn_group(
        processes, *argv, stdin=asyncio.subprocess.DEVNULL, env=_command_env(), **io
    )


async def run_logged(
    argv: Sequence[str], log_path: Path, *, confined: Confined | None = None
) -> int:
    """Run ``argv`` with stdout and stderr appended to ``log_path``; return its exit code.

    Output goes straight to the file (no pipe), so a chatty build can neither
    fill memory nor block on a full pipe.  The log is opened here, so it
    lives where the confined command cannot replace it.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(("$ " + " ".join(argv) + "\n").encode())
        log.flush()
        proc = await _spawn(argv, confined, None, stdout=log, stderr=asyncio.subprocess.STDOUT)
        return await _reap(proc)


async def run_capture(
    argv: Sequence[str],
    *,
    confined: Confined | None = None,
    processes: ProcessGroups | None = None,
) -> tuple[int, str, str]:
    """Run a short command; return (exit code, stdout, stderr).

    An unconfined command's process group is recorded in ``processes`` (a
    confined one's in its sandbox's).
    """
    proc = await _spawn(
        argv, confined, processes, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        kill_group(proc)
        await asyncio.shield(proc.wait())
        raise
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


#: rpmbuild's own verdict on a failing scriptlet: says only which section failed
_BAD_EXIT = re.compile(r"^error: Bad exit status from \S+ \((%[\w-]+)\)")
#: rpmbuild announcing a section's script (``Executing(%build): /bin/sh -e ...``)
_EXECUTING = re.compile(r"^Executing\((%[\w-]+)\):")
#: the longest reason kept (a log line can be anything)
MAX_REASON = 500


def failure_reason(log: str, command: str = "rpmbuild") -> str:
    """The most telling words of a failed rpmbuild, for a packager.

    rpmbuild ends with ``error: Bad exit status from /var/tmp/rpm-tmp.X
    (%build)``, which says where but not why.  The why is the first ``error:``
    line before it (``error: File not found: ...``, a spec's own ``echo
    'error: ...'``), else the failing section's last line of output (``make:
    *** ... Error 2``), else its last traced command.  The section is named:
    ``rpmbuild failed in %build: No module named pbr``.
    """
    section, first_error, last_output, last_line = "", "", "", ""
    for raw in log.splitlines():
        line = raw.strip()
        if not line:
            continue
        bad_exit = _BAD_EXIT.match(line)
        if bad_exit:
            section = bad_exit.group(1)
            break
        executing = _EXECUTING.match(line)
        if executing:
            section, last_output, last_line = executing.group(1), "", ""
            continue
        if line.startswith("error:") and not first_error:
            first_error = line.removeprefix("error:").strip()
        last_line = line
        if not line.startswith("+ "):  # sh -x traces its commands with "+ "
            last_output = line
    what = first_error or last_output or last_line or "no output"
    where = f" in {section}" if section else ""
    return f"{command} failed{where}: {what[:MAX_REASON]}"


def rpmbuild_dir_defines(topdir: Path) -> list[str]:
    """``--define`` arguments that keep every rpmbuild directory under ``topdir``."""
    dirs = {
        "_topdir": topdir,
        "_builddir": topdir / "BUILD",
        "_buildrootdir": topdir / "BUILDROOT",
        "_rpmdir": topdir / "RPMS",
        "_srcrpmdir": topdir / "SRPMS",
        "_sourcedir": topdir / "SOURCES",
        "_specdir": topdir / "SPECS",
    }
    args: list[str] = []
    for macro, path in dirs.items():
        args += ["--define", f"{macro} {path}"]
    # Sources come from git and the lookaside only, never from a spec's URL.
    args += ["--define", "_disable_source_fetch 1"]
    return args


async def build_srpm(request: BuildRequest, workdir: Path, sandbox: Sandbox) -> SrpmResult:
    """Export ``request.commit`` and build its SRPM under ``workdir``.

    ``rpmbuild -bs`` parses the change's spec, which runs its ``%(…)``: it
    runs in ``sandbox``, reading the exported tree ``<workdir>/src`` and
    writing only ``<workdir>/top``; the log and the tree are out of its reach.

    Lookaside files named by a ``sources`` file next to the spec are fetched
    into the exported tree first.  Raises :class:`SrpmError` (with the log) when
    the tree, the sources or the spec are at fault, and
    :class:`~gate.builders.lookaside.LookasideUnavailable` (a
    ``TransientBackendError``) when the lookaside server is down.
    """
    workdir = Path(workdir)
    src, top = workdir / "src", workdir / "top"
    log_path = workdir / "srpm.log"
    await asyncio.to_thread(_fresh_dirs, workdir, src, top, log_path)

    await _export_tree(request, workdir, src, log_path, sandbox.processes)
    spec = src / request.spec_path
    if not spec.is_file():
        raise SrpmError(
            f"spec file {request.spec_path} not found at {request.commit}", _read(log_path)
        )
    await _provide_lookaside(request, spec.parent, log_path)

    # _sourcedir/_specdir are the exported tree itself: a distgit keeps spec,
    # patches and (now) tarballs side by side.
    argv = ["rpmbuild", "-bs", *rpmbuild_dir_defines(top)]
    argv += ["--define", f"_sourcedir {spec.parent}", "--define", f"_specdir {spec.parent}"]
    await asyncio.to_thread(sandbox.prepare, top)
    confined = Confined(sandbox, writable=top, readable=(src,))
    if await run_logged([*argv, str(spec)], log_path, confined=confined) != 0:
        log = _read(log_path)
        raise SrpmError(failure_reason(log, "rpmbuild -bs"), log)
    srpms = output_files(top / "SRPMS", "*.rpm")
    if len(srpms) != 1:
        raise SrpmError(f"rpmbuild -bs wrote {len(srpms)} source RPMs, expected 1", _read(log_path))
    return await _describe(srpms[0], _read(log_path), sandbox.processes)


def output_files(directory: Path, pattern: str) -> list[Path]:
    """Regular files matching ``pattern`` under ``directory``, sorted; symlinks never.

    A confined build writes these: a symlink (or a link-made directory) there
    could point the daemon at any file it can read, which would then be
    pooled, published or served as a log.
    """
    found = []
    for path in sorted(directory.rglob(pattern)) if directory.is_dir() else []:
        relative = path.relative_to(directory)
        parts = [directory.joinpath(*relative.parts[:i]) for i in range(1, len(relative.parts))]
        if path.is_symlink() or any(p.is_symlink() for p in parts):
            continue
        if stat.S_ISREG(path.lstat().st_mode):
            found.append(path)
    return found


def _fresh_dirs(workdir: Path, src: Path, top: Path, log_path: Path) -> None:
    # A retry in the same workdir must not see files from the previous attempt.
    for stale in (src, top):
        shutil.rmtree(stale, ignore_errors=True)
    src.mkdir(parents=True)
    log_path.unlink(missing_ok=True)


async def _git(
    request: BuildRequest, log_path: Path, processes: ProcessGroups | None, *args: str
) -> str:
    code, out, err = await run_capture(
        ["git", "-C", str(request.git_dir), *args], processes=processes
    )
    if code != 0:
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"$ git {' '.join(args)}\n{out}{err}")
        raise SrpmError(f"git {args[0]} failed: {err.strip() or out.strip()}", _read(log_path))
    return out.strip()


async def _export_tree(
    request: BuildRequest,
    workdir: Path,
    src: Path,
    log_path: Path,
    processes: ProcessGroups | None,
) -> None:
    # The build store records request.tree as the build's source; building a
    # commit whose tree is something else would make that record a lie.
    if _HEX_ID.match(request.tree):
        actual = await _git(
            request,
            log_path,
            processes,
            "rev-parse",
            "--verify",
            "--end-of-options",
            f"{request.commit}^{{tree}}",
        )
        if actual != request.tree:
            raise SrpmError(
                f"commit {request.commit} has tree {actual}, not {request.tree}", _read(log_path)
            )
    archive = workdir / "src.tar"
    await _git(
        request,
        log_path,
        processes,
        "archive",
        "--format=tar",
        "-o",
        str(archive),
        "--end-of-options",
        request.commit,
    )
    try:
        await asyncio.to_thread(_extract, archive, src)
    except tarfile.TarError as exc:  # e.g. a symlink pointing outside the tree
        raise SrpmError(f"cannot export {request.commit}: {exc}", _read(log_path)) from exc


def _extract(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tar:
        # The "data" filter refuses absolute paths and links leaving the tree.
        tar.extractall(dest, filter="data")
    archive.unlink()


async def _provide_lookaside(request: BuildRequest, sourcedir: Path, log_path: Path) -> None:
    sources_file = sourcedir / "sources"
    if not sources_file.is_file():
        return
    try:
        entries = lookaside_mod.parse_sources(sources_file.read_text(encoding="utf-8"))
        if not entries:
            return
        if request.lookaside is None:
            raise SrpmError(
                f"{request.project} has a sources file listing "
                f"{', '.join(e.filename for e in entries)} but no lookaside is configured",
                _read(log_path),
            )
        name = request.package or request.project
        placed = await lookaside_mod.provide(request.lookaside, name, entries, sourcedir)
    except lookaside_mod.LookasideUnavailable:
        raise
    except lookaside_mod.LookasideError as exc:
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"lookaside: {exc}\n")
        raise SrpmError(str(exc), _read(log_path)) from exc
    with open(log_path, "a", encoding="utf-8") as log:
        log.writelines(f"lookaside: {p.name} from {request.lookaside.url}\n" for p in placed)


async def _describe(srpm: Path, log: str, processes: ProcessGroups | None) -> SrpmResult:
    code, out, err = await run_capture(
        ["rpm", "-qp", "--qf", _QUERY_FORMAT, str(srpm)], processes=processes
    )
    fields = out.split("\n")
    if code != 0 or len(fields) < 4:
        raise SrpmError(f"cannot read {srpm.name}: {err.strip()}", log)
    name, epoch, version, release = fields[:4]
    code, out, err = await run_capture(["rpm", "-qp", "--requires", str(srpm)], processes=processes)
    if code != 0:
        raise SrpmError(f"cannot read requires of {srpm.name}: {err.strip()}", log)
    requires = [r.strip() for r in out.splitlines() if r.strip()]
    build_requires = tuple(dict.fromkeys(r for r in requires if not r.startswith("rpmlib(")))
    return SrpmResult(
        path=srpm,
        name=name,
        epoch=int(epoch or 0),
        version=version,
        release=release,
        build_requires=build_requires,
        log=log,
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
