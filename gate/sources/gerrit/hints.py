"""Gerrit's events, read as hints: which change or branch to look at again.

Gerrit sends the same event in two shapes (Documentation/cmd-stream-events.html
and json.html): ``gerrit stream-events`` writes ``"project": "nova"`` and
``"changeKey": {"id": ...}``, the webhooks plugin (plugins/webhooks, which
serialises the same event classes with a plain Gson) writes
``"project": {"name": "nova"}`` and ``"changeKey": {"key": ...}``; change and
patch set numbers are integers in Gerrit 2.14 and later and strings before
(``"number": "48726"``).  Both shapes of both are read here; anything else
in a field the gate uses makes the event :class:`Malformed`.

Nothing an event says is acted on: the gate re-reads the change through the
REST API.  Payload values never become paths, options or URLs unchecked: a
project is looked up among the configured ones, numbers must be positive
integers, revisions 40 hexadecimal digits.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

#: a full commit id (SHA-1; Gerrit has no SHA-256 repositories yet)
SHA = re.compile(r"^[0-9a-f]{40}$")
#: a change's patch set ref: refs/changes/<last two digits>/<change>/<patch set>
#: (Documentation/access-control.html#references_special)
PATCHSET_REF = re.compile(r"^refs/changes/\d\d/(\d+)/(\d+)$")

#: events about a change whose state the gate may act on
#: (Documentation/cmd-stream-events.html#events)
CHANGE_EVENTS = frozenset(
    {
        "comment-added",  # votes changed: approval given or withdrawn
        "patchset-created",  # a new revision: the old one leaves the queue
        "change-abandoned",
        "change-restored",
        "change-merged",  # merged by someone else: the item is gone
        "change-deleted",
        "vote-deleted",  # an approval withdrawn
        "wip-state-changed",  # work in progress cannot be submitted
        "private-state-changed",
        "topic-changed",
        "hashtags-changed",
        "reviewer-added",
        "reviewer-deleted",
        "assignee-changed",
    }
)

#: change events that cannot change what the gate does (nothing to re-read)
QUIET_CHANGE_EVENTS = frozenset(
    {
        "topic-changed",
        "hashtags-changed",
        "reviewer-added",
        "reviewer-deleted",
        "assignee-changed",
        "private-state-changed",
    }
)

#: events of the replication plugins (plugins/replication, plugins/pull-replication)
#: and of the server that say nothing about a change or a branch
IGNORED_EVENTS = frozenset(
    {
        "ref-replicated",
        "ref-replication-scheduled",
        "ref-replication-done",
        "fetch-ref-replicated",
        "fetch-ref-replication-scheduled",
        "fetch-ref-replication-done",
        "project-deleted-replicated",
        "project-created",
        "project-head-updated",
        "dropped-output",
        "batch-ref-updated",  # Gerrit 3.9+ also sends one ref-updated per ref
    }
)

#: refs whose updates are Gerrit's own bookkeeping, never a push to a branch:
#: NoteDb change metadata, change-number sequences, notes (review notes,
#: cache-automerge), the project config, users, drafts and robot comments
IGNORED_REF_PREFIXES = (
    "refs/sequences/",
    "refs/notes/",
    "refs/meta/",
    "refs/users/",
    "refs/draft-comments/",
    "refs/starred-changes/",
    "refs/cache-automerge/",
    "refs/groups/",
    "refs/tags/",
)


class Malformed(ValueError):
    """The event lacks a field the gate needs, or has it in a shape Gerrit never sends."""


@dataclass(frozen=True)
class Hint:
    """What an event points at: a change (``change`` set) or a branch (``branch_ref`` set)."""

    type: str
    #: the project's name in Gerrit
    project: str
    change: int | None = None
    patchset: int | None = None
    revision: str | None = None
    #: the patch set's kind (REWORK, TRIVIAL_REBASE, NO_CODE_CHANGE, ...)
    kind: str | None = None
    #: the change's target branch, without refs/heads/
    branch: str | None = None
    #: ref-updated: the full ref name and the old and new commits
    ref: str | None = None
    old: str | None = None
    new: str | None = None


def event_type(payload: dict[str, Any]) -> str:
    kind = payload.get("type")
    if not isinstance(kind, str) or not re.fullmatch(r"[a-z][a-z0-9-]{0,63}", kind):
        raise Malformed("no event type")
    return kind


def project_name(value: Any) -> str:
    """``"nova"`` (stream-events) or ``{"name": "nova"}`` (webhooks plugin)."""
    if isinstance(value, dict):
        value = value.get("name")
    if not isinstance(value, str) or not value or len(value) > 255 or "\x00" in value:
        raise Malformed("no project name")
    return value


def number(value: Any, what: str) -> int:
    """An int (Gerrit >= 2.14) or a string of digits (older Gerrit)."""
    if isinstance(value, bool):
        raise Malformed(f"{what} is not a number")
    if isinstance(value, int):
        result = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 12:
        result = int(value)
    else:
        raise Malformed(f"{what} is not a number")
    if result <= 0:
        raise Malformed(f"{what} is not a positive number")
    return result


def sha(value: Any, what: str) -> str:
    if not isinstance(value, str) or not SHA.match(value):
        raise Malformed(f"{what} is not a commit id")
    return value


def branch_ref(name: Any) -> str:
    """A ref-updated ``refName``; Gerrit before 2.9 sent a branch's short name."""
    if not isinstance(name, str) or not name or len(name) > 1024 or "\x00" in name:
        raise Malformed("no ref name")
    return name if name.startswith("refs/") else f"refs/heads/{name}"


