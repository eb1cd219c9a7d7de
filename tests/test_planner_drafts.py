"""Final builds ahead of the tip (drafts): the planner's rules, on plain data and
through the simulation (the real transitions).

The property tests (``test_planner_properties``) run half their scenarios with
drafts; these name the cases the issue asks for: a reset after a draft
finished, a draft failing behind the head, promotion only of the current
attempt's draft.
"""

from __future__ import annotations

import random
from dataclasses import replace

from gate import transitions
from gate.model import Base, ItemKind, ItemState, ItemView, QueueState, Step, TipStep
from gate.planner import Dequeue, DraftBuild, FinalBuild, PromoteDraft, StartAttempt, plan
from tests.planner_sim import Change, Simulation, serial_outcome


def passed(item_id: int, project: str, ahead: tuple[int, ...] = ()) -> ItemView:
    """A gate item whose jobs passed on generation 0 plus ``ahead``."""
    return ItemView(
        id=item_id,
        kind=ItemKind.GATE,
        project=project,
        base=Base(0, ahead),
        merge=Step.PASSED,
        build_key=f"k{item_id}",
        build=Step.PASSED,
        jobs=Step.PASSED,
        attempt=1,
    )


def queue(*items: ItemView, drafts: bool = True) -> QueueState:
    return QueueState(name="q", items=items, generation=0, drafts=drafts)


def test_a_passed_item_behind_the_head_starts_its_draft() -> None:
    head = replace(passed(1, "nova"), jobs=Step.RUNNING)
    behind = passed(2, "ceilometer", (1,))
    same_project = passed(3, "nova", (1, 2))
    actions = plan(queue(head, behind, same_project))
    assert DraftBuild(2) in actions
    # its tree holds item 1's change: if item 1 fails, item 3 gets a new attempt
    # (and a new draft); this one is never promoted
    assert DraftBuild(3) in actions


def test_no_draft_without_draft_support() -> None:
    actions = plan(queue(passed(1, "nova"), passed(2, "ceilometer", (1,)), drafts=False))
    assert actions == [FinalBuild(1)]


def test_the_head_promotes_its_built_draft_and_waits_for_a_running_one() -> None:
    built = replace(passed(1, "nova"), draft=Step.PASSED)
    assert plan(queue(built)) == [PromoteDraft(1)]
    running = replace(passed(1, "nova"), draft=Step.RUNNING)
    assert plan(queue(running)) == []
    # a head that has no draft yet asks for one (an unchanged tree gets it back)
    assert plan(queue(passed(1, "nova"))) == [DraftBuild(1)]
    assert plan(queue(passed(1, "nova"), drafts=False)) == [FinalBuild(1)]


def test_a_failed_draft_fails_the_item_but_rejects_it_only_at_the_head() -> None:
    head = replace(passed(1, "nova"), jobs=Step.RUNNING)
    failed = transitions.draft_finished(replace(passed(2, "nova", (1,))), "draft build failed")
    assert failed.failing and failed.state is ItemState.FAILING
    behind = passed(3, "horizon", (1, 2))
    actions = plan(queue(head, failed, behind))
    assert not any(isinstance(a, Dequeue) for a in actions)
    # the item behind re-parents past the failing one, like any failure
    assert StartAttempt(3, Base(0, (1,))) in actions
    alone = replace(failed, base=Base(0, ()))  # item 1 merged: item 2 is at the head
    assert plan(queue(alone)) == [Dequeue(2, merged=False, reason="draft build failed")]


def test_a_promotion_that_fails_fails_the_item_at_the_tip() -> None:
    item = transitions.promote_started(replace(passed(1, "nova"), draft=Step.PASSED))
    assert (item.tip, item.tip_state) == (TipStep.FINAL_BUILD, Step.RUNNING)
    refused = transitions.final_build_finished(item, "promotion refused: NVR exists")
    assert plan(queue(refused)) == [
        Dequeue(1, merged=False, reason="promotion refused: NVR exists")
    ]


def test_a_new_attempt_forgets_the_draft() -> None:
    item = replace(passed(1, "nova"), draft=Step.PASSED)
    fresh = transitions.start_attempt(item, Base(0, ()))
    assert fresh.draft is Step.NONE and fresh.attempt == 2


def _sim(changes: list[Change], seed: int, window: int = 20) -> Simulation:
    sim = Simulation(changes=changes, window=window, rng=random.Random(seed), drafts_enabled=True)
    sim.run([0] * len(changes))
    return sim


def test_a_reset_after_a_draft_finished_reuses_the_draft_of_an_unchanged_tree() -> None:
    """Item 2's draft is built, then item 1 (another project) fails its jobs:
    item 2 is reset and tested again, its tree is unchanged, and the same draft
    is promoted (one draft build, one promotion)."""
    for seed in range(40):
        changes = [Change(1, "nova", bad_jobs=True), Change(2, "ceilometer")]
        sim = _sim(changes, seed)
        assert sim.violations == []
        assert (sim.published, set(sim.rejected)) == serial_outcome(changes)
        assert all(n == 1 for n in sim.draft_submissions.values())
        assert sim.promoted == {"d:2"}
        assert sim.final_builds == 0  # the final build was the promoted draft


