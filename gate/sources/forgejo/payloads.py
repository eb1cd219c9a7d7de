"""Forgejo webhook deliveries into the gate's events (hints: the gate re-reads).

Dispatch is on ``X-Forgejo-Event-Type`` (stored as ``forgejo.<type>``; the
types are modules/webhook/type.go's ``HookEventType``), then the payload's
``action`` (modules/structs/hook.go ``HookIssueAction``).  Who sends what is
services/webhook/notifier.go; shapes in the captures under tests/data/forgejo/.
Where Forgejo and GitHub differ:

* a new head is its own type, ``pull_request_sync``, action ``synchronized``
  (GitHub: ``pull_request`` / ``synchronize``);
* labels are ``pull_request_label`` / ``label_updated``, ``label_cleared``;
* reviews are one type per verdict, ``pull_request_review_approved`` /
  ``_rejected`` / ``_comment``, action ``reviewed``; a dismissal sends nothing
  (the gate re-reads before it merges);
* a comment on a pull request is ``pull_request_comment`` and carries the
  pull request, head included, and ``repository.permissions`` computed for
  the commenter (``CreateIssueComment``: ``GetUserRepoPermission(doer)``), so
  a comment command is bound to the head it was written on and checked
  against the commenter's permission, all inside the signed payload;
* a push payload has no ``deleted`` flag (a deleted branch is a ``delete``
  event); an all-zero ``after`` is treated as a deletion all the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gate.events import Event, RefUpdated, ReviewUpdated
from gate.sources.pulls import fields
from gate.sources.pulls.approval import ApprovalConfig, first_line_is
from gate.sources.pulls.fields import dig, obj, text

log = logging.getLogger(__name__)

ProjectFor = Callable[[str, str | None], str | None]

#: event type -> the actions that may change what the gate does with the PR
PULL_EVENTS: dict[str, frozenset[str]] = {
    "pull_request": frozenset({"opened", "reopened", "closed", "edited"}),
    "pull_request_sync": frozenset({"synchronized"}),
    "pull_request_label": frozenset({"label_updated", "label_cleared"}),
    "pull_request_review_approved": frozenset({"reviewed"}),
    "pull_request_review_rejected": frozenset({"reviewed"}),
}
ZERO = "0" * 40


def parse(
    source: str,
    event_type: str,
    payload: dict[str, Any],
    project_for: ProjectFor,
    approval: ApprovalConfig,
) -> Event | None:
    event = event_type.removeprefix("forgejo.")
    if event in PULL_EVENTS:
        if text(payload, "action") not in PULL_EVENTS[event]:
            return None
        return _review(source, payload, project_for)
    if event == "pull_request_comment":
        return _comment(source, payload, project_for, approval)
    if event == "push":
        return _push(source, payload, project_for)
    log.info("%s: %s deliveries need nothing from the gate", source, event[:50])
    return None


def _review(
    source: str,
    payload: dict[str, Any],
    project_for: ProjectFor,
    approved_revision: str | None = None,
    approved_by: str | None = None,
) -> Event | None:
    pr = obj(payload, "pull_request")
    number = fields.number(pr, "number")
    repo = text(obj(payload, "repository"), "full_name")
    project = project_for(repo, text(obj(pr, "base"), "ref"))
    if project is None:
        changed = dig(payload, "changes", "ref", "from")  # the base branch was changed
        project = project_for(repo, changed) if isinstance(changed, str) else None
    if project is None:
        log.info("%s: %s#%s is not a pull request to a project's branch", source, repo, number)
        return None
    return ReviewUpdated(
        source=source,
        project=project,
        review=str(number),
        approved_revision=approved_revision,
        approved_by=approved_by,
    )


def _comment(
    source: str, payload: dict[str, Any], project_for: ProjectFor, approval: ApprovalConfig
) -> Event | None:
    if approval.by != "command" or payload.get("action") != "created":
        return None
    comment = obj(payload, "comment")
    if not first_line_is(text(comment, "body"), approval.command):
        return None
    who = text(obj(comment, "user"), "login")
    rights = dig(payload, "repository", "permissions")
    rights = rights if isinstance(rights, dict) else {}
    allowed = rights.get("admin") is True or (
        approval.permission == "write" and rights.get("push") is True
    )
    if not allowed:
        log.info(
            "%s: %r from %s, who lacks %s permission",
            source,
            approval.command,
            who,
            approval.permission,
        )
        return None
    head = text(obj(obj(payload, "pull_request"), "head"), "sha")
    return _review(source, payload, project_for, approved_revision=head, approved_by=who)


def _push(source: str, payload: dict[str, Any], project_for: ProjectFor) -> Event | None:
    ref = text(payload, "ref")
    if not ref.startswith("refs/heads/"):
        return None  # a tag
    after = text(payload, "after")
    if after.strip("0") == "":
        log.warning("%s: branch %s was deleted", source, ref)
        return None
    repo = text(obj(payload, "repository"), "full_name")
    project = project_for(repo, ref.removeprefix("refs/heads/"))
    if project is None:
        return None
    before = payload.get("before")
    return RefUpdated(project=project, old=before if isinstance(before, str) else None, new=after)