def parse(payload: dict[str, Any]) -> Hint:
    """The hint in one event; :class:`Malformed` if a field the gate needs is not usable."""
    kind = event_type(payload)
    if kind == "ref-updated":
        update = payload.get("refUpdate")
        if not isinstance(update, dict):
            raise Malformed("ref-updated without refUpdate")
        return Hint(
            type=kind,
            project=project_name(update.get("project", payload.get("project"))),
            ref=branch_ref(update.get("refName")),
            old=sha(update.get("oldRev"), "oldRev"),
            new=sha(update.get("newRev"), "newRev"),
        )
    change = payload.get("change")
    if not isinstance(change, dict):
        raise Malformed(f"{kind} without change")
    patchset = payload.get("patchSet")
    ps_number = revision = ps_kind = None
    if isinstance(patchset, dict):
        ps_number = number(patchset.get("number"), "patchSet.number")
        revision = sha(patchset.get("revision"), "patchSet.revision")
        raw_kind = patchset.get("kind")
        ps_kind = raw_kind if isinstance(raw_kind, str) and raw_kind.isupper() else None
    branch = change.get("branch")
    return Hint(
        type=kind,
        project=project_name(change.get("project", payload.get("project"))),
        change=number(change.get("number"), "change.number"),
        patchset=ps_number,
        revision=revision,
        kind=ps_kind,
        branch=branch if isinstance(branch, str) and branch else None,
    )


def patchset_of_ref(ref: str) -> tuple[int, int] | None:
    """(change, patch set) of ``refs/changes/NN/N/P``; None for any other ref."""
    match = PATCHSET_REF.match(ref)
    return (int(match.group(1)), int(match.group(2))) if match else None


def is_bookkeeping(ref: str) -> bool:
    """A ref Gerrit updates for itself: change meta, sequences, notes, config, users."""
    if ref.startswith("refs/changes/"):
        return patchset_of_ref(ref) is None  # .../meta, robot-comments, edits
    return ref.startswith(IGNORED_REF_PREFIXES)


def delivery_key(payload: dict[str, Any]) -> str:
    """One key for one Gerrit event, whatever way and however often it arrives.

    Gerrit gives events no id.  The webhooks plugin retries a delivery it
    thinks failed, stream-events and the webhook may both be configured, and
    a reconnect may replay: the key is built from what identifies the event
    in either shape (type, creation time, project, change, patch set, ref
    update, author and text of a comment), so both shapes of one event share
    it and two events differ.
    """
    kind = payload.get("type")
    parts: list[Any] = [kind, payload.get("eventCreatedOn")]
    try:
        hint = parse(payload)
        parts += [hint.project, hint.change, hint.patchset, hint.ref, hint.old, hint.new]
    except Malformed:
        parts.append(json.dumps(payload, sort_keys=True, default=str))
    for field in ("author", "uploader", "abandoner", "restorer", "submitter", "changer"):
        account = payload.get(field)
        if isinstance(account, dict):
            parts.append([field, account.get("username"), account.get("email")])
    for field in ("comment", "reason", "newRev"):
        if isinstance(payload.get(field), str):
            parts.append([field, payload[field]])
    approvals = payload.get("approvals")
    if isinstance(approvals, list):
        parts.append(
            sorted(
                f"{a.get('type')}={a.get('value')}/{a.get('oldValue')}"
                for a in approvals
                if isinstance(a, dict)
            )
        )
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()
    return f"gerrit:{digest}"
