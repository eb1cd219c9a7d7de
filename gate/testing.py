"""Testing an item: attempts, speculative merges, scratch builds, jobs.

Each function records the intent (``running``) synchronously, so the planner
does not ask for the same work twice, then does the slow part in a task
bound to the item's current attempt.  A reset cancels those tasks; an outcome
that arrives for an older attempt is dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from typing import TYPE_CHECKING

from sqlmodel import Session, col, select

from gate.builds import scratch_key
from gate.jobs.base import Job, JobContext, JobResult
from gate.jobs.command import CommandJob
from gate.jobs.repoclosure import Repoclosure
from gate.model import Base, ItemKind
from gate.speculative import speculative_state
from publishers.repotree import write_repo_tree
from repo_state.db import session
from repo_state.models import ChangeRow, ItemRow, JobRunRow, ProjectRow, utcnow

if TYPE_CHECKING:
    from gate.config import RepoclosureJobConfig
    from gate.daemon import Gate

log = logging.getLogger(__name__)


def start_attempt(gate: Gate, item_id: int, base: Base) -> None:
    with session(gate.engine) as s:
        item = s.get(ItemRow, item_id)
        assert item is not None
        item.attempt += 1
        item.base_generation, item.base_ahead = base.generation, json.dumps(list(base.ahead))
        item.merge, item.merge_commit, item.merge_tree, item.build_key = "none", None, None, None
        item.jobs, item.tip, item.tip_state, item.failure = "none", "none", "none", ""
        item.tested_state, item.final_build_id, item.attempt_started_at = None, None, utcnow()
        s.add(item)
        s.commit()
    gate.cancel_item_tasks(item_id)
    drop_speculative_repos(gate, item_id)
    gate.emit("item", item=item_id, project=item.project, state="testing",
              attempt=item.attempt, base=list(base.ahead), generation=base.generation)


def drop_speculative_repos(gate: Gate, item_id: int) -> None:
    """Remove the speculative repos of an item's earlier attempts (nothing tests on them)."""
    for path in (gate.state_dir / "speculative").glob(f"{item_id}-*"):
        shutil.rmtree(path, ignore_errors=True)


def prepare(gate: Gate, queue: str, item_id: int) -> None:
    item = gate.update_item(item_id, merge="running")
    gate.spawn(_prepare(gate, queue, item_id, item.attempt), f"prepare-{item_id}", item_id)


async def _prepare(gate: Gate, queue: str, item_id: int, attempt: int) -> None:
    cfg = gate.config
    with session(gate.engine) as s:
        item = s.get(ItemRow, item_id)
        assert item is not None
        project = cfg.projects[item.project]
        ahead = [s.get(ItemRow, a) for a in json.loads(item.base_ahead)]
        same_project = [a for a in ahead if a is not None and a.project == item.project
                        and a.kind == ItemKind.GATE]
        shas = [_change_sha(s, a) for a in same_project] + [_change_sha(s, item)]
        own_change = item.change_id
        includes = [a.id for a in same_project if a.id] + [item_id]
        prow = s.get(ProjectRow, item.project)
    head = prow.branch_head if prow and prow.branch_head else await gate.source.branch_head(
        item.project)
    needs = await _unmet_dependency(gate, item.project, head, shas, own_change)
    if needs is not None:
        _merge_failed(gate, item_id, attempt, item.project, needs)
        return
    result = await gate.merger.speculative_merge(item.project, project.git, head, shas)
    if result.conflict:
        files = ", ".join(result.files[:5])
        reason = f"merge conflict with {result.conflict_with[:12]}" + (f" in {files}" if files
                                                                        else "")
        _merge_failed(gate, item_id, attempt, item.project, reason)
        return
    qcfg = cfg.queues[queue]
    key = scratch_key(item.project, result.tree, qcfg.target, qcfg.backend)
    build = gate.builds.ensure(purpose="scratch", key=key, project=item.project,
                               backend=qcfg.backend, commit=result.commit, tree=result.tree,
                               target=qcfg.target, includes=includes)
    gate.update_item(item_id, attempt=attempt, merge="passed", merge_commit=result.commit,
                     merge_tree=result.tree, build_key=key)
    gate.emit("item", item=item_id, project=item.project, state="building",
              build=build.id, reused=build.submissions > 0 or build.state != "running")


def _merge_failed(gate: Gate, item_id: int, attempt: int, project: str, reason: str) -> None:
    gate.update_item(item_id, attempt=attempt, merge="failed", failure=reason)
    gate.emit("item", item=item_id, project=project, state="merge-conflict", reason=reason)


async def _unmet_dependency(gate: Gate, project: str, head: str, shas: list[str],
                            own_change: int) -> str | None:
    """Why the change cannot be merged on this base because of a change it contains.

    A change whose commit sits on top of another proposed change carries that
    change with it.  Merging it while the other one is not ahead of it in the
    queue (rejected, dequeued, not approved, or behind it) would land a change
    that was never accepted, so the item fails instead, as Zuul fails an item
    whose dependency failed.
    """
    url = gate.config.projects[project].git
    carried = set(await gate.merger.commits_between(project, url, head, shas[-1]))
    carried -= set(shas)
    if not carried:
        return None
    with session(gate.engine) as s:
        other = s.exec(select(ChangeRow).where(
            ChangeRow.project == project, col(ChangeRow.sha).in_(carried),
            ChangeRow.id != own_change)).first()
    if other is None:
        return None  # commits of this change only
    return (f"depends on change {other.id} ({other.title or other.sha[:12]}), which is "
            f"{other.state} and not ahead of it in the queue")


