"""The planner on hand-made queue states: one behaviour per test."""

from __future__ import annotations

from gate.model import Base, ItemKind, ItemView, QueueState, RunningBuild, Step, TipStep
from gate.planner import (
    CancelBuild,
    Dequeue,
    FinalBuild,
    MergeChange,
    Prepare,
    Publish,
    RunJobs,
    StartAttempt,
    plan,
)
from gate.queue_rules import window_after_failure, window_after_merge


def gate_item(id: int, project: str = "nova", **kw: object) -> ItemView:
    return ItemView(id=id, kind=ItemKind.GATE, project=project, **kw)  # type: ignore[arg-type]


def passing(id: int, ahead: tuple[int, ...], generation: int = 1, **kw: object) -> ItemView:
    fields = {
        "base": Base(generation, ahead),
        "merge": Step.PASSED,
        "build_key": f"k{id}",
        "build": Step.PASSED,
        "jobs": Step.PASSED,
        **kw,
    }
    return gate_item(id, f"p{id}", **fields)


def queue(*items: ItemView, generation: int = 1, **kw: object) -> QueueState:
    return QueueState(name="q", items=items, generation=generation, **kw)  # type: ignore[arg-type]


def test_new_items_start_on_the_items_ahead_of_them() -> None:
    actions = plan(queue(gate_item(1), gate_item(2), gate_item(3)))
    assert actions == [
        StartAttempt(1, Base(1, ())),
        StartAttempt(2, Base(1, (1,))),
        StartAttempt(3, Base(1, (1, 2))),
    ]


def test_items_beyond_the_window_do_not_start() -> None:
    actions = plan(queue(gate_item(1), gate_item(2), gate_item(3), window=2))
    assert StartAttempt(3, Base(1, (1, 2))) not in actions
    assert len(actions) == 2


def test_window_grows_on_merge_and_halves_on_failure_down_to_the_floor() -> None:
    assert window_after_merge(20) == 21
    assert window_after_failure(20) == 10
    assert window_after_failure(5) == 3
    assert window_after_failure(3) == 3


def test_items_behind_a_failing_item_are_reset_past_it() -> None:
    q = queue(passing(1, ()), passing(2, (1,), jobs=Step.FAILED), passing(3, (1, 2)))
    assert plan(q) == [FinalBuild(1), StartAttempt(3, Base(1, (1,)))]


def test_a_failing_item_waits_until_it_is_at_the_head() -> None:
    failing = passing(2, (1,), jobs=Step.FAILED, failure="repoclosure: ...")
    assert Dequeue(2, merged=False, reason="repoclosure: ...") not in plan(
        queue(passing(1, ()), failing)
    )
    at_head = passing(2, (1,), generation=1, jobs=Step.FAILED, failure="repoclosure: ...")
    q = queue(at_head, generation=2, producers={2: (1,)})
    assert plan(q) == [Dequeue(2, merged=False, reason="repoclosure: ...")]


def test_a_merge_ahead_does_not_reset_the_items_behind() -> None:
    # item 1 published generation 2: item 2's base (1, [1]) is the same set as (2, [])
    q = queue(passing(2, (1,), generation=1), generation=2, producers={2: (1,)})
    assert plan(q) == [FinalBuild(2)]


def test_a_rollback_resets_everything_under_test() -> None:
    q = queue(passing(2, (), generation=1), generation=2, producers={2: ()})
    assert plan(q) == [StartAttempt(2, Base(2, ()))]


def test_jobs_wait_for_the_builds_of_the_items_ahead() -> None:
    building = passing(1, (), build=Step.RUNNING, jobs=Step.NONE)
    q = queue(building, passing(2, (1,), jobs=Step.NONE))
    assert plan(q) == []
    q = queue(passing(1, (), jobs=Step.NONE), passing(2, (1,), jobs=Step.NONE))
    assert plan(q) == [RunJobs(1), RunJobs(2)]


