"""Throughput of the gate over one simulated day, in virtual time.

The simulation is ``tests/planner_sim.Simulation``: the real planner
(``gate.planner.plan``) and the real state transitions (``gate.transitions``,
``gate.queue_rules``), the code the daemon runs; only the outcome of each piece
of work is simulated.  This module adds a clock: every piece of work ends a
fixed time after it starts (below), and work ends in time order.

The day: 10 projects, 200 changes approved at uniformly random instants over
24 h, 20 of them (10 %) failing their jobs; scratch build 20 min, jobs 30 min,
final build (or draft) 20 min; a speculative merge, a promotion, a push and a
publication 1 min each.  Every variant sees the same arrivals (one seed):

* ``rpmgate, drafts``: final builds start ahead of the tip as drafts and are
  promoted there (Koji >= 1.34, the local backend); the default window (Zuul's,
  with 3 taken off per failure: ``gate.queue_rules.WINDOW_DEFAULT``);
* ``rpmgate, drafts, Zuul's window``: the same, with Zuul's default window
  (halved on every failure, not below 3: ``decrease_type: exponential``,
  ``decrease_factor: 2``);
* ``rpmgate, drafts with the jobs``: drafts, started when the item's jobs start
  instead of when they passed (the queue's ``draft_start: with-jobs``);
* ``rpmgate, serial tip``: the final build starts at the tip (older hubs);
* ``Zuul-style, no build reuse``: the same planner with Zuul's window, but
  every attempt builds again (a reset throws its builds away), final build at
  the tip;
* ``rpmfactory's serial gate``: one change at a time (scratch build, jobs,
  final build), modelled as the real planner with a window of 1 that never
  widens, no build reuse and no drafts;
* ``bound``: every change that can pass published one critical path after its
  approval (merge, build, jobs, final build, promotion/push/publish), nothing
  waiting on anything else.

A second table runs the default window and Zuul's on worse days (25 % and
50 % of the changes failing their jobs), where a window that does not narrow
pays with job runs.

    .venv/bin/python -m bench.bench_throughput              # markdown tables
    .venv/bin/python -m bench.bench_throughput --breakdown  # where the time goes
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gate.queue_rules import WINDOW_DEFAULT, ZUUL_WINDOW, WindowRule
from tests.planner_sim import Change, Simulation

DAY = 24 * 60.0  # minutes
PROJECTS = tuple(f"project{i}" for i in range(10))
CHANGES = 200
FAILING = 20
#: minutes each piece of work takes (``Simulation.start``'s kinds)
DURATIONS = {
    "merge": 1.0,
    "build": 20.0,
    "jobs": 30.0,
    "final": 20.0,
    "draftbuild": 20.0,
    "promote": 1.0,
    "git": 1.0,
    "publish": 1.0,
}
#: approval to publication when nothing waits: merge, build, jobs, final, push, publish
CRITICAL_PATH = sum(DURATIONS[k] for k in ("merge", "build", "jobs", "final", "git", "publish"))
SEEDS = (1, 2, 3, 4, 5)
#: the changes failing their jobs on the worse days (``failure_rates``)
WORSE_DAYS = (50, 100)


@dataclass
class TimedSimulation(Simulation):
    """The planner's simulation with a clock: work ends when its duration has passed."""

    due: dict[tuple[str, int | str, int], float] = field(default_factory=dict)
    #: job runs started (a reset runs the jobs of the items behind again)
    job_runs: int = 0

    def start(self, work: tuple[str, int | str, int]) -> None:
        super().start(work)
        self.due[work] = self.now + DURATIONS[work[0]]
        if work[0] == "jobs":
            self.job_runs += 1

    def next_due(self) -> float:
        return min((self.due[w] for w in self.inflight), default=float("inf"))

    def pick(self) -> tuple[str, int | str, int]:
        index = min(range(len(self.inflight)), key=lambda i: self.due[self.inflight[i]])
        work = self.inflight.pop(index)
        self.now = max(self.now, self.due.pop(work))
        return work