def run_jobs(gate: Gate, queue: str, item_id: int) -> None:
    item = gate.update_item(item_id, jobs="running")
    gate.spawn(_run_jobs(gate, queue, item_id, item.attempt), f"jobs-{item_id}", item_id)


async def _run_jobs(gate: Gate, queue: str, item_id: int, attempt: int) -> None:
    qcfg = gate.config.queues[queue]
    publisher = gate.publisher_for(queue)
    with session(gate.engine) as s:
        item = s.get(ItemRow, item_id)
        assert item is not None
        state = speculative_state(s, item, publisher, qcfg.repo)
    name = f"{item_id}-{attempt}"
    repo_dir = gate.state_dir / "speculative" / name
    shutil.rmtree(repo_dir, ignore_errors=True)
    current = publisher.current()
    await asyncio.to_thread(write_repo_tree, state, gate.pool, repo_dir,
                            gate.config.publishers[qcfg.repo].arches,
                            current.path if current else None)
    gate.update_item(item_id, attempt=attempt, tested_state=state.to_json())
    gate.emit("item", item=item_id, project=item.project, state="testing-jobs",
              repo=str(repo_dir), packages=len(state.nevras()))
    jobs = [_make_job(j) for j in qcfg.jobs]
    base_repos = tuple(r for j in qcfg.jobs if j.name == "repoclosure"
                       for r in j.base_repos)  # type: ignore[union-attr]
    ctx_for = {
        job.name: JobContext(
            item_id=item_id, attempt=attempt, repo_path=repo_dir,
            repo_url=f"{gate.config.base_url}/speculative/{name}/",
            arches=tuple(gate.config.publishers[qcfg.repo].arches),
            base_repos=base_repos,
            log_path=gate.state_dir / "logs" / "jobs" / f"{name}-{job.name}.log",
        )
        for job in jobs
    }
    rows = _start_job_rows(gate, item_id, attempt, ctx_for)
    results = await asyncio.gather(*(_run_one(gate, job, ctx_for[job.name], rows[job.name])
                                     for job in jobs))
    failed = [r for r in results if not r.passed]
    reason = "; ".join(f"{r.name}: {r.summary}" for r in failed)
    gate.update_item(item_id, attempt=attempt, jobs="failed" if failed else "passed",
                     failure=reason)
    gate.emit("item", item=item_id, project=item.project,
              state="jobs-failed" if failed else "jobs-passed", reason=reason)


async def _run_one(gate: Gate, job: Job, ctx: JobContext, row_id: int) -> JobResult:
    """Run one job and record its outcome as soon as it ends."""
    try:
        result = await job.run(ctx)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("job %s crashed", job.name)
        result = JobResult(job.name, False, f"job error: {exc}", str(ctx.log_path))
    _finish_job_row(gate, row_id, result)
    return result


def _make_job(cfg: RepoclosureJobConfig | object) -> Job:
    if getattr(cfg, "command", None) is None:
        return Repoclosure()
    return CommandJob(cfg.name, cfg.command, cfg.timeout, cfg.env)  # type: ignore[attr-defined]


def _start_job_rows(gate: Gate, item_id: int, attempt: int,
                    ctx_for: dict[str, JobContext]) -> dict[str, int]:
    with session(gate.engine) as s:
        rows = {name: JobRunRow(item_id=item_id, attempt=attempt, name=name,
                                log_path=str(ctx.log_path)) for name, ctx in ctx_for.items()}
        s.add_all(rows.values())
        s.commit()
        return {name: row.id or 0 for name, row in rows.items()}


def _finish_job_row(gate: Gate, row_id: int, result: JobResult) -> None:
    with session(gate.engine) as s:
        row = s.get(JobRunRow, row_id)
        assert row is not None
        row.state = "passed" if result.passed else "failed"
        row.summary, row.details = result.summary, json.dumps(list(result.details))
        row.finished_at = utcnow()
        s.add(row)
        s.commit()


def recover(gate: Gate) -> None:
    """Merges and job runs are cheap and idempotent: redo the ones a crash interrupted."""
    with session(gate.engine) as s:
        for item in s.exec(select(ItemRow).where(col(ItemRow.active))):
            if item.merge == "running":
                item.merge = "none"
            if item.jobs == "running":
                item.jobs = "none"
                for row in s.exec(select(JobRunRow).where(JobRunRow.item_id == item.id,
                                                          JobRunRow.state == "running")):
                    row.state, row.summary = "failed", "interrupted by a restart; re-run"
                    s.add(row)
            s.add(item)
        s.commit()


# -- rows -------------------------------------------------------------------------------------
def _change_sha(s: Session, item: ItemRow) -> str:
    change = s.get(ChangeRow, item.change_id)
    assert change is not None
    return change.sha
