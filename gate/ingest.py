"""From stored deliveries to changes and items.

Deliveries are committed before they are acknowledged; here they are
processed in order, each parsed once into a typed event (``gate.events``; a
review system's delivery by its source's parser) and dispatched by the
event's class through one table, :data:`HANDLERS`.  Each delivery is marked
done with what it produced or why not:

* a handler's :class:`~gate.events.Refused` (the event cannot be applied) is
  the delivery's outcome;
* any other exception is an error of the gate: logged with its traceback and
  recorded as ``internal error: …``, never as a refusal.

Events are hints: before enqueuing an approved change the change is re-read
from its review system (a ref that moved means a new patchset).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

from sqlalchemy.engine import Engine
from sqlmodel import col, func, select

from gate import transitions
from gate.admin import RepoAdmin
from gate.config import Config
from gate.events import (
    ChangeApproved,
    ChangeEnqueue,
    ChangeProposed,
    Event,
    ItemDequeue,
    ItemPromote,
    ItemPublish,
    ItemRetry,
    RefUpdated,
    Refused,
    RepoRepublish,
    RepoRollback,
    ReviewUpdated,
    parse_event,
)
from gate.faults import is_transient, retry_delay, until_it_lands
from gate.items import Items, view_of
from gate.merger import GitError, Merger
from gate.model import ItemKind, TipStep
from gate.plumbing import Plumbing
from gate.polling import Polling
from gate.refs import InvalidRef
from gate.reviews import Reviews
from gate.sources.base import ChangeSource
from repo_state.db import session
from repo_state.models import ChangeRow, Delivery, ItemRow, utcnow

log = logging.getLogger(__name__)

#: deliveries stored by rpmgate's own API (and tests): core events
CORE_SOURCE = "api"


@dataclass(eq=False)
class Ingest:
    engine: Engine
    plumbing: Plumbing
    config: Config
    items: Items
    sources: Mapping[str, ChangeSource]
    source_of: Callable[[str], ChangeSource]
    admin: RepoAdmin
    polling: Polling
    merger: Merger
    #: changes from review systems (``ReviewUpdated``)
    reviews: Reviews = field(init=False)
    #: transient faults in a row, per pending delivery
    _tries: dict[int, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.reviews = Reviews(
            self.engine, self.config, self.items, self.merger, self.sources, self._enqueue
        )

    #: no delivery is tried before this (time.monotonic())
    _retry_at: float = field(default=0.0, init=False)

    async def process_deliveries(self) -> int:
        """Process the stored deliveries in order; returns how many were done.

        A delivery whose processing hits a transient fault (``gate.faults``)
        stays pending, and so do the ones after it (order matters: an approval
        follows its proposal); the loop comes back to it with backoff.
        """
        if time.monotonic() < self._retry_at:
            return 0
        pending = await until_it_lands(self._pending, "reading deliveries")
        for done, delivery in enumerate(pending):
            delivery_id = delivery.id or 0
            try:
                result, error = await self._outcome(delivery)
            except Exception as exc:  # transient only: _outcome records the rest
                self._retry_later(delivery, exc)
                return done
            self._tries.pop(delivery_id, None)
            await until_it_lands(
                partial(self._mark_done, delivery_id, result, error), f"delivery {delivery_id}"
            )
            self.plumbing.emit(
                "delivery",
                delivery=delivery_id,
                source=delivery.source,
                event_type=delivery.event_type,
                result=result,
                error=error,
            )
        return len(pending)

    async def _outcome(self, delivery: Delivery) -> tuple[str | None, str | None]:
        """What processing the delivery produced: (result, refusal or internal error).

        Raises only what is transient: that is not an outcome.
        """
        try:
            event = self.parse(delivery)
            if event is None:
                return "nothing to do", None
            return await HANDLERS[type(event)](self, event), None
        except Refused as exc:
            log.warning("delivery %s (%s) refused: %s", delivery.id, delivery.event_type, exc)
            return None, str(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_transient(exc):
                raise
            # a bug: report it, keep the gate going
            log.exception("delivery %s (%s) failed", delivery.id, delivery.event_type)
            return None, f"internal error: {type(exc).__name__}: {exc}"

    def _pending(self) -> list[Delivery]:
        with session(self.engine) as s:
            return list(
                s.exec(
                    select(Delivery)
                    .where(col(Delivery.processed_at).is_(None))
                    .order_by(col(Delivery.id))
                ).all()
            )

    def _mark_done(self, delivery_id: int, result: str | None, error: str | None) -> None:
        with session(self.engine) as s:
            row = s.get(Delivery, delivery_id)
            assert row is not None
            row.processed_at, row.result, row.error = utcnow(), result, error
            s.add(row)
            s.commit()

    def _retry_later(self, delivery: Delivery, exc: Exception) -> None:
        delivery_id = delivery.id or 0
        tries = self._tries[delivery_id] = self._tries.get(delivery_id, 0) + 1
        delay = retry_delay(tries)
        self._retry_at = time.monotonic() + delay
        self.plumbing.wake_after(delay)
        note = f"transient fault (try {tries}), retrying in {delay:.1f}s: {exc}"
        log.warning("delivery %s (%s): %s", delivery_id, delivery.event_type, note)
        try:  # shown on GET /api/deliveries/<id>; the database may be what failed
            with session(self.engine) as s:
                row = s.get(Delivery, delivery_id)
                if row is not None and row.processed_at is None:
                    row.error = note
                    s.add(row)
                    s.commit()
        except Exception as again:
            if not is_transient(again):
                raise

    def parse(self, delivery: Delivery) -> Event | None:
        """The event a delivery holds: a core one, or what its source makes of it."""
        payload = json.loads(delivery.payload)
        if delivery.source == CORE_SOURCE:
            return parse_event(
                delivery.event_type, payload, delivery.id or 0, delivery.requested_by
            )
        source = self.sources.get(delivery.source)
        if source is None:
            raise Refused(f"unknown source {delivery.source!r}")
        event = source.parse_event(delivery.event_type, payload)
        if event is None:
            return None
        update: dict[str, object] = {
            "delivery": delivery.id or 0,
            "requested_by": delivery.requested_by,
        }
        if isinstance(event, ReviewUpdated):
            update["source"] = delivery.source  # a source speaks for itself only
        return event.model_copy(update=update)

    # -- handlers ------------------------------------------------------------------------
    async def change_proposed(self, event: ChangeProposed) -> str:
        if event.project not in self.config.projects:
            raise Refused(f"unknown project {event.project!r}")
        with session(self.engine) as s:
            # a restart may process the same delivery again: never make a second change
            change = (
                s.exec(select(ChangeRow).where(ChangeRow.delivery_id == event.delivery)).first()
                if event.delivery
                else None
            )
        if change is None:
            sha = await self._resolve(event.project, event.ref)
            await self._refuse_duplicate(event.project, sha)
            with session(self.engine) as s:
                delivery = s.get(Delivery, event.delivery) if event.delivery else None
                change = ChangeRow(
                    project=event.project,
                    ref=event.ref,
                    sha=sha,
                    title=event.title or event.ref,
                    delivery_id=event.delivery or None,
                    # who proposed it: the name of the API token it came with
                    owner=(delivery.requested_by if delivery else None) or "",
                )
                s.add(change)
                s.commit()
                s.refresh(change)
        self.plumbing.emit(
            "change",
            change=change.id,
            project=event.project,
            state="proposed",
            sha=change.sha,
            title=change.title,
        )
        if event.approve:
            await self._enqueue(change.id or 0, checked=True)
        return f"change {change.id}"

    async def change_approved(self, event: ChangeApproved) -> str:
        with session(self.engine) as s:
            change = s.get(ChangeRow, event.change)
        if change is None:
            raise Refused(f"no change {event.change}")
        sha = await self._resolve(change.project, change.ref)
        if sha != change.sha:
            with session(self.engine) as s:
                row = s.get(ChangeRow, event.change)
                assert row is not None
                log.info(
                    "change %s: %s moved %s -> %s (new patchset)",
                    event.change,
                    change.ref,
                    change.sha[:12],
                    sha[:12],
                )
                row.sha, row.updated_at = sha, utcnow()
                s.add(row)
                s.commit()
        return await self._enqueue(event.change)

    async def change_enqueue(self, event: ChangeEnqueue) -> str:
        return await self._enqueue(event.change)

    async def item_dequeue(self, event: ItemDequeue) -> str:
        with session(self.engine) as s:
            item = s.get(ItemRow, event.item)
        if item is None or not item.active:
            raise Refused(f"item {event.item} is not in a queue")
        view = view_of(item)
        if (view.committed or view.pushing) and not view.blocked:
            raise Refused(f"item {event.item} is merged already; it can only be published")
        reason = event.reason or "dequeued by an administrator"
        who = event.requested_by
        self.items.dequeue(
            item.queue, event.item, "dequeued", reason + (f" (by {who})" if who else "")
        )
        return f"item {event.item} dequeued"

    async def item_promote(self, event: ItemPromote) -> str:
        with session(self.engine) as s:
            item = s.get(ItemRow, event.item)
            if item is None or not item.active or item.kind != ItemKind.GATE:
                raise Refused(f"item {event.item} is not a queued gate item")
            if view_of(item).at_tip:
                raise Refused(f"item {event.item} is being merged or published already")
            first = s.exec(
                select(func.min(ItemRow.seq)).where(
                    ItemRow.queue == item.queue,
                    col(ItemRow.active),
                    ItemRow.kind == ItemKind.GATE,
                    ItemRow.tip == TipStep.NONE.value,
                )
            ).one()
            item.seq = (first or 0) - 1
            s.add(item)
            s.commit()
        who = event.requested_by
        return f"item {event.item} promoted" + (f" by {who}" if who else "")

    async def item_publish(self, event: ItemPublish) -> str:
        who = event.requested_by or "an administrator"
        with session(self.engine) as s:
            item = s.get(ItemRow, event.item)
            if item is None or not item.active:
                raise Refused(f"item {event.item} is not in a queue")
            if not view_of(item).blocked:
                raise Refused(
                    f"item {event.item} is not a blocked post item; only those are published "
                    "past their checks"
                )
            item.forced_by = who + (f": {event.reason}" if event.reason else "")
            s.add(item)
            s.commit()
        log.warning("item %s: published past its failed checks by %s", event.item, who)
        self.plumbing.wake()
        return f"item {event.item} will be published although its checks failed (by {who})"

    async def item_retry(self, event: ItemRetry) -> str:
        with session(self.engine) as s:
            item = s.get(ItemRow, event.item)
        if item is None or not item.active:
            raise Refused(f"item {event.item} is not in a queue")
        if not view_of(item).blocked:
            raise Refused(f"item {event.item} is not blocked; it is being worked on already")
        self.items.step(event.item, transitions.retry)
        who = event.requested_by or "an administrator"
        log.info("item %s: retried by %s", event.item, who)
        return f"item {event.item} will be built and tested again (by {who})"

    async def review_updated(self, event: ReviewUpdated) -> str:
        try:
            return await self.reviews.updated(event)
        except GitError as exc:  # the revision cannot be fetched: retried if transient
            if is_transient(exc):
                raise
            raise Refused(str(exc)) from None

    async def ref_updated(self, event: RefUpdated) -> str:
        if event.project not in self.config.projects:
            raise Refused(f"unknown project {event.project!r}")
        created = await self.polling.poll_project(event.project, force=event.force)
        return f"post item {created}" if created else "no new commits"

    async def repo_command(self, event: RepoRepublish | RepoRollback) -> str:
        return await self.admin.command(event)

    # -- helpers -----------------------------------------------------------------------------
    async def _resolve(self, project: str, ref: str) -> str:
        """The commit ``ref`` names now; a ref that is no ref, or not there, is a refusal."""
        try:
            return await self.source_of(project).resolve(project, ref)
        except InvalidRef as exc:
            raise Refused(str(exc)) from None
        except GitError as exc:  # RefNotFound is one; a network fault is retried
            if is_transient(exc):
                raise
            raise Refused(str(exc)) from None

    async def _refuse_duplicate(self, project: str, sha: str, change_id: int = 0) -> None:
        """Refuse a commit the gate has nothing to do with: already on the branch, or
        already the commit of another change that is open."""
        with session(self.engine) as s:
            other = s.exec(
                select(ChangeRow).where(
                    ChangeRow.project == project,
                    ChangeRow.sha == sha,
                    ChangeRow.id != change_id,
                    col(ChangeRow.state).in_(("proposed", "queued")),
                )
            ).first()
        if other is not None:
            raise Refused(
                f"commit {sha[:12]} of {project} is change {other.id} already ({other.state})"
            )
        if await self.source_of(project).is_merged(project, sha):
            branch = self.config.projects[project].branch
            raise Refused(
                f"commit {sha[:12]} is on {project}'s branch {branch} already: nothing to merge"
            )

    async def _enqueue(self, change_id: int, checked: bool = False) -> str:
        """Put the change in its queue; ``checked``: its commit was just found to be new."""
        with session(self.engine) as s:
            change = s.get(ChangeRow, change_id)
            if change is None:
                raise Refused(f"no change {change_id}")
            if change.state in ("merged", "pushed"):
                raise Refused(f"change {change_id} is {change.state} already")
            existing = s.exec(
                select(ItemRow).where(ItemRow.change_id == change_id, col(ItemRow.active))
            ).first()
            if existing is not None:
                return f"item {existing.id} (already queued)"
        if not checked:
            await self._refuse_duplicate(change.project, change.sha, change_id)
        with session(self.engine) as s:
            change = s.get(ChangeRow, change_id)
            assert change is not None
            queue = self.config.queue_of(change.project)
            last = s.exec(select(func.max(ItemRow.seq)).where(ItemRow.queue == queue)).one()
            item = ItemRow(
                queue=queue,
                change_id=change_id,
                project=change.project,
                kind=ItemKind.GATE.value,
                seq=(last or 0) + 1,
            )
            change.state, change.updated_at = "queued", utcnow()
            s.add_all([item, change])
            s.commit()
            s.refresh(item)
        self.plumbing.emit(
            "item",
            item=item.id,
            queue=queue,
            project=change.project,
            state="enqueued",
            change=change_id,
            title=change.title,
        )
        self.items.reporter.report(item.id or 0, "enqueued")
        return f"item {item.id}"


Handler = Callable[[Ingest, Event], Awaitable[str]]
#: one handler per event class
HANDLERS: dict[type[Event], Handler] = {
    ChangeProposed: Ingest.change_proposed,  # type: ignore[dict-item]
    ChangeApproved: Ingest.change_approved,  # type: ignore[dict-item]
    ChangeEnqueue: Ingest.change_enqueue,  # type: ignore[dict-item]
    ItemDequeue: Ingest.item_dequeue,  # type: ignore[dict-item]
    ItemPromote: Ingest.item_promote,  # type: ignore[dict-item]
    ItemPublish: Ingest.item_publish,  # type: ignore[dict-item]
    ItemRetry: Ingest.item_retry,  # type: ignore[dict-item]
    RefUpdated: Ingest.ref_updated,  # type: ignore[dict-item]
    ReviewUpdated: Ingest.review_updated,  # type: ignore[dict-item]
    RepoRepublish: Ingest.repo_command,  # type: ignore[dict-item]
    RepoRollback: Ingest.repo_command,  # type: ignore[dict-item]
}
