"""Changes from review systems: what a review says now decides.

A review system's events (``ReviewUpdated``) are hints: duplicated, reordered
or lost, they must not matter.  So every one is handled the same way: read
the review again (``ChangeSource.read_review``) and bring the gate in line
with what it says now --

* closed (abandoned, merged elsewhere, declined): its item leaves the queue;
* at a new revision the system does not deem the same code: the item of the
  old revision leaves the queue (Zuul dequeues a superseded patch set);
* approved (the connection's rule; or, for systems that approve by a
  command, a command recorded for this revision) and not queued: it is
  recorded as a change at that revision and enqueued, after the changes its
  commit message names in ``Depends-On:`` lines;
* approval withdrawn while queued: it leaves the queue.

One change row per revision of a review; a change keeps the ids of the
changes it depends on (``ChangeRow.depends_on``) so that when one of them
leaves the queue unmerged, its dependents leave too (``Items.dequeue``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from gate.config import Config
from gate.events import Refused, ReviewUpdated
from gate.items import Items, view_of
from gate.merger import Merger
from gate.sources.base import ChangeSource, Review
from repo_state.db import session
from repo_state.models import ChangeRow, ItemRow, utcnow

log = logging.getLogger(__name__)

#: ``Depends-On: <url>`` footers, as Zuul reads them (one per line, anywhere)
DEPENDS_ON = re.compile(r"^Depends-On:\s*(\S+)\s*$", re.IGNORECASE | re.MULTILINE)
#: the most dependencies one change may name, and the deepest chain followed
MAX_DEPENDENCIES = 20

#: enqueue(change id, its dependencies' change ids) -> the delivery's result
Enqueue = Callable[[int], Awaitable[str]]


def approved(review: Review, change: ChangeRow | None) -> bool:
    """The review's approval, or for command-approving systems the recorded command."""
    if review.approved is None:
        return change is not None and change.approved_by is not None
    return review.approved


def mergeable_now(review: Review, change: ChangeRow) -> str:
    """Why ``change`` (as tested) may not be merged now; "" if it may."""
    if not review.open:
        return f"review {review.id} is {'merged' if review.merged else 'closed'} already"
    if not review.at(change.sha):
        return (
            f"review {review.id} moved to {review.revision[:12]} since {change.sha[:12]} was tested"
        )
    if not approved(review, change):
        return f"review {review.id} is no longer approved" + (
            f": {review.why_not}" if review.why_not else ""
        )
    if not review.mergeable:
        return f"review {review.id} cannot be merged" + (
            f": {review.why_not}" if review.why_not else ""
        )
    return ""


