"""Testing an item, part 2: the queue's jobs against its speculative repository.

The repository is written to ``<state_dir>/speculative/<item>-<attempt>/``
and its baseline (the same without the item's own build, so that a job can
tell what the item breaks from what was broken already) to
``<item>-<attempt>-baseline/`` next to it (both served at ``/speculative/``);
each job is built by its driver (``gate.registry.JOBS``) and run; each job's
outcome is recorded as soon as it ends, and the item's when all have.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import select

from gate import item_builds, transitions
from gate.config import Config
from gate.faults import backoff, is_transient, until_it_lands
from gate.items import Items, step_owner
from gate.jobs.base import Job, JobChange, JobConfig, JobContext, JobResult
from gate.model import ItemKind, Step
from gate.pipeline import PlannedJob, RunnerRule, build_stages, runner_for, runner_json
from gate.plumbing import Plumbing
from gate.processes import ProcessGroups
from gate.registry import JOBS
from gate.speculative import speculative_state
from publishers.createrepo import Publisher
from publishers.repotree import write_repo_tree
from repo_state.db import session
from repo_state.models import ChangeRow, ItemRow, JobRunRow, utcnow
from repo_state.pool import Pool
from repo_state.state import RepoState

log = logging.getLogger(__name__)


def make_job(config: JobConfig) -> Job:
    """The job its driver builds from a queue's ``jobs`` entry."""
    job: Job = JOBS.get(config.type).create(config)
    return job


#: the state of a job run that was cancelled (its item failed elsewhere, or was reset)
CANCELED = "canceled"


def flaky_note(ctx: JobContext) -> str:
    return f"flaky: passed on try {ctx.try_number} of {ctx.tries}"


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions of a (nested) group, in order."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


class _JobFailed(Exception):
    """A job failed on every try: the item fails."""

    def __init__(self, result: JobResult, build: str, arch: str) -> None:
        super().__init__(result.summary)
        self.result = result
        self.build = build
        self.arch = arch


@dataclass(eq=False)
class _PipelineRun:
    """What every run of one item's attempt shares."""

    item_id: int
    attempt: int
    jobs: dict[str, Job]
    runners: tuple[RunnerRule, ...]
    many_arches: bool
    #: the queue has several named builds (each run names its build)
    several_builds: bool
    #: (job, build, arch) -> the result of a run that passed in this attempt already
    #: (build "" in a queue of one build)
    passed: dict[tuple[str, str, str], JobResult]
    #: per named build, ``JobContext`` with the item's and the build's fields filled in
    contexts: Mapping[str, Callable[..., JobContext]]
    log_stem: Path

    def run_build(self, build: str) -> str:
        """The build a run's row records: "" in a queue of one build (as before)."""
        return build if self.several_builds else ""

    def label(self, job: str, build: str, arch: str) -> str:
        """How a run is named in a reason: the job, and its build and arch when there
        are several."""
        where = [build] if self.several_builds else []
        where += [arch] if self.many_arches and arch else []
        return f"{job} ({', '.join(where)})" if where else job

    def log_path(self, job: str, build: str, arch: str, try_number: int) -> Path:
        stem = f"{self.log_stem.name}-{job}"
        if self.several_builds:
            stem += f"-{build}"
        if self.many_arches:
            stem += f"-{arch}"
        if try_number > 1:
            stem += f"-try{try_number}"
        return self.log_stem.with_name(f"{stem}.log")


