"""The interface every test job implements.

A job checks one item against its speculative repository: the published repo
plus post items plus the builds of every item ahead plus the item's own build,
already written to disk (``<repo_path>/<arch>/repodata``) and served over HTTP
at ``repo_url``.  The *baseline* (the same composition without the item's own
build: what the repository would be if the item were dropped) is written next
to it, so that a job can tell what the item breaks from what was broken
already.  The daemon records that it started a job, awaits :meth:`Job.run`,
and records the :class:`JobResult`.

A job must be safe to cancel: when an item ahead fails, the daemon cancels the
jobs of the items behind it, and ``run`` must then release everything it
started (processes, threads' results, temporary files) before re-raising
:class:`asyncio.CancelledError`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from gate.build_matrix import BUILD_NAME_PATTERN, DEFAULT_BUILD, MatrixEntry
from gate.registry import NAME_PATTERN, DriverConfig

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from gate.plumbing import Plumbing
    from gate.processes import ProcessGroups


class JobConfig(DriverConfig):
    """A job of a queue's ``jobs`` list; ``type`` picks the driver (gate/drivers.py)."""

    #: stable name used in reports, logs and the status
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    #: the arches it runs on (each one of the queue's ``arches``); default: all of them
    arches: Annotated[
        tuple[Annotated[str, Field(pattern=r"^[a-z0-9_]+$")], ...] | None, Field(min_length=1)
    ] = None
    #: how many times a failed run is run again within the same attempt (a pass on
    #: a retry counts, and is reported as flaky); never implied, even for flaky jobs
    retries: Annotated[int, Field(ge=0, le=10)] = 0
    #: the named builds (``queues.<q>.builds``) whose repositories it runs against;
    #: default: every build of the queue (gate/build_matrix.py)
    builds: Annotated[
        tuple[Annotated[str, Field(pattern=BUILD_NAME_PATTERN)], ...] | None, Field(min_length=1)
    ] = None
    #: its runs as ``{builds: [...], arches: [...]}`` entries, instead of builds x arches
    matrix: Annotated[tuple[MatrixEntry, ...] | None, Field(min_length=1)] = None

    def dependency_repos(self) -> tuple[str, ...]:
        """Repositories whose packages may satisfy dependencies (``RPMGATE_BASE_REPOS``)."""
        return ()


@dataclass(frozen=True)
class JobChange:
    """The change an item carries, as a job that reports elsewhere names it."""

    id: int
    project: str
    sha: str
    title: str = ""
    #: the change on its review system ("" if none)
    url: str = ""
    #: its review system's id (a merge request number, a Gerrit change), if any
    review: str | None = None


@dataclass(frozen=True)
class JobContext:
    """What a job knows about the item it tests."""

    item_id: int
    attempt: int
    #: root of the speculative repo tree; per-arch subtrees ``<root>/<arch>/repodata``
    repo_path: Path
    #: where the daemon serves ``repo_path`` over HTTP
    repo_url: str
    arches: tuple[str, ...]
    #: extra repositories (paths, ``file://`` or ``http(s)://`` URLs) whose
    #: packages may satisfy dependencies but are not themselves checked
    base_repos: tuple[str, ...]
    #: the job writes its whole log here (parent directories are created)
    log_path: Path
    #: extra environment for jobs that run processes
    env: Mapping[str, str] = field(default_factory=dict)
    #: where a job that runs processes records their groups (``gate.processes``)
    processes: ProcessGroups | None = None
    #: root of the baseline repo tree (same layout as ``repo_path``): the published
    #: generation plus everything ahead, without the item's own build; ``None``
    #: when there is no baseline to compare with (every finding is the item's)
    baseline_path: Path | None = None
    #: where the daemon serves ``baseline_path`` over HTTP
    baseline_url: str | None = None
    #: where jobs may keep what outlives a run (the dependency jobs' ``.solv``
    #: files, :mod:`gate.jobs.solvrepo`); ``None``: nothing is kept
    cache_dir: Path | None = None
    #: the arch this run is for (``arches`` is then ``(arch,)``); "" outside a pipeline
    arch: str = ""
    #: the queue's named build whose repository this is (gate/build_matrix.py)
    build: str = DEFAULT_BUILD
    #: the pipeline stage the run belongs to (1-based; 0 outside a pipeline)
    stage: int = 0
    #: which try this is (1: the first run) and how many the job may take
    try_number: int = 1
    tries: int = 1
    #: the runner attributes of the first ``runners`` rule that matched this run
    #: (``gate.pipeline.RunnerAttributes`` as JSON: tags, variables, image); its
    #: ``variables`` are in ``env`` too
    attributes: Mapping[str, Any] = field(default_factory=dict)
    #: the queue and the change under test (None: a job run outside a gate)
    queue: str = ""
    change: JobChange | None = None
    #: the gate's public URL (``public_url``), for callbacks an external system makes
    public_url: str = ""
    #: the gate's database and task plumbing, for jobs that keep durable state and
    #: wait for callbacks (``gate.jobs.external``); None outside a gate
    engine: Engine | None = None
    plumbing: Plumbing | None = None


@dataclass(frozen=True)
class JobResult:
    """The outcome of one job run, as reported on the change."""

    name: str
    passed: bool
    #: one human sentence, e.g. "1 unresolved dependency: ceilometer-8.0.1-1.noarch
    #: requires nova >= 12.0.1"
    summary: str
    log_path: str
    #: one line per finding (unresolved dependency, last log lines, ...)
    details: tuple[str, ...] = ()
    #: findings that do not fail the job, one line each (e.g. a dependency the
    #: baseline already left unresolved: somebody else's fault, reported all the same)
    warnings: tuple[str, ...] = ()


class Job(abc.ABC):
    """A check run against an item's speculative repository."""

    #: stable name used in reports and configuration
    name: str

    @abc.abstractmethod
    async def run(self, ctx: JobContext) -> JobResult:
        """Run the check and return its result; write the log to ``ctx.log_path``.

        A failing check is a result with ``passed=False``, not an exception.
        Cancellation must stop all work started for this run.
        """
