"""Flaky jobs: runs that passed only on a retry, said wherever the pass is shown.

A *run* is one job on one arch of one named build in one attempt of an item;
its tries are ``job_run`` rows (``try_number`` of ``tries``).  A run that passed on try
n > 1 counts as passed (the item goes on) but is *flaky*: the item's
document, its report, the status document and ``/metrics`` say "flaky:
passed on try 2 of 3", so retries never launder a failure into silence.

A job whose recent runs were flaky more often than the queue's
``flaky.threshold`` is listed in the status document (``flaky_jobs``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from gate.pipeline import FlakyConfig
from repo_state.models import ItemRow, JobRunRow


def flaky_note(row: JobRunRow) -> str:
    """``install-test (x86_64): flaky: passed on try 2 of 3`` for a flaky pass, else "".

    A run of a queue of several named builds names its build too
    (``install-test (el9, x86_64): …``); ``row.build`` is "" in a queue of one.
    """
    if row.state != "passed" or row.try_number <= 1:
        return ""
    where = ", ".join(w for w in (row.build, row.arch) if w)
    label = f"{row.name} ({where})" if where else row.name
    return f"{label}: flaky: passed on try {row.try_number} of {row.tries}"


def flaky_notes(rows: Iterable[JobRunRow]) -> list[str]:
    """The flaky passes among an attempt's rows, one sentence each."""
    return [note for row in rows if (note := flaky_note(row))]


@dataclass(frozen=True)
class RunOutcome:
    """How one run (job, named build, arch, attempt of an item) ended."""

    job: str
    passed: bool
    flaky: bool


def run_outcomes(rows: Sequence[JobRunRow]) -> list[RunOutcome]:
    """The runs that ended among ``rows`` (newest first, as given), one per run.

    A run ended when a try passed, or when its last try failed; an interrupted
    or cancelled try ends nothing.
    """
    outcomes: dict[tuple[int, int, str, str, str], RunOutcome] = {}
    for row in rows:
        key = (row.item_id, row.attempt, row.name, row.build, row.arch)
        if key in outcomes:
            continue
        if row.state == "passed":
            outcomes[key] = RunOutcome(row.name, True, row.try_number > 1)
        elif (
            row.state == "failed"
            and row.try_number == row.tries
            and not row.summary.startswith("interrupted")
        ):
            outcomes[key] = RunOutcome(row.name, False, False)
    return list(outcomes.values())


def flaky_jobs(
    s: Session,
    queue: str,
    jobs: Sequence[str],
    config: FlakyConfig,
    arches: int = 1,
    builds: int = 1,
) -> list[dict[str, Any]]:
    """The jobs whose recent runs passed only on a retry more often than the threshold
    (``arches``, ``builds``: how many runs of a job an attempt may have, per arch and
    named build)."""
    limit = config.window * max(len(jobs), 1) * max(arches, 1) * max(builds, 1) * 4
    rows = s.exec(
        select(JobRunRow)
        .join(ItemRow, col(ItemRow.id) == JobRunRow.item_id)
        .where(ItemRow.queue == queue)
        .order_by(col(JobRunRow.id).desc())
        .limit(limit)
    ).all()
    by_job: dict[str, list[RunOutcome]] = {}
    for outcome in run_outcomes(rows):
        recent = by_job.setdefault(outcome.job, [])
        if len(recent) < config.window:
            recent.append(outcome)
    out = []
    for job in jobs:
        recent = by_job.get(job, [])
        flaky = sum(1 for o in recent if o.flaky)
        rate = flaky / len(recent) if recent else 0.0
        if flaky and rate > config.threshold:
            out.append(
                {
                    "job": job,
                    "runs": len(recent),
                    "flaky": flaky,
                    "rate": round(rate, 3),
                    "threshold": config.threshold,
                    "summary": f"{job}: {flaky} of its last {len(recent)} runs passed "
                    f"only on a retry ({rate:.0%}, more than {config.threshold:.0%})",
                }
            )
    return out
