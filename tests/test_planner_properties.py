"""Property tests of the planner under random event orders.

Hypothesis draws a queue of changes with random fates and a random order in
which in-flight work completes; the simulated shell in ``planner_sim`` runs
the planner's actions.  Whatever the interleaving, the gate must end exactly
as a serial gate would (same merged changes in the same order, same rejects),
reject only items failing with everything ahead merged (I5), publish only
package sets that were tested as a whole (I2), never submit a scratch
build of the same key twice, and keep to Zuul's window at every planning
step (nothing started outside it; no more items at work than it allows).
Two thirds of the scenarios run with drafts (final builds ahead of the tip,
promoted at the tip), started once the jobs passed or with the jobs
(``draft_start``): the same outcome, no draft promoted but the one of the
tested tree, none twice, none before its item's jobs passed.  The window
starts small and narrows to a floor of 1 on failures, so items fall out of it
while they are being tested.
"""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate.queue_rules import WindowRule
from tests.planner_sim import Change, Simulation, serial_outcome

PROJECTS = ("nova", "ceilometer", "horizon")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Change], list[int], int, int, str]:
    count = draw(st.integers(min_value=1, max_value=9))
    changes: list[Change] = []
    for cid in range(1, count + 1):
        project = draw(st.sampled_from(PROJECTS))
        earlier = [c.id for c in changes]
        same = [c.id for c in changes if c.project == project]
        changes.append(
            Change(
                id=cid,
                project=project,
                bad_build=draw(st.booleans().filter(lambda _: True)) and draw(st.booleans()),
                bad_jobs=draw(st.integers(0, 5)) == 0,
                requires=frozenset(draw(st.lists(st.sampled_from(earlier), max_size=2)))
                if earlier and draw(st.booleans())
                else frozenset(),
                conflicts=frozenset(draw(st.lists(st.sampled_from(same), max_size=1)))
                if same and draw(st.integers(0, 3)) == 0
                else frozenset(),
                final_fails=draw(st.integers(0, 6)) == 0,
                publish_failures=draw(st.integers(0, 2)) if draw(st.booleans()) else 0,
            )
        )
    arrivals = draw(st.lists(st.integers(0, 6), min_size=count, max_size=count))
    window = draw(st.sampled_from([1, 2, 3, 4, 20]))
    seed = draw(st.integers(0, 2**32 - 1))
    drafts = draw(st.sampled_from(["off", "jobs-passed", "with-jobs"]))
    return changes, arrivals, window, seed, drafts


def _run(
    changes: list[Change], arrivals: list[int], window: int, seed: int, drafts: str = "off"
) -> Simulation:
    # both of Zuul's decrease types (the default linear, Zuul's own exponential),
    # chosen by the drawn seed so every scenario keeps its shape
    decrease = ("exponential", "linear")[seed % 2]
    rule = WindowRule(start=window, floor=1, decrease_type=decrease)
    sim = Simulation(
        changes=changes,
        window=window,
        rng=random.Random(seed),
        window_rule=rule,
        drafts_enabled=drafts != "off",
        draft_with_jobs=drafts == "with-jobs",
    )
    sim.run(arrivals)
    return sim


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_gate_ends_as_a_serial_gate_would_under_any_completion_order(scenario) -> None:
    changes, arrivals, window, seed, drafts = scenario
    sim = _run(changes, arrivals, window, seed, drafts)
    merged, rejected = serial_outcome(changes)
    assert sim.published == merged
    assert set(sim.rejected) == rejected


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_rejects_only_at_head_and_publishes_only_tested_sets(scenario) -> None:
    changes, arrivals, window, seed, drafts = scenario
    sim = _run(changes, arrivals, window, seed, drafts)
    assert sim.violations == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_no_scratch_build_key_is_submitted_twice(scenario) -> None:
    changes, arrivals, window, seed, drafts = scenario
    sim = _run(changes, arrivals, window, seed, drafts)
    assert all(n == 1 for n in sim.build_submissions.values()), sim.build_submissions


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_generations_follow_queue_order(scenario) -> None:
    changes, arrivals, window, seed, drafts = scenario
    sim = _run(changes, arrivals, window, seed, drafts)
    order = [c.id for c in changes]
    assert sim.published == sorted(sim.published, key=order.index)
    assert [sim.producers[g] for g in sorted(sim.producers)] == [(c,) for c in sim.published]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_only_items_inside_the_window_are_worked_on(scenario) -> None:
    changes, arrivals, window, seed, drafts = scenario
    sim = _run(changes, arrivals, window, seed, drafts)
    assert sim.window_violations == []


def test_a_window_of_one_tests_one_item_at_a_time() -> None:
    changes = [Change(i, PROJECTS[i % 3], bad_jobs=i == 3) for i in range(1, 8)]
    rule = WindowRule(start=1, floor=1, increase=0)  # a window that never widens
    sim = Simulation(changes=changes, window=1, rng=random.Random(7), window_rule=rule)
    sim.run([0] * 7)
    assert sim.window_violations == []
    assert sim.most_busy == 1
    assert (sim.published, set(sim.rejected)) == serial_outcome(changes)


def test_items_the_window_left_behind_get_no_new_attempt_on_a_reset() -> None:
    """The issue-15 case, run through the simulation: the window narrows while
    items behind it are under test, then an item ahead fails; today's planner
    gave every item that once had a base a new attempt (and then a merge, a
    build and jobs) on that reset."""
    found = 0
    for seed in range(60):
        changes = [
            Change(1, "nova", bad_jobs=True),
            Change(2, "ceilometer"),
            Change(3, "horizon", bad_build=True),
            Change(4, "nova"),
            Change(5, "ceilometer"),
            Change(6, "horizon"),
            Change(7, "nova"),
        ]
        sim = _run(changes, [0] * 7, 4, seed)
        found += sim.narrowed_at >= 0
        assert sim.window_violations == [], sim.window_violations
        assert (sim.published, set(sim.rejected)) == serial_outcome(changes)
    assert found  # the window did narrow in these runs


def test_window_check_detects_a_planner_that_works_outside_the_window(monkeypatch) -> None:
    """The window property can fail: a planner that ignores the window is caught."""
    import gate.planner as planner

    real_plan = planner.plan

    def unbounded(q):  # the same queue with a window as wide as the queue
        return real_plan(replace(q, window=len(q.items) + 1))

    monkeypatch.setattr("tests.planner_sim.plan", unbounded)
    changes = [Change(i, PROJECTS[i % 3]) for i in range(1, 6)]
    sim = _run(changes, [0] * 5, 2, 3)
    assert sim.window_violations


def test_simulation_detects_a_planner_that_publishes_untested_sets(monkeypatch) -> None:
    """The property tests can fail: a planner skipping the reset is caught."""
    import gate.planner as planner

    monkeypatch.setattr(
        planner,
        "normalize_base",
        lambda base, producers: base.__class__((producers and max(producers)) or 0, ()),
    )
    changes = [
        Change(1, "nova", final_fails=True),
        Change(2, "ceilometer", requires=frozenset({1})),
    ]
    sim = _run(changes, [0, 0], 20, 1)
    merged, rejected = serial_outcome(changes)
    assert (sim.published, set(sim.rejected)) != (merged, rejected) or sim.violations
