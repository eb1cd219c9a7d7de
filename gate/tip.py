"""The tip protocol: final build -> merge in git -> publish -> report.

Only the head item runs it.  Each step is recorded before it starts and after
it ends, and is safe to repeat:

* final build: keyed by (project, tree, target) so a restart re-attaches to
  the same build; the backend adopts a final build of the same sources and
  refuses an NVR already built from other sources, as Koji does;
* merge: a fast-forward push of the tested merge commit; after a crash,
  "is the commit on the branch already?" decides whether it happened;
* publish: generation N+1 is recorded on the item before the publisher runs,
  and the publisher is idempotent for a complete generation N+1.

A publish that fails after the merge leaves the item at the head as a post
item: it is retried with backoff until it succeeds, and items behind, which
already include it, keep their results.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING

from sqlmodel import Session, col, select

from gate.builds import build_entry, final_key
from gate.model import ItemKind
from gate.speculative import check_tested, published_state
from repo_state.db import session
from repo_state.models import BuildRow, ChangeRow, GenerationRow, ItemRow, ProjectRow, QueueRow

if TYPE_CHECKING:
    from gate.daemon import Gate

log = logging.getLogger(__name__)

PUBLISH_BACKOFF_START = 2.0
PUBLISH_BACKOFF_MAX = 300.0


# -- step 1: the final build -----------------------------------------------------------------
def final_build(gate: Gate, queue: str, item_id: int) -> None:
    item = gate.update_item(item_id, tip="final_build", tip_state="running")
    gate.spawn(_final_build(gate, queue, item_id, item.attempt), f"final-{item_id}", item_id)


async def _final_build(gate: Gate, queue: str, item_id: int, attempt: int) -> None:
    qcfg = gate.config.queues[queue]
    with session(gate.engine) as s:
        item = s.get(ItemRow, item_id)
        assert item is not None
        change = s.get(ChangeRow, item.change_id)
        assert change is not None
    if item.kind == ItemKind.POST:
        # already merged: build the pushed commit itself
        project = gate.config.projects[item.project]
        result = await gate.merger.speculative_merge(item.project, project.git, change.sha, [])
        commit, tree = result.commit, result.tree
        gate.update_item(item_id, merge_commit=commit, merge_tree=tree)
    else:
        commit, tree = item.merge_commit or "", item.merge_tree or ""
    gate.emit("item", item=item_id, project=item.project, state="final-build")
    row = gate.builds.ensure(purpose="final", key=final_key(item.project, tree, qcfg.target),
                             project=item.project, backend=qcfg.backend, commit=commit,
                             tree=tree, target=qcfg.target, includes=[item_id])
    gate.update_item(item_id, final_build_id=row.id)
    await _await_final(gate, item_id, attempt, row.id or 0)


async def _await_final(gate: Gate, item_id: int, attempt: int, build_id: int) -> None:
    while True:
        with session(gate.engine) as s:
            row = s.get(BuildRow, build_id)
            assert row is not None
        if row.state != "running":
            break
        await gate.builds.finished(build_id)
    with session(gate.engine) as s:
        item = s.get(ItemRow, item_id)
        if item is None or item.attempt != attempt or not item.active:
            return
        if row.state == "passed":
            item.tip_state = "passed"
        else:
            item.tip_state = "failed"
            item.failure = f"final build failed: {row.reason}" + (
                f" (log: {row.log})" if row.log else "")
        s.add(item)
        s.commit()
    gate.emit("item", item=item_id, project=item.project,
              state="final-built" if row.state == "passed" else "final-failed",
              nvr=row.nvr, reason=item.failure if row.state != "passed" else "")
    gate.wake()


# -- step 2: the merge ----------------------------------------------------------------------
def merge_change(gate: Gate, queue: str, item_id: int) -> None:
    item = gate.update_item(item_id, tip="merge", tip_state="running")
    gate.spawn(_merge(gate, item_id, item.attempt), f"merge-{item_id}")


async def _merge(gate: Gate, item_id: int, attempt: int) -> None:
    with session(gate.engine) as s:
        item = s.get(ItemRow, item_id)
        assert item is not None and item.merge_commit
    result = await gate.source.merge(item.project, item.merge_commit)
    with session(gate.engine) as s:
        item = s.get(ItemRow, item_id)
        assert item is not None
        if result.ok:
            item.tip_state = "passed"
            _record_branch_head(s, item.project, item.merge_commit or "")
            change = s.get(ChangeRow, item.change_id)
            if change is not None:
                change.state = "merged"
                s.add(change)
        else:
            item.tip_state, item.failure = "failed", f"merge refused: {result.reason}"
        s.add(item)
        s.commit()
    gate.emit("item", item=item_id, project=item.project,
              state="merged" if result.ok else "merge-refused", reason=result.reason,
              commit=item.merge_commit)
    gate.wake()


def _record_branch_head(s: Session, project: str, commit: str) -> None:
    row = s.get(ProjectRow, project) or ProjectRow(name=project)
    row.branch_head = commit
    s.add(row)


# -- step 3: publish ------------------------------------------------------------------------
def publish(gate: Gate, queue: str, item_ids: tuple[int, ...]) -> None:
    with session(gate.engine) as s:
        qrow = s.get(QueueRow, queue)
        assert qrow is not None
        for item_id in item_ids:
            item = s.get(ItemRow, item_id)
            assert item is not None
            item.tip, item.tip_state = "publish", "running"
            item.generation = qrow.generation + 1
            item.publish_attempts += 1
            s.add(item)
        s.commit()
    gate.spawn(_publish(gate, queue, item_ids), f"publish-{'-'.join(map(str, item_ids))}")


async def _publish(gate: Gate, queue: str, item_ids: tuple[int, ...]) -> None:
    qcfg = gate.config.queues[queue]
    publisher = gate.publisher_for(queue)
    with session(gate.engine) as s:
        items = [s.get(ItemRow, i) for i in item_ids]
        finals = [s.get(BuildRow, i.final_build_id or 0) for i in items if i is not None]
        changes = [s.get(ChangeRow, i.change_id) for i in items if i is not None]
    assert all(items) and all(finals) and all(changes)
    head = items[0]
    assert head is not None and head.generation
    number = head.generation
    try:
        state = published_state(publisher, number - 1)
        for final in finals:
            state = state.with_build(build_entry(final))  # type: ignore[arg-type]
        for item in items:
            check_tested(item, state)  # type: ignore[arg-type]
        produced_by = {
            "kind": head.kind, "queue": queue, "items": list(item_ids),
            "changes": [{"item": i.id, "project": i.project, "change": c.id, "sha": c.sha,
                         "ref": c.ref, "title": c.title, "nvr": f.nvr,
                         "merge_commit": i.merge_commit}
                        for i, c, f in zip(items, changes, finals, strict=True)  # type: ignore
                        ],
        }
        generation = await asyncio.to_thread(publisher.publish, number, state, produced_by)
        await asyncio.to_thread(publisher.gc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        tries = head.publish_attempts
        delay = min(PUBLISH_BACKOFF_MAX, PUBLISH_BACKOFF_START * 2 ** (tries - 1))
        log.warning("publish of items %s failed (attempt %d), retrying in %.0fs: %s",
                    item_ids, tries, delay, exc)
        for item_id in item_ids:
            gate.update_item(item_id, tip_state="failed", not_before=time.time() + delay,
                             failure=f"publish failed, retrying: {exc}")
            gate.emit("item", item=item_id, state="publish-failed", reason=str(exc),
                      retry_in=delay)
        return
    with session(gate.engine) as s:
        qrow = s.get(QueueRow, queue)
        assert qrow is not None
        if s.exec(select(GenerationRow).where(GenerationRow.repo == qcfg.repo,
                                              GenerationRow.number == number)).first() is None:
            s.add(GenerationRow(repo=qcfg.repo, number=number, kind=head.kind,
                                items=json.dumps(list(item_ids)),
                                packages=len(state.nevras())))
        qrow.generation = max(qrow.generation, number)
        for item_id in item_ids:
            item = s.get(ItemRow, item_id)
            assert item is not None
            item.tip, item.tip_state, item.failure, item.not_before = "done", "passed", "", 0.0
            s.add(item)
        s.add(qrow)
        s.commit()
    for item, final in zip(items, finals, strict=True):
        gate.emit("item", item=item.id, project=item.project, state="published",  # type: ignore
                  generation=number, nvr=final.nvr, path=str(generation.path))  # type: ignore
        gate.spawn(_after_publish(gate, final), f"after-publish-{final.id}")  # type: ignore


async def _after_publish(gate: Gate, final: BuildRow) -> None:
    """Post-publish work of the backend (tagging); a failure is reported, not fatal."""
    try:
        await gate.backends[final.backend].after_publish(final.nvr)
    except Exception as exc:
        log.error("after publishing %s: %s", final.nvr, exc)
        gate.emit("build", build=final.id, nvr=final.nvr, state="after-publish-failed",
                  reason=str(exc))


# -- recovery ----------------------------------------------------------------------------------
async def recover(gate: Gate) -> None:
    """Resume tip steps a crash interrupted, deciding from the world what already happened."""
    with session(gate.engine) as s:
        items = s.exec(select(ItemRow).where(col(ItemRow.active),
                                             ItemRow.tip_state == "running")).all()
    for item in items:
        assert item.id is not None
        if item.tip == "final_build":
            if item.final_build_id is None:
                gate.update_item(item.id, tip="none", tip_state="none")
            else:
                gate.spawn(_await_final(gate, item.id, item.attempt, item.final_build_id),
                           f"final-{item.id}", item.id)
        elif item.tip == "merge":
            pushed = await gate.source.is_merged(item.project, item.merge_commit or "")
            if pushed:
                with session(gate.engine) as s:
                    _record_branch_head(s, item.project, item.merge_commit or "")
                    s.commit()
                gate.update_item(item.id, tip_state="passed")
            else:
                gate.update_item(item.id, tip="final_build", tip_state="passed")
        elif item.tip == "publish":
            gate.update_item(item.id, tip_state="none")
    log.info("recovered %d tip steps", len(items))
