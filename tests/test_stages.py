"""Ingest, attempts and the tip, stage by stage, on in-memory parts (no git, no rpmbuild).

The stages are the daemon's own classes; only the review system, the build
backend and the speculative merges are in memory (``tests/memory.py``), each
implementing the real interface.  The same behaviour is covered end to end
with real parts by the scenario tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlmodel import select

from gate.admin import RepoAdmin
from gate.attempts import Attempts
from gate.builds import Builds
from gate.deliveries import store_delivery
from gate.events import ChangeEnqueue
from gate.ingest import HANDLERS, Ingest
from gate.items import Items, view_of
from gate.model import Base, ItemState, Step, TipStep
from gate.polling import Polling
from gate.tip import Tip
from gate.web.status import item_doc, status
from repo_state.db import session
from repo_state.models import BuildRow, ChangeRow, Delivery, ItemRow, ProjectRow, QueueRow
from tests.memory import MemoryWorld, memory_runtime


@dataclass
class Stages:
    world: MemoryWorld
    items: Items
    builds: Builds
    attempts: Attempts
    tip: Tip
    ingest: Ingest

    async def deliver(self, event_type: str, payload: dict[str, object]) -> Delivery:
        delivery, _ = store_delivery(self.world.runtime, "api", event_type, payload, None)
        await self.ingest.process_deliveries()
        await self.world.runtime.plumbing.settle()
        with session(self.world.runtime.engine) as s:
            row = s.get(Delivery, delivery.id)
        assert row is not None
        return row

    def item(self, item_id: int) -> ItemRow:
        return self.items.get(item_id)


@pytest.fixture
def stages(tmp_path: Path) -> Stages:
    world = memory_runtime(tmp_path)
    rt = world.runtime
    with session(rt.engine) as s:
        s.add(QueueRow(name="liberty", window=20, generation=0))
        s.commit()
    items = Items(rt.engine, rt.plumbing, rt.config, rt.source_of, rt.state_dir / "spec")
    builds = Builds(rt.engine, rt.plumbing, rt.config, rt.backends, rt.source_of, rt.merger)
    attempts = Attempts(rt.engine, rt.plumbing, rt.config, items, builds, rt.merger, rt.source_of)
    tip = Tip(rt.engine, rt.plumbing, rt.config, items, builds, rt.merger, rt.source_of)
    polling = Polling(rt.engine, rt.plumbing, rt.config, rt.source_of, rt.publishers)
    admin = RepoAdmin(rt.engine, rt.plumbing, rt.config, rt.publishers)
    ingest = Ingest(
        rt.engine,
        rt.plumbing,
        rt.config,
        items,
        rt.sources,
        rt.source_of,
        admin,
        polling,
        rt.merger,
    )
    return Stages(world, items, builds, attempts, tip, ingest)


def propose(stages: Stages, project: str, name: str, on: str | None = None) -> str:
    """A change on the branch head (or on ``on``), reachable at ``refs/changes/<name>``."""
    repo = stages.world.repos[project]
    commit = repo.commit(name, on or repo.branch)
    repo.refs[f"refs/changes/{name}"] = commit
    return f"refs/changes/{name}"


async def enqueued(stages: Stages, project: str, name: str, on: str | None = None) -> ItemRow:
    ref = propose(stages, project, name, on)
    await stages.deliver(
        "change.proposed", {"project": project, "ref": ref, "title": name, "approve": True}
    )
    with session(stages.world.runtime.engine) as s:
        return s.exec(
            select(ItemRow)
            .join(ChangeRow, ChangeRow.id == ItemRow.change_id)
            .where(ChangeRow.title == name)
        ).one()


# -- ingest ------------------------------------------------------------------------------------
async def test_a_proposed_and_approved_change_becomes_a_queued_item(stages: Stages) -> None:
    ref = propose(stages, "nova", "A")
    row = await stages.deliver(
        "change.proposed", {"project": "nova", "ref": ref, "title": "A", "approve": True}
    )
    assert (row.result, row.error) == ("change 1", None)
    item = stages.item(1)
    assert (item.project, item.kind, item.seq) == ("nova", "gate", 1)
    assert view_of(item).state is ItemState.OUTSIDE_WINDOW  # not planned yet


async def test_a_ref_the_review_system_does_not_have_is_refused(stages: Stages) -> None:
    row = await stages.deliver("change.proposed", {"project": "nova", "ref": "refs/changes/nope"})
    assert (
        row.error == "resolve refs/changes/nope failed (exit 1): ref refs/changes/nope "
        "not found on the remote"
    )


async def test_approval_re_reads_a_moved_ref_as_a_new_patchset(stages: Stages) -> None:
    ref = propose(stages, "nova", "A")
    await stages.deliver("change.proposed", {"project": "nova", "ref": ref})
    repo = stages.world.repos["nova"]
    repo.refs[ref] = repo.commit("A, patchset 2")
    row = await stages.deliver("change.approved", {"change": 1})
    assert row.result == "item 1"
    with session(stages.world.runtime.engine) as s:
        change = s.get(ChangeRow, 1)
    assert change is not None and change.sha == repo.refs[ref]


async def test_a_bug_in_a_handler_is_an_internal_error_not_a_refusal(
    stages: Stages, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(ingest: Ingest, event: ChangeEnqueue) -> str:
        return {}["missing"]  # type: ignore[no-any-return]

    monkeypatch.setitem(HANDLERS, ChangeEnqueue, broken)
    row = await stages.deliver("change.enqueue", {"change": 1})
    assert row.error == "internal error: KeyError: 'missing'"
    refused = await stages.deliver("change.approved", {"change": 7})
    assert refused.error == "no change 7"


async def test_a_malformed_stored_event_is_refused_naming_the_field(stages: Stages) -> None:
    row = await stages.deliver("repo.rollback", {"repo": "liberty"})
    assert row.error == "malformed repo.rollback event: to: Field required"


# -- attempts ------------------------------------------------------------------------------------
async def test_an_attempt_merges_on_its_base_and_starts_the_scratch_build(stages: Stages) -> None:
    item = await enqueued(stages, "nova", "A")
    stages.attempts.start(item.id or 0, Base(0, ()))
    stages.attempts.prepare("liberty", item.id or 0)
    await stages.world.runtime.plumbing.settle()

    row = stages.item(item.id or 0)
    view = view_of(row)
    assert (view.attempt, view.merge, view.build_key is not None) == (1, Step.PASSED, True)
    assert row.merge_commit == stages.world.repos["nova"].refs["refs/changes/A"]  # fast-forward
    with session(stages.world.runtime.engine) as s:
        build = s.exec(select(BuildRow).where(BuildRow.key == view.build_key)).one()
    assert (build.purpose, build.state, build.submissions) == ("scratch", "passed", 1)


async def test_a_conflict_fails_the_merge_naming_the_change(stages: Stages) -> None:
    first = await enqueued(stages, "nova", "A")
    second = await enqueued(stages, "nova", "B")
    world = stages.world
    a, b = (world.repos["nova"].refs[f"refs/changes/{n}"] for n in "AB")
    world.merger.conflicts.add(frozenset((a, b)))
    stages.attempts.start(second.id or 0, Base(0, (first.id or 0,)))
    stages.attempts.prepare("liberty", second.id or 0)
    await world.runtime.plumbing.settle()
    view = view_of(stages.item(second.id or 0))
    # the change it conflicts with (A, ahead of it), not its own (B)
    assert view.merge is Step.FAILED
    assert view.failure == f"merge conflict with {a[:12]} (item {first.id}, ahead)"


async def test_a_conflict_with_the_branch_names_the_branch_head(stages: Stages) -> None:
    world = stages.world
    repo = world.repos["nova"]
    start = repo.branch
    item = await enqueued(stages, "nova", "A", on=start)
    a = repo.refs["refs/changes/A"]
    pushed = repo.commit("pushed", start)
    repo.branch = pushed
    with session(world.runtime.engine) as s:
        prow = s.get(ProjectRow, "nova")
        if prow is not None:
            prow.branch_head = pushed
            s.add(prow)
            s.commit()
    world.merger.conflicts.add(frozenset((a, pushed)))
    stages.attempts.start(item.id or 0, Base(0, ()))
    stages.attempts.prepare("liberty", item.id or 0)
    await world.runtime.plumbing.settle()
    view = view_of(stages.item(item.id or 0))
    assert view.failure == f"merge conflict with {pushed[:12]} (the head of branch main)"


def _status_item(stages: Stages, item_id: int) -> dict[str, object]:
    """The item as ``GET /api/status`` (and so the CLI and the page) shows it."""
    with session(stages.world.runtime.engine) as s:
        row = s.get(ItemRow, item_id)
        assert row is not None
        return item_doc(stages.world.runtime, s, row, 1)


async def test_a_failed_scratch_build_is_the_items_failure_in_the_status(stages: Stages) -> None:
    stages.world.backend.failing["nova"] = "error: Bad exit status from %build"
    item = await enqueued(stages, "nova", "A")
    stages.attempts.start(item.id or 0, Base(0, ()))
    stages.attempts.prepare("liberty", item.id or 0)
    await stages.world.runtime.plumbing.settle()
    doc = _status_item(stages, item.id or 0)
    assert doc["state"] == ItemState.FAILING.value
    assert doc["failure"] == "error: Bad exit status from %build"


async def test_an_item_whose_build_passed_waits_for_the_builds_ahead(stages: Stages) -> None:
    first = await enqueued(stages, "nova", "A")
    second = await enqueued(stages, "ceilometer", "B")
    stages.attempts.start(second.id or 0, Base(0, (first.id or 0,)))
    stages.attempts.prepare("liberty", second.id or 0)
    await stages.world.runtime.plumbing.settle()
    # A has not even started; B's own build passed
    with session(stages.world.runtime.engine) as s:
        build = s.exec(select(BuildRow).where(BuildRow.project == "ceilometer")).one()
    assert build.state == "passed"
    doc = _status_item(stages, second.id or 0)
    assert doc["state"] == "built, waiting for the builds ahead"
    assert doc["failure"] is None


async def test_a_change_carrying_one_that_is_not_ahead_fails(stages: Stages) -> None:
    x = await enqueued(stages, "nova", "X")
    y = await enqueued(stages, "nova", "Y", on=stages.world.repos["nova"].refs["refs/changes/X"])
    stages.items.dequeue("liberty", x.id or 0, "rejected", "broken")
    stages.attempts.start(y.id or 0, Base(0, ()))
    stages.attempts.prepare("liberty", y.id or 0)
    await stages.world.runtime.plumbing.settle()
    view = view_of(stages.item(y.id or 0))
    assert view.failure == (
        "depends on change 1 (X), which is rejected and not ahead of it in the queue"
    )


# -- the tip ---------------------------------------------------------------------------------
async def item_tested(stages: Stages, name: str) -> int:
    item = await enqueued(stages, "nova", name)
    item_id = item.id or 0
    stages.attempts.start(item_id, Base(0, ()))
    stages.attempts.prepare("liberty", item_id)
    await stages.world.runtime.plumbing.settle()
    return item_id


async def test_the_tip_final_builds_then_merges_through_the_review_system(stages: Stages) -> None:
    item_id = await item_tested(stages, "A")
    stages.tip.final_build("liberty", item_id)
    await stages.world.runtime.plumbing.settle()
    assert view_of(stages.item(item_id)).tip_state is Step.PASSED

    stages.tip.merge_change("liberty", item_id)
    await stages.world.runtime.plumbing.settle()
    row = stages.item(item_id)
    view = view_of(row)
    assert (view.tip, view.tip_state, view.committed) == (TipStep.MERGE, Step.PASSED, True)
    repo = stages.world.repos["nova"]
    assert repo.branch == row.merge_commit
    with session(stages.world.runtime.engine) as s:
        project = s.get(ProjectRow, "nova")
        change = s.get(ChangeRow, row.change_id)
    assert project is not None and project.branch_head == row.merge_commit
    assert change is not None and change.state == "merged"
    # merged in git: an administrator can no longer dequeue it
    refused = await stages.deliver("item.dequeue", {"item": item_id})
    assert refused.error == f"item {item_id} is merged already; it can only be published"


async def test_a_failed_final_build_merges_nothing(stages: Stages) -> None:
    item_id = await item_tested(stages, "A")
    stages.world.backend.failing["nova"] = "mock exited with status 1"
    stages.tip.final_build("liberty", item_id)
    await stages.world.runtime.plumbing.settle()
    view = view_of(stages.item(item_id))
    assert view.failing and view.failure == "final build failed: mock exited with status 1"
    assert stages.world.repos["nova"].branch == stages.world.repos["nova"].commit("nova-initial")


async def test_a_branch_that_moved_refuses_the_merge(stages: Stages) -> None:
    item_id = await item_tested(stages, "A")
    stages.tip.final_build("liberty", item_id)
    await stages.world.runtime.plumbing.settle()
    repo = stages.world.repos["nova"]
    repo.branch = repo.commit("someone pushed")
    stages.tip.merge_change("liberty", item_id)
    await stages.world.runtime.plumbing.settle()
    view = view_of(stages.item(item_id))
    assert view.failing and view.failure == f"merge refused: branch moved to {repo.branch[:12]}"


async def test_the_status_says_outside_the_window_for_an_item_behind_it(stages: Stages) -> None:
    """An item the window left behind (it narrowed while the item was tested) keeps its
    attempt and its build, and the status, the CLI and the page say it waits."""
    first = await enqueued(stages, "nova", "A")
    second = await enqueued(stages, "ceilometer", "B")
    stages.attempts.start(first.id or 0, Base(0, ()))
    stages.attempts.start(second.id or 0, Base(0, (first.id or 0,)))
    stages.attempts.prepare("liberty", second.id or 0)
    await stages.world.runtime.plumbing.settle()
    rt = stages.world.runtime
    with session(rt.engine) as s:
        qrow = s.get(QueueRow, "liberty")
        assert qrow is not None
        qrow.window = 1
        s.add(qrow)
        s.commit()
        doc = status(rt, s)
    by_id = {i["id"]: i for i in doc["queues"][0]["items"]}
    assert by_id[first.id]["state"] == ItemState.MERGING.value
    assert by_id[second.id]["state"] == ItemState.OUTSIDE_WINDOW.value
    assert by_id[second.id]["build"]["state"] == "passed"  # kept for when it enters