def day_of_changes(seed: int, failing_count: int = FAILING) -> tuple[list[Change], list[float]]:
    """200 changes over 10 projects, 20 failing their jobs, approved over 24 h."""
    rng = random.Random(seed)
    failing = set(rng.sample(range(1, CHANGES + 1), failing_count))
    arrivals = sorted(rng.uniform(0, DAY) for _ in range(CHANGES))
    changes = [
        Change(id=i, project=rng.choice(PROJECTS), bad_jobs=i in failing)
        for i in range(1, CHANGES + 1)
    ]
    return changes, arrivals


def run_day(
    sim: TimedSimulation,
    arrivals: list[float],
    observe: Callable[[TimedSimulation], None] | None = None,
) -> None:
    """Run the gate until the end of the day: arrivals and work end in time order,
    and the planner runs after each until it names nothing new.  ``observe`` is
    called with the settled simulation at each instant (``breakdown``)."""
    pending = list(zip(arrivals, sim.changes, strict=True))
    while True:
        while pending and pending[0][0] <= sim.now:
            sim.enqueue(pending.pop(0)[1])
        for _ in range(1_000):
            if not sim.apply_plan():
                break
        else:
            raise AssertionError("the planner never settles")
        if observe is not None:
            observe(sim)
        next_arrival = pending[0][0] if pending else float("inf")
        if min(sim.next_due(), next_arrival) > DAY:
            return
        if sim.next_due() <= next_arrival:
            sim.complete_one()
        else:
            sim.now = next_arrival


#: each simulated variant's options (``Simulation`` fields); ``bound`` is computed
VARIANT_OPTIONS: dict[str, dict[str, Any]] = {
    "drafts": {"drafts_enabled": True},
    "drafts-zuul": {"drafts_enabled": True, "window_rule": ZUUL_WINDOW},
    "drafts-jobs": {"drafts_enabled": True, "draft_with_jobs": True},
    "serial": {},
    "zuul": {"reuse_builds": False, "window_rule": ZUUL_WINDOW},
    "rpmfactory": {
        "reuse_builds": False,
        "window": 1,
        "window_rule": WindowRule(start=1, floor=1, increase=0),
    },
}


def variant(name: str, seed: int, failing: int = FAILING) -> dict[str, Any]:
    changes, arrivals = day_of_changes(seed, failing)
    if name == "bound":
        latencies = [
            CRITICAL_PATH
            for change, at in zip(changes, arrivals, strict=True)
            if not change.bad_jobs and at + CRITICAL_PATH <= DAY
        ]
        return _figures(
            name, latencies, 3 * len(changes), violations=0, wall=0.0, job_runs=len(changes)
        )
    return simulate(name, seed, failing, VARIANT_OPTIONS[name])


def simulate(name: str, seed: int, failing: int, options: dict[str, Any]) -> dict[str, Any]:
    """One day of ``seed`` (``failing`` changes fail their jobs) on the simulation
    with ``options``; its figures under ``name``."""
    changes, arrivals = day_of_changes(seed, failing)
    sim = TimedSimulation(changes=changes, rng=random.Random(seed), **options)
    started = time.perf_counter()
    run_day(sim, arrivals)
    wall = time.perf_counter() - started
    latencies = [sim.published_at[c] - sim.enqueued_at[c] for c in sim.published]
    builds = (
        sum(sim.build_submissions.values()) + sum(sim.draft_submissions.values()) + sim.final_builds
    )
    violations = len(sim.violations) + len(sim.window_violations)
    return _figures(name, latencies, builds, violations, wall, sim.job_runs)


def _figures(
    name: str,
    latencies: list[float],
    builds: int,
    violations: int,
    wall: float,
    job_runs: int = 0,
) -> dict[str, Any]:
    ordered = sorted(latencies)
    p95 = ordered[max(0, int(0.95 * len(ordered)) - 1)] if ordered else 0.0
    return {
        "variant": name,
        "merged": len(latencies),
        "mean_h": statistics.fmean(latencies) / 60 if latencies else 0.0,
        "p95_h": p95 / 60,
        "builds": builds,
        "job_runs": job_runs,
        "violations": violations,
        "wall_s": wall,
    }


