"""How the gate runs code a change controls: ``rpmbuild`` of the change's spec.

A spec is a program.  ``%(…)`` runs while rpmbuild parses it (so already when
the gate makes an SRPM with ``rpmbuild -bs``, or re-reads one with
``rpmbuild -rs`` for Koji), and ``%prep``/``%build``/``%install`` run in a
local build.  Whoever can propose a change can put code there, so a build
must see nothing of the daemon:

* **environment**: always a fresh one from an allowlist (``PATH``, ``HOME``
  pointing into the build directory, ``LC_ALL=C``, ``TMPDIR``); the daemon's
  own environment holds the secrets the config refers to;
* **user**: when the daemon runs as root, builds run as an unprivileged
  account (``sandbox.user``, default ``nobody``) and the build directory is
  handed to it;
* **bubblewrap** (``sandbox.bubblewrap``, used where ``bwrap`` works): the
  build runs in new user, mount, network, PID, IPC and UTS namespaces with
  no network, ``/usr`` and ``/etc`` read-only, a private ``/tmp``, and only
  its own build directory visible and writable; the directory holding the
  config file and any credential files the config names are hidden even
  under ``/etc``.  The state directory, the database, other builds, the RPM
  pool, ``/home``, ``/root`` and ``/proc`` of the daemon are not there.

Without bubblewrap and without a user switch (a non-root daemon on a host
without ``bwrap``), a build can still read whatever the daemon's user can
read; the docs say so and the start-up log warns.  Koji (mock, on builders)
is the isolation for production builds: see docs/security.md.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import tempfile
from asyncio.subprocess import Process
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gate.processes import ProcessGroups, spawn_group

log = logging.getLogger(__name__)

BubblewrapMode = Literal["auto", "required", "off"]

#: what any command the gate starts may inherit (never the daemon's secrets)
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: host trees a sandboxed build sees, read-only (what rpmbuild and a shell need)
_SYSTEM_TREES = ("/usr", "/etc")
#: what the sandbox mounts itself (never re-created as a build directory's parent)
_MOUNTED = ("/usr", "/etc", "/proc", "/dev")
#: top-level names that are directories or (merged /usr) symlinks into /usr
_TOP_LEVEL_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


class SandboxError(Exception):
    """The configured isolation cannot be had on this host."""


@dataclass(frozen=True)
class BuildUser:
    name: str
    uid: int
    gid: int


def minimal_environment(home: Path | str, tmpdir: Path | str | None = None) -> dict[str, str]:
    """The whole environment of a command the gate starts: nothing of the daemon's."""
    return {
        "PATH": SAFE_PATH,
        "HOME": str(home),
        "TMPDIR": str(tmpdir or "/tmp"),
        # rpmbuild and git messages are parsed ("error: ..."): keep them untranslated
        "LC_ALL": "C",
        "LANG": "C",
    }


