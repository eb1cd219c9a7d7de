"""Property tests of the planner under random event orders.

Hypothesis draws a queue of changes with random fates and a random order in
which in-flight work completes; the simulated shell in ``planner_sim`` runs
the planner's actions.  Whatever the interleaving, the gate must end exactly
as a serial gate would (same merged changes in the same order, same rejects),
reject only items failing with everything ahead merged (I5), publish only
package sets that were tested as a whole (I2), and never submit a scratch
build of the same key twice.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.planner_sim import Change, Simulation, serial_outcome

PROJECTS = ("nova", "ceilometer", "horizon")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Change], list[int], int, int]:
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
    window = draw(st.sampled_from([3, 4, 20]))
    seed = draw(st.integers(0, 2**32 - 1))
    return changes, arrivals, window, seed


def _run(changes: list[Change], arrivals: list[int], window: int, seed: int) -> Simulation:
    sim = Simulation(changes=changes, window=window, rng=random.Random(seed))
    sim.run(arrivals)
    return sim


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_gate_ends_as_a_serial_gate_would_under_any_completion_order(scenario) -> None:
    changes, arrivals, window, seed = scenario
    sim = _run(changes, arrivals, window, seed)
    merged, rejected = serial_outcome(changes)
    assert sim.published == merged
    assert set(sim.rejected) == rejected


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_rejects_only_at_head_and_publishes_only_tested_sets(scenario) -> None:
    changes, arrivals, window, seed = scenario
    sim = _run(changes, arrivals, window, seed)
    assert sim.violations == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_no_scratch_build_key_is_submitted_twice(scenario) -> None:
    changes, arrivals, window, seed = scenario
    sim = _run(changes, arrivals, window, seed)
    assert all(n == 1 for n in sim.build_submissions.values()), sim.build_submissions


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_generations_follow_queue_order(scenario) -> None:
    changes, arrivals, window, seed = scenario
    sim = _run(changes, arrivals, window, seed)
    order = [c.id for c in changes]
    assert sim.published == sorted(sim.published, key=order.index)
    assert [sim.producers[g] for g in sorted(sim.producers)] == [(c,) for c in sim.published]


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
