"""Telling a change's owners what happened, where they look.

At the steps that matter to a packager -- enqueued, failed, merged, dequeued
-- the item's source gets a :class:`~gate.sources.base.Report` (a vote, a
commit status, a comment: the driver decides).  Reports run in tasks of their
own: a transient fault is retried a few times with backoff, anything else is
logged, and nothing waits for them.  A report is a courtesy; the status API
is the record.  The reports of one item are sent in the order they were made:
each waits for the one before (whatever became of it), so a retried "queued"
never lands after "merged", and a commit status set to pending never replaces
the final one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import Engine
from sqlmodel import Session, and_, col, or_, select

from gate import item_builds
from gate.config import Config
from gate.faults import retried, retried_call
from gate.flaky import flaky_notes
from gate.model import ItemKind
from gate.plumbing import Plumbing
from gate.sources.base import ChangeSource, Report
from repo_state.db import session
from repo_state.models import BuildRow, ChangeRow, ItemRow, JobRunRow

log = logging.getLogger(__name__)

#: tries of one report before it is given up (with backoff: about a minute)
REPORT_TRIES = 8

Phase = Literal["enqueued", "failed", "merged", "dequeued"]


def file_url(state_dir: Path, base_url: str, path: str) -> str | None:
    """The URL a file under ``state_dir`` is served at (``/files/…``); a URL as is."""
    if not path:
        return None
    if path.startswith(("http://", "https://")):
        return path
    rel = path.removeprefix(str(state_dir) + "/")
    return f"{base_url}/files/{rel}" if rel != path else None


def phase_of(result: str) -> Phase:
    """The report phase of an item's result."""
    if result == "merged":
        return "merged"
    if result == "rejected":
        return "failed"
    return "dequeued"


@dataclass(eq=False)
class Reporter:
    engine: Engine
    plumbing: Plumbing
    config: Config
    source_of: Callable[[str], ChangeSource]

    #: item id -> its last report's task (the next one of the item waits for it)
    _last: dict[int, asyncio.Task[None]] = field(default_factory=dict)

    def report(self, item_id: int, phase: Phase, reason: str = "") -> None:
        """Report the item's ``phase`` in the background (nothing here can fail),
        after the item's earlier reports."""
        before = self._last.get(item_id)
        task = self.plumbing.spawn(
            self._send(item_id, phase, reason, before), f"report-{phase}-{item_id}"
        )
        self._last[item_id] = task
        task.add_done_callback(lambda done: self._forget(item_id, done))

    def _forget(self, item_id: int, done: asyncio.Task[None]) -> None:
        if self._last.get(item_id) is done:
            del self._last[item_id]

    async def _send(
        self, item_id: int, phase: Phase, reason: str, before: asyncio.Task[None] | None = None
    ) -> None:
        if before is not None:
            await asyncio.wait([before])  # its order matters here, not its outcome
        source_name = "its source"
        try:
            made = await retried(
                lambda: self._make(item_id, phase, reason),
                f"reading item {item_id} for a report",
                tries=REPORT_TRIES,
            )
            if made is None:
                return
            source, report = made
            source_name = source.name
            await retried_call(
                lambda: source.report(report.project, report),
                f"reporting item {item_id} {phase} to {source.name}",
                tries=REPORT_TRIES,
            )
        except Exception as exc:  # a report never holds the gate
            log.warning(
                "reporting item %s %s to %s failed: %s: %s",
                item_id,
                phase,
                source_name,
                type(exc).__name__,
                exc,
            )

    def _make(self, item_id: int, phase: Phase, reason: str) -> tuple[ChangeSource, Report] | None:
        base = self.config.base_url
        with session(self.engine) as s:
            item = s.get(ItemRow, item_id)
            change = s.get(ChangeRow, item.change_id) if item is not None else None
            if item is None or change is None:
                return None
            links = {"status": f"{base}/api/changes/{change.id}"}
            position = None
            ahead: list[int] = []
            if phase == "enqueued":
                ahead = _ahead(s, item)
                position = len(ahead)
            if phase == "failed":
                log_path = self._failing_log(item)
                if log_path:
                    url = file_url(self.config.state_dir, base, log_path)
                    if url:
                        links["log"] = url
                if item.tested_state:
                    links["speculative_repo"] = f"{base}/speculative/{item.id}-{item.attempt}/"
            if phase == "merged":
                links["repository"] = f"{base}/repos/{self.config.queues[item.queue].repo}/"
            message = _message(phase, item, change, reason, ahead)
            if phase in ("merged", "failed"):
                # a pass on a retry counts, and is said (retries never launder a failure)
                runs = s.exec(
                    select(JobRunRow)
                    .where(JobRunRow.item_id == item.id, JobRunRow.attempt == item.attempt)
                    .order_by(col(JobRunRow.id))
                ).all()
                flaky = flaky_notes(runs)
                if flaky:
                    message += f" Flaky: {'; '.join(flaky)}."
            report = Report(
                phase=phase,
                project=item.project,
                review=change.review,
                revision=change.sha,
                ref=change.ref,
                message=message,
                links=links,
                queue=item.queue,
                position=position,
                generation=item.generation if phase == "merged" else None,
            )
        return self.source_of(item.project), report

    def _failing_log(self, item: ItemRow) -> str:
        with session(self.engine) as s:
            job = s.exec(
                select(JobRunRow)
                .where(
                    JobRunRow.item_id == item.id,
                    JobRunRow.attempt == item.attempt,
                    JobRunRow.state == "failed",
                )
                .order_by(col(JobRunRow.id).desc())  # the last try, the one that failed it
            ).first()
            if job is not None and job.log_path:
                return job.log_path
            for build_id in (item.final_build_id,):
                build = s.get(BuildRow, build_id) if build_id else None
                if build is not None and build.state == "failed":
                    return build.log
            # the failed member of a set of builds (several named builds or packages)
            for purpose in ("final", "draft", "scratch"):
                found = item_builds.entries(s, item.id or 0, item.attempt, purpose)
                for entry in found.values():
                    build = s.get(BuildRow, entry.build_id)
                    if build is not None and build.state == "failed":
                        return build.log
            if item.build_key:
                scratch = s.exec(
                    select(BuildRow).where(
                        BuildRow.purpose == "scratch", BuildRow.key == item.build_key
                    )
                ).first()
                if scratch is not None and scratch.state == "failed":
                    return scratch.log
        return ""


