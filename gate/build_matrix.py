"""Named builds of a queue and the (build, arch) runs of its jobs (Packit's job references).

``queues.<q>.builds`` names the builds every change gets, each with its own
target (``{el9: {target: ...}, el10: {target: ...}}``); without it a queue has
one build named ``default`` on the queue's ``target``, which is what the gate
always did.  A job runs against the speculative repositories of the builds it
names: ``builds: [el9]`` (default: every build) times its ``arches``, or a
``matrix`` of ``{builds: [...], arches: [...]}`` entries for combinations that
are not a product (packstack on el9/x86_64 and el10/x86_64+aarch64).

What a named build's ``target`` means depends on the backend:

- Koji: the build target (``koji build <target> ...``), as before;
- local: a label.  It is part of the build's key, so two named builds never
  share a scratch build, but rpmbuild is given nothing from it.

Pure: no I/O.  What the daemon does with several builds is in
``docs/pipelines.md`` ("Named builds").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Protocol

from pydantic import BaseModel, ConfigDict, Field

#: the build a queue without ``builds`` has
DEFAULT_BUILD = "default"
#: a build's name: it is part of keys, paths and reports
BUILD_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NamedBuildConfig(_Strict):
    """One named build of a queue."""

    #: Koji: the build target; local: a label (part of the key); default: the queue's ``target``
    target: Annotated[str, Field(min_length=1, pattern=r"^[^-\s][^\s]*$")] | None = None
    #: the publisher its final builds are published by (default: the queue's ``repo``;
    #: two builds of a queue never share one)
    repo: str | None = None


class MatrixEntry(_Strict):
    """Some of a job's runs: each of ``builds`` on each of ``arches``."""

    #: named builds (empty: every build of the queue)
    builds: tuple[Annotated[str, Field(pattern=BUILD_NAME_PATTERN)], ...] = ()
    #: arches (empty: every arch of the queue)
    arches: tuple[Annotated[str, Field(pattern=r"^[a-z0-9_]+$")], ...] = ()


class JobReferences(Protocol):
    """What a job says about its runs (``gate.jobs.base.JobConfig``, which imports this)."""

    @property
    def name(self) -> str: ...
    @property
    def arches(self) -> tuple[str, ...] | None: ...
    @property
    def builds(self) -> tuple[str, ...] | None: ...
    @property
    def matrix(self) -> tuple[MatrixEntry, ...] | None: ...


def build_order(builds: Mapping[str, NamedBuildConfig], queue_repo: str | None) -> list[str]:
    """The builds' names, the queue's own build first: the one publishing to the
    queue's ``repo`` (its rows are an item's own columns, its generations the
    queue's), then the others in config order.  Not the first key of the mapping:
    a config written by a tool that sorts keys (``yaml.safe_dump``, Ansible's
    ``to_nice_yaml``) must mean the same."""
    names = list(builds)
    if queue_repo is None:
        return names
    own = [n for n in names if builds[n].repo in (None, queue_repo)]
    return own[:1] + [n for n in names if n not in own[:1]]


def build_targets(
    builds: Mapping[str, NamedBuildConfig] | None,
    queue_target: str,
    queue_repo: str | None = None,
) -> dict[str, str]:
    """Name -> target of every build of a queue, in :func:`build_order`."""
    if not builds:
        return {DEFAULT_BUILD: queue_target}
    return {n: builds[n].target or queue_target for n in build_order(builds, queue_repo)}


def build_repos(builds: Mapping[str, NamedBuildConfig] | None, queue_repo: str) -> dict[str, str]:
    """Name -> publisher of every build of a queue, in :func:`build_order`."""
    if not builds:
        return {DEFAULT_BUILD: queue_repo}
    return {n: builds[n].repo or queue_repo for n in build_order(builds, queue_repo)}


def job_runs(
    job: JobReferences, builds: Sequence[str], arches: Sequence[str]
) -> tuple[tuple[str, str], ...]:
    """The (build, arch) pairs ``job`` runs on, in the queue's order, each once."""
    if job.matrix:
        wanted = {
            (b, a)
            for entry in job.matrix
            for b in (entry.builds or builds)
            for a in (entry.arches or arches)
        }
    else:
        job_builds = job.builds or tuple(builds)
        job_arch = job.arches or tuple(arches)
        wanted = {(b, a) for b in job_builds for a in job_arch}
    return tuple((b, a) for b in builds for a in arches if (b, a) in wanted)


def build_problems(
    where: str,
    builds: Sequence[str],
    arches: Sequence[str],
    jobs: Sequence[JobReferences],
    pipeline: Sequence[Sequence[str]] | None,
) -> list[tuple[str, str]]:
    """Every reason the job references of queue ``where`` cannot run, as ``(key, message)``.

    Unknown builds and arches in a job's ``builds`` or ``matrix``, a job with
    both ``matrix`` and ``builds``/``arches``, and, per (build, arch), a job
    that would run where no job of the previous stage runs (Launchpad's rule,
    the build named when the queue has several).
    """
    problems: list[tuple[str, str]] = []
    known_builds = ", ".join(builds)
    known_arches = ", ".join(arches)

    def unknown_build(key: str, job: str, name: str) -> None:
        if name not in builds:
            problems.append(
                (
                    key,
                    f"job {job} names unknown build {name!r} (the queue's builds: {known_builds})",
                )
            )

    for i, job in enumerate(jobs):
        for k, name in enumerate(job.builds or ()):
            unknown_build(f"{where}.jobs.{i}.builds.{k}", job.name, name)
        if job.matrix and (job.builds is not None or job.arches is not None):
            problems.append(
                (
                    f"{where}.jobs.{i}.matrix",
                    f"job {job.name} has a matrix and builds/arches: "
                    "say its runs one way (each matrix entry has builds and arches)",
                )
            )
        for m, entry in enumerate(job.matrix or ()):
            for k, name in enumerate(entry.builds):
                unknown_build(f"{where}.jobs.{i}.matrix.{m}.builds.{k}", job.name, name)
            for k, arch in enumerate(entry.arches):
                if arch not in arches:
                    problems.append(
                        (
                            f"{where}.jobs.{i}.matrix.{m}.arches.{k}",
                            f"job {job.name} names unknown arch {arch!r} "
                            f"(the queue's arches: {known_arches})",
                        )
                    )
    if problems or not pipeline or len(builds) < 2:
        # the stage checks need known names; with one build they are per arch,
        # done by gate.pipeline.pipeline_problems (which says the rest)
        return problems
    by_name = {j.name: j for j in jobs}
    previous: set[tuple[str, str]] | None = None
    for s, stage in enumerate(pipeline):
        here: set[tuple[str, str]] = set()
        for j, name in enumerate(stage):
            staged = by_name.get(name)
            if staged is None:
                continue
            for build, arch in job_runs(staged, builds, arches):
                here.add((build, arch))
                if previous is not None and (build, arch) not in previous:
                    problems.append(
                        (
                            f"{where}.pipeline.{s}.{j}",
                            f"job {name} would run on {arch} (build {build}), "
                            "but no job of the previous stage runs there",
                        )
                    )
        previous = here
    return problems