VARIANTS = ("drafts", "drafts-zuul", "drafts-jobs", "serial", "zuul", "rpmfactory", "bound")
LABELS = {
    "drafts": "rpmgate, drafts",
    "drafts-zuul": "rpmgate, drafts, Zuul's window",
    "drafts-jobs": "rpmgate, drafts with the jobs",
    "serial": "rpmgate, serial tip",
    "zuul": "Zuul-style, no build reuse",
    "rpmfactory": "rpmfactory's serial gate",
    "bound": "bound (no waiting)",
}
#: issue 13's target for the default: merged in the 24 h, mean latency (h)
TARGET_MERGED, TARGET_MEAN_H = 160, 2.0


def run() -> list[dict[str, Any]]:
    return [variant(name, seed) for seed in SEEDS for name in VARIANTS]


def markdown(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Throughput over one simulated day (bench/bench_throughput.py)",
        "",
        "The figures do not depend on the machine "
        "(`.venv/bin/python -m bench.bench_throughput` prints this section, `--breakdown` "
        "its last table alone).",
        "",
        "Virtual time on the real planner and state transitions "
        "(`tests/planner_sim.Simulation` with a clock): 10 projects, 200 changes approved "
        f"at random over 24 h ({FAILING} fail their jobs), scratch build 20 min, jobs 30 "
        "min, final build or draft 20 min, merge/promote/push/publish 1 min each. Same "
        "arrivals for every variant of a seed. Merged: published within the 24 h; "
        "latency: approval to publication of those; builds: scratch + draft + final "
        "builds submitted; job runs: the jobs of an item run once per attempt; "
        "violations: invariant and window violations the simulation saw. The window: "
        "rpmgate's default takes 3 off per item rejected at the head, Zuul's halves it "
        "(both add 1 per merge and keep a floor of 3; [config](config.md#queuesnamewindow-"
        "windowconfig)).",
        "",
        "| seed | variant | merged in 24 h | mean latency (h) | p95 latency (h) | builds "
        "| job runs | violations |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for seed_index, seed in enumerate(SEEDS):
        for r in results[seed_index * len(VARIANTS) : (seed_index + 1) * len(VARIANTS)]:
            lines.append(
                f"| {seed} | {LABELS[r['variant']]} | {r['merged']} | {r['mean_h']:.2f} "
                f"| {r['p95_h']:.2f} | {r['builds']} | {r['job_runs']} | {r['violations']} |"
            )
    lines.append("")
    by = {name: [r for r in results if r["variant"] == name] for name in VARIANTS}
    merged = {name: statistics.median(r["merged"] for r in rs) for name, rs in by.items()}
    mean_h = {name: statistics.median(r["mean_h"] for r in rs) for name, rs in by.items()}
    lines += [
        f"Median over the {len(SEEDS)} seeds, merged / mean latency: "
        + ", ".join(
            f"{LABELS[name]} {merged[name]:.0f} / {mean_h[name]:.2f} h" for name in VARIANTS
        )
        + f" (drafts / serial tip merged: {merged['drafts'] / max(merged['serial'], 1):.2f}).",
        "",
        _verdict(by["drafts"]),
        "",
    ]
    return lines + failure_rates_markdown() + breakdown_markdown()


def _verdict(default: list[dict[str, Any]]) -> str:
    """Issue 13's target, for the default configuration, seed by seed and in the median."""
    merged = statistics.median(r["merged"] for r in default)
    mean_h = statistics.median(r["mean_h"] for r in default)
    met = merged >= TARGET_MERGED and mean_h < TARGET_MEAN_H
    under = sum(r["mean_h"] < TARGET_MEAN_H for r in default)
    return (
        f"Issue 13's target (>= {TARGET_MERGED} merged in the 24 h, mean approval-to-"
        f"publication under {TARGET_MEAN_H:g} h) with the defaults (drafts, default window): "
        f"median {merged:.0f} merged, mean latency {mean_h:.2f} h: "
        f"{'met' if met else 'NOT met'}; the mean latency is under {TARGET_MEAN_H:g} h on "
        f"{under} of the {len(default)} days, and no day merges fewer than "
        f"{min(r['merged'] for r in default)} (the bound, what arrives early enough to "
        "finish, is in the table)."
    )


# -- worse days ------------------------------------------------------------------------------------
#: the windows compared on worse days: rpmgate's default, Zuul's, and one that never narrows
WINDOWS = {
    "default (-3)": WINDOW_DEFAULT,
    "Zuul's (/2)": ZUUL_WINDOW,
    "floor 20 (never narrows)": WindowRule(start=20, floor=20),
}


def failure_rates() -> list[tuple[int, str, list[dict[str, Any]]]]:
    """Drafts with each window in ``WINDOWS``, on the usual day and the worse ones."""
    rows = []
    for failing in (FAILING, *WORSE_DAYS):
        for label, rule in WINDOWS.items():
            options = {"drafts_enabled": True, "window_rule": rule}
            days = [simulate(label, seed, failing, options) for seed in SEEDS]
            rows.append((failing, label, days))
    return rows


def failure_rates_markdown() -> list[str]:
    lines = [
        "### The window on worse days",
        "",
        "The same days with more changes failing their jobs (the failing ones drawn from "
        "the same seed), drafts on, three windows: medians over the "
        f"{len(SEEDS)} seeds. Per merged change: the builds submitted and the job runs "
        "(the work the window is there to bound: every reset runs the jobs behind the "
        "failing item again).",
        "",
        "| failing | window | merged | mean latency (h) | builds per merged | job runs per "
        "merged | violations |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for failing, label, days in failure_rates():
        med = statistics.median
        lines.append(
            f"| {failing / CHANGES:.0%} | {label} | {med(d['merged'] for d in days):.0f} "
            f"| {med(d['mean_h'] for d in days):.2f} "
            f"| {med(d['builds'] / max(d['merged'], 1) for d in days):.2f} "
            f"| {med(d['job_runs'] / max(d['merged'], 1) for d in days):.2f} "
            f"| {sum(d['violations'] for d in days)} |"
        )
    lines.append("")
    return lines


# -- where the time goes -------------------------------------------------------------------------
@dataclass
class Breakdown:
    """Where each item spent its time, from its status label (``ItemView.state``, the
    one the status page shows) at every instant of the simulated day."""

    #: item id -> label -> minutes (labels of a retest are suffixed " (again)")
    minutes: dict[int, dict[str, float]] = field(default_factory=dict)
    #: window size x minutes, and minutes observed (the time-weighted mean window)
    window_minutes: float = 0.0
    observed: float = 0.0
    #: minutes during which some gate item waited outside the window
    someone_outside: float = 0.0
    _last: tuple[float, dict[int, str], int] | None = None

    def __call__(self, sim: TimedSimulation) -> None:
        if self._last is not None:
            at, labels, window = self._last
            span = sim.now - at
            for item_id, label in labels.items():
                spent = self.minutes.setdefault(item_id, {})
                spent[label] = spent.get(label, 0.0) + span
            self.window_minutes += window * span
            self.observed += span
            if any(label.startswith("waiting (outside") for label in labels.values()):
                self.someone_outside += span
        labels = {}
        for item in sim.queue:
            view = sim._item_view(item)
            label = str(view.state.value)
            if view.attempt > 1 and label in ("speculative merge", "building", "testing"):
                label += " (again)"
            labels[item.change.id] = label
        self._last = (sim.now, labels, sim.window)


def breakdown(name: str, seed: int) -> tuple[dict[str, Any], Breakdown, TimedSimulation]:
    changes, arrivals = day_of_changes(seed)
    sim = TimedSimulation(changes=changes, rng=random.Random(seed), **VARIANT_OPTIONS[name])
    seen = Breakdown()
    run_day(sim, arrivals, seen)
    latencies = [sim.published_at[c] - sim.enqueued_at[c] for c in sim.published]
    builds = sum(sim.build_submissions.values()) + sum(sim.draft_submissions.values())
    return _figures(name, latencies, builds, 0, 0.0), seen, sim


def breakdown_markdown() -> list[str]:
    """Where a merged item's time goes, drafts with the default window against drafts
    with Zuul's, per seed; and what that says."""
    lines = [
        "### Where the time goes (`python -m bench.bench_throughput --breakdown`)",
        "",
        "Each item's status label (`ItemView.state`, what the status page shows) at every "
        "instant of the day, summed per item: the mean minutes a merged item spent in "
        "each (the columns add up to the mean latency). *Again*: a merge, build or test "
        "of a new attempt (a reset behind a failing item). Mean window: time-weighted; "
        "outside: hours of the day during which at least one item waited outside the "
        "window; rejected: items rejected at the head, each of which takes 3 off the "
        "default window and halves Zuul's, down to the floor of 3 "
        "(`decreaseWindowSize`).",
        "",
        "| seed | window | merged | mean latency (h) | mean window | outside (h) "
        "| rejected | " + " | ".join(BREAKDOWN_LABELS.values()) + " |",
        "|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(BREAKDOWN_LABELS),
    ]
    waits: dict[str, list[float]] = {"drafts": [], "drafts-zuul": []}
    latency: dict[str, list[float]] = {"drafts": [], "drafts-zuul": []}
    retests: list[float] = []
    drafting: list[float] = []
    for seed in SEEDS:
        for name, window in (("drafts", "-3"), ("drafts-zuul", "/2")):
            figures, seen, sim = breakdown(name, seed)
            per_label = {
                label: statistics.fmean(
                    seen.minutes.get(i, {}).get(label, 0.0) for i in sim.published
                )
                for label in BREAKDOWN_LABELS
            }
            waits[name].append(per_label["waiting (outside the window)"])
            latency[name].append(figures["mean_h"] * 60)
            drafting.append(per_label["passed, final build as a draft"])
            retests.append(sum(v for k, v in per_label.items() if k.endswith("(again)")))
            lines.append(
                f"| {seed} | {window} | {figures['merged']} | {figures['mean_h']:.2f} "
                f"| {seen.window_minutes / seen.observed:.1f} "
                f"| {seen.someone_outside / 60:.1f} | {len(sim.rejected)} | "
                + " | ".join(f"{per_label[label]:.0f}" for label in BREAKDOWN_LABELS)
                + " |"
            )
    gap = sum(latency["drafts-zuul"]) - sum(latency["drafts"])
    waited = sum(waits["drafts-zuul"]) - sum(waits["drafts"])
    lines += [
        "",
        "With Zuul's window, a merged item waits outside the window "
        f"{min(waits['drafts-zuul']):.0f} to {max(waits['drafts-zuul']):.0f} min on average "
        f"(the default window: {max(waits['drafts']):.0f} min at most): over the "
        f"{len(SEEDS)} seeds, {waited / gap:.0%} of the difference in mean latency between "
        "the two windows; the rest is spread over the other columns (waiting for the "
        "builds ahead, testing again). Both windows pay for failures: "
        f"{min(retests):.0f} to {max(retests):.0f} min per merged item of merging, "
        "building and testing again after a reset (Zuul's dependent pipeline does the "
        "same); and the draft, started once the jobs passed, adds "
        f"{_span(drafting)} min to each item's path, all of it "
        "inside the window.",
        "",
    ]
    return lines


def _span(values: list[float]) -> str:
    low, high = f"{min(values):.0f}", f"{max(values):.0f}"
    return low if low == high else f"{low} to {high}"


#: the states a merged item passes through, in the order it meets them, and their column
BREAKDOWN_LABELS = {
    "waiting (outside the window)": "outside the window",
    "speculative merge": "merge",
    "building": "build",
    "built, waiting for the builds ahead": "builds ahead",
    "testing": "jobs",
    "speculative merge (again)": "merge again",
    "building (again)": "build again",
    "testing (again)": "jobs again",
    "passed, final build as a draft": "draft",
    "passed, draft built, waiting for the tip": "draft built, waiting",
    "passed, waiting for the tip": "passed, waiting",
    "final build": "promote",
    "merging": "push",
    "publishing": "publish",
}


if __name__ == "__main__":
    if sys.argv[1:] == ["--breakdown"]:
        sys.stdout.write("\n".join(breakdown_markdown()) + "\n")
    else:
        sys.stdout.write("\n".join(markdown(run())) + "\n")
