"""The interface every build backend implements (local rpmbuild, Koji).

The daemon drives a backend in three durable steps, so a restart can tell
"never started" from "started, outcome unknown":

1. it records a build row with the build's *key* and purpose, then calls
   :meth:`BuildBackend.submit`, which returns a backend task reference;
2. it records that reference, then calls :meth:`BuildBackend.wait`;
3. it records the :class:`BuildOutcome`.

After a crash between 1 and 2 the daemon calls :meth:`BuildBackend.recover`
with the same request (backends that can find a task submitted for the same
purpose return its reference instead of submitting twice).  After a crash
between 2 and 3 it calls :meth:`BuildBackend.wait` on the recorded reference;
a backend whose tasks die with the daemon (local rpmbuild) raises
:class:`TaskLost` and the daemon submits again.

Final builds are refused when the NVR exists already from other sources, as
Koji refuses them; a final build of the same sources (one a crashed daemon
started) is taken over by ``submit`` itself, so the tip just submits again.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from repo_state.pool import Pool
from repo_state.state import Artifact

if TYPE_CHECKING:
    from gate.builders.sandbox import Sandbox

#: ``draft``: a final build that claims its NVR only when promoted (Koji >= 1.34)
Purpose = Literal["scratch", "final", "draft"]

#: seconds an unpromoted draft no item can use is kept (``draft_retention``): a week,
#: kojihub's own ``delete_build(min_ref_age=604800)``
DEFAULT_DRAFT_RETENTION = 7 * 86400.0
#: the longest ``draft_retention`` in seconds (longer: ``keep``)
MAX_DRAFT_RETENTION = 366 * 86400.0


def draft_retention_seconds(value: object) -> float | None:
    """A backend's ``draft_retention`` setting in seconds; None for ``keep``."""
    if value == "keep":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"draft_retention must be seconds or 'keep', not {value!r}")
    if not 0 <= value <= MAX_DRAFT_RETENTION:
        raise ValueError(
            f"draft_retention must be between 0 and {MAX_DRAFT_RETENTION:.0f} seconds "
            f"(or 'keep'), not {value}"
        )
    return float(value)


@dataclass(frozen=True)
class BackendParts:
    """What a backend driver is built with (``gate.drivers``)."""

    #: the daemon's state directory (a backend keeps its files under it)
    state_dir: Path
    pool: Pool
    #: how change-controlled commands (rpmbuild of a spec) run on this host
    sandbox: Sandbox


@dataclass(frozen=True)
class Lookaside:
    """Where a Fedora-style ``sources`` file's tarballs are fetched from.

    ``url`` is a template with ``{name}``, ``{filename}``, ``{hashtype}`` and
    ``{hash}`` (Fedora's layout is
    ``https://src.fedoraproject.org/repo/pkgs/{name}/{filename}/{hashtype}/{hash}/{filename}``);
    ``file://`` and plain paths work too.
    """

    url: str
    cache_dir: Path


@dataclass(frozen=True)
class BuildRequest:
    """Everything that determines a build's output, plus where to find it."""

    project: str
    #: name of the source package (the spec's Name); used for final-build lookups
    package: str
    purpose: Purpose
    #: digest of (project, git tree, target, backend): equal keys give equal output
    key: str
    #: a local git repository that contains ``commit``
    git_dir: Path
    commit: str
    tree: str
    spec_path: str
    target: str
    lookaside: Lookaside | None = None
    #: ``git+https://host/rpms/name.git#sha`` for backends that build from SCM
    scm_url: str | None = None


@dataclass(frozen=True)
class BuildOutcome:
    ok: bool
    nvr: str = ""
    artifacts: tuple[Artifact, ...] = ()
    #: a human sentence: why the build failed, or "" on success
    reason: str = ""
    #: where the build log can be read: a local path or a URL
    log: str = ""
    #: BuildRequires recorded from the spec (local builds cannot install them)
    build_requires: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExistingBuild:
    """A final build of an NVR that the backend already has."""

    nvr: str
    #: "COMPLETE", "BUILDING", "FAILED", "CANCELED" (Koji's build states)
    state: str
    #: git tree (or SCM URL) it was built from, when the backend knows it
    source: str
    task_ref: str | None = None
    artifacts: tuple[Artifact, ...] = ()


@dataclass(frozen=True)
class Draft:
    """A finished draft build, as the gate recorded it, to be promoted."""

    nvr: str
    task_ref: str
    artifacts: tuple[Artifact, ...] = ()


@dataclass(frozen=True)
class DraftRemoval:
    """What became of an unpromoted draft the gate let go of (``gate.draft_gc``)."""

    #: ``deleted``: gone from the backend; ``left``: the backend keeps it (``reason``)
    outcome: Literal["deleted", "left"]
    reason: str = ""


