"""GitHub webhook deliveries into the gate's events (hints: the gate re-reads).

Dispatch is on ``X-GitHub-Event`` (stored as ``github.<event>``), then the
payload's ``action``; shapes from
https://docs.github.com/en/webhooks/webhook-events-and-payloads and the
captures under tests/data/github/.  A payload is data from outside: a field
that is missing or of the wrong type makes the delivery :class:`Refused`,
never a crash.

* ``pull_request``: ``opened``, ``reopened``, ``synchronize`` (new head),
  ``closed`` (merged or not), ``labeled``/``unlabeled`` (the label rule),
  ``edited`` (the base branch may have changed), ``ready_for_review``,
  ``converted_to_draft``: the pull request changed; the gate re-reads it.
* ``pull_request_review``: ``submitted``, ``edited``, ``dismissed``.
* ``push``: to ``refs/heads/<branch>`` of a project's branch, not a deletion:
  a direct push (post item).  Tags and other branches: nothing.
* ``ping`` (the webhook was created), ``issue_comment`` (GitHub approves by
  reviews or labels here, see ``config``) and anything else: nothing, logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gate.events import Event, RefUpdated, ReviewUpdated
from gate.sources.pulls import fields
from gate.sources.pulls.fields import dig, obj, text

log = logging.getLogger(__name__)

#: (owner/repo, target branch or None) -> the gate project, or None
ProjectFor = Callable[[str, str | None], str | None]

PULL_ACTIONS = frozenset(
    {
        "opened",
        "reopened",
        "synchronize",
        "closed",
        "labeled",
        "unlabeled",
        "edited",
        "ready_for_review",
        "converted_to_draft",
    }
)
REVIEW_ACTIONS = frozenset({"submitted", "edited", "dismissed"})


def parse(
    source: str, event_type: str, payload: dict[str, Any], project_for: ProjectFor
) -> Event | None:
    event = event_type.removeprefix("github.")
    if event in ("pull_request", "pull_request_review"):
        return _pull_request(source, event, payload, project_for)
    if event == "push":
        return _push(source, payload, project_for)
    if event == "ping":
        log.info(
            "%s: ping from GitHub (hook %s): %s", source, payload.get("hook_id"), payload.get("zen")
        )
        return None
    log.info("%s: %s deliveries need nothing from the gate", source, event[:50])
    return None


def _pull_request(
    source: str, event: str, payload: dict[str, Any], project_for: ProjectFor
) -> Event | None:
    action = text(payload, "action")
    wanted = PULL_ACTIONS if event == "pull_request" else REVIEW_ACTIONS
    if action not in wanted:
        return None
    pr = obj(payload, "pull_request")
    number = fields.number(pr, "number")
    base = obj(pr, "base")
    repo = text(obj(payload, "repository"), "full_name")
    project = project_for(repo, text(base, "ref"))
    if project is None and event == "pull_request" and action == "edited":
        # the base branch changed: the project is the one of the branch it left
        changed = dig(payload, "changes", "base", "ref", "from")
        project = project_for(repo, changed) if isinstance(changed, str) else None
    if project is None:
        log.info("%s: %s#%s is not a pull request to a project's branch", source, repo, number)
        return None
    return ReviewUpdated(source=source, project=project, review=str(number))


def _push(source: str, payload: dict[str, Any], project_for: ProjectFor) -> Event | None:
    ref = text(payload, "ref")
    if not ref.startswith("refs/heads/"):
        return None  # a tag
    if payload.get("deleted") is True:
        log.warning("%s: branch %s was deleted", source, ref)
        return None
    repo = text(obj(payload, "repository"), "full_name")
    project = project_for(repo, ref.removeprefix("refs/heads/"))
    if project is None:
        return None
    before, after = payload.get("before"), text(payload, "after")
    return RefUpdated(project=project, old=before if isinstance(before, str) else None, new=after)