@dataclass(eq=False)
class Checks:
    engine: Engine
    plumbing: Plumbing
    config: Config
    items: Items
    pool: Pool
    publishers: Mapping[str, Publisher]
    state_dir: Path

    def run_jobs(self, queue: str, item_id: int) -> None:
        item = self.items.step(item_id, transitions.jobs_started)
        assert item is not None
        self.plumbing.spawn(
            self._run_jobs(queue, item_id, item.attempt),
            f"jobs-{item_id}",
            item_id,
            owns=(step_owner("jobs", item_id),),
        )

    async def _run_jobs(self, queue: str, item_id: int, attempt: int) -> None:
        qcfg = self.config.queues[queue]
        repos = self.config.repos_of(queue)
        several = len(repos) > 1
        first = next(iter(repos))
        name = f"{item_id}-{attempt}"
        arches = self.config.arches_of(queue)
        trees: dict[str, tuple[Path, Path, str]] = {}
        states: dict[str, RepoState] = {}
        with session(self.engine) as s:
            item = s.get(ItemRow, item_id)
            assert item is not None
            change = _job_change(s.get(ChangeRow, item.change_id))
        for build_name, repo in repos.items():
            publisher = self.publishers[repo]
            # its set's builds of this name (an item without a set: its own columns)
            which = build_name
            with session(self.engine) as s:
                row = s.get(ItemRow, item_id)
                assert row is not None
                mine = build_name == first
                state = speculative_state(s, row, publisher, repo, build_name=which, own_build=mine)
                baseline = speculative_state(
                    s, row, publisher, repo, own=False, build_name=which, own_build=mine
                )
            # one repository per named build: <item>-<attempt>/<build>/<arch>/ (a queue of
            # one build keeps <item>-<attempt>/<arch>/)
            sub = f"/{build_name}" if several else ""
            repo_dir = self.state_dir / "speculative" / (name + sub)
            baseline_dir = self.state_dir / "speculative" / f"{name}-baseline{sub}"
            current = publisher.current()
            await asyncio.to_thread(
                self._write_trees,
                baseline,
                baseline_dir,
                state,
                repo_dir,
                arches,
                current.path if current else None,
            )
            trees[build_name] = (repo_dir, baseline_dir, sub)
            states[build_name] = state
        if several:
            await until_it_lands(
                partial(self._record_tested, item_id, attempt, states, first),
                f"item {item_id}",
            )
        await until_it_lands(
            partial(self.items.update, item_id, attempt, tested_state=states[first].to_json()),
            f"item {item_id}",
        )
        self.plumbing.emit(
            "item",
            item=item_id,
            project=item.project,
            state="testing-jobs",
            repo=str(trees[first][0]),
            packages=len(states[first].nevras()),
            **({"repos": {b: str(t[0]) for b, t in trees.items()}} if several else {}),
        )
        base_repos = tuple(r for j in qcfg.jobs for r in j.dependency_repos())
        url = f"{self.config.base_url}/speculative"
        run = _PipelineRun(
            item_id=item_id,
            attempt=attempt,
            jobs={j.name: make_job(j) for j in qcfg.jobs},
            runners=qcfg.runners,
            many_arches=len(arches) > 1,
            several_builds=several,
            passed=await until_it_lands(
                partial(self._passed_runs, item_id, attempt), f"jobs of item {item_id}"
            ),
            contexts={
                build_name: partial(
                    JobContext,
                    item_id=item_id,
                    attempt=attempt,
                    repo_path=repo_dir,
                    repo_url=f"{url}/{name}{sub}/",
                    base_repos=base_repos,
                    processes=ProcessGroups.under(self.state_dir),
                    baseline_path=baseline_dir,
                    baseline_url=f"{url}/{name}-baseline{sub}/",
                    cache_dir=self.state_dir / "cache" / "solv",
                    queue=queue,
                    change=change,
                    public_url=self.config.base_url,
                    engine=self.engine,
                    plumbing=self.plumbing,
                    build=build_name,
                )
                for build_name, (repo_dir, baseline_dir, sub) in trees.items()
            },
            log_stem=self.state_dir / "logs" / "jobs" / name,
        )
        plan = build_stages(qcfg.pipeline, qcfg.jobs, list(repos), arches)
        failure = await self._run_pipeline(run, plan)
        failed = [failure] if failure is not None else []
        reason = "; ".join(f"{run.label(r.name, b, a)}: {r.summary}" for r, b, a in failed)
        moved: dict[str, float] = {}
        if reason and item.kind == ItemKind.POST:
            # merged already: it cannot be rejected, only held out of the repository
            what = "bootstrap of" if item.bootstrap else "untested push to"
            reason = f"blocked: {what} {item.project} breaks the repository: {reason}"
            if item.seq == 0:
                # Behind the other post items, once: tested again on top of them, it
                # passes if what it lacked was a push that came after it.  Once only,
                # so the order settles and the planner's resets end (gate.planner).
                moved["seq"] = await until_it_lands(
                    partial(self.items.behind_post_items, queue), f"item {item_id}"
                )
        await until_it_lands(
            lambda: self.items.step(
                item_id, lambda v: transitions.jobs_finished(v, reason), attempt, **moved
            ),
            f"item {item_id}",
        )
        self.plumbing.emit(
            "item",
            item=item_id,
            project=item.project,
            state="jobs-failed" if failed else "jobs-passed",
            reason=reason,
        )

    def _write_trees(
        self,
        baseline: RepoState,
        baseline_dir: Path,
        state: RepoState,
        repo_dir: Path,
        arches: tuple[str, ...],
        current: Path | None,
    ) -> None:
        """Write the baseline, then the speculative repo on top of its metadata.

        The baseline reuses the current generation's metadata and reads the
        headers of the builds ahead; the speculative repo reuses the
        baseline's and reads only the item's own RPMs: no header is read
        twice, and the baseline costs one more metadata write
        (docs/benchmarks.md).
        """
        shutil.rmtree(baseline_dir, ignore_errors=True)
        shutil.rmtree(repo_dir, ignore_errors=True)
        write_repo_tree(baseline, self.pool, baseline_dir, arches, current)
        write_repo_tree(state, self.pool, repo_dir, arches, baseline_dir)

    async def _run_pipeline(
        self, run: _PipelineRun, plan: dict[tuple[str, str], list[list[PlannedJob]]]
    ) -> tuple[JobResult, str, str] | None:
        """Each (build, arch)'s stages in order, side by side; the first failure ends all.

        A failed job (after its retries) fails the item at once: the other
        runs, of its stage and of the other arches, are cancelled (their rows
        say so), and the caller records the failure, so the items behind are
        reset without waiting for work whose outcome cannot change the verdict.
        """
        failed: list[_JobFailed] = []
        try:
            async with asyncio.TaskGroup() as group:
                for stages in plan.values():
                    group.create_task(self._arch_stages(run, stages))
        except* _JobFailed as failures:
            failed += [f for f in _leaves(failures) if isinstance(f, _JobFailed)]
        return (failed[0].result, failed[0].build, failed[0].arch) if failed else None

    async def _arch_stages(self, run: _PipelineRun, stages: list[list[PlannedJob]]) -> None:
        """One (build, arch): a stage starts when every job of the one before passed there."""
        for stage in stages:
            async with asyncio.TaskGroup() as group:
                for planned in stage:
                    group.create_task(self._run_tries(run, planned))

    async def _run_tries(self, run: _PipelineRun, planned: PlannedJob) -> JobResult:
        """One job on one arch, tried up to ``retries + 1`` times; raises when all failed.

        A pass on try n > 1 counts as a pass and says so ("flaky: passed on try
        2 of 3") in its summary and its row.  A run that passed in this attempt
        before a restart is not run again.
        """
        cfg = planned.job
        build = run.run_build(planned.build)
        done = run.passed.get((cfg.name, build, planned.arch))
        if done is not None:
            return done
        tries = cfg.retries + 1
        runner = runner_for(run.runners, cfg.name, planned.arch)
        result: JobResult | None = None
        for number in range(1, tries + 1):
            ctx = run.contexts[planned.build](
                arches=(planned.arch,),
                arch=planned.arch,
                stage=planned.stage,
                try_number=number,
                tries=tries,
                attributes=runner_json(runner),
                env=dict(runner.variables),
                log_path=run.log_path(cfg.name, planned.build, planned.arch, number),
            )
            row_id = await until_it_lands(
                partial(self._start_job_row, ctx, cfg.name, build),
                f"job {cfg.name} of item {ctx.item_id}",
            )
            result = await self._run_one(run.jobs[cfg.name], ctx, row_id, build)
            if result.passed:
                return result
        assert result is not None
        if tries > 1:
            result = replace(result, summary=f"{result.summary} (failed {tries} tries of {tries})")
        raise _JobFailed(result, planned.build, planned.arch)

    async def _run_one(self, job: Job, ctx: JobContext, row_id: int, build: str) -> JobResult:
        """Run one try and record its outcome as soon as it ends (or that it was cancelled);
        ``build``: the named build its row records ("" in a queue of one build)."""
        started = time.monotonic()
        try:
            result = await self._outcome(job, ctx)
        except asyncio.CancelledError:
            self._cancelled_job_row(row_id)
            raise
        if result.passed and ctx.try_number > 1:
            result = replace(result, summary=f"{result.summary} ({flaky_note(ctx)})")
        outcome = result
        await until_it_lands(lambda: self._finish_job_row(row_id, outcome), f"job run {row_id}")
        self.plumbing.emit(
            "job",
            item=ctx.item_id,
            attempt=ctx.attempt,
            name=job.name,
            arch=ctx.arch,
            build=build,
            stage=ctx.stage,
            passed=result.passed,
            flaky=result.passed and ctx.try_number > 1,
            try_number=ctx.try_number,
            tries=ctx.tries,
            seconds=time.monotonic() - started,
        )
        return result

    async def _outcome(self, job: Job, ctx: JobContext) -> JobResult:
        """The job's result; a transient fault is retried, a crash is a failed result."""
        faults = 0
        while True:
            try:
                return await job.run(ctx)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("job %s crashed", job.name)
                    return JobResult(job.name, False, f"job error: {exc}", str(ctx.log_path))
                faults += 1  # the disk, the network: not the item's fault
                log.warning("job %s: transient fault (try %d): %s", job.name, faults, exc)
                await backoff(faults)

    def _start_job_row(self, ctx: JobContext, name: str, build: str) -> int:
        with session(self.engine) as s:
            row = JobRunRow(
                item_id=ctx.item_id,
                attempt=ctx.attempt,
                name=name,
                log_path=str(ctx.log_path),
                arch=ctx.arch,
                stage=ctx.stage,
                try_number=ctx.try_number,
                tries=ctx.tries,
                build=build,
            )
            s.add(row)
            s.commit()
            return row.id or 0

    def _passed_runs(self, item_id: int, attempt: int) -> dict[tuple[str, str, str], JobResult]:
        """The runs of this attempt that passed already (before a restart): kept."""
        with session(self.engine) as s:
            rows = s.exec(
                select(JobRunRow).where(
                    JobRunRow.item_id == item_id,
                    JobRunRow.attempt == attempt,
                    JobRunRow.state == Step.PASSED,
                )
            ).all()
            return {
                (r.name, r.build, r.arch): JobResult(r.name, True, r.summary, r.log_path)
                for r in rows
            }

    def _record_tested(
        self, item_id: int, attempt: int, states: Mapping[str, RepoState], first: str
    ) -> None:
        """What the named builds other than the first run on, on their scratch entries
        (``gate.item_builds``); the first's is the item's ``tested_state``."""
        with session(self.engine) as s:
            item = s.get(ItemRow, item_id)
            purpose = item_builds.tested_purpose(item.kind if item is not None else "")
            entries = item_builds.entries(s, item_id, attempt, purpose)
            for build_name, state in states.items():
                entry = next((e for m, e in entries.items() if m[0] == build_name), None)
                if build_name != first and entry is not None:
                    entry.tested_state = state.to_json()
                    s.add(entry)
            s.commit()

    def _cancelled_job_row(self, row_id: int) -> None:
        """Best effort: a cancelled run's row says so (a crash leaves it to ``interrupted``)."""
        try:
            with session(self.engine) as s:
                row = s.get(JobRunRow, row_id)
                if row is not None and row.state == Step.RUNNING:
                    row.state, row.summary = CANCELED, "cancelled: the item failed or was reset"
                    row.finished_at = utcnow()
                    s.add(row)
                    s.commit()
        except Exception as exc:  # never hide the cancellation behind a database fault
            log.warning("job run %d: cannot record its cancellation: %s", row_id, exc)

    def _finish_job_row(self, row_id: int, result: JobResult) -> None:
        with session(self.engine) as s:
            row = s.get(JobRunRow, row_id)
            assert row is not None
            row.state = Step.PASSED if result.passed else Step.FAILED
            row.summary, row.details = result.summary, json.dumps(list(result.details))
            row.warnings = json.dumps(list(result.warnings))
            row.finished_at = utcnow()
            s.add(row)
            s.commit()

    def interrupted(self, item_id: int) -> None:
        """Job runs whose task is gone (a crash, a fault) are run again; their rows say why."""
        with session(self.engine) as s:
            for row in s.exec(
                select(JobRunRow).where(
                    JobRunRow.item_id == item_id, JobRunRow.state == Step.RUNNING
                )
            ):
                row.state, row.summary = Step.FAILED, "interrupted; run again"
                row.finished_at = utcnow()
                s.add(row)
            s.commit()
        self.items.step(item_id, transitions.jobs_interrupted)


def _job_change(row: ChangeRow | None) -> JobChange | None:
    if row is None:
        return None
    return JobChange(
        id=row.id or 0,
        project=row.project,
        sha=row.sha,
        title=row.title,
        url=row.url,
        review=row.review,
    )
