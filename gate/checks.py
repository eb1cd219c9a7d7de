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
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import select

from gate import transitions
from gate.config import Config
from gate.faults import backoff, is_transient, until_it_lands
from gate.items import Items, step_owner
from gate.jobs.base import Job, JobChange, JobConfig, JobContext, JobResult
from gate.model import ItemKind, Step
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
        publisher = self.publishers[qcfg.repo]
        with session(self.engine) as s:
            item = s.get(ItemRow, item_id)
            assert item is not None
            state = speculative_state(s, item, publisher, qcfg.repo)
            baseline = speculative_state(s, item, publisher, qcfg.repo, own=False)
            change = _job_change(s.get(ChangeRow, item.change_id))
        name = f"{item_id}-{attempt}"
        repo_dir = self.state_dir / "speculative" / name
        baseline_dir = self.state_dir / "speculative" / f"{name}-baseline"
        current = publisher.current()
        arches = tuple(self.config.publishers[qcfg.repo].arches)
        await asyncio.to_thread(
            self._write_trees,
            baseline,
            baseline_dir,
            state,
            repo_dir,
            arches,
            current.path if current else None,
        )
        await until_it_lands(
            partial(self.items.update, item_id, attempt, tested_state=state.to_json()),
            f"item {item_id}",
        )
        self.plumbing.emit(
            "item",
            item=item_id,
            project=item.project,
            state="testing-jobs",
            repo=str(repo_dir),
            packages=len(state.nevras()),
        )
        jobs = [make_job(j) for j in qcfg.jobs]
        base_repos = tuple(r for j in qcfg.jobs for r in j.dependency_repos())
        ctx_for = {
            job.name: JobContext(
                item_id=item_id,
                attempt=attempt,
                repo_path=repo_dir,
                repo_url=f"{self.config.base_url}/speculative/{name}/",
                arches=arches,
                base_repos=base_repos,
                log_path=self.state_dir / "logs" / "jobs" / f"{name}-{job.name}.log",
                processes=ProcessGroups.under(self.state_dir),
                baseline_path=baseline_dir,
                baseline_url=f"{self.config.base_url}/speculative/{name}-baseline/",
                cache_dir=self.state_dir / "cache" / "solv",
                queue=queue,
                change=change,
                public_url=self.config.base_url,
                engine=self.engine,
                plumbing=self.plumbing,
            )
            for job in jobs
        }
        rows = await until_it_lands(
            partial(self._start_job_rows, item_id, attempt, ctx_for), f"jobs of item {item_id}"
        )
        results = await asyncio.gather(
            *(self._run_one(job, ctx_for[job.name], rows[job.name]) for job in jobs)
        )
        failed = [r for r in results if not r.passed]
        reason = "; ".join(f"{r.name}: {r.summary}" for r in failed)
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

    async def _run_one(self, job: Job, ctx: JobContext, row_id: int) -> JobResult:
        """Run one job and record its outcome as soon as it ends."""
        tries = 0
        started = time.monotonic()
        while True:
            try:
                result = await job.run(ctx)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_transient(exc):  # the disk, the network: not the item's fault
                    tries += 1
                    log.warning("job %s: transient fault (try %d): %s", job.name, tries, exc)
                    await backoff(tries)
                    continue
                log.exception("job %s crashed", job.name)
                result = JobResult(job.name, False, f"job error: {exc}", str(ctx.log_path))
                break
        await until_it_lands(lambda: self._finish_job_row(row_id, result), f"job run {row_id}")
        self.plumbing.emit(
            "job",
            item=ctx.item_id,
            attempt=ctx.attempt,
            name=job.name,
            passed=result.passed,
            seconds=time.monotonic() - started,
        )
        return result

    def _start_job_rows(
        self, item_id: int, attempt: int, ctx_for: dict[str, JobContext]
    ) -> dict[str, int]:
        with session(self.engine) as s:
            rows = {
                name: JobRunRow(
                    item_id=item_id, attempt=attempt, name=name, log_path=str(ctx.log_path)
                )
                for name, ctx in ctx_for.items()
            }
            s.add_all(rows.values())
            s.commit()
            return {name: row.id or 0 for name, row in rows.items()}

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