def test_a_tree_that_changed_gets_a_new_draft_and_only_it_is_promoted() -> None:
    """Item 2 (nova) is drafted with item 1 (nova) in its tree; item 1 fails at
    the head: item 2's first draft (tree 1/2) is never promoted, the one of its
    new tree (2) is."""
    found = 0
    for seed in range(60):
        changes = [Change(1, "nova", final_fails=True), Change(2, "nova")]
        sim = _sim(changes, seed)
        assert sim.violations == []
        assert (sim.published, set(sim.rejected)) == serial_outcome(changes) == ([2], {1})
        assert sim.promoted == {"d:2"}
        found += "d:1/2" in sim.draft_submissions
    assert found  # in some orders item 2's first draft was built on item 1's change


def test_the_simulation_catches_a_planner_promoting_a_stale_draft(monkeypatch) -> None:
    """The promotion check can fail: a planner that forgets a reset and promotes
    the draft of the old tree is caught."""
    import gate.planner as planner

    real_plan = planner.plan

    def stale(q: QueueState) -> list[object]:
        actions = real_plan(q)
        # promote item 2's draft while its attempt is still being re-tested
        out: list[object] = []
        for action in actions:
            out.append(action)
        for item in q.items:
            if item.id == 2 and item.draft is Step.NONE and item.attempt > 1 and q.items[0] is item:
                out.append(PromoteDraft(2))
        return out

    monkeypatch.setattr("tests.planner_sim.plan", stale)
    caught = 0
    for seed in range(30):
        changes = [Change(1, "nova", final_fails=True), Change(2, "nova")]
        sim = Simulation(changes=changes, rng=random.Random(seed), drafts_enabled=True)
        try:
            sim.run([0, 0])
        except AssertionError:
            caught += 1
            continue
        caught += bool(sim.violations)
    assert caught


# -- draft_start: with-jobs ---------------------------------------------------------


def early(*items: ItemView) -> QueueState:
    """A queue with ``draft_start: with-jobs``."""
    return QueueState(name="q", items=items, generation=0, drafts=True, draft_with_jobs=True)


def test_with_jobs_a_draft_starts_when_the_jobs_start_not_before() -> None:
    head = replace(passed(1, "nova"), jobs=Step.RUNNING)
    testing = replace(passed(2, "ceilometer", (1,)), jobs=Step.RUNNING)
    built = replace(passed(3, "horizon", (1, 2)), jobs=Step.NONE)
    actions = plan(early(head, testing, built))
    # the head and item 2 are testing: their drafts start; item 3's jobs wait for
    # the items ahead, and so does its draft
    assert DraftBuild(1) in actions and DraftBuild(2) in actions
    assert DraftBuild(3) not in actions
    # the default (jobs-passed) starts none of them
    assert not any(isinstance(a, DraftBuild) for a in plan(queue(head, testing, built)))


def test_with_jobs_the_head_promotes_only_once_its_jobs_passed() -> None:
    testing = replace(passed(1, "nova"), jobs=Step.RUNNING, draft=Step.PASSED)
    assert plan(early(testing)) == []
    assert plan(early(transitions.jobs_finished(testing, ""))) == [PromoteDraft(1)]


def test_with_jobs_each_failure_is_kept_whichever_ends_first() -> None:
    testing = transitions.draft_started(replace(passed(1, "nova"), jobs=Step.RUNNING))
    # jobs fail, then the draft is built: the jobs' failure is the item's
    jobs_failed = transitions.jobs_finished(testing, "repoclosure: 1 unresolved dependency")
    then_built = transitions.draft_finished(jobs_failed, "")
    assert then_built.failing and then_built.failure == "repoclosure: 1 unresolved dependency"
    assert plan(early(then_built)) == [
        Dequeue(1, merged=False, reason="repoclosure: 1 unresolved dependency")
    ]
    # the draft fails, then the jobs pass: the draft's failure is the item's
    draft_failed = transitions.draft_finished(testing, "draft build failed")
    then_passed = transitions.jobs_finished(draft_failed, "")
    assert then_passed.failing and then_passed.failure == "draft build failed"
    assert plan(early(then_passed)) == [Dequeue(1, merged=False, reason="draft build failed")]
    # (with the default, a failure is never there to keep: the draft starts after)
    assert transitions.jobs_finished(testing, "").failure == ""


def test_with_jobs_the_drafts_of_items_whose_jobs_fail_are_never_promoted() -> None:
    """Item 1's jobs fail: its draft may be built (the cost of the option), never
    promoted; the outcome is the serial gate's, and item 2's draft is promoted."""
    drafted_for_failed = 0
    for seed in range(40):
        changes = [Change(1, "nova", bad_jobs=True), Change(2, "ceilometer")]
        sim = Simulation(
            changes=changes,
            rng=random.Random(seed),
            drafts_enabled=True,
            draft_with_jobs=True,
        )
        sim.run([0, 0])
        assert sim.violations == []
        assert (sim.published, set(sim.rejected)) == serial_outcome(changes)
        assert sim.promoted == {"d:2"}
        drafted_for_failed += sim.draft_submissions["d:1"]
    assert drafted_for_failed > 0
