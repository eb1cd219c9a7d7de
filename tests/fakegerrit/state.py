"""The fake Gerrit's state: projects as real bare git repositories, changes, votes.

What Gerrit does on its own, this does too, each with the Gerrit source or
document it follows:

* a push to ``refs/for/<branch>`` becomes a change or a new patch set of the
  open change with the same ``Change-Id:`` footer (Documentation/user-upload.html,
  java/com/google/gerrit/server/git/receive/ReceiveCommits.java), stored at
  ``refs/changes/<NN>/<change>/<patch set>``, with its kind computed as
  ChangeKindCacheImpl does (REWORK, TRIVIAL_REBASE, NO_CODE_CHANGE, NO_CHANGE);
* votes as PostReview stores them (one per account, label and patch set), and
  label functions as Documentation/config-labels.html describes them
  (MaxWithBlock: the highest value needed, the lowest blocks);
* submit as Submit.java and MergeOp do: refused unless the change is new, the
  revision current and its labels satisfied; merged by the project's submit type
  (Documentation/config-project-config.html#submit-type), a path conflict refused;
* the events each of these emits (Documentation/cmd-stream-events.html), in
  stream-events' shape; ``tests.fakegerrit.server`` converts them to the
  webhooks plugin's shape when it posts them.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Gerrit Code Review",
    "GIT_AUTHOR_EMAIL": "gerrit@example.org",
    "GIT_COMMITTER_NAME": "Gerrit Code Review",
    "GIT_COMMITTER_EMAIL": "gerrit@example.org",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}

CHANGE_ID = re.compile(r"^Change-Id: (I[0-9a-f]{40})\s*$", re.MULTILINE)


class Conflict(Exception):
    """Gerrit's ResourceConflictException: answered 409 with this text."""


class BadRequest(Exception):
    """BadRequestException: 400."""


class Forbidden(Exception):
    """AuthException: 403."""


class NotFound(Exception):
    """ResourceNotFoundException: 404 "Not found: <id>"."""


def git(repo: Path, *args: str, input: str | None = None) -> str:
    out = subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**os.environ, **GIT_ENV},
        check=True,
        capture_output=True,
        text=True,
        input=input,
    )
    return out.stdout.strip()


def _patch_id(repo: Path, old: str, new: str) -> str:
    diff = git(repo, "diff", "--binary", old, new)
    return git(repo, "patch-id", "--stable", input=diff + "\n").split(" ")[0]