def test_tip_steps_run_in_order_for_the_head_only() -> None:
    assert plan(queue(passing(1, ()), passing(2, (1,)))) == [FinalBuild(1)]
    built = passing(1, (), tip=TipStep.FINAL_BUILD, tip_state=Step.PASSED)
    assert plan(queue(built)) == [MergeChange(1)]
    merged = passing(1, (), tip=TipStep.MERGE, tip_state=Step.PASSED)
    assert plan(queue(merged)) == [Publish((1,))]
    done = passing(1, (), tip=TipStep.DONE, tip_state=Step.PASSED)
    assert plan(queue(done)) == [Dequeue(1, merged=True)]


def test_an_item_being_pushed_is_never_reset() -> None:
    pushing = passing(2, (), tip=TipStep.MERGE, tip_state=Step.RUNNING)
    post = ItemView(id=5, kind=ItemKind.POST, project="p5")
    assert plan(queue(pushing, post)) == [FinalBuild(5)]


def test_a_publish_retry_waits_for_its_backoff() -> None:
    retry = passing(1, (), tip=TipStep.PUBLISH, tip_state=Step.FAILED, not_before=100.0)
    assert plan(queue(retry, now=50.0)) == []
    assert plan(queue(retry, now=100.0)) == [Publish((1,))]


def test_post_items_publish_together_once_all_are_built() -> None:
    built = dict(tip=TipStep.FINAL_BUILD, tip_state=Step.PASSED)
    a = ItemView(id=1, kind=ItemKind.POST, project="a", **built)  # type: ignore[arg-type]
    b = ItemView(
        id=2, kind=ItemKind.POST, project="b", tip=TipStep.FINAL_BUILD, tip_state=Step.RUNNING
    )
    assert plan(queue(a, b)) == []
    b_built = ItemView(id=2, kind=ItemKind.POST, project="b", **built)  # type: ignore[arg-type]
    assert plan(queue(a, b_built)) == [Publish((1, 2))]


def test_a_post_item_whose_final_build_failed_is_dropped_from_the_batch() -> None:
    failed = ItemView(
        id=1,
        kind=ItemKind.POST,
        project="a",
        tip=TipStep.FINAL_BUILD,
        tip_state=Step.FAILED,
        failure="final build failed: x",
    )
    ok = ItemView(
        id=2, kind=ItemKind.POST, project="b", tip=TipStep.FINAL_BUILD, tip_state=Step.PASSED
    )
    assert plan(queue(failed, ok)) == [
        Dequeue(1, merged=False, reason="final build failed: x"),
        Publish((2,)),
    ]


def test_items_wait_for_post_items_ahead_to_be_built() -> None:
    post = ItemView(
        id=1, kind=ItemKind.POST, project="a", tip=TipStep.FINAL_BUILD, tip_state=Step.RUNNING
    )
    assert plan(queue(post, passing(2, (1,), jobs=Step.NONE))) == []


def test_only_builds_containing_a_rejected_change_are_canceled() -> None:
    running = {
        "k-old": RunningBuild("nova", frozenset({1, 3})),  # 1 left the queue rejected
        "k-behind-failing": RunningBuild("nova", frozenset({2, 3})),  # 2 still queued
        "k-merged": RunningBuild("nova", frozenset({4, 3})),
    }  # 4 was published
    q = queue(
        passing(2, (), jobs=Step.FAILED),
        gate_item(3, "nova", base=Base(2, ()), merge=Step.RUNNING),
        generation=2,
        producers={2: (4,)},
        running_builds=running,
    )
    assert [a for a in plan(q) if isinstance(a, CancelBuild)] == [CancelBuild("k-old")]


def test_a_new_attempt_prepares_its_merge_and_build() -> None:
    fresh = gate_item(1, base=Base(1, ()))
    assert plan(queue(fresh)) == [Prepare(1)]
