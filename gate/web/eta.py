"""When an item should be through: durations of recent successful runs of the same steps.

:func:`load_durations` reads, in a handful of queries (not one per item), how
long the last successful speculative merges, scratch builds, jobs, final
builds and merge-and-publish steps took; :class:`Durations` keeps their
medians per project (or job) and over all.  :func:`estimate_queue` walks a
queue's item documents in order, as the gate would run them:

* an item's jobs start once its own build and the builds ahead are done;
* it reaches the tip once its jobs passed and the item ahead is through;
* an item outside the window starts once the item ``window`` places ahead
  is through.

A step with no successful run on record makes the estimate ``None`` ("no
estimate"): a guess from nothing would mislead.  Pure apart from
:func:`load_durations`.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, select

from gate.model import ItemState
from repo_state.models import BuildRow, ItemRow, JobRunRow

Doc = dict[str, Any]
#: successful runs of each kind looked at (the most recent ones)
RECENT = 200


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    value = (_utc(end) - _utc(start)).total_seconds()
    return value if value >= 0 else None


@dataclass
class Durations:
    """Median seconds of recent successful runs: by (step, project or job), and by step."""

    by_key: dict[tuple[str, str], float] = field(default_factory=dict)
    by_step: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, samples: Iterable[tuple[str, str, float]]) -> Durations:
        """From (step, project or job name, seconds) samples."""
        keyed: dict[tuple[str, str], list[float]] = defaultdict(list)
        stepped: dict[str, list[float]] = defaultdict(list)
        for step, key, seconds in samples:
            keyed[(step, key)].append(seconds)
            stepped[step].append(seconds)
        return cls(
            {k: statistics.median(v) for k, v in keyed.items()},
            {k: statistics.median(v) for k, v in stepped.items()},
        )

    def expected(self, step: str, key: str) -> float | None:
        """How long ``step`` takes for ``key``: its own history, else (builds, merges:
        a project's) any project's.  Jobs differ too much: a job's own history only."""
        if step == "job":
            return self.by_key.get((step, key))
        return self.by_key.get((step, key), self.by_step.get(step))


def load_durations(s: Session) -> Durations:
    """The medians of the last :data:`RECENT` successful runs of each step."""
    samples: list[tuple[str, str, float]] = []
    for purpose in ("scratch", "final"):
        builds = s.exec(
            select(BuildRow.project, BuildRow.created_at, BuildRow.finished_at)
            .where(BuildRow.purpose == purpose, BuildRow.state == "passed")
            .order_by(col(BuildRow.id).desc())
            .limit(RECENT)
        ).all()
        for project, start, end in builds:
            if (took := _seconds(start, end)) is not None:
                samples.append((purpose, project, took))
    jobs = s.exec(
        select(JobRunRow.name, JobRunRow.started_at, JobRunRow.finished_at)
        .where(JobRunRow.state == "passed")
        .order_by(col(JobRunRow.id).desc())
        .limit(RECENT)
    ).all()
    for name, start, end in jobs:
        if (took := _seconds(start, end)) is not None:
            samples.append(("job", name, took))
    # merge and publish: from the end of the final build to the item leaving, merged
    merged = s.exec(
        select(ItemRow.project, BuildRow.finished_at, ItemRow.finished_at)
        .join(BuildRow, col(BuildRow.id) == col(ItemRow.final_build_id))
        .where(ItemRow.result == "merged")
        .order_by(col(ItemRow.id).desc())
        .limit(RECENT)
    ).all()
    for project, built, left in merged:
        if (took := _seconds(built, left)) is not None:
            samples.append(("tip", project, took))
    # the speculative merge: from the attempt's start to its scratch build's submission
    # (a build reused from an earlier attempt was created before: no sample)
    prepared = s.exec(
        select(ItemRow.project, ItemRow.attempt_started_at, BuildRow.created_at)
        .join(BuildRow, col(BuildRow.key) == col(ItemRow.build_key))
        .where(ItemRow.kind == "gate", BuildRow.purpose == "scratch", ItemRow.merge == "passed")
        .order_by(col(ItemRow.id).desc())
        .limit(RECENT)
    ).all()
    for project, started, submitted in prepared:
        if (took := _seconds(started, submitted)) is not None:
            samples.append(("merge", project, took))
    return Durations.of(samples)


def epoch(value: object) -> float | None:
    """An ISO 8601 time of a document as a Unix time; ``None`` when absent or unreadable."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class _Step:
    """One step of an item still to run or running: what it is, since when."""

    step: str
    key: str
    state: str
    started: float | None = None

    def remaining(self, durations: Durations, now: float) -> float | None:
        if self.state == "passed":
            return 0.0
        expected = durations.expected(self.step, self.key)
        if expected is None:
            return None
        if self.state == "running" and self.started is not None:
            return max(expected - (now - self.started), 1.0)  # overdue: still a moment
        return expected


def _job_steps(item: Doc, job_names: Sequence[str]) -> list[_Step]:
    """One step per run of each job (a job runs once per named build and arch, side by
    side: the slowest run stands for the job), its last try deciding, as the progress
    bar shows them (gate/web/progress.py); a job not run yet is one step to come."""
    last: dict[tuple[str, str, str], Doc] = {}
    for run in item.get("jobs") or []:
        key = (str(run.get("name")), str(run.get("build") or ""), str(run.get("arch") or ""))
        if key not in last or int(run.get("try_number") or 1) >= int(
            last[key].get("try_number") or 1
        ):
            last[key] = run
    steps = []
    for name in job_names:
        runs = [r for (n, _, _), r in last.items() if n == name]
        steps += [
            _Step("job", name, str(r.get("state")), epoch(r.get("started_at"))) for r in runs
        ] or [_Step("job", name, "none")]
    return steps


def _tip_done(item: Doc, step: str) -> str:
    order = ["none", "final_build", "merge", "publish", "done"]
    tip = item.get("tip") or {}
    at = order.index(tip["step"]) if tip.get("step") in order else 0
    mine = order.index(step)
    if at > mine:
        return "passed"
    return "running" if at == mine else "none"


def _build_step(step: str, project: str, build: Doc | None) -> _Step:
    if build is None:
        return _Step(step, project, "none")
    state = str(build.get("state"))
    shown = state if state in ("running", "passed") else "none"
    return _Step(step, project, shown, epoch(build.get("created_at")))


def _max(values: Iterable[float | None]) -> float | None:
    """The latest of times, None if any is unknown."""
    out = 0.0
    for value in values:
        if value is None:
            return None
        out = max(out, value)
    return out


def _after(start: float | None, steps: Sequence[_Step], d: Durations, now: float) -> float | None:
    """When ``steps`` run one after another from ``start`` end."""
    at = start
    for step in steps:
        took = step.remaining(d, now)
        if at is None or took is None:
            return None
        at += took
    return at


def estimate_queue(
    items: Sequence[Doc],
    durations: Durations,
    job_names: Sequence[str],
    window: int | None,
    now: float,
) -> dict[int, float | None]:
    """Item id -> seconds until it should be through (merged and published), or None."""
    failing = {int(i.get("id") or 0) for i in items if _failing(i)}
    done: list[float | None] = []
    #: when each gate item should be through, in order (the window counts gate items)
    gate_done: list[float | None] = []
    #: when each item's own build should be done, by id
    built: dict[int, float | None] = {}
    out: dict[int, float | None] = {}
    for item in items:
        project = str((item.get("change") or {}).get("project") or "")
        previous = done[-1] if done else now
        # nothing is started for it until the gate item ``window`` places ahead is through
        waiting = item.get("state") == ItemState.OUTSIDE_WINDOW
        start: float | None = now
        if waiting and window and len(gate_done) >= window:
            start = gate_done[len(gate_done) - window]
        jobs = _job_steps(item, job_names)
        if waiting:
            jobs = [_Step(j.step, j.key, "none") for j in jobs]
        if _failing(item):
            # it leaves (or waits for people): no time to give it, and the items
            # behind go on as if it were not there
            out[int(item.get("id") or 0)] = None
            done.append(previous)
            if item.get("kind") != "post":
                gate_done.append(previous)
            continue
        restarts = bool(set(_ahead(item)) & failing)
        if restarts:  # tested with a failing item: it is reset and starts again
            jobs = [_Step(j.step, j.key, "none") for j in jobs]
        if item.get("kind") == "post":
            own_built = _after(start, [_final_step(item, project)], durations, now)
            ready = _after(own_built, _slowest(jobs, durations, now), durations, now)
            finish = _after(_max([ready, previous]), [_tip_step(item, project)], durations, now)
        else:
            fresh = waiting or restarts
            merge = (item.get("merge") or {}).get("state", "none")
            steps = [
                _Step("merge", project, "passed" if merge == "passed" and not fresh else "none"),
                _build_step("scratch", project, None if fresh else item.get("build")),
            ]
            own_built = _after(start, steps, durations, now)
            # its jobs run on the builds of the items it is tested with
            ahead = [built[i] for i in _ahead(item) if i in built]
            jobs_start = _max([own_built, *ahead])
            tested = _after(jobs_start, _slowest(jobs, durations, now), durations, now)
            tip = [_final_step(item, project), _tip_step(item, project)]
            finish = _after(_max([tested, previous]), tip, durations, now)
        built[int(item.get("id") or 0)] = own_built
        done.append(finish)
        if item.get("kind") != "post":
            gate_done.append(finish)
        if item.get("id") is not None:
            out[int(item["id"])] = None if finish is None else max(finish - now, 0.0)
    return out


def _failing(item: Doc) -> bool:
    """It will not be through: failing, held up, blocked, or a step of it failed already."""
    if str(item.get("state", "")).startswith(("failing", "stuck", "blocked")):
        return True
    steps = [item.get("build") or {}, *(item.get("jobs") or [])]
    return item.get("kind") != "post" and any(step.get("state") == "failed" for step in steps)


def _ahead(item: Doc) -> list[int]:
    return list((item.get("base") or {}).get("ahead") or [])


def _final_step(item: Doc, project: str) -> _Step:
    """The final build (a draft may have started before the tip)."""
    if _tip_done(item, "final_build") == "passed":
        return _Step("final", project, "passed")
    return _build_step("final", project, item.get("final_build"))


def _tip_step(item: Doc, project: str) -> _Step:
    """Merge and publish, timed from the end of the final build."""
    if _tip_done(item, "done") == "running":
        return _Step("tip", project, "passed")
    if _tip_done(item, "merge") != "none":
        final = item.get("final_build") or {}
        return _Step("tip", project, "running", epoch(final.get("finished_at")))
    return _Step("tip", project, "none")


def _slowest(jobs: Sequence[_Step], durations: Durations, now: float) -> list[_Step]:
    """Jobs run side by side: the one that takes longest stands for them all."""
    if not jobs:
        return []
    remaining = [(j.remaining(durations, now), j) for j in jobs]
    if any(r is None for r, _ in remaining):
        return [next(j for r, j in remaining if r is None)]
    return [max(remaining, key=lambda pair: pair[0] or 0.0)[1]]


def duration_text(seconds: float) -> str:
    """``45s``, ``3m 20s``, ``2h 05m``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
