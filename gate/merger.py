"""The git side of the gate: local clones, speculative merges, pushes.

:class:`Merger` keeps one bare clone per project under its work directory and
drives the ``git`` command line through asyncio subprocesses.  Calls for
different projects run concurrently; calls for one project are serialised by
a per-project :class:`asyncio.Lock`.

Why bare clones and ``git merge-tree --write-tree`` rather than a working tree
and ``git merge``:

- a ``kill -9`` in the middle of ``git merge`` leaves ``MERGE_HEAD``, a
  half-written index and ``index.lock`` behind, and every later command in that
  clone fails until someone cleans up; ``merge-tree`` only writes objects and
  the one ref we update atomically, so a crash never leaves a clone unusable;
- a conflict needs no ``merge --abort``: the conflicted tree is simply never
  referenced;
- nothing is checked out, so a merge costs the same for a 2-file distgit and a
  distgit with a vendored source tree.

``merge-tree --write-tree`` needs git 2.38 or newer.

Every merge commit has the fixed identity ``rpmgate <rpmgate@localhost>`` and a
date taken from its parents (the newer committer date), so the same base and
changes always give the same commit sha, whoever runs the gate and whenever.
A restarted daemon that redoes a merge gets the sha it recorded before the
crash, and "is this commit already on the branch" has one answer.

Every commit the gate hands out (resolved changes, merge results) is pinned
under ``refs/rpmgate/<sha>`` so ``git gc`` never drops it while the gate may
still build, export or push it; :meth:`Merger.forget` removes a pin.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from gate.builders.sandbox import SAFE_PATH
from gate.packages import parse_ls_tree
from gate.processes import ProcessGroups, spawn_group
from gate.refs import FULL_SHA, check_branch, check_ref

IDENTITY_NAME = "rpmgate"
IDENTITY_EMAIL = "rpmgate@localhost"
PIN_PREFIX = "refs/rpmgate/"

#: what of the daemon's environment git and its helpers (ssh, git-remote-https,
#: credential helpers) see: where programs and the operator's git and ssh settings
#: are, the ssh agent, proxies, CAs, Kerberos.  Nothing else: the daemon's
#: environment holds the secrets the config refers to (``${VAR}``), and variables
#: such as GIT_DIR or GIT_INDEX_FILE would point git at another repository.
GIT_INHERITED_ENV = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "TMPDIR",
        "XDG_CONFIG_HOME",
        # the operator's git settings and credentials (git(1) ENVIRONMENT, git-config(1))
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_SSH_VARIANT",
        "GIT_ASKPASS",
        "SSH_ASKPASS",
        "GIT_CONFIG_GLOBAL",
        "GIT_CONFIG_SYSTEM",
        "GIT_CONFIG_NOSYSTEM",
        "GIT_CONFIG_COUNT",
        "GIT_CONFIG_PARAMETERS",
        "GIT_SSL_CAINFO",
        "GIT_SSL_CAPATH",
        "GIT_SSL_CERT",
        "GIT_SSL_KEY",
        "GIT_SSL_NO_VERIFY",
        "GIT_PROXY_COMMAND",
        "SSH_AUTH_SOCK",
        # proxies and CAs, as curl (git-remote-https) reads them
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "CURL_CA_BUNDLE",
        "KRB5CCNAME",
        "KRB5_CONFIG",
    }
)
#: GIT_CONFIG_KEY_<n> / GIT_CONFIG_VALUE_<n>, the pairs GIT_CONFIG_COUNT announces
_GIT_CONFIG_PAIR = re.compile(r"GIT_CONFIG_(KEY|VALUE)_[0-9]+")

#: settings pinned on every command so a user's or host's git config cannot
#: change what we produce (signing, line endings, protocol, hooks)
_PINNED_CONFIG = (
    "commit.gpgSign=false",
    "core.autocrlf=false",
    "core.hooksPath=/dev/null",
    "protocol.version=2",
    "merge.renames=true",
    "merge.directoryRenames=conflict",
    # never a transport that runs a command named by a URL (ext::sh -c …)
    "protocol.ext.allow=never",
)

#: put before every value that did not come from the gate itself: whatever
#: it holds, git reads it as a revision, ref or URL, never as an option
END_OF_OPTIONS = "--end-of-options"

#: ``git archive`` applies in-tree ``.gitattributes`` (export-ignore,
#: export-subst, eol and filter conversion).  Builds are keyed by the git tree,
#: so the exported files must be exactly that tree; ``info/attributes`` takes
#: precedence over every in-tree file.
_EXPORT_ATTRIBUTES = (
    "* -export-ignore -export-subst -text -eol -ident -filter -working-tree-encoding\n"
)

_URL_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")

# stderr of a fetch whose ref or object the remote does not have (LC_ALL=C)
_NOT_FOUND_MARKERS = (
    "couldn't find remote ref",
    "not our ref",
    "unadvertised object",
    "no such remote ref",
)


class GitError(Exception):
    """A git command failed; carries the command (credentials redacted) and stderr."""

    def __init__(self, command: Sequence[str], returncode: int, stderr: str) -> None:
        self.command = tuple(_redact(arg) for arg in command)
        self.returncode = returncode
        self.stderr = _redact(stderr.strip())
        super().__init__(f"{' '.join(self.command)} failed (exit {returncode}): {self.stderr}")


class RefNotFound(GitError):
    """The remote has no such branch, ref or commit."""


@dataclass(frozen=True)
class MergeResult:
    """The outcome of :meth:`Merger.speculative_merge`.

    On success ``commit`` and ``tree`` are set.  On a conflict ``conflict`` is
    true, ``conflict_with`` is the change that could not be merged on top of
    the ones before it and ``files`` the conflicting paths (empty when the
    change shares no history with the branch).
    """

    commit: str = ""
    tree: str = ""
    conflict: bool = False
    conflict_with: str = ""
    files: tuple[str, ...] = ()
    message: str = ""

    @property
    def ok(self) -> bool:
        return not self.conflict


@dataclass(frozen=True)
class PushResult:
    """The outcome of :meth:`Merger.push`.

    ``ok`` is true when ``commit`` is on the branch afterwards; ``pushed`` says
    whether this call moved the branch (false when the commit was there
    already, e.g. when a crashed daemon pushed it before).  ``head`` is the
    remote branch head as last seen.
    """

    ok: bool
    reason: str = ""
    head: str = ""
    pushed: bool = False


@dataclass(frozen=True)
class _Completed:
    returncode: int
    stdout: str
    stderr: str


class Merger:
    """Local clones of every project, and the git operations the gate needs.

    ``url`` arguments are anything ``git fetch`` accepts (a URL or a local
    path).  A clone is created on first use; if a project's URL changes in the
    config, the clone's ``origin`` follows it.
    """

    def __init__(
        self, workdir: Path, *, timeout: float = 900.0, processes: ProcessGroups | None = None
    ) -> None:
        self.workdir = Path(workdir)
        #: seconds any single git command may take before it is killed
        self.timeout = timeout
        #: where each git command's process group is recorded before it runs: a
        #: push or fetch a killed daemon left running would race the restarted
        #: one (a push landing after recovery decided it had not happened; ref
        #: and ``*.lock`` files held in the clones)
        self.processes = processes
        self._locks: dict[str, asyncio.Lock] = {}
        self._urls: dict[str, str] = {}
        self._env = git_environment()

    # -- public API ----------------------------------------------------------

    def git_dir(self, project: str) -> Path:
        """Where the project's bare clone lives (it may not exist yet)."""
        return self.workdir / _directory_name(project)

    async def ensure_clone(self, project: str, url: str) -> Path:
        """Create the project's clone if needed; return its git directory."""
        async with self._lock(project):
            return await self._ensure_clone(project, url)

    async def branch_head(self, project: str, url: str, branch: str) -> str:
        """Fetch ``branch`` from the remote and return its head commit."""
        async with self._lock(project):
            git_dir = await self._ensure_clone(project, url)
            return await self._fetch_branch(git_dir, branch)

    async def resolve(self, project: str, url: str, ref_or_sha: str) -> str:
        """Fetch a ref (``refs/heads/x``, ``refs/changes/..``) or a full sha
        from the remote and return the commit sha it names.

        Raises :class:`RefNotFound` when the remote has no such ref or commit
        and :class:`~gate.refs.InvalidRef` (before running anything) when
        ``ref_or_sha`` is neither a full sha nor a ref name under ``refs/``.
        """
        ref_or_sha = check_ref(ref_or_sha)
        async with self._lock(project):
            git_dir = await self._ensure_clone(project, url)
            if FULL_SHA.fullmatch(ref_or_sha):
                sha = await self._ensure_commit(git_dir, ref_or_sha)
            else:
                await self._fetch(git_dir, ref_or_sha, what=f"ref {ref_or_sha}")
                sha = await self._commit_of(git_dir, "FETCH_HEAD")
            await self._pin(git_dir, sha)
            return sha

    async def speculative_merge(
        self, project: str, url: str, base: str, changes: Sequence[str]
    ) -> MergeResult:
        """Merge ``changes`` (commit shas, in order) on top of ``base``.

        A change that is already contained in the result so far is skipped; a
        change built on top of the result so far is fast-forwarded to, which
        keeps history linear for the common case of a change made on the
        current branch head; anything else gets a merge commit.  The result is
        pinned under ``refs/rpmgate/<commit>``.
        """
        async with self._lock(project):
            git_dir = await self._ensure_clone(project, url)
            current = await self._ensure_commit(git_dir, base)
            for change in changes:
                change = await self._ensure_commit(git_dir, change)
                if await self._is_ancestor(git_dir, change, current):
                    continue
                if await self._is_ancestor(git_dir, current, change):
                    current = change
                    continue
                merged = await self._merge_commit(git_dir, current, change)
                if isinstance(merged, MergeResult):
                    return merged
                current = merged
            tree = await self._rev_parse(git_dir, f"{current}^{{tree}}")
            await self._pin(git_dir, current)
            return MergeResult(commit=current, tree=tree)

    async def push(self, project: str, url: str, commit: str, branch: str) -> PushResult:
        """Fast-forward the remote ``branch`` to ``commit``; never force.

        Refused (``ok=False``, nothing pushed) when the branch moved to a
        commit that ``commit`` does not contain.  Succeeds without pushing when
        ``commit`` is on the branch already.
        """
        async with self._lock(project):
            git_dir = await self._ensure_clone(project, url)
            commit = await self._ensure_commit(git_dir, commit)
            head = await self._fetch_branch(git_dir, branch)
            if await self._is_ancestor(git_dir, commit, head):
                return PushResult(ok=True, reason=f"{commit} is on {branch} already", head=head)
            if not await self._is_ancestor(git_dir, head, commit):
                return _moved(branch, head)
            refspec = f"{commit}:refs/heads/{check_branch(branch)}"
            result = await self._git(
                git_dir, "push", END_OF_OPTIONS, "origin", refspec, check=False
            )
            if result.returncode == 0:
                return PushResult(ok=True, head=commit, pushed=True)
            if "[rejected]" in result.stderr:
                # someone pushed between our fetch and our push
                return _moved(branch, await self._fetch_branch(git_dir, branch))
            raise GitError(["git", "push", "origin", refspec], result.returncode, result.stderr)

    async def is_on_branch(self, project: str, url: str, commit: str, branch: str) -> bool:
        """Whether ``commit`` is the remote branch head or one of its ancestors."""
        async with self._lock(project):
            git_dir = await self._ensure_clone(project, url)
            head = await self._fetch_branch(git_dir, branch)
            # everything reachable from the head is here now: a commit we lack
            # cannot be on the branch
            if not await self._has_commit(git_dir, commit):
                return False
            return await self._is_ancestor(git_dir, commit, head)

    async def commits_between(self, project: str, url: str, old: str, new: str) -> list[str]:
        """First-parent commits reachable from ``new`` but not from ``old``,
        oldest first (``git rev-list --first-parent old..new``)."""
        async with self._lock(project):
            git_dir = await self._ensure_clone(project, url)
            old = await self._ensure_commit(git_dir, old)
            new = await self._ensure_commit(git_dir, new)
            result = await self._git(
                git_dir, "rev-list", "--first-parent", "--reverse", END_OF_OPTIONS, f"{old}..{new}"
            )
            return result.stdout.split()

    async def commit_message(self, project: str, url: str, commit: str) -> str:
        """The full message of ``commit`` (fetched if the clone lacks it)."""
        async with self._lock(project):
            git_dir = await self._ensure_clone(project, url)
            commit = await self._ensure_commit(git_dir, commit)
            result = await self._git(
                git_dir, "log", "-1", "--format=%B", END_OF_OPTIONS, commit, "--"
            )
            return result.stdout

    async def file_at(self, project: str, url: str, commit: str, path: str) -> str | None:
        """The text of the file ``path`` in ``commit`` (fetched if the clone lacks
        it); None when the commit has no such file."""
        async with self._lock(project):
            git_dir = await self._ensure_clone(project, url)
            commit = await self._ensure_commit(git_dir, commit)
            result = await self._git(
                git_dir, "cat-file", "blob", END_OF_OPTIONS, f"{commit}:{path}", check=False
            )
            if result.returncode != 0:
                if "does not exist" in result.stderr or "exists on disk, but not" in result.stderr:
                    return None
                command = ["git", "cat-file", "blob", commit]
                raise GitError(command, result.returncode, result.stderr)
            return result.stdout

    async def listing(self, project: str, url: str, commit: str) -> dict[str, str]:
        """path -> object id of every file of ``commit`` (``git ls-tree -r``; fetched if
        the clone lacks it): what a package's inputs are compared by (gate/packages.py)."""
        async with self._lock(project):
            git_dir = await self._ensure_clone(project, url)
            commit = await self._ensure_commit(git_dir, commit)
            result = await self._git(git_dir, "ls-tree", "-r", "-z", "--full-tree", commit)
            return parse_ls_tree(result.stdout)

    async def tree_of(self, project: str, url: str, commit: str) -> str:
        """The tree of ``commit`` (fetched if the clone lacks it)."""
        async with self._lock(project):
            git_dir = await self._ensure_clone(project, url)
            commit = await self._ensure_commit(git_dir, commit)
            return await self._rev_parse(git_dir, f"{commit}^{{tree}}")

    async def export_tree(self, project: str, commit: str, dest: Path) -> None:
        """Write the files of ``commit`` into ``dest`` (``git archive | tar``).

        The commit must be in the clone already (resolved or merged before).
        No lock: reading objects is safe while a fetch writes new ones.
        """
        git_dir = self.git_dir(project)
        if not (git_dir / "HEAD").exists():
            raise GitError(["git", "archive", commit], -1, f"no clone of {project} yet")
        commit = await self._commit_of(git_dir, commit)
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        await self._archive_into(git_dir, commit, dest)

    async def push_branch(self, project: str, url: str, commit: str, branch: str) -> PushResult:
        """Point the remote branch ``branch`` (one the gate owns) at ``commit``, forced.

        For builders that fetch what they build from the remote (kojid clones
        every branch): a commit only the gate's clone has becomes reachable
        there.  ``ok=False`` with git's words when the remote refuses.
        """
        async with self._lock(project):
            git_dir = await self._ensure_clone(project, url)
            commit = await self._ensure_commit(git_dir, commit)
            refspec = f"+{commit}:refs/heads/{check_branch(branch)}"
            result = await self._git(
                git_dir, "push", "--porcelain", END_OF_OPTIONS, "origin", refspec, check=False
            )
            if result.returncode == 0:
                return PushResult(ok=True, head=commit, pushed=True)
            return PushResult(ok=False, reason=_push_refusal(result.stderr or result.stdout))

    async def delete_branch(self, project: str, url: str, branch: str) -> bool:
        """Delete the remote branch ``branch``; True if it is gone (or never was)."""
        async with self._lock(project):
            git_dir = await self._ensure_clone(project, url)
            result = await self._git(
                git_dir,
                "push",
                "--porcelain",
                END_OF_OPTIONS,
                "origin",
                f":refs/heads/{check_branch(branch)}",
                check=False,
            )
            return result.returncode == 0 or "remote ref does not exist" in result.stderr

    async def remote_branches(self, project: str, url: str, prefix: str) -> dict[str, str]:
        """The remote's branches under ``prefix/``: name -> commit (``git ls-remote``)."""
        async with self._lock(project):
            git_dir = await self._ensure_clone(project, url)
            pattern = f"refs/heads/{check_branch(prefix)}/*"
            result = await self._git(git_dir, "ls-remote", END_OF_OPTIONS, "origin", pattern)
        branches = {}
        for line in result.stdout.splitlines():
            sha, _, ref = line.partition("\t")
            if ref.startswith("refs/heads/"):
                branches[ref.removeprefix("refs/heads/")] = sha
        return branches

    async def forget(self, project: str, commit: str) -> None:
        """Drop the ``refs/rpmgate/<commit>`` pin once the gate is done with it."""
        async with self._lock(project):
            git_dir = self.git_dir(project)
            if (git_dir / "HEAD").exists():
                await self._git(git_dir, "update-ref", "-d", END_OF_OPTIONS, PIN_PREFIX + commit)

    # -- clones and fetches --------------------------------------------------

    def _lock(self, project: str) -> asyncio.Lock:
        lock = self._locks.get(project)
        if lock is None:
            lock = self._locks[project] = asyncio.Lock()
        return lock

    async def _ensure_clone(self, project: str, url: str) -> Path:
        git_dir = self.git_dir(project)
        if (git_dir / "HEAD").exists():
            if self._urls.get(project) != url:
                known = await self._git(git_dir, "remote", "get-url", "origin")
                if known.stdout.strip() != url:
                    await self._git(git_dir, "remote", "set-url", END_OF_OPTIONS, "origin", url)
                self._urls[project] = url
            return git_dir
        # Build the clone aside and rename it into place, so a crash halfway
        # leaves a stray temporary directory rather than a broken clone.
        staging = git_dir.with_name(f".{git_dir.name}.cloning")
        if staging.exists():
            shutil.rmtree(staging)
        staging.parent.mkdir(parents=True, exist_ok=True)
        try:
            await self._git(
                None,
                "init",
                "--quiet",
                "--bare",
                "--template=",
                "--initial-branch=main",
                END_OF_OPTIONS,
                str(staging),
            )
            await self._git(staging, "remote", "add", END_OF_OPTIONS, "origin", url)
            (staging / "info").mkdir(exist_ok=True)
            (staging / "info" / "attributes").write_text(_EXPORT_ATTRIBUTES)
            await self._git(staging, "fetch", "--quiet", "--no-tags", "origin")
            staging.rename(git_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._urls[project] = url
        return git_dir

    async def _fetch(self, git_dir: Path, refspec: str, *, what: str) -> None:
        try:
            await self._git(
                git_dir, "fetch", "--quiet", "--no-tags", END_OF_OPTIONS, "origin", refspec
            )
        except GitError as error:
            if any(marker in error.stderr for marker in _NOT_FOUND_MARKERS):
                raise RefNotFound(
                    error.command,
                    error.returncode,
                    f"{what} not found on the remote: {error.stderr}",
                ) from None
            raise

    async def _fetch_branch(self, git_dir: Path, branch: str) -> str:
        tracking = f"refs/remotes/origin/{check_branch(branch)}"
        await self._fetch(git_dir, f"+refs/heads/{branch}:{tracking}", what=f"branch {branch}")
        return await self._rev_parse(git_dir, tracking)

    async def _ensure_commit(self, git_dir: Path, sha: str) -> str:
        """Make sure the commit ``sha`` (a full sha) is here, fetching it by id
        if needed, and return it in lower case."""
        sha = sha.lower()
        if not FULL_SHA.fullmatch(sha):
            raise ValueError(f"expected a full commit sha, got {sha[:80]!r}")
        if not await self._has_commit(git_dir, sha):
            # protocol v2 servers (git >= 2.29 default) serve any commit by id
            await self._fetch(git_dir, sha, what=f"commit {sha}")
        return await self._commit_of(git_dir, sha)

    # -- object queries --------------------------------------------------------

    async def _has_commit(self, git_dir: Path, rev: str) -> bool:
        result = await self._git(
            git_dir, "cat-file", "-e", END_OF_OPTIONS, f"{rev}^{{commit}}", check=False
        )
        return result.returncode == 0

    async def _commit_of(self, git_dir: Path, rev: str) -> str:
        return await self._rev_parse(git_dir, f"{rev}^{{commit}}")

    async def _rev_parse(self, git_dir: Path, rev: str) -> str:
        result = await self._git(
            git_dir, "rev-parse", "--verify", "--quiet", END_OF_OPTIONS, rev, check=False
        )
        if result.returncode != 0:
            raise RefNotFound(
                ["git", "rev-parse", "--verify", rev],
                result.returncode,
                f"{rev} is not in the clone {git_dir}",
            )
        return result.stdout.strip()

    async def _is_ancestor(self, git_dir: Path, ancestor: str, descendant: str) -> bool:
        result = await self._git(
            git_dir,
            "merge-base",
            "--is-ancestor",
            END_OF_OPTIONS,
            ancestor,
            descendant,
            check=False,
        )
        if result.returncode not in (0, 1):
            raise GitError(
                ["git", "merge-base", "--is-ancestor", ancestor, descendant],
                result.returncode,
                result.stderr,
            )
        return result.returncode == 0

    async def _pin(self, git_dir: Path, sha: str) -> None:
        await self._git(git_dir, "update-ref", END_OF_OPTIONS, PIN_PREFIX + sha, sha)

    # -- merging -----------------------------------------------------------------

    async def _merge_commit(self, git_dir: Path, current: str, change: str) -> str | MergeResult:
        """A merge commit of ``change`` into ``current``, or the conflict."""
        command = [
            "merge-tree",
            "--write-tree",
            "--name-only",
            "--no-messages",
            "-z",
            END_OF_OPTIONS,
            current,
            change,
        ]
        result = await self._git(git_dir, *command, check=False)
        if result.returncode == 128 and "unrelated histories" in result.stderr:
            return MergeResult(
                conflict=True,
                conflict_with=change,
                message=f"{change} shares no history with {current}",
            )
        fields = result.stdout.split("\0")
        tree = fields[0]
        # exit 1 is a conflict only when a tree came out; git 2.39 also exits 1
        # for "not something we can merge"
        if result.returncode not in (0, 1) or not FULL_SHA.fullmatch(tree):
            raise GitError(["git", *command], result.returncode, result.stderr)
        if result.returncode == 1:
            files = tuple(sorted({name for name in fields[1:] if name}))
            return MergeResult(
                conflict=True, conflict_with=change, files=files, message="merge conflict"
            )
        # the newer parent's committer date: a function of the inputs only
        dates = await self._git(
            git_dir, "show", "--no-patch", "--format=%ct", END_OF_OPTIONS, current, change
        )
        when = f"@{max(int(stamp) for stamp in dates.stdout.split())} +0000"
        created = await self._git(
            git_dir,
            "commit-tree",
            "--no-gpg-sign",
            "-p",
            current,
            "-p",
            change,
            "-m",
            f"Merge commit '{change}'",
            END_OF_OPTIONS,
            tree,
            env={"GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when},
        )
        return created.stdout.strip()

    # -- running git ---------------------------------------------------------------

    async def _git(
        self,
        git_dir: Path | None,
        *args: str,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> _Completed:
        command = ["git"]
        for setting in _PINNED_CONFIG:
            command += ["-c", setting]
        if git_dir is not None:
            command.append(f"--git-dir={git_dir}")
        command += args
        process = await spawn_group(
            self.processes,
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**self._env, **(env or {})},
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), self.timeout)
        except TimeoutError:
            await _kill(process)
            raise GitError(["git", *args], -1, f"timed out after {self.timeout:g}s") from None
        except BaseException:
            await _kill(process)
            raise
        completed = _Completed(
            process.returncode or 0,
            stdout.decode("utf-8", "surrogateescape"),
            stderr.decode("utf-8", "replace"),
        )
        if check and completed.returncode != 0:
            raise GitError(["git", *args], completed.returncode, completed.stderr)
        return completed

    async def _archive_into(self, git_dir: Path, commit: str, dest: Path) -> None:
        read_end, write_end = os.pipe()
        processes: list[asyncio.subprocess.Process] = []
        try:
            try:
                processes.append(
                    await spawn_group(
                        self.processes,
                        "git",
                        "-c",
                        "core.autocrlf=false",
                        f"--git-dir={git_dir}",
                        "archive",
                        "--format=tar",
                        END_OF_OPTIONS,
                        commit,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=write_end,
                        stderr=asyncio.subprocess.PIPE,
                        env=self._env,
                    )
                )
                processes.append(
                    await spawn_group(
                        self.processes,
                        "tar",
                        "--extract",
                        "--no-same-owner",
                        "--file=-",
                        f"--directory={dest}",
                        stdin=read_end,
                        stdout=asyncio.subprocess.DEVNULL,
                        stderr=asyncio.subprocess.PIPE,
                        env=self._env,
                    )
                )
            finally:
                os.close(read_end)
                os.close(write_end)
            (_, archive_err), (_, tar_err) = await asyncio.wait_for(
                asyncio.gather(*(process.communicate() for process in processes)),
                self.timeout,
            )
        except TimeoutError:
            for process in processes:
                await _kill(process)
            raise GitError(
                ["git", "archive", commit], -1, f"timed out after {self.timeout:g}s"
            ) from None
        except BaseException:
            for process in processes:
                await _kill(process)
            raise
        archive, tar = processes
        if archive.returncode != 0:
            raise GitError(
                ["git", "archive", commit],
                archive.returncode or 0,
                archive_err.decode("utf-8", "replace"),
            )
        if tar.returncode != 0:
            raise GitError(
                ["tar", "--extract", f"--directory={dest}"],
                tar.returncode or 0,
                tar_err.decode("utf-8", "replace"),
            )


def _moved(branch: str, head: str) -> PushResult:
    return PushResult(
        ok=False,
        reason=f"branch {branch} moved to {head}, which this item was not tested on",
        head=head,
    )


def _push_refusal(output: str) -> str:
    """What the remote said when it refused a push (its ``remote:`` lines), in one line."""
    lines = [line.strip() for line in _redact(output).splitlines() if line.strip()]
    said = [line.removeprefix("remote:").strip() for line in lines if line.startswith("remote:")]
    said = [line for line in said if line]
    return "; ".join(said) if said else (lines[-1] if lines else "push refused")


def _directory_name(project: str) -> str:
    """A flat, unambiguous directory name: ``rpms/nova`` -> ``rpms%2Fnova``."""
    if not project:
        raise ValueError("empty project name")
    name = quote(project, safe="-_.+@=,")
    # never "." or "..", never hidden (hidden names are our staging dirs)
    return "%2E" + name[1:] if name.startswith(".") else name


def git_environment() -> dict[str, str]:
    """The whole environment of every git command the gate runs (see GIT_INHERITED_ENV)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key in GIT_INHERITED_ENV or _GIT_CONFIG_PAIR.fullmatch(key)
    }
    env.setdefault("PATH", SAFE_PATH)
    env.update(
        LC_ALL="C",
        LANG="C",
        LANGUAGE="C",
        GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME=IDENTITY_NAME,
        GIT_AUTHOR_EMAIL=IDENTITY_EMAIL,
        GIT_COMMITTER_NAME=IDENTITY_NAME,
        GIT_COMMITTER_EMAIL=IDENTITY_EMAIL,
    )
    return env


def _redact(text: str) -> str:
    return _URL_CREDENTIALS.sub(r"\1***@", text)


async def _kill(process: asyncio.subprocess.Process) -> None:
    """Kill a git command and its helpers (ssh, git-remote-https): every
    command runs in its own session, so its process group is exactly them."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
