"""Pagure's messages, as a webhook or fedora-messaging carries them, turned into hints.

Pagure sends one message body everywhere (``pagure/lib/notify.py`` ``log``: the
same ``msg`` dict goes to fedora-messaging and to the project's web-hooks).  A
web-hook wraps it (``pagure/lib/tasks_services.py`` ``call_web_hooks``):
``{"topic", "msg", "timestamp", "msg_id", "i"}`` with ``msg.project_fullname``
and ``msg.pagure_instance`` added; fedora-messaging carries ``msg`` as the
message body, the topic ``<prefix>.pagure.<topic>`` and the id in the AMQP
properties.  Both are stored the same way (:func:`stored_payload`), so one
parser serves both.

Dispatch is on the declared topic, through one table (:data:`TOPICS`):

* ``pull-request.*`` that can change what a review says (new, updated, rebased,
  reopened, closed, a comment, a flag): a review hint (the gate re-reads the PR);
  a comment that is the approval command, from someone allowed, carries the
  PR's head at that moment (``commit_stop``) as the approved revision;
* ``git.receive`` on the project (not a fork): a push to a branch;
* topics known to change nothing the gate reads (tags, assignment...): nothing;
* anything else: unknown, stored and logged by the caller.

Payloads are hostile until shown otherwise: every field is type-checked and a
message that lacks what its topic needs is :class:`Malformed`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

#: the topics the driver stores (both intakes); the message bus is filtered on them
TOPIC_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(?:[.-][a-z0-9_]+)*$")


class Malformed(ValueError):
    """A message that lacks, or mistypes, what its topic needs."""


HintKind = Literal["review", "push", "nothing", "unknown"]


@dataclass(frozen=True)
class Hint:
    """What a message says happened, before anyone re-reads anything."""

    kind: HintKind
    #: the project's path on Pagure (``rpms/nova``); "" when unknown
    project: str = ""
    #: the PR id (review hints)
    pr: int | None = None
    #: the branch (push hints)
    branch: str = ""
    #: the head commit the approval command was given for (``commit_stop`` then)
    approved_revision: str | None = None
    approved_by: str | None = None
    #: why nothing is done, or what was not approved (logged on the delivery)
    note: str = ""


# -- topic table (pagure/lib/query.py and pagure/lib/git.py notify.log calls) -----------
#: PR topics after which the PR may say something new to the gate
_REVIEW = frozenset(
    {
        "pull-request.new",  # query.py new_pull_request
        "pull-request.updated",  # git.py diff_pull_request: new commits
        "pull-request.rebased",  # git.py diff_pull_request: new base
        "pull-request.reopened",  # query.py reopen_pull_request
        "pull-request.closed",  # query.py close_pull_request (merged or not)
        "pull-request.comment.added",  # query.py add_pull_request_comment
        "pull-request.flag.added",  # query.py add_pull_request_flag
        "pull-request.flag.updated",  # same, an existing uid
    }
)
#: topics that change nothing the gate reads (an edited comment is not a new command)
_NOTHING = frozenset(
    {
        "pull-request.comment.edited",
        "pull-request.comment.deleted",
        "pull-request.initial_comment.edited",
        "pull-request.assigned.added",
        "pull-request.assigned.reset",
        "pull-request.tag.added",
        "pull-request.tag.removed",
        "pull-request.edit",
        "git.branch.creation",
        "git.branch.deletion",
        "git.tag.creation",
        "git.tag.deletion",
    }
)
PUSH_TOPIC = "git.receive"
#: the topics a consumer subscribes to (``<prefix>.pagure.`` + these)
SUBSCRIBED = ("pull-request.#", "git.receive")


def stored_payload(
    topic: str, msg: dict[str, Any], msg_id: str, via: str, timestamp: Any = None
) -> dict[str, Any]:
    """The one shape both intakes store."""
    doc: dict[str, Any] = {"topic": topic, "msg": msg, "msg_id": msg_id, "via": via}
    if isinstance(timestamp, int | float):
        doc["timestamp"] = timestamp
    return doc


def _obj(doc: Any, key: str, where: str) -> dict[str, Any]:
    value = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(value, dict):
        raise Malformed(f"{where}.{key}: not an object")
    return value


def _str(doc: dict[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise Malformed(f"{where}.{key}: not a string")
    return value


def project_path(project: dict[str, Any], where: str) -> str:
    """A project's path (``Project.fullname``: ``namespace/name``, ``forks/u/...``).

    Older and slimmer messages (a datagrepper ``git.receive``) carry only
    ``namespace`` and ``name``."""
    fullname = project.get("fullname")
    if isinstance(fullname, str) and fullname:
        return fullname
    name = _str(project, "name", where)
    namespace = project.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise Malformed(f"{where}.namespace: not a string")
    return f"{namespace}/{name}" if namespace else name


def is_fork(project: dict[str, Any], where: str) -> bool:
    """``Project.fullname`` of a fork starts ``forks/<user>/``; its ``parent`` is set."""
    return project_path(project, where).startswith("forks/") or bool(project.get("parent"))


def pr_project(msg: dict[str, Any]) -> str:
    """The project a PR message is about (the PR's target, never the fork it comes from)."""
    pr = _obj(msg, "pullrequest", "msg")
    return project_path(_obj(pr, "project", "msg.pullrequest"), "msg.pullrequest.project")


def message_project(topic: str, msg: dict[str, Any]) -> str | None:
    """The project path a message is about, or None if it names none we understand."""
    try:
        if topic.startswith("pull-request."):
            return pr_project(msg)
        if topic.startswith("git."):
            return project_path(_obj(msg, "repo", "msg"), "msg.repo")
    except Malformed:
        return None
    return None


def new_comment(msg: dict[str, Any]) -> tuple[str, str] | None:
    """(author, text) of the comment a ``pull-request.comment.added`` message is about.

    The message carries the PR with all its comments and ``agent``, the user who
    commented (query.py ``add_pull_request_comment``); the new one is that user's
    latest.  Pagure's own notices (``notification: true``) are nobody's command."""
    agent = msg.get("agent")
    if not isinstance(agent, str) or not agent:
        return None
    pr = _obj(msg, "pullrequest", "msg")
    comments = pr.get("comments")
    if not isinstance(comments, list):
        return None
    latest: tuple[int, str] | None = None
    for comment in comments:
        if not isinstance(comment, dict) or comment.get("notification") is True:
            continue
        user = comment.get("user")
        cid = comment.get("id")
        text = comment.get("comment")
        if not (isinstance(user, dict) and user.get("name") == agent):
            continue
        if not isinstance(cid, int) or isinstance(cid, bool) or not isinstance(text, str):
            continue
        if latest is None or cid > latest[0]:
            latest = (cid, text)
    return (agent, latest[1]) if latest is not None else None


def is_command(text: str, command: str | None) -> bool:
    return command is not None and text.strip() == command.strip()


def command_in(topic: str, msg: dict[str, Any], command: str | None) -> str | None:
    """The user who gave the approval command in this message, if it is one."""
    if topic != "pull-request.comment.added" or command is None:
        return None
    try:
        said = new_comment(msg)
    except Malformed:
        return None
    if said is None or not is_command(said[1], command):
        return None
    return said[0]


def parse(payload: dict[str, Any], command: str | None) -> Hint:
    """The hint a stored payload holds (:class:`Malformed` if it cannot be read)."""
    topic = payload.get("topic")
    msg = payload.get("msg")
    if not isinstance(topic, str) or not TOPIC_PATTERN.match(topic):
        raise Malformed("topic: not a Pagure topic")
    if not isinstance(msg, dict):
        raise Malformed("msg: not an object")
    if topic in _REVIEW:
        return _review(topic, msg, payload, command)
    if topic == PUSH_TOPIC:
        return _push(msg)
    if topic in _NOTHING:
        return Hint("nothing", message_project(topic, msg) or "", note=f"{topic}: nothing to do")
    return Hint("unknown", message_project(topic, msg) or "", note=f"unknown topic {topic}")


def _review(topic: str, msg: dict[str, Any], payload: dict[str, Any], command: str | None) -> Hint:
    pr = _obj(msg, "pullrequest", "msg")
    number = pr.get("id")
    if not isinstance(number, int) or isinstance(number, bool) or number <= 0:
        raise Malformed("msg.pullrequest.id: not a PR number")
    project = pr_project(msg)
    by = command_in(topic, msg, command)
    if by is None:
        return Hint("review", project, number)
    head = pr.get("commit_stop")
    if not isinstance(head, str) or not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", head):
        return Hint("review", project, number, note=f"{command} by {by}: the PR has no head yet")
    authority = payload.get("authority")
    if not isinstance(authority, dict) or authority.get("user") != by:
        return Hint("review", project, number, note=f"{command} by {by}: authority not checked")
    if authority.get("may_approve") is not True:
        why = authority.get("why")
        return Hint(
            "review",
            project,
            number,
            note=f"{command} by {by} ignored: {why if isinstance(why, str) else 'not allowed'}",
        )
    return Hint("review", project, number, approved_revision=head, approved_by=by)


def _push(msg: dict[str, Any]) -> Hint:
    """``git.receive`` (pagure/hooks/default.py ``send_notifications``): ``branch`` is
    the short name (``refs/heads/`` stripped), ``repo`` the project pushed to."""
    repo = _obj(msg, "repo", "msg")
    path = project_path(repo, "msg.repo")
    if is_fork(repo, "msg.repo"):
        return Hint("nothing", path, note=f"push to the fork {path}: not the distgit")
    branch = _str(msg, "branch", "msg")
    return Hint("push", path, branch=branch.removeprefix("refs/heads/"))
