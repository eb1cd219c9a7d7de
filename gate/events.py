"""The events the gate acts on, one class each, parsed once from a stored delivery.

Every accepted request (the API, a review system's webhook, an admin command)
is stored as a delivery row before it is answered; the loop turns each into
one of these typed events and dispatches it by its class through one table
(``gate.ingest``).  A review system's driver translates its own payloads into
these same events, so nothing after parsing knows where an event came from.

A handler that understands an event but will not apply it raises
:class:`Refused` (reported on the delivery); any other exception is an error
of the gate, logged with its traceback and reported as such, never dressed up
as a refusal.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError


class Refused(Exception):
    """The event is understood but cannot be applied (reported on the delivery)."""


class Event(BaseModel):
    """An accepted request, as the loop acts on it."""

    # extra keys of older stored payloads (e.g. "action") are ignored
    model_config = ConfigDict(extra="ignore", frozen=True)
    #: the delivery type this event is stored as
    TYPE: ClassVar[str] = ""

    #: the delivery it came from (set when parsed)
    delivery: int = 0
    #: who asked: the API token's name (None: the open API, a webhook)
    requested_by: str | None = None


class ChangeProposed(Event):
    """A ref or commit of a project becomes a change (and, with ``approve``, an item)."""

    TYPE: ClassVar[str] = "change.proposed"
    project: str
    ref: str
    title: str = ""
    approve: bool = False


class ChangeApproved(Event):
    """Approve a change: re-read its ref (a moved ref is a new patchset), then enqueue it."""

    TYPE: ClassVar[str] = "change.approved"
    change: int


class ChangeEnqueue(Event):
    """Enqueue a change as recorded, without re-reading it."""

    TYPE: ClassVar[str] = "change.enqueue"
    change: int


class ItemDequeue(Event):
    TYPE: ClassVar[str] = "item.dequeue"
    item: int
    reason: str | None = ""


class ItemPromote(Event):
    TYPE: ClassVar[str] = "item.promote"
    item: int
    reason: str | None = ""


class ItemPublish(Event):
    """Publish a blocked post item although its checks failed (a release engineer's call)."""

    TYPE: ClassVar[str] = "item.publish"
    item: int
    reason: str | None = ""


class ItemRetry(Event):
    """Build and test a blocked post item again (a fixed lookaside, a flaky job)."""

    TYPE: ClassVar[str] = "item.retry"
    item: int
    reason: str | None = ""


class RefUpdated(Event):
    """A project's branch moved: look now instead of at the next poll."""

    TYPE: ClassVar[str] = "ref.updated"
    project: str
    old: str | None = None
    new: str | None = None
    #: make a post item of the head even if it was seen already
    force: bool = False


class ReviewUpdated(Event):
    """Something happened to a review (a new revision, a vote, a comment, a close).

    A hint only: the gate reads the review again (``ChangeSource.read_review``)
    and acts on what it says now, so duplicated, reordered or lost events do
    no harm.  Made by review-system drivers from their deliveries.
    """

    TYPE: ClassVar[str] = "review.updated"
    #: the connection (``sources.<name>``)
    source: str
    #: the gate's project name
    project: str
    #: the review's id in that system (``Review.id``)
    review: str
    #: an approval command seen in the event (a comment command from someone
    #: allowed to give it), for this revision; None: the review's state decides
    approved_revision: str | None = None
    #: who gave that command
    approved_by: str | None = None


class RepoRepublish(Event):
    TYPE: ClassVar[str] = "repo.republish"
    repo: str
    reason: str | None = ""


class RepoRollback(Event):
    TYPE: ClassVar[str] = "repo.rollback"
    repo: str
    #: the generation whose content is published again, as a new generation
    to: int
    reason: str | None = ""


EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        ChangeProposed,
        ChangeApproved,
        ChangeEnqueue,
        ItemDequeue,
        ItemPromote,
        ItemPublish,
        ItemRetry,
        RefUpdated,
        ReviewUpdated,
        RepoRepublish,
        RepoRollback,
    )
}


def parse_event(
    event_type: str, payload: dict[str, Any], delivery: int = 0, requested_by: str | None = None
) -> Event:
    """The event a stored core delivery holds; :class:`Refused` if it holds none."""
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise Refused(f"unknown event type {event_type!r}")
    try:
        return cls.model_validate({**payload, "delivery": delivery, "requested_by": requested_by})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise Refused(f"malformed {event_type} event: {problems}") from None
