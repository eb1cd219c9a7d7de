"""GitLab webhook payloads, read into hints (pure: no I/O).

Dispatch is on the declared type, the ``X-Gitlab-Event`` header stored with the
delivery (``gitlab.merge_request_hook`` …), cross-checked with the payload's
``object_kind``.  Payloads are hostile input: every field is type-checked here
and nothing of them ever becomes a command option or a path; shas must look
like shas, ids like ids.

Shapes followed: https://docs.gitlab.com/ee/user/project/integrations/webhook_events.html
(#merge-request-events, #push-events, #comment-on-a-merge-request), checked
against real deliveries in ``tests/data/gitlab/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: a full commit id (sha1, or sha256 for sha256 repositories)
SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
#: what a push of a deleted or created branch has on the other side
ZERO = re.compile(r"^0+$")

MERGE_REQUEST_HOOK = "merge_request_hook"
PUSH_HOOK = "push_hook"
NOTE_HOOK = "note_hook"


def event_type(header: str) -> str:
    """``X-Gitlab-Event: Merge Request Hook`` -> ``merge_request_hook`` (what is stored)."""
    return re.sub(r"[^a-z0-9]+", "_", header.strip().lower()).strip("_")[:64] or "unknown"


class NotUnderstood(ValueError):
    """The payload is not the shape its declared type has."""


@dataclass(frozen=True)
class MergeRequestHint:
    #: the target project's path (``redhat/centos-stream/rpms/nova``)
    project_path: str
    iid: int
    #: open, reopen, update, approved, unapproved, approval, unapproval, close, merge
    action: str
    #: the merge request's head commit as the event saw it
    revision: str | None
    #: the previous head, only when code changed (``update`` with ``oldrev``)
    oldrev: str | None
    target_branch: str
    #: the source branch lives in another project (a fork)
    from_fork: bool
    labels: tuple[str, ...] = ()
    #: the attributes this event changed (the keys of ``changes``)
    changed: tuple[str, ...] = ()

    @property
    def new_revision(self) -> bool:
        """An ``update`` that changed the code (GitLab sends ``oldrev`` only then)."""
        return self.action == "update" and self.oldrev is not None


@dataclass(frozen=True)
class PushHint:
    project_path: str
    #: ``refs/heads/<branch>``
    ref: str
    before: str
    after: str
    #: the commit ``after`` names, from ``commits`` (which is not ordered head-last,
    #: and holds at most 20): None when it is not among them
    head: dict[str, Any] | None

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") else None

    @property
    def deleted(self) -> bool:
        return bool(ZERO.match(self.after))


@dataclass(frozen=True)
class NoteHint:
    project_path: str
    #: the merge request commented on
    iid: int
    note: str
    #: create, or update (an edit; GitLab 16.11+)
    action: str
    author: str
    author_id: int | None
    #: the merge request's head when the comment was made
    revision: str | None
    #: a note GitLab wrote itself ("added 1 commit")
    system: bool


def _obj(doc: Any, key: str) -> dict[str, Any]:
    value = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(value, dict):
        raise NotUnderstood(f"{key}: not an object")
    return value


def _str(doc: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = doc.get(key)
    if isinstance(value, str) and value:
        return value
    if required:
        raise NotUnderstood(f"{key}: not a string")
    return None


def _int(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise NotUnderstood(f"{key}: not a positive integer")
    return value


def _sha(value: Any) -> str | None:
    return value if isinstance(value, str) and SHA.match(value) else None


def _kind(payload: dict[str, Any], expected: tuple[str, ...]) -> None:
    kind = payload.get("object_kind")
    if kind not in expected:
        raise NotUnderstood(f"object_kind {str(kind)[:40]!r} is not {' or '.join(expected)}")


def _project_path(payload: dict[str, Any]) -> str:
    path = _str(_obj(payload, "project"), "path_with_namespace")
    assert path is not None
    return path


def _labels(doc: dict[str, Any]) -> tuple[str, ...]:
    raw = doc.get("labels")
    if not isinstance(raw, list):
        return ()
    titles = (label.get("title") if isinstance(label, dict) else label for label in raw)
    return tuple(t for t in titles if isinstance(t, str))


def _keys(doc: Any) -> tuple[str, ...]:
    return tuple(k for k in doc if isinstance(k, str)) if isinstance(doc, dict) else ()


def merge_request(payload: dict[str, Any]) -> MergeRequestHint:
    """A ``Merge Request Hook`` delivery."""
    _kind(payload, ("merge_request",))
    attrs = _obj(payload, "object_attributes")
    last = attrs.get("last_commit")
    source_project = attrs.get("source_project_id")
    target_project = attrs.get("target_project_id")
    changes = payload.get("changes")
    return MergeRequestHint(
        project_path=_project_path(payload),
        iid=_int(attrs, "iid"),
        # older instances (and GitLab's "Test" button) may send no action
        action=_str(attrs, "action", required=False) or "update",
        revision=_sha(last.get("id")) if isinstance(last, dict) else None,
        oldrev=_sha(attrs.get("oldrev")),
        target_branch=_str(attrs, "target_branch") or "",
        from_fork=source_project != target_project,
        labels=_labels(payload) or _labels(attrs),
        changed=_keys(changes),
    )


def push(payload: dict[str, Any]) -> PushHint:
    """A ``Push Hook`` delivery."""
    _kind(payload, ("push",))
    after = _str(payload, "after") or ""
    before = _str(payload, "before") or ""
    if not (_sha(after) or ZERO.match(after)) or not (_sha(before) or ZERO.match(before)):
        raise NotUnderstood("before/after: not commit ids")
    commits = payload.get("commits")
    head = None
    if isinstance(commits, list):
        # GitLab lists the newest commits, newest first for a fast-forward push but in
        # no order to rely on: the head is the one whose id is ``after``
        head = next((c for c in commits if isinstance(c, dict) and c.get("id") == after), None)
    return PushHint(
        project_path=_project_path(payload),
        ref=_str(payload, "ref") or "",
        before=before,
        after=after,
        head=head,
    )


def note(payload: dict[str, Any]) -> NoteHint | None:
    """A ``Note Hook`` delivery on a merge request; None for other notes."""
    _kind(payload, ("note",))
    attrs = _obj(payload, "object_attributes")
    if attrs.get("noteable_type") != "MergeRequest":
        return None
    mr = _obj(payload, "merge_request")
    user = payload.get("user") if isinstance(payload.get("user"), dict) else {}
    assert isinstance(user, dict)
    last = mr.get("last_commit")
    author_id = user.get("id")
    return NoteHint(
        project_path=_project_path(payload),
        iid=_int(mr, "iid"),
        note=_str(attrs, "note", required=False) or "",
        action=_str(attrs, "action", required=False) or "create",
        author=_str(user, "username", required=False) or "",
        author_id=author_id if type(author_id) is int else None,
        revision=_sha(last.get("id")) if isinstance(last, dict) else None,
        system=attrs.get("system") is True,
    )


def is_command(text: str, command: str) -> bool:
    """Whether a note gives ``command``: its first non-empty line is the command
    (optionally followed by words), as slash commands are typed."""
    for line in text.splitlines():
        if line.strip():
            words = line.split()
            return bool(words) and words[0] == command
    return False
