"""A queue's pipeline: which job runs on which arch, in which stage, on which runner.

The model is Launchpad CI's, with Spack's runner mappings:

- ``queues.<q>.arches``: the arch trees every build lands in and every job may
  run on (default: the publisher's ``arches``, what the gate always tested);
- ``pipeline``: stages, in order, each a list of job names; the jobs of a stage
  run in parallel.  Absent: one stage of every job;
- a job's ``arches`` (default: all of the queue's) and ``retries``;
- ``runners``: ``match: {job:, arches:}`` -> ``attributes:``, the first rule
  that matches a run wins (Spack's ``ci: pipeline-gen`` mappings).

Per arch, a job of stage k runs only if every job of the earlier stages that
runs on that arch passed (the stages of different arches do not wait for
each other).  :func:`pipeline_problems` refuses at load what could never
run, naming the key, as Launchpad's ``.launchpad.yaml`` checks do.

Pure: no I/O.  ``gate.checks`` runs what :func:`arch_stages` plans.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gate.build_matrix import DEFAULT_BUILD, job_runs
from gate.jobs.base import JobConfig

#: names an arch tree of a repository (``x86_64``, ``aarch64``, ``ppc64le``, ``i686``)
ARCH_PATTERN = r"^[a-z0-9_]+$"
#: not arch trees: noarch packages are in every tree, sources in ``src``
NOT_ARCHES = frozenset({"noarch", "src", "nosrc"})
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunnerMatch(_Strict):
    """Which runs a rule is for; a key left out matches every run."""

    #: the job's name
    job: str | None = None
    #: the run's arch is one of these (empty: any arch)
    arches: tuple[Annotated[str, Field(pattern=ARCH_PATTERN)], ...] = ()

    def matches(self, job: str, arch: str) -> bool:
        return (self.job is None or self.job == job) and (not self.arches or arch in self.arches)


class RunnerAttributes(_Strict):
    """What a run is given about where it runs.

    A command job gets ``variables`` as environment variables and the whole
    as ``RPMGATE_RUNNER`` (JSON) and ``RPMGATE_RUNNER_TAGS``; an external job
    gets it in its request body (``JobContext.attributes``).
    """

    #: runner tags (GitLab runner tags, Jenkins labels, ...)
    tags: tuple[str, ...] = ()
    #: environment of the run
    variables: dict[str, str] = Field(default_factory=dict)
    #: a container image the run asks for, if the runner takes one
    image: str | None = None

    @field_validator("variables")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if name.startswith("RPMGATE_"):
                raise ValueError(f"{name}: RPMGATE_* variables are set by the gate")
        return value


class RunnerRule(_Strict):
    match: RunnerMatch = RunnerMatch()
    attributes: RunnerAttributes = RunnerAttributes()


class FlakyConfig(_Strict):
    """When a job counts as flaky on the status document."""

    #: how many of the job's most recent runs (one job, one arch, one attempt) count
    window: Annotated[int, Field(ge=1, le=1000)] = 20
    #: a job is reported when more than this fraction of those runs passed only on a retry
    threshold: Annotated[float, Field(ge=0, le=1)] = 0.2


@dataclass(frozen=True)
class PlannedJob:
    """One job on one arch (of one named build), in its stage."""

    job: JobConfig
    arch: str
    #: 1-based, as users count stages
    stage: int
    #: the named build whose repository it runs against
    build: str = DEFAULT_BUILD


def job_arches(job: JobConfig, arches: Sequence[str]) -> tuple[str, ...]:
    """The arches ``job`` runs on: its own (or its ``matrix``'s), in the queue's order,
    else all of them."""
    if job.matrix:
        named = {a for entry in job.matrix for a in (entry.arches or arches)}
        return tuple(a for a in arches if a in named)
    if job.arches is None:
        return tuple(arches)
    return tuple(a for a in arches if a in job.arches)


def stages_of(
    pipeline: Sequence[Sequence[str]] | None, jobs: Sequence[JobConfig]
) -> list[list[str]]:
    """The stages by job name; no pipeline is one stage of every job."""
    if pipeline is None:
        return [[j.name for j in jobs]]
    return [list(stage) for stage in pipeline]


def arch_stages(
    pipeline: Sequence[Sequence[str]] | None, jobs: Sequence[JobConfig], arches: Sequence[str]
) -> dict[str, list[list[PlannedJob]]]:
    """Per arch, its stages: the jobs of each stage that run on it (empty stages dropped)."""
    by_name = {j.name: j for j in jobs}
    plan: dict[str, list[list[PlannedJob]]] = {}
    for arch in arches:
        stages = []
        for number, names in enumerate(stages_of(pipeline, jobs), start=1):
            runs = [
                PlannedJob(by_name[n], arch, number)
                for n in names
                if arch in job_arches(by_name[n], arches)
            ]
            if runs:
                stages.append(runs)
        if stages:
            plan[arch] = stages
    return plan


def build_stages(
    pipeline: Sequence[Sequence[str]] | None,
    jobs: Sequence[JobConfig],
    builds: Sequence[str],
    arches: Sequence[str],
) -> dict[tuple[str, str], list[list[PlannedJob]]]:
    """Per (build, arch), its stages: the jobs of each stage whose runs
    (``gate.build_matrix.job_runs``) include it, empty stages dropped.  With
    one build, :func:`arch_stages` keyed by ``(build, arch)``."""
    by_name = {j.name: j for j in jobs}
    runs = {j.name: set(job_runs(j, builds, arches)) for j in jobs}
    plan: dict[tuple[str, str], list[list[PlannedJob]]] = {}
    for build in builds:
        for arch in arches:
            stages = []
            for number, names in enumerate(stages_of(pipeline, jobs), start=1):
                here = [
                    PlannedJob(by_name[n], arch, number, build)
                    for n in names
                    if (build, arch) in runs[n]
                ]
                if here:
                    stages.append(here)
            if stages:
                plan[(build, arch)] = stages
    return plan


def runner_for(rules: Sequence[RunnerRule], job: str, arch: str) -> RunnerAttributes:
    """The attributes of the first rule that matches (none: no attributes)."""
    for rule in rules:
        if rule.match.matches(job, arch):
            return rule.attributes
    return RunnerAttributes()


def pipeline_problems(
    where: str,
    arches: Sequence[str],
    jobs: Sequence[JobConfig],
    pipeline: Sequence[Sequence[str]] | None,
    runners: Sequence[RunnerRule],
    arch_stages: bool = True,
) -> list[tuple[str, str]]:
    """Every reason the pipeline of queue ``where`` (``queues.<name>``) cannot run,
    as ``(key, message)``; the arches are the queue's effective ones.  Without
    ``arch_stages`` the stages are not checked per arch (a queue of several named
    builds checks them per build and arch: ``gate.build_matrix``)."""
    problems: list[tuple[str, str]] = []
    known = ", ".join(arches)
    names = [j.name for j in jobs]
    for i, job in enumerate(jobs):
        for k, arch in enumerate(job.arches or ()):
            if arch not in arches:
                problems.append(
                    (
                        f"{where}.jobs.{i}.arches.{k}",
                        f"job {job.name} names unknown arch {arch!r} (the queue's arches: {known})",
                    )
                )
    if pipeline is not None:
        problems += _stage_problems(where, arches, jobs, pipeline, arch_stages)
    for i, rule in enumerate(runners):
        if rule.match.job is not None and rule.match.job not in names:
            problems.append(
                (
                    f"{where}.runners.{i}.match.job",
                    f"unknown job {rule.match.job!r} (jobs: {', '.join(names)})",
                )
            )
        for k, arch in enumerate(rule.match.arches):
            if arch not in arches:
                problems.append(
                    (
                        f"{where}.runners.{i}.match.arches.{k}",
                        f"unknown arch {arch!r} (the queue's arches: {known})",
                    )
                )
    return problems


def _stage_problems(
    where: str,
    arches: Sequence[str],
    jobs: Sequence[JobConfig],
    pipeline: Sequence[Sequence[str]],
    arch_stages: bool = True,
) -> list[tuple[str, str]]:
    if not pipeline:
        return [
            (
                f"{where}.pipeline",
                "the pipeline has no stage: list stages of job names, "
                "or leave pipeline out to run every job in one stage",
            )
        ]
    problems: list[tuple[str, str]] = []
    by_name = {j.name: j for j in jobs}
    stage_of: dict[str, int] = {}
    previous: set[str] | None = None
    for s, stage in enumerate(pipeline):
        if not stage:
            problems.append((f"{where}.pipeline.{s}", f"stage {s + 1} names no job"))
        runs_here: set[str] = set()
        for j, name in enumerate(stage):
            key = f"{where}.pipeline.{s}.{j}"
            job = by_name.get(name)
            if job is None:
                known = ", ".join(by_name) or "none"
                problems.append((key, f"unknown job {name!r} (jobs: {known})"))
                continue
            if name in stage_of:
                twice = "listed twice in" if stage_of[name] == s else "already in"
                problems.append((key, f"job {name} is {twice} stage {stage_of[name] + 1}"))
                continue
            stage_of[name] = s
            for arch in job_arches(job, arches):
                runs_here.add(arch)
                if arch_stages and previous is not None and arch not in previous:
                    problems.append(
                        (
                            key,
                            f"job {name} would run on {arch}, "
                            "but no job of the previous stage runs there",
                        )
                    )
        previous = runs_here
    for i, job in enumerate(jobs):
        if job.name not in stage_of:
            problems.append(
                (
                    f"{where}.jobs.{i}",
                    f"job {job.name} is in no stage of the pipeline (it would never run)",
                )
            )
    return problems


def effective_arches(
    queue_arches: Sequence[str] | None, publisher_arches: Sequence[str]
) -> tuple[str, ...]:
    """The queue's arches: its own, else its publisher's."""
    return tuple(queue_arches) if queue_arches is not None else tuple(publisher_arches)


def runner_json(attributes: RunnerAttributes) -> dict[str, Any]:
    """The attributes as the JSON a job is given."""
    return attributes.model_dump(mode="json")