def _ahead(s: Session, item: ItemRow) -> list[int]:
    """The active items of ``item``'s queue ahead of it, in queue order: every post
    item, then the gate items enqueued before it (``queue_rules.queue_order`` for a
    gate item just enqueued: nothing of it is at the tip yet)."""
    rows = s.exec(
        select(ItemRow.id, ItemRow.kind, ItemRow.seq).where(
            ItemRow.queue == item.queue,
            col(ItemRow.active),
            col(ItemRow.id) != item.id,
            or_(
                ItemRow.kind == ItemKind.POST,
                col(ItemRow.seq) < item.seq,
                and_(col(ItemRow.seq) == item.seq, col(ItemRow.id) < (item.id or 0)),
            ),
        )
    ).all()
    ordered = sorted(rows, key=lambda r: (r[1] != ItemKind.POST, r[2], r[0]))
    return [r[0] for r in ordered if r[0] is not None]


def _message(phase: Phase, item: ItemRow, change: ChangeRow, reason: str, ahead: list[int]) -> str:
    queue = item.queue
    if phase == "enqueued":
        # people count places from 1; the items named are those ahead now (those
        # that fail or leave are not in what it is finally tested with)
        if not ahead:
            return f"rpmgate: {change.sha[:12]} queued in {queue} as item {item.id}, at the head."
        shown = ", ".join(map(str, ahead[:10])) + (
            f" and {len(ahead) - 10} more" if len(ahead) > 10 else ""
        )
        items = "item" if len(ahead) == 1 else "items"
        return (
            f"rpmgate: {change.sha[:12]} queued in {queue} as item {item.id}, at position "
            f"{len(ahead) + 1} behind {items} {shown}."
        )
    if phase == "failed":
        return f"rpmgate: {change.sha[:12]} failed in {queue} (item {item.id}): {reason}"
    if phase == "merged":
        return (
            f"rpmgate: {change.sha[:12]} merged and published in {queue}"
            f" as generation {item.generation} (item {item.id})."
        )
    return f"rpmgate: {change.sha[:12]} left {queue} (item {item.id}): {reason or 'dequeued'}"