class DraftRemovalRefused(Exception):
    """The backend will not let the gate delete drafts at all (Koji: the gate's user
    lacks the permission ``deleteBuild`` needs).  The sweep stops asking this
    backend until the daemon restarts; the backend's status says why."""


class BuildError(Exception):
    """The backend could not take the build at all (e.g. NVR already built)."""


class TransientBackendError(Exception):
    """The backend is unreachable or overloaded; the same call may work later."""


class BackendError(Exception):
    """The backend failed in a way that retrying will not fix: a bug, or an answer the
    client cannot read.  The build's outcome is unknown, so it is neither retried nor
    failed (that would reject a change for the gate's fault): the watch stops, the
    error is shown on the build, the item and ``/healthz``, and a restart re-attaches.
    """


class TaskLost(Exception):
    """The recorded task no longer exists (local builds die with the daemon)."""


class BuildBackend(abc.ABC):
    """A place that turns a distgit tree into RPMs."""

    name: str = "abstract"

    @abc.abstractmethod
    async def submit(self, request: BuildRequest) -> str:
        """Start a build and return its task reference.  Must not block on the build."""

    @abc.abstractmethod
    async def wait(self, task_ref: str) -> BuildOutcome:
        """Wait for a submitted build and return its outcome (artifacts in the pool).

        Raises :class:`TaskLost` when the task cannot be found any more.
        """

    @abc.abstractmethod
    async def cancel(self, task_ref: str) -> None:
        """Stop a build nobody needs any more.  Idempotent."""

    async def recover(self, request: BuildRequest) -> str | None:
        """Find a task submitted for ``request`` before a crash, or None."""
        return None

    async def draft_support(self) -> str | None:
        """None when final builds may run ahead of the tip as drafts (``submit`` takes
        purpose ``draft``, :meth:`promote` promotes one), else why not: the status
        says it and the queue keeps a serial tip.  Asked once at start."""
        return "this backend has no draft builds"

    async def promote(self, request: BuildRequest, draft: Draft) -> BuildOutcome:
        """Make ``draft`` (built from ``request``'s tree) the final build of its NVR.

        Idempotent: a draft promoted already (by a daemon killed since) is
        the final build again.  An NVR already built from other sources is a
        failed outcome (``ok=False``), as a final build of it would be.
        """
        raise BuildError(await self.draft_support() or "no draft builds")

    def draft_retention(self) -> float | None:
        """Seconds an unpromoted draft no item can use any more is kept before
        :meth:`remove_draft` is asked to delete it; None: kept for ever (the
        backend's ``draft_retention: keep``, or a backend without drafts)."""
        return None

    def forget_draft(self, key: str) -> None:  # noqa: B027 - optional hook
        """Drop what would let :meth:`submit` take the draft of build key ``key`` back
        (it is about to be deleted: a later draft of that key is built anew).
        Synchronous: called between the gate's decision and the next await."""

    async def remove_draft(self, key: str, target: str, draft: Draft) -> DraftRemoval:
        """Delete ``draft`` (the unpromoted draft of build key ``key``, built for
        ``target``), or say why it stays.  Idempotent (a draft deleted already is
        ``deleted``); never deletes a promoted build.  Raises
        :class:`DraftRemovalRefused` when the backend refuses every deletion, and
        :class:`TransientBackendError` when it cannot answer now."""
        return DraftRemoval("left", f"the {self.name} backend cannot delete drafts")

    def status(self) -> dict[str, Any] | None:
        """Health worth showing in the status document (None: nothing to show)."""
        return None

    def problem(self) -> str | None:
        """Why the backend cannot work now (``/healthz`` fails on it), or None."""
        return None

    async def probe(self) -> str | None:
        """Check, by doing something cheap and real, that the backend can be used now.

        Returns None when it can, or one sentence saying why not (an exception
        is reported the same way).  ``/healthz`` calls it at most once per
        ``health.probe_interval`` and cancels it after ``health.probe_timeout``,
        so it may block on the network but must not change anything.
        """
        return None

    def served_logs(self) -> Path | None:
        """A directory of build logs the web app serves (``/files/builds/<name>/logs/``)."""
        return None

    def commit_branch(self, request: BuildRequest) -> str | None:
        """The branch the build's commit must be on in the project's repository, or None.

        Backends whose builders fetch the commit themselves (Koji from SCM)
        name a gate-owned branch; the gate pushes the commit there before
        submitting and deletes the branch once the build is over.
        """
        return None

    def namespaces(self) -> tuple[str, ...]:
        """Branch namespaces :meth:`commit_branch` uses (swept of leftovers at start)."""
        return ()

    async def after_publish(self, nvr: str) -> None:  # noqa: B027 - optional hook
        """A final build was published in a new generation (Koji: tag it)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and worker processes."""
