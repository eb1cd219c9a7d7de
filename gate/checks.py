"""Testing an item, part 2: the queue's jobs against its speculative repository.

The repository is written to ``<state_dir>/speculative/<item>-<attempt>/``
(served at ``/speculative/``), each job is built by its driver
(``gate.registry.JOBS``) and run; each job's outcome is recorded as soon as it
ends, and the item's when all have.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from gate import transitions
from gate.config import Config
from gate.items import Items
from gate.jobs.base import Job, JobConfig, JobContext, JobResult
from gate.model import Step
from gate.plumbing import Plumbing
from gate.registry import JOBS
from gate.speculative import speculative_state
from publishers.createrepo import Publisher
from publishers.repotree import write_repo_tree
from repo_state.db import session
from repo_state.models import ItemRow, JobRunRow, utcnow
from repo_state.pool import Pool

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
            self._run_jobs(queue, item_id, item.attempt), f"jobs-{item_id}", item_id
        )

    async def _run_jobs(self, queue: str, item_id: int, attempt: int) -> None:
        qcfg = self.config.queues[queue]
        publisher = self.publishers[qcfg.repo]
        with session(self.engine) as s:
            item = s.get(ItemRow, item_id)
            assert item is not None
            state = speculative_state(s, item, publisher, qcfg.repo)
        name = f"{item_id}-{attempt}"
        repo_dir = self.state_dir / "speculative" / name
        shutil.rmtree(repo_dir, ignore_errors=True)
        current = publisher.current()
        arches = tuple(self.config.publishers[qcfg.repo].arches)
        await asyncio.to_thread(
            write_repo_tree, state, self.pool, repo_dir, arches, current.path if current else None
        )
        self.items.update(item_id, attempt, tested_state=state.to_json())
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
            )
            for job in jobs
        }
        rows = self._start_job_rows(item_id, attempt, ctx_for)
        results = await asyncio.gather(
            *(self._run_one(job, ctx_for[job.name], rows[job.name]) for job in jobs)
        )
        failed = [r for r in results if not r.passed]
        reason = "; ".join(f"{r.name}: {r.summary}" for r in failed)
        self.items.step(item_id, lambda v: transitions.jobs_finished(v, reason), attempt)
        self.plumbing.emit(
            "item",
            item=item_id,
            project=item.project,
            state="jobs-failed" if failed else "jobs-passed",
            reason=reason,
        )

    async def _run_one(self, job: Job, ctx: JobContext, row_id: int) -> JobResult:
        """Run one job and record its outcome as soon as it ends."""
        try:
            result = await job.run(ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("job %s crashed", job.name)
            result = JobResult(job.name, False, f"job error: {exc}", str(ctx.log_path))
        self._finish_job_row(row_id, result)
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
            row.finished_at = utcnow()
            s.add(row)
            s.commit()

    def recover(self) -> None:
        """Job runs a crash interrupted are run again (their rows say why)."""
        with session(self.engine) as s:
            ids = s.exec(
                select(ItemRow.id).where(col(ItemRow.active), ItemRow.jobs == Step.RUNNING)
            ).all()
            for row in s.exec(
                select(JobRunRow).where(
                    col(JobRunRow.item_id).in_(ids), JobRunRow.state == Step.RUNNING
                )
            ):
                row.state, row.summary = Step.FAILED, "interrupted by a restart; re-run"
                s.add(row)
            s.commit()
        for item_id in ids:
            self.items.step(item_id or 0, transitions.jobs_interrupted)
