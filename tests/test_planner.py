"""The planner on hand-made queue states: one behaviour per test."""

from __future__ import annotations

from dataclasses import replace

from gate.model import (
    Base,
    ItemKind,
    ItemState,
    ItemView,
    QueueState,
    RunningBuild,
    Step,
    TipStep,
    item_states,
)
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
from gate.queue_rules import (
    WINDOW_DEFAULT,
    ZUUL_WINDOW,
    WindowRule,
    window_after_dequeue,
    window_after_failure,
    window_after_merge,
)


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


def test_items_outside_the_window_are_not_reset_while_they_wait() -> None:
    """Issue 15: window 3, item 2 fails; items 3 and 4 were tested on a base with
    item 2 in it.  Item 3 (inside) is reset past it; item 4 (outside) waits, and is
    given no new attempt (today's planner reset every item that once had a base)."""
    q = queue(
        passing(1, ()),
        passing(2, (1,), jobs=Step.FAILED),
        passing(3, (1, 2), jobs=Step.RUNNING),
        passing(4, (1, 2, 3), jobs=Step.RUNNING),
        passing(5, (1, 2, 3, 4), jobs=Step.NONE),
        window=3,
    )
    assert plan(q) == [FinalBuild(1), StartAttempt(3, Base(1, (1,)))]


def test_items_outside_the_window_are_given_no_work() -> None:
    """An item the window left behind (it narrowed) keeps its attempt but starts
    nothing: no merge, no jobs; its running build is kept."""
    merging = gate_item(3, "p3", base=Base(1, (1, 2)))  # its attempt began, no merge yet
    built = passing(4, (1, 2, 3), jobs=Step.NONE)  # jobs would be next
    q = queue(
        passing(1, (), jobs=Step.RUNNING),
        passing(2, (1,), jobs=Step.RUNNING),
        merging,
        built,
        window=2,
        running_builds={"k4": RunningBuild("p4", frozenset({4, 99}))},  # 99 left the queue
    )
    assert plan(q) == []
    # once it is inside, the same item gets its work, on the base it already has
    assert plan(replace(q, window=3)) == [Prepare(3)]


def test_an_item_entering_the_window_is_reset_if_its_base_changed_meanwhile() -> None:
    waiting = passing(3, (1, 2), jobs=Step.PASSED)
    q = queue(passing(1, ()), passing(2, (1,), jobs=Step.FAILED), waiting, window=2)
    assert plan(q) == [FinalBuild(1)]
    assert plan(replace(q, window=3)) == [FinalBuild(1), StartAttempt(3, Base(1, (1,)))]


def test_the_status_says_outside_the_window_for_items_behind_it() -> None:
    items = (
        passing(1, (), tip=TipStep.MERGE, tip_state=Step.RUNNING),
        passing(2, (1,), jobs=Step.RUNNING),
        passing(3, (1, 2), jobs=Step.RUNNING),  # left behind when the window narrowed
        gate_item(4, "p4"),
    )
    states = item_states(items, 2)
    assert states == {
        1: ItemState.MERGE,
        2: ItemState.TESTING,
        3: ItemState.OUTSIDE_WINDOW,
        4: ItemState.OUTSIDE_WINDOW,
    }


def test_window_shrinks_only_for_items_that_failed_their_tests_as_zuul_does() -> None:
    rule = ZUUL_WINDOW
    assert window_after_dequeue(8, ItemKind.GATE, "merged", rule) == 9
    assert window_after_dequeue(8, ItemKind.GATE, "rejected", rule) == 4
    # tests passed, then the final build or the push failed: Zuul's merge-failure
    assert window_after_dequeue(8, ItemKind.GATE, "rejected", rule, passed_tests=True) == 8
    assert window_after_dequeue(8, ItemKind.GATE, "dequeued", rule) == 8
    assert window_after_dequeue(8, ItemKind.POST, "merged", rule) == 8


def test_zuul_s_window_grows_on_merge_and_halves_on_failure_down_to_the_floor() -> None:
    assert window_after_merge(20, ZUUL_WINDOW) == 21
    assert window_after_failure(20, ZUUL_WINDOW) == 10
    assert window_after_failure(5, ZUUL_WINDOW) == 3
    assert window_after_failure(3, ZUUL_WINDOW) == 3


def test_the_default_window_loses_three_per_failure_down_to_the_floor() -> None:
    assert window_after_merge(20) == 21
    assert window_after_failure(20) == 17
    assert window_after_failure(5) == 3
    assert window_after_failure(3) == 3


def test_the_default_window_grows_only_while_fewer_than_one_in_four_fail() -> None:
    def day(outcomes: str) -> int:
        window = WINDOW_DEFAULT.start
        for outcome in outcomes:
            result = "merged" if outcome == "m" else "rejected"
            window = window_after_dequeue(window, ItemKind.GATE, result, WINDOW_DEFAULT)
        return window

    assert day("mmmmf" * 20) == 20 + 20  # one in five fails: +4 -3 per round
    assert day("mmmf" * 20) == 20  # one in four: +3 -3
    assert day("mmf" * 20) == WINDOW_DEFAULT.floor  # one in three: down to the floor
    # Zuul's halving narrows at any failure rate
    zuul = 20
    for outcome in "mmmmmmmmmf" * 5:
        result = "merged" if outcome == "m" else "rejected"
        zuul = window_after_dequeue(zuul, ItemKind.GATE, result, ZUUL_WINDOW)
    assert zuul < 20