def gerrit_time(t: float) -> str:
    """Timestamps as Gerrit writes them (rest-api.html#timestamp): UTC, nanoseconds."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S.%f") + "000"


@dataclass
class Account:
    id: int
    username: str
    name: str
    email: str
    http_password: str = ""
    #: labels this account may vote, with the range it may use
    #: (Documentation/access-control.html#category_review_labels)
    may_vote: dict[str, tuple[int, int]] = field(default_factory=dict)
    may_submit: bool = False
    may_stream_events: bool = False

    def attribute(self) -> dict[str, Any]:
        """The account attribute of stream-events (Documentation/json.html#account)."""
        return {"name": self.name, "email": self.email, "username": self.username}

    def info(self) -> dict[str, Any]:
        """AccountInfo (rest-api-accounts.html#account-info) with DETAILED_ACCOUNTS."""
        return {
            "_account_id": self.id,
            "name": self.name,
            "email": self.email,
            "username": self.username,
        }


@dataclass(frozen=True)
class Label:
    """A label with the MaxWithBlock function (config-labels.html#label_function)."""

    name: str
    values: tuple[int, ...]

    @property
    def lowest(self) -> int:
        return min(self.values)

    @property
    def highest(self) -> int:
        return max(self.values)


#: All-Projects' Code-Review, Verified, and OpenStack's Workflow
DEFAULT_LABELS = (
    Label("Code-Review", (-2, -1, 0, 1, 2)),
    Label("Verified", (-1, 0, 1)),
    Label("Workflow", (-1, 0, 1)),
)


@dataclass
class PatchSet:
    number: int
    revision: str
    parent: str
    uploader: Account
    kind: str
    created: float

    def ref(self, change: int) -> str:
        return f"refs/changes/{change % 100:02d}/{change}/{self.number}"


@dataclass
class Change:
    number: int
    project: str
    branch: str
    change_id: str
    owner: Account
    subject: str
    message: str
    created: float
    updated: float
    patchsets: list[PatchSet] = field(default_factory=list)
    status: str = "NEW"
    work_in_progress: bool = False
    #: (patch set, label, account id) -> value
    votes: dict[tuple[int, str, int], int] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    submitted: float | None = None

    @property
    def current(self) -> PatchSet:
        return self.patchsets[-1]


@dataclass
class Project:
    name: str
    repo: Path
    #: Documentation/config-project-config.html#submit-type
    submit_type: str = "MERGE_IF_NECESSARY"


SUBMIT_TYPES = ("MERGE_IF_NECESSARY", "MERGE_ALWAYS", "FAST_FORWARD_ONLY")


class GerritState:
    """Projects, accounts and changes; every mutation emits Gerrit's events."""

    def __init__(self, url: str = "http://gerrit.invalid", labels=DEFAULT_LABELS) -> None:  # type: ignore[no-untyped-def]
        self.url = url
        self.labels = {label.name: label for label in labels}
        self.projects: dict[str, Project] = {}
        self.accounts: dict[str, Account] = {}
        self.changes: dict[int, Change] = {}
        self.next_change = 1
        #: called with each event, in stream-events' shape
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.events: list[dict[str, Any]] = []
        self.heads: dict[tuple[str, str], str] = {}
        #: the clock events and timestamps use (tests may move it)
        self.clock: Callable[[], float] = time.time
        #: access rights on refs for direct pushes over HTTP, by username
        #: (Documentation/access-control.html; see tests/fakegerrit/githttp.py)
        self.grants: dict[str, list[dict[str, Any]]] = {}

    # -- set-up ------------------------------------------------------------

    def add_account(self, account: Account) -> Account:
        self.accounts[account.username] = account
        return account

    def add_project(self, name: str, repo: Path, submit_type: str = "MERGE_IF_NECESSARY") -> None:
        if submit_type not in SUBMIT_TYPES:
            raise ValueError(f"the fake does not implement submit type {submit_type}")
        self.projects[name] = Project(name, repo, submit_type)
        for line in git(
            repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/"
        ).splitlines():
            ref, sha = line.split()
            self.heads[(name, ref)] = sha

    def account(self, username: str) -> Account:
        return self.accounts[username]

    def grant(self, username: str, permission: str, ref: str, *, force: bool = False) -> None:
        """``[access "<ref>"] <permission> = [+force] group <the account's group>`` in
        the projects' project.config: ``create``, ``push``, ``delete``, ``pushMerge``,
        ``forgeAuthor``, ``forgeCommitter`` (Documentation/access-control.html)."""
        self.grants.setdefault(username, []).append(
            {"permission": permission, "ref": ref, "force": force}
        )

    def access(self, account: Account) -> dict[str, Any]:
        """What ``account`` may do by direct push: its grants, and All-Projects'
        ``forgeAuthor`` on ``refs/*`` for Registered Users."""
        registered = [{"permission": "forgeAuthor", "ref": "refs/*", "force": False}]
        return {
            "user": account.username,
            "emails": [account.email],
            "grants": registered + self.grants.get(account.username, []),
        }

    # -- events --------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> None:
        event["eventCreatedOn"] = int(self.clock())
        self.events.append(event)
        for listener in list(self.listeners):
            listener(event)

    def _change_attribute(self, change: Change) -> dict[str, Any]:
        """Documentation/json.html#change."""
        return {
            "project": change.project,
            "branch": change.branch,
            "id": change.change_id,
            "number": change.number,
            "subject": change.subject,
            "owner": change.owner.attribute(),
            "url": f"{self.url}/c/{change.project}/+/{change.number}",
            "commitMessage": change.message,
            "createdOn": int(change.created),
            "status": change.status,
            **({"wip": True} if change.work_in_progress else {}),
        }

    def _patchset_attribute(self, change: Change, ps: PatchSet) -> dict[str, Any]:
        """Documentation/json.html#patchSet."""
        return {
            "number": ps.number,
            "revision": ps.revision,
            "parents": [ps.parent],
            "ref": ps.ref(change.number),
            "uploader": ps.uploader.attribute(),
            "createdOn": int(ps.created),
            "author": ps.uploader.attribute(),
            "kind": ps.kind,
        }

    def _change_event(self, kind: str, change: Change, ps: PatchSet, **extra: Any) -> None:
        """A change event as StreamEventsApiListener builds it (PatchSetEvent + ChangeEvent)."""
        self.emit(
            {
                **extra,
                "patchSet": self._patchset_attribute(change, ps),
                "change": self._change_attribute(change),
                "project": change.project,
                "refName": f"refs/heads/{change.branch}",
                "changeKey": {"id": change.change_id},
                "type": kind,
            }
        )

    def _ref_updated(self, project: str, ref: str, old: str, new: str, who: Account) -> None:
        """RefUpdatedEvent (Documentation/cmd-stream-events.html#_ref_updated)."""
        self.emit(
            {
                "submitter": who.attribute(),
                "refUpdate": {"oldRev": old, "newRev": new, "refName": ref, "project": project},
                "type": "ref-updated",
            }
        )

    def _meta_updated(self, change: Change, who: Account) -> None:
        # NoteDb: every change update moves refs/changes/NN/N/meta, and Gerrit
        # announces it like any ref (the events the gate must ignore); the fake
        # keeps no NoteDb, so the shas are the hash of a counter
        old = hashlib.sha1(f"{change.number}:{len(self.events)}".encode()).hexdigest()
        new = hashlib.sha1(f"{change.number}:{len(self.events) + 1}".encode()).hexdigest()
        ref = f"refs/changes/{change.number % 100:02d}/{change.number}/meta"
        self._ref_updated(change.project, ref, old, new, who)

    # -- uploads (ReceiveCommits) --------------------------------------------

    def receive(self, project: str, uploader: Account) -> list[tuple[int, int]]:
        """Process what was pushed to the project's bare repository.

        ``refs/for/<branch>`` pushes become changes or patch sets (and the
        magic ref is removed: Gerrit never stores it); a moved ``refs/heads/*``
        is a direct push, announced by ref-updated.  Returns (change, patch set)
        of each upload.
        """
        repo = self.projects[project].repo
        created = []
        refs = git(
            repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/for/", "refs/heads/"
        )
        for line in refs.splitlines():
            ref, sha = line.split()
            if ref.startswith("refs/for/"):
                branch = ref.removeprefix("refs/for/")
                created.append(self._upload(project, branch, sha, uploader))
                git(repo, "update-ref", "-d", ref)
            elif self.heads.get((project, ref)) != sha:
                old = self.heads.get((project, ref), "0" * 40)
                self.heads[(project, ref)] = sha
                self._ref_updated(project, ref, old, sha, uploader)
        present = {line.split()[0] for line in refs.splitlines()}
        for key in [k for k in self.heads if k[0] == project and k[1] not in present]:
            # a deleted branch: ref-updated with newRev 0000
            self._ref_updated(project, key[1], self.heads.pop(key), "0" * 40, uploader)
        return created

    def _upload(self, project: str, branch: str, sha: str, uploader: Account) -> tuple[int, int]:
        repo = self.projects[project].repo
        message = git(repo, "log", "-1", "--format=%B", sha) + "\n"
        found = CHANGE_ID.findall(message)
        if not found:
            # ReceiveCommits: "missing Change-Id in message footer"
            raise BadRequest("missing Change-Id in message footer")
        change_id = found[-1]
        parent = git(repo, "rev-parse", f"{sha}^")
        now = self.clock()
        existing = next(
            (
                c
                for c in self.changes.values()
                if c.project == project
                and c.branch == branch
                and c.change_id == change_id
                and c.status == "NEW"
            ),
            None,
        )
        if existing is None:
            number = self.next_change
            self.next_change += 1
            change = Change(
                number=number,
                project=project,
                branch=branch,
                change_id=change_id,
                owner=uploader,
                subject=message.splitlines()[0],
                message=message,
                created=now,
                updated=now,
            )
            self.changes[number] = change
            kind = "REWORK"
        else:
            change = existing
            if change.current.revision == sha:
                raise Conflict("no new changes")
            kind = self._kind(repo, change.current, sha, parent)
            change.subject, change.message, change.updated = message.splitlines()[0], message, now
        ps = PatchSet(len(change.patchsets) + 1, sha, parent, uploader, kind, now)
        change.patchsets.append(ps)
        self._copy_votes(change, ps)
        git(repo, "update-ref", ps.ref(change.number), sha)
        change.messages.append(self._message(uploader, f"Uploaded patch set {ps.number}.", ps))
        self._ref_updated(project, ps.ref(change.number), "0" * 40, sha, uploader)
        self._meta_updated(change, uploader)
        self._change_event("patchset-created", change, ps, uploader=uploader.attribute())
        return change.number, ps.number

    def _kind(self, repo: Path, prior: PatchSet, sha: str, parent: str) -> str:
        """ChangeKindCacheImpl.getChangeKindInternal, for single-parent commits."""
        tree = git(repo, "rev-parse", f"{sha}^{{tree}}")
        prior_tree = git(repo, "rev-parse", f"{prior.revision}^{{tree}}")
        same_message = git(repo, "log", "-1", "--format=%B", sha) == git(
            repo, "log", "-1", "--format=%B", prior.revision
        )
        if tree == prior_tree:
            if parent == prior.parent:
                return "NO_CHANGE" if same_message else "NO_CODE_CHANGE"
            return "REWORK" if not same_message else "TRIVIAL_REBASE"
        if parent == prior.parent or not same_message:
            return "REWORK"
        # a trivial rebase: the prior patch set's diff, replayed on the new parent, is
        # this one's (Gerrit cherry-picks and compares trees; the same patch-id is that
        # for a replay without conflicts)
        return (
            "TRIVIAL_REBASE"
            if _patch_id(repo, prior.parent, prior.revision) == _patch_id(repo, parent, sha)
            else "REWORK"
        )

    def _copy_votes(self, change: Change, ps: PatchSet) -> None:
        """ApprovalCopier with All-Projects' defaults: Code-Review's extremes and
        Workflow carried on a trivial rebase or no code change (copyCondition
        ``changekind:TRIVIAL_REBASE OR changekind:NO_CODE_CHANGE``); Verified never."""
        if ps.kind not in ("TRIVIAL_REBASE", "NO_CODE_CHANGE", "NO_CHANGE") or ps.number == 1:
            return
        for (number, label, account), value in list(change.votes.items()):
            if number == ps.number - 1 and label in ("Code-Review", "Workflow") and value:
                change.votes[(ps.number, label, account)] = value

    def _message(self, author: Account, text: str, ps: PatchSet, tag: str = "") -> dict[str, Any]:
        """ChangeMessageInfo (rest-api-changes.html#change-message-info)."""
        return {
            "id": hashlib.sha1(f"{text}{self.clock()}{len(self.events)}".encode()).hexdigest(),
            "author": author.info(),
            "date": gerrit_time(self.clock()),
            "message": text,
            "_revision_number": ps.number,
            **({"tag": tag} if tag else {}),
        }

    # -- change state --------------------------------------------------------

    def abandon(self, number: int, who: Account, reason: str = "") -> None:
        """rest-api-changes.html#abandon-change."""
        change = self.changes[number]
        if change.status != "NEW":
            raise Conflict(f"change is {change.status.lower()}")
        change.status = "ABANDONED"
        change.updated = self.clock()
        change.messages.append(self._message(who, "Abandoned", change.current))
        self._meta_updated(change, who)
        self._change_event(
            "change-abandoned", change, change.current, abandoner=who.attribute(), reason=reason
        )

    def resolve_revision(self, change: Change, revision: str) -> PatchSet:
        """rest-api-changes.html#revision-id: "current", a patch set number, a (prefix of a) sha."""
        if revision == "current":
            return change.current
        if revision.isdigit() and len(revision) < 6:
            for ps in change.patchsets:
                if ps.number == int(revision):
                    return ps
        if len(revision) >= 4:
            for ps in change.patchsets:
                if ps.revision.startswith(revision):
                    return ps
        raise NotFound(f"Not found: {revision}")

    def review(
        self, change: Change, ps: PatchSet, who: Account, body: dict[str, Any]
    ) -> dict[str, Any]:
        """PostReview (rest-api-changes.html#set-review): votes, a message, comment-added."""
        labels = body.get("labels") or {}
        if not isinstance(labels, dict):
            raise BadRequest("labels must be a map")
        message = body.get("message") or ""
        if not isinstance(message, str):
            raise BadRequest("message must be a string")
        approvals = []
        for name, value in labels.items():
            label = self.labels.get(name)
            if label is None:
                # PostReview.checkLabels
                raise BadRequest(f'label "{name}" is not a configured label')
            if not isinstance(value, int) or value not in label.values:
                raise BadRequest(f'label "{name}": {value} is not a valid value')
            low, high = who.may_vote.get(name, (0, 0))
            if not low <= value <= high:
                raise Forbidden(f'Applying label "{name}": {value:+d} is restricted')
            old = change.votes.get((ps.number, name, who.id), 0)
            change.votes[(ps.number, name, who.id)] = value
            approvals.append(
                {"type": name, "description": name, "value": str(value), "oldValue": str(old)}
            )
        votes = " ".join(f"{a['type']}{int(a['value']):+d}" for a in approvals)
        text = f"Patch Set {ps.number}:{' ' + votes if votes else ''}"
        if message:
            text += f"\n\n{message}"
        tag = str(body.get("tag") or "")
        change.messages.append(self._message(who, text, ps, tag))
        change.updated = self.clock()
        self._meta_updated(change, who)
        self._change_event(
            "comment-added", change, ps, author=who.attribute(), approvals=approvals, comment=text
        )
        return {"labels": {name: value for name, value in labels.items()}}

    def vote(self, number: int, who: str, **labels: int) -> None:
        """A reviewer votes on the current patch set (what the web UI does)."""
        change = self.changes[number]
        self.review(change, change.current, self.account(who), {"labels": labels})

    def blocking(self, change: Change) -> list[str]:
        """Why the change cannot be submitted (MergeOp.checkSubmitRule, describeLabels)."""
        problems = []
        ps = change.current
        for label in self.labels.values():
            votes = [
                v
                for (n, name, _), v in change.votes.items()
                if n == ps.number and name == label.name
            ]
            if label.lowest < 0 and label.lowest in votes:
                problems.append(f"blocked by {label.name}")
            elif label.highest not in votes:
                problems.append(f"needs {label.name}")
        return problems

    def submit(self, change: Change, ps: PatchSet, who: Account) -> None:
        """Submit.mergeChange and MergeOp, for one change."""
        if not who.may_submit:
            raise Forbidden("submit not permitted")
        if change.status != "NEW":
            raise Conflict(f"change is {change.status.lower()}")
        if ps.number != change.current.number:
            raise Conflict(f"revision {ps.revision} is not current revision")
        problems = self.blocking(change)
        if change.work_in_progress:
            problems = ["Change is work in progress"]
        if problems:
            raise Conflict(self._failed(change, "; ".join(problems)))
        project = self.projects[change.project]
        repo = project.repo
        ref = f"refs/heads/{change.branch}"
        head = git(repo, "rev-parse", ref)
        fast_forward = (
            subprocess.run(
                ["git", "merge-base", "--is-ancestor", head, ps.revision], cwd=repo
            ).returncode
            == 0
        )
        if project.submit_type == "FAST_FORWARD_ONLY" and not fast_forward:
            raise Conflict(
                self._failed(
                    change,
                    "Project policy requires all submissions to be a fast-forward. "
                    "Please rebase the change locally and upload again for review.",
                )
            )
        if fast_forward and project.submit_type != "MERGE_ALWAYS":
            new = ps.revision
        else:
            # MergeUtil.createMergeCommit: "Merge \"<subject>\"" with the branch head first
            result = subprocess.run(
                ["git", "merge-tree", "--write-tree", head, ps.revision],
                cwd=repo,
                capture_output=True,
                text=True,
                env={**os.environ, **GIT_ENV},
            )
            if result.returncode != 0:
                raise Conflict(
                    self._failed(
                        change,
                        "Change could not be merged due to a path conflict. Please rebase "
                        "the change locally and upload the rebased commit for review.",
                    )
                )
            tree = result.stdout.splitlines()[0]
            new = git(
                repo,
                "commit-tree",
                tree,
                "-p",
                head,
                "-p",
                ps.revision,
                "-m",
                f'Merge "{change.subject}"',
            )
        git(repo, "update-ref", ref, new, head)
        self.heads[(change.project, ref)] = new
        change.status = "MERGED"
        change.submitted = change.updated = self.clock()
        change.messages.append(self._message(who, "Change has been successfully merged", ps))
        self._ref_updated(change.project, ref, head, new, who)
        self._meta_updated(change, who)
        self._change_event("change-merged", change, ps, submitter=who.attribute(), newRev=new)

    def _failed(self, change: Change, problem: str) -> str:
        # MergeOp.CommitStatus.maybeFailVerbose
        return (
            "Failed to submit 1 change due to the following problems:\n"
            f"Change {change.number}: {problem}"
        )