@dataclass(eq=False)
class Reviews:
    engine: Engine
    config: Config
    items: Items
    merger: Merger
    sources: Mapping[str, ChangeSource]
    #: put a recorded change in its queue (``Ingest._enqueue``)
    enqueue: Enqueue

    async def updated(self, event: ReviewUpdated) -> str:
        """Bring the gate in line with what review ``event.review`` says now."""
        project = self.config.projects.get(event.project)
        if project is None or project.source != event.source:
            raise Refused(f"project {event.project!r} is not a project of source {event.source!r}")
        source = self.sources[event.source]
        review = await source.read_review(event.project, event.review)
        said: list[str] = []
        staying = None
        for change, item in self._queued(event.source, event.project, review.id):
            why = self._why_it_leaves(review, change)
            if why and not view_of(item).committed and not view_of(item).pushing:
                self.items.dequeue(item.queue, item.id or 0, "dequeued", why)
                said.append(f"item {item.id} dequeued: {why}")
            else:
                staying = item
        if staying is not None:  # at this revision, or one the system deems the same
            return "; ".join([*said, f"item {staying.id} (already queued)"])
        if not review.open:
            self._close_proposed(event.source, event.project, review.id, review)
            return "; ".join(said) or f"review {review.id} is closed: nothing queued"
        change = await self._change_at(event, review)
        if approved(review, change):
            return "; ".join([*said, await self._enqueue_with_dependencies(change, review, [])])
        why = review.why_not or "not approved"
        return "; ".join([*said, f"review {review.id} at {review.revision[:12]}: {why}"])

    # -- what is queued, what leaves ------------------------------------------------------
    def _queued(self, source: str, project: str, review: str) -> list[tuple[ChangeRow, ItemRow]]:
        with session(self.engine) as s:
            rows = s.exec(
                select(ChangeRow, ItemRow)
                .join(ItemRow, col(ItemRow.change_id) == col(ChangeRow.id))
                .where(
                    ChangeRow.source == source,
                    ChangeRow.project == project,
                    ChangeRow.review == review,
                    col(ItemRow.active),
                )
            ).all()
        return [(c, i) for c, i in rows]

    @staticmethod
    def _why_it_leaves(review: Review, change: ChangeRow) -> str:
        if not review.open:
            return (
                f"review {review.id} was {'merged' if review.merged else 'closed'} outside the gate"
            )
        if not review.at(change.sha):
            return f"review {review.id} has a new revision {review.revision[:12]}"
        if review.approved is False:
            return f"review {review.id} is no longer approved" + (
                f": {review.why_not}" if review.why_not else ""
            )
        return ""

    def _close_proposed(self, source: str, project: str, review_id: str, review: Review) -> None:
        with session(self.engine) as s:
            rows = s.exec(
                select(ChangeRow).where(
                    ChangeRow.source == source,
                    ChangeRow.project == project,
                    ChangeRow.review == review_id,
                    ChangeRow.state == "proposed",
                )
            ).all()
            for row in rows:
                row.state, row.updated_at = "dequeued", utcnow()
                row.reason = f"review {review.id} was closed"
                s.add(row)
            s.commit()

    # -- the change at the current revision -----------------------------------------------
    async def _change_at(self, event: ReviewUpdated, review: Review) -> ChangeRow:
        """The change row of the review's current revision, made if new; an approval
        command in the event for this revision is recorded on it."""
        with session(self.engine) as s:
            change = s.exec(
                select(ChangeRow).where(
                    ChangeRow.source == event.source,
                    ChangeRow.review == review.id,
                    ChangeRow.project == review.project,
                    ChangeRow.sha == review.revision,
                    col(ChangeRow.state).in_(("proposed", "queued")),
                )
            ).first()
        if change is None:
            url = self.config.projects[review.project].git
            sha = await self.merger.resolve(review.project, url, review.fetch_ref)
            if sha != review.revision:
                raise Refused(
                    f"review {review.id} moved while it was read ({review.fetch_ref} is "
                    f"{sha[:12]}, not {review.revision[:12]}); its next event brings it"
                )
            change = ChangeRow(
                project=review.project,
                ref=review.fetch_ref,
                sha=review.revision,
                title=review.title or f"review {review.id}",
                source=event.source,
                review=review.id,
                url=review.url,
                owner=review.owner,
            )
        if event.approved_revision == review.revision and change.approved_by is None:
            change.approved_by = event.approved_by or "a command"
        with session(self.engine) as s:
            s.add(change)
            s.commit()
            s.refresh(change)
        return change

    # -- Depends-On ---------------------------------------------------------------------------
    async def _enqueue_with_dependencies(
        self, change: ChangeRow, review: Review, chain: list[str]
    ) -> str:
        """Enqueue ``change`` behind what it depends on, enqueuing approved
        dependencies first; refuse what cannot be satisfied, naming why."""
        here = review.url or f"{change.source} review {review.id}"
        if here in chain:
            raise Refused("dependency cycle: " + " -> ".join([*chain, here]))
        if len(chain) > MAX_DEPENDENCIES:
            raise Refused(f"dependency chain longer than {MAX_DEPENDENCIES}: {chain[0]} -> …")
        queue = self.config.queue_of(change.project)
        depends: list[int] = []
        for url in await self._depends_on(change):
            dep_id = await self._dependency(url, queue, [*chain, here])
            if dep_id is not None and dep_id not in depends:
                depends.append(dep_id)
        with session(self.engine) as s:
            row = s.get(ChangeRow, change.id)
            assert row is not None
            row.depends_on = json.dumps(depends)
            s.add(row)
            s.commit()
        return await self.enqueue(change.id or 0)

    async def _depends_on(self, change: ChangeRow) -> list[str]:
        url = self.config.projects[change.project].git
        message = await self.merger.commit_message(change.project, url, change.sha)
        urls = list(dict.fromkeys(DEPENDS_ON.findall(message)))
        if len(urls) > MAX_DEPENDENCIES:
            raise Refused(f"more than {MAX_DEPENDENCIES} Depends-On lines")
        return urls

    async def _dependency(self, url: str, queue: str, chain: list[str]) -> int | None:
        """The change id the dependency ``url`` is queued as (enqueuing it if it is
        approved); None when it is merged already."""
        found = [
            (name, hit)
            for name, source in self.sources.items()
            if (hit := source.review_for_url(url)) is not None
        ]
        if not found:
            raise Refused(f"Depends-On: {url} is not a change of any review system of this gate")
        name, (project, review_id) = found[0]
        dep = await self.sources[name].read_review(project, review_id)
        if dep.merged:
            return None
        if not dep.open:
            raise Refused(f"depends on {url}, which is closed")
        dep_queue = self.config.queue_of(project)
        if dep_queue != queue:
            raise Refused(
                f"depends on {url}, which is in queue {dep_queue}; a change can depend only "
                f"on changes of its own queue ({queue})"
            )
        for change, _item in self._queued(name, project, dep.id):
            if dep.at(change.sha):
                return change.id
        event = ReviewUpdated(source=name, project=project, review=dep.id)
        dep_change = await self._change_at(event, dep)
        if not approved(dep, dep_change):
            raise Refused(
                f"depends on {url}, which is not approved"
                + (f": {dep.why_not}" if dep.why_not else "")
            )
        await self._enqueue_with_dependencies(dep_change, dep, chain)
        return dep_change.id