@dataclass(frozen=True)
class Sandbox:
    """Runs change-controlled commands; see the module docstring."""

    #: the account builds run as (set when the daemon runs as root)
    user: BuildUser | None = None
    #: path of a working ``bwrap``, or None to run without namespaces
    bwrap: str | None = None
    #: paths under the visible system trees to hide (config dir, credential files)
    hidden: tuple[Path, ...] = field(default_factory=tuple)
    #: where each build's process group is recorded (None: unrecorded, tests)
    processes: ProcessGroups | None = None

    @classmethod
    def create(
        cls,
        bubblewrap: BubblewrapMode = "auto",
        user: str | None = None,
        hidden: Sequence[Path] = (),
        processes: ProcessGroups | None = None,
    ) -> Sandbox:
        """Resolve the configured isolation on this host (checks bwrap once)."""
        build_user = _build_user(user) if os.geteuid() == 0 else None
        if user and build_user is None:
            log.info("sandbox.user %s is used only when the daemon runs as root", user)
        bwrap = None
        if bubblewrap != "off":
            problem, bwrap = _probe_bwrap(build_user)
            if problem is not None:
                if bubblewrap == "required":
                    raise SandboxError(f"sandbox.bubblewrap is required but {problem}")
                log.warning(
                    "local builds run without bubblewrap (%s): a change's spec can "
                    "read what the build user can read; install bubblewrap",
                    problem,
                )
        sandbox = cls(
            user=build_user,
            bwrap=bwrap,
            hidden=tuple(Path(p) for p in hidden if p),
            processes=processes,
        )
        log.info("builds run %s", sandbox.describe())
        return sandbox

    def describe(self) -> str:
        who = f"as {self.user.name}" if self.user else f"as uid {os.geteuid()}"
        how = (
            "under bubblewrap (no network, read-only system)"
            if self.bwrap
            else ("without namespaces")
        )
        return f"{who}, {how}, with a minimal environment"

    def status(self) -> dict[str, Any]:
        return {"user": self.user.name if self.user else None, "bubblewrap": bool(self.bwrap)}

    # -- preparing and running -------------------------------------------------

    def check_reachable(self, directory: Path) -> None:
        """Raise :class:`SandboxError` if builds under ``directory`` could not run.

        Only a user switch without bubblewrap needs this: the build user must
        be able to walk to its build directory (bwrap binds it by descriptor).
        """
        if self.user is None or self.bwrap is not None:
            return
        path = Path(directory).resolve()
        for parent in [*reversed(path.parents), path]:
            if not parent.exists():
                break
            st = parent.stat()
            if st.st_mode & 0o001 or (st.st_gid == self.user.gid and st.st_mode & 0o010):
                continue
            if st.st_uid == self.user.uid and st.st_mode & 0o100:
                continue
            raise SandboxError(
                f"builds run as {self.user.name}, who cannot enter {parent} "
                f"(mode {oct(st.st_mode & 0o777)}): make it traversable or install bubblewrap"
            )

    def prepare(self, writable: Path) -> None:
        """Create the build directory ``writable`` and hand its directories to the build user.

        Files stay as they are; nothing else the build reads is writable by it.
        """
        writable.mkdir(parents=True, exist_ok=True)
        if self.user is None:
            return
        for directory, subdirs, _files in os.walk(writable):
            os.chown(directory, self.user.uid, self.user.gid)
            for name in subdirs:
                os.lchown(os.path.join(directory, name), self.user.uid, self.user.gid)

    async def spawn(
        self, argv: Sequence[str], writable: Path, readable: Sequence[Path] = (), **io: Any
    ) -> Process:
        """Start ``argv`` confined to the build directory ``writable``; ``io`` are stdio keywords.

        ``readable`` are more directories the command may read (the exported
        sources).  The command leads a new session (its process group is the
        build, recorded in ``processes`` before it runs), gets
        :func:`minimal_environment` with ``HOME`` at ``writable``, runs as
        the build user when the daemon is root, and under bubblewrap when it
        is available.
        """
        command, kwargs = self.command(argv, Path(writable), readable)
        program, *args = command
        return await spawn_group(self.processes, program, *args, **kwargs, **io)

    def command(
        self, argv: Sequence[str], writable: Path, readable: Sequence[Path] = ()
    ) -> tuple[list[str], dict[str, Any]]:
        """The confined argv for ``argv`` and the keywords (env, cwd, user) to start it with."""
        kwargs: dict[str, Any] = {"env": minimal_environment(writable), "cwd": str(writable)}
        if self.bwrap is not None:
            kwargs["cwd"] = "/"
            confined = [*self._bwrap_args(writable, readable), "--", *self._drop_privileges()]
            return [*confined, *argv], kwargs
        if self.user is not None:
            kwargs.update(user=self.user.uid, group=self.user.gid, extra_groups=[])
        return [*argv], kwargs

    def _bwrap_args(self, writable: Path, readable: Sequence[Path]) -> list[str]:
        """bwrap's arguments: namespaces, the read-only system, the build's directories.

        A non-root daemon runs bwrap unprivileged, in a new user namespace.
        A root daemon runs it without one (a namespace made by root maps the
        build to root outside, owner of every root file it can see): bwrap
        keeps only CAP_SETUID/CAP_SETGID, which ``setpriv`` inside uses once
        to become the build user, losing them.  Either way the build's
        directories are mounted at their own paths, inside a tmpfs root, so
        the build user can reach them whatever the modes of their parents.
        """
        assert self.bwrap is not None
        args = [self.bwrap, "--die-with-parent", "--new-session"]
        if self.user is None:
            args += ["--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
        else:
            args += [
                "--unshare-ipc",
                "--unshare-pid",
                "--unshare-net",
                "--unshare-uts",
                "--unshare-cgroup-try",
                "--cap-drop",
                "ALL",
                "--cap-add",
                "CAP_SETUID",
                "--cap-add",
                "CAP_SETGID",
            ]
        for tree in _SYSTEM_TREES:
            args += ["--ro-bind", tree, tree]
        for name in _TOP_LEVEL_LINKS:
            if os.path.islink(name):
                args += ["--symlink", os.readlink(name), name]
            elif os.path.isdir(name):
                args += ["--ro-bind", name, name]
        for path in self.hidden:
            if not any(_is_within(path, tree) for tree in _SYSTEM_TREES):
                continue  # not visible anyway
            if path.is_dir():
                args += ["--tmpfs", str(path)]
            elif path.exists():
                args += ["--ro-bind", "/dev/null", str(path)]
        args += ["--proc", "/proc", "--dev", "/dev"]
        for scratch in ("/tmp", "/var/tmp"):
            args += ["--perms", "1777", "--tmpfs", scratch]
        # bwrap would copy the modes of the host's parents (a 0700 state dir
        # would lock the build user out): make them plainly traversable
        parents = sorted({p for d in (*readable, writable) for p in Path(d).parents} - {Path("/")})
        for parent in parents:
            if not any(parent == Path(t) or _is_within(parent, t) for t in _MOUNTED):
                args += ["--perms", "0755", "--dir", str(parent)]
        for path in readable:
            args += ["--ro-bind", str(path), str(path)]
        args += ["--bind", str(writable), str(writable), "--chdir", str(writable)]
        return args

    def _drop_privileges(self) -> list[str]:
        """Inside bwrap started by root: become the build user for good."""
        if self.user is None:
            return []
        return [
            "setpriv",
            f"--reuid={self.user.uid}",
            f"--regid={self.user.gid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]


def _is_within(path: Path, tree: str) -> bool:
    try:
        path.resolve().relative_to(tree)
    except ValueError:
        return False
    return True


def _build_user(name: str | None) -> BuildUser:
    name = name or "nobody"
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise SandboxError(f"sandbox.user {name!r} does not exist on this host") from None
    if entry.pw_uid == 0:
        raise SandboxError(f"sandbox.user {name!r} is root: builds must not run as root")
    return BuildUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid)


def _probe_bwrap(user: BuildUser | None) -> tuple[str | None, str | None]:
    """(why bwrap cannot be used, or None; its path): a real sandboxed ``id -u``."""
    path = shutil.which("bwrap")
    if path is None:
        return "bwrap is not installed", None
    candidate = Sandbox(user=user, bwrap=path)
    with tempfile.TemporaryDirectory(prefix="rpmgate-probe-") as scratch:
        if user is not None:
            os.chown(scratch, user.uid, user.gid)
            os.chmod(scratch, 0o755)
        argv, _ = candidate.command(["id", "-u"], Path(scratch))
        try:
            result = subprocess.run(
                argv,
                capture_output=True,
                timeout=30,
                cwd="/",
                env=minimal_environment(scratch),
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bwrap cannot run: {exc}", None
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip() or f"exit {result.returncode}"
        return f"bwrap does not work here: {detail}", None
    expected = user.uid if user is not None else os.geteuid()
    if result.stdout.strip() != str(expected).encode():
        return f"bwrap ran the probe as uid {result.stdout.strip()!r}, not {expected}", None
    return None, path