def test_window_types_and_ceiling_follow_zuul_s_options() -> None:
    exponential = WindowRule(increase_type="exponential", increase=2, ceiling=50)
    assert window_after_merge(20, exponential) == 40
    assert window_after_merge(40, exponential) == 50  # not above the ceiling
    assert window_after_merge(60, WindowRule(ceiling=60)) == 60
    linear = WindowRule(floor=5, decrease_type="linear", decrease_factor=4)
    assert window_after_failure(20, linear) == 16
    assert window_after_failure(7, linear) == 5


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


def post(id: int, ahead: tuple[int, ...] = (), generation: int = 1, **kw: object) -> ItemView:
    """A post item of project ``a<id>`` on its current base."""
    fields = {"base": Base(generation, ahead), **kw}
    return ItemView(id=id, kind=ItemKind.POST, project=f"a{id}", **fields)  # type: ignore[arg-type]


BUILT = {"tip": TipStep.FINAL_BUILD, "tip_state": Step.PASSED}
TESTED = {**BUILT, "jobs": Step.PASSED}
BLOCKED = {**BUILT, "jobs": Step.FAILED, "failure": "blocked: untested push breaks it"}


def test_an_item_being_pushed_is_never_reset() -> None:
    pushing = passing(2, (), tip=TipStep.MERGE, tip_state=Step.RUNNING)
    assert plan(queue(pushing, post(5, (2,)))) == [FinalBuild(5)]


def test_a_post_item_is_given_a_base_then_final_built_then_tested() -> None:
    fresh = ItemView(id=1, kind=ItemKind.POST, project="a1")
    assert plan(queue(fresh)) == [StartAttempt(1, Base(1, ()))]
    assert plan(queue(post(1))) == [FinalBuild(1)]
    assert plan(queue(post(1, **BUILT))) == [RunJobs(1)]  # type: ignore[arg-type]
    assert plan(queue(post(1, **TESTED))) == [Publish((1,))]  # type: ignore[arg-type]


def test_a_post_item_is_tested_once_the_post_items_ahead_are_built() -> None:
    building = post(1, tip=TipStep.FINAL_BUILD, tip_state=Step.RUNNING)
    assert plan(queue(building, post(2, (1,), **BUILT))) == []  # type: ignore[arg-type]
    assert plan(queue(post(1, **BUILT), post(2, (1,), **BUILT))) == [  # type: ignore[arg-type]
        RunJobs(1),
        RunJobs(2),
    ]


def test_post_items_publish_together_once_all_are_built_and_tested() -> None:
    a = post(1, **TESTED)  # type: ignore[arg-type]
    assert plan(queue(a, post(2, (1,), tip=TipStep.FINAL_BUILD, tip_state=Step.RUNNING))) == []
    assert plan(queue(a, post(2, (1,), **TESTED))) == [Publish((1, 2))]  # type: ignore[arg-type]


def test_a_post_item_whose_final_build_failed_is_rejected_and_the_rest_publish() -> None:
    failed = post(1, tip=TipStep.FINAL_BUILD, tip_state=Step.FAILED, failure="final build failed")
    assert plan(queue(failed, post(2, (), **TESTED))) == [  # type: ignore[arg-type]
        Dequeue(1, merged=False, reason="final build failed"),
        Publish((2,)),
    ]


def test_a_blocked_post_item_is_not_published_and_nothing_waits_for_it() -> None:
    blocked = post(1, **BLOCKED)  # type: ignore[arg-type]
    behind = passing(2, ())  # tested without it
    assert plan(queue(blocked, post(3, (), **TESTED), behind)) == [  # type: ignore[arg-type]
        StartAttempt(2, Base(1, (3,))),
        Publish((3,)),
    ]
    assert plan(queue(blocked, behind)) == [FinalBuild(2)]  # the gate item is at the head


def test_a_blocked_post_item_is_tested_again_when_its_base_changes() -> None:
    blocked = post(1, **BLOCKED)  # type: ignore[arg-type]
    assert plan(queue(blocked)) == []
    assert plan(queue(blocked, generation=2)) == [StartAttempt(1, Base(2, ()))]


def test_a_blocked_post_item_whose_branch_moved_on_is_superseded() -> None:
    moved = "superseded: a1's branch moved on from 111 to 222"
    blocked = post(1, **BLOCKED, superseded_by=moved)  # type: ignore[arg-type]
    assert plan(queue(blocked)) == [Dequeue(1, merged=False, reason=moved, superseded=True)]
    # while it is tested (not blocked) it may still publish, with the newer commit
    testing = post(1, **BUILT, superseded_by=moved)  # type: ignore[arg-type]
    assert plan(queue(testing)) == [RunJobs(1)]


def test_a_release_engineer_can_publish_a_blocked_post_item() -> None:
    forced = post(1, **BLOCKED, forced=True)  # type: ignore[arg-type]
    assert plan(queue(forced)) == [Publish((1,))]


def test_a_failed_bootstrap_holds_the_first_generation_back() -> None:
    failed = post(
        1,
        generation=0,
        bootstrap=True,
        tip=TipStep.FINAL_BUILD,
        tip_state=Step.FAILED,
        failure="final build failed",
    )
    other = post(2, generation=0, bootstrap=True, **TESTED)  # type: ignore[arg-type]
    waiting = passing(3, (2,), generation=0)
    assert plan(queue(failed, other, waiting, generation=0)) == []
    # once something is published, a project's failed bootstrap holds nobody back
    later = post(1, generation=1, bootstrap=True, tip=TipStep.FINAL_BUILD, tip_state=Step.FAILED)
    assert plan(queue(later, passing(3, ()))) == [FinalBuild(3)]


def test_items_wait_for_post_items_ahead_to_be_built() -> None:
    building = post(1, tip=TipStep.FINAL_BUILD, tip_state=Step.RUNNING)
    assert plan(queue(building, passing(2, (1,), jobs=Step.NONE))) == []


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
