"""A fake GitLab: real bare git repositories behind the REST v4 calls rpmgate makes,
and webhooks posted to rpmgate's real endpoint as GitLab posts them.

It follows GitLab, not our client: each handler cites the documentation it
implements; answers carry the documented shapes, status codes and messages;
a project id is a number or the URL-encoded path (an unencoded ``/`` is a 404,
as on gitlab.com); lists are paginated with ``X-Next-Page``.  A merge is a real
git merge in the bare repository by the project's merge method, and
``refs/merge-requests/<iid>/head`` is kept in the target repository for every
merge request, from a fork too, as GitLab keeps it.

The tests drive it like people would use GitLab: :meth:`FakeGitLab.open_mr`,
:meth:`push_mr`, :meth:`approve`, :meth:`comment`, :meth:`close`,
:meth:`pushed`; each sends the webhook GitLab sends.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
from aiohttp import web

DOCS = "https://docs.gitlab.com/ee"
#: the access levels (https://docs.gitlab.com/ee/api/members.html#roles)
REPORTER, DEVELOPER, MAINTAINER = 20, 30, 40
ZERO = "0" * 40


def _git(repo: Path, *args: str, check: bool = True, input: str | None = None) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
        input=input,
        env={
            "GIT_AUTHOR_NAME": "GitLab",
            "GIT_AUTHOR_EMAIL": "gitlab@example.com",
            "GIT_COMMITTER_NAME": "GitLab",
            "GIT_COMMITTER_EMAIL": "gitlab@example.com",
            "PATH": "/usr/bin:/bin",
            "HOME": str(repo),
        },
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


class _Clock:
    """Strictly increasing timestamps (notes and versions are ordered by them)."""

    def __init__(self) -> None:
        self.last = datetime.now(UTC)

    def now(self) -> datetime:
        self.last = max(datetime.now(UTC), self.last + timedelta(milliseconds=1))
        return self.last


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


@dataclass
class User:
    id: int
    username: str

    def doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "name": self.username.title(),
            "state": "active",
            "avatar_url": None,
            "web_url": f"https://gitlab.example.com/{self.username}",
        }


@dataclass
class Project:
    id: int
    path: str
    repo: Path
    default_branch: str = "main"
    #: merge, rebase_merge (semi-linear) or ff
    merge_method: str = "merge"
    only_allow_merge_if_pipeline_succeeds: bool = False
    #: the project's approval rule ("Approvals required")
    approvals_required: int = 0
    #: "Remove all approvals when commits are added to the source branch"
    reset_approvals_on_push: bool = True
    members: dict[int, int] = field(default_factory=dict)
    forked_from: int | None = None

    def doc(self, web: str) -> dict[str, Any]:
        # https://docs.gitlab.com/ee/user/project/integrations/webhook_events.html (project)
        namespace = self.path.rsplit("/", 1)[0] if "/" in self.path else self.path
        return {
            "id": self.id,
            "name": self.path.rsplit("/", 1)[-1],
            "description": "",
            "web_url": f"{web}/{self.path}",
            "avatar_url": None,
            "git_ssh_url": f"git@gitlab.example.com:{self.path}.git",
            "git_http_url": f"{web}/{self.path}.git",
            "namespace": namespace,
            "visibility_level": 20,
            "path_with_namespace": self.path,
            "default_branch": self.default_branch,
            "ci_config_path": "",
            "homepage": f"{web}/{self.path}",
            "url": f"git@gitlab.example.com:{self.path}.git",
            "ssh_url": f"git@gitlab.example.com:{self.path}.git",
            "http_url": f"{web}/{self.path}.git",
        }


@dataclass
class Note:
    id: int
    author: User
    body: str
    created_at: datetime
    system: bool = False


@dataclass
class MergeRequest:
    id: int
    iid: int
    project: Project
    source: Project
    source_branch: str
    target_branch: str
    title: str
    author: User
    sha: str
    description: str = ""
    state: str = "opened"
    draft: bool = False
    labels: list[str] = field(default_factory=list)
    approved_by: list[User] = field(default_factory=list)
    #: diff versions, newest last: (id, head sha, base sha, created)
    versions: list[tuple[int, str, str, datetime]] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    merge_commit_sha: str | None = None
    squash_commit_sha: str | None = None
    merged_by: User | None = None


@dataclass
class Status:
    id: int
    sha: str
    ref: str
    status: str
    name: str
    target_url: str | None
    description: str | None
    author: User
    created_at: datetime


@dataclass
class Delivery:
    """A webhook GitLab sent: what a "Resend request" sends again, byte for byte."""

    url: str
    headers: dict[str, str]
    body: bytes
    status: int = 0


@dataclass
class Hook:
    url: str
    token: str | None
    signing_token: str | None = None
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))


class FakeGitLab:
    def __init__(self, bot_token: str = "glpat-bot-token") -> None:
        self.bot_token = bot_token
        self.users: dict[int, User] = {}
        self.bot = self.add_user("rpmgate-bot")
        self.projects: dict[int, Project] = {}
        self.mrs: dict[tuple[int, int], MergeRequest] = {}
        self.statuses: list[Status] = []
        self.hooks: dict[int, list[Hook]] = {}
        self.deliveries: list[Delivery] = []
        #: (method, raw path) of every API call, for tests that count them
        self.calls: list[tuple[str, str]] = []
        #: statuses the next API calls answer with instead (502: a proxy in trouble)
        self.faults: list[int] = []
        #: run as a merge request is about to be merged (a race a test arranges)
        self.on_merge: Callable[[MergeRequest], Awaitable[None]] | None = None
        self._ids = iter(range(1000, 10**9))
        self._clock = _Clock()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- set-up ---------------------------------------------------------------------------
    async def start(self) -> FakeGitLab:
        app = web.Application()
        app.router.add_route("*", "/api/v4/{tail:.*}", self._api)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api(self) -> str:
        return f"{self.url}/api/v4"

    @property
    def web(self) -> str:
        return self.url or "https://gitlab.example.com"

    def add_user(self, username: str) -> User:
        user = User(len(self.users) + 1, username)
        self.users[user.id] = user
        return user

    def add_project(self, path: str, repo: Path, **settings: Any) -> Project:
        """Host the bare repository ``repo`` as ``path``; the bot is a Developer there."""
        project = Project(len(self.projects) + 1, path, repo, **settings)
        project.members.setdefault(self.bot.id, DEVELOPER)
        self.projects[project.id] = project
        return project

    def fork(self, of: str, path: str, repo: Path) -> Project:
        """A fork of ``of`` as ``path``, its repository cloned into ``repo``."""
        parent = self.project(of)
        subprocess.run(["git", "clone", "-q", "--bare", str(parent.repo), str(repo)], check=True)
        return self.add_project(path, repo, forked_from=parent.id)

    def add_hook(
        self, path: str, url: str, token: str | None, signing_token: str | None = None
    ) -> Hook:
        hook = Hook(url, token, signing_token)
        self.hooks.setdefault(self.project(path).id, []).append(hook)
        return hook

    def project(self, path: str) -> Project:
        return next(p for p in self.projects.values() if p.path == path)

    def mr(self, path: str, iid: int) -> MergeRequest:
        return self.mrs[(self.project(path).id, iid)]

    # -- what people do in GitLab (each sends the hook GitLab sends) ------------------------
    async def open_mr(
        self,
        path: str,
        source_branch: str,
        title: str,
        author: User,
        *,
        source: str | None = None,
        target_branch: str = "main",
        labels: list[str] | None = None,
    ) -> MergeRequest:
        target = self.project(path)
        origin = self.project(source) if source else target
        head = _git(origin.repo, "rev-parse", f"refs/heads/{source_branch}")
        iid = 1 + max((i for (pid, i) in self.mrs if pid == target.id), default=0)
        mr = MergeRequest(
            next(self._ids),
            iid,
            target,
            origin,
            source_branch,
            target_branch,
            title,
            author,
            head,
            labels=list(labels or []),
        )
        self.mrs[(target.id, iid)] = mr
        self._update_head_ref(mr)
        self._add_version(mr)
        await self.send(target, "Merge Request Hook", self._mr_hook(mr, "open", author))
        return mr

    async def push_mr(self, mr: MergeRequest, author: User) -> str:
        """The author pushed to the source branch (already in the source repository)."""
        old = mr.sha
        mr.sha = _git(mr.source.repo, "rev-parse", f"refs/heads/{mr.source_branch}")
        self._update_head_ref(mr)
        self._add_version(mr)
        if mr.project.reset_approvals_on_push:
            mr.approved_by.clear()
        await self.send(
            mr.project, "Merge Request Hook", self._mr_hook(mr, "update", author, oldrev=old)
        )
        return mr.sha

    async def retitle(self, mr: MergeRequest, title: str, author: User) -> None:
        previous, mr.title = mr.title, title
        await self.send(
            mr.project,
            "Merge Request Hook",
            self._mr_hook(
                mr, "update", author, changes={"title": {"previous": previous, "current": title}}
            ),
        )

    async def approve(self, mr: MergeRequest, user: User) -> None:
        """https://docs.gitlab.com/ee/user/project/integrations/webhook_events.html#merge-request-events:
        ``approval`` for each approval, ``approved`` once every required one is given."""
        if user not in mr.approved_by:
            mr.approved_by.append(user)
        await self.send(mr.project, "Merge Request Hook", self._mr_hook(mr, "approval", user))
        if len(mr.approved_by) >= mr.project.approvals_required:
            await self.send(mr.project, "Merge Request Hook", self._mr_hook(mr, "approved", user))

    async def comment(self, mr: MergeRequest, user: User, body: str) -> Note:
        note = Note(next(self._ids), user, body, self._clock.now())
        mr.notes.append(note)
        await self.send(mr.project, "Note Hook", self._note_hook(mr, note))
        return note

    async def close(self, mr: MergeRequest, user: User) -> None:
        mr.state = "closed"
        await self.send(
            mr.project,
            "Merge Request Hook",
            self._mr_hook(mr, "close", user, changes={"state_id": {"previous": 1, "current": 2}}),
        )

    async def pushed(
        self, path: str, before: str, after: str, user: User, branch: str = "main"
    ) -> None:
        """Someone pushed ``before..after`` to ``branch`` (already in the repository)."""
        project = self.project(path)
        await self.send(project, "Push Hook", self._push_hook(project, branch, before, after, user))

    # -- REST API -------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.StreamResponse:
        raw = request.rel_url.raw_path.removeprefix("/api/v4/")
        self.calls.append((request.method, request.rel_url.raw_path))
        if self.faults:
            return _error(self.faults.pop(0), "injected fault")
        # https://docs.gitlab.com/ee/api/rest/authentication.html: PRIVATE-TOKEN or OAuth bearer
        given = request.headers.get("PRIVATE-TOKEN") or request.headers.get(
            "Authorization", ""
        ).removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), self.bot_token.encode()):
            return _error(401, "401 Unauthorized")
        parts = raw.split("/")
        if len(parts) < 2 or parts[0] != "projects":
            return _error(404, "404 Not Found")
        project = self._project_by_id(unquote(parts[1]))
        if project is None:
            return _error(404, "404 Project Not Found")
        rest = [unquote(p) for p in parts[2:]]
        body: dict[str, Any] = {}
        if request.method in ("POST", "PUT") and request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                body = dict(await request.post())
        return await self._dispatch(request, project, rest, body)

    def _project_by_id(self, key: str) -> Project | None:
        # https://docs.gitlab.com/ee/api/rest/index.html#namespaced-paths: "ID or URL-encoded path"
        if key.isdigit():
            return self.projects.get(int(key))
        return next((p for p in self.projects.values() if p.path.lower() == key.lower()), None)

    async def _dispatch(
        self, request: web.Request, project: Project, rest: list[str], body: dict[str, Any]
    ) -> web.StreamResponse:
        method = request.method
        if rest[:1] == ["merge_requests"] and len(rest) >= 2:
            if not rest[1].isdigit():
                return _error(400, "merge_request_iid is invalid")
            mr = self.mrs.get((project.id, int(rest[1])))
            if mr is None:
                return _error(404, "404 Not found")
            tail = tuple(rest[2:])
            if method == "GET" and tail == ():
                return web.json_response(self._mr_doc(mr))
            if method == "GET" and tail == ("approvals",):
                return web.json_response(self._approvals_doc(mr))
            if method == "GET" and tail == ("versions",):
                return _paged(request, self._versions_doc(mr))
            if method == "GET" and tail == ("notes",):
                return _paged(request, self._notes_doc(mr, request.query))
            if method == "POST" and tail == ("notes",):
                return self._create_note(mr, body)
            if method == "PUT" and tail == ("merge",):
                return await self._merge(mr, body)
        if method == "GET" and rest[:2] == ["members", "all"] and len(rest) == 3:
            return self._member(project, rest[2])
        if method == "POST" and rest[:1] == ["statuses"] and len(rest) == 2:
            return self._post_status(project, rest[1], body)
        if method == "GET" and rest[:2] == ["repository", "commits"] and rest[3:] == ["statuses"]:
            return _paged(request, [self._status_doc(s) for s in self.statuses if s.sha == rest[2]])
        return _error(404, "404 Not Found")

    # GET /projects/:id/merge_requests/:iid  (#get-single-mr)
    def _mr_doc(self, mr: MergeRequest) -> dict[str, Any]:
        status, conflicts = self._detailed_merge_status(mr)
        base = _git(mr.project.repo, "rev-parse", f"refs/heads/{mr.target_branch}")
        return {
            "id": mr.id,
            "iid": mr.iid,
            "project_id": mr.project.id,
            "title": mr.title,
            "description": mr.description,
            "state": mr.state,
            "created_at": _iso(mr.versions[0][3]),
            "updated_at": _iso(self._clock.last),
            "merged_by": mr.merged_by.doc() if mr.merged_by else None,
            "merge_user": mr.merged_by.doc() if mr.merged_by else None,
            "target_branch": mr.target_branch,
            "source_branch": mr.source_branch,
            "author": mr.author.doc(),
            "source_project_id": mr.source.id,
            "target_project_id": mr.project.id,
            "labels": list(mr.labels),
            "draft": mr.draft,
            "work_in_progress": mr.draft,
            "merge_when_pipeline_succeeds": False,
            "merge_status": "can_be_merged" if status == "mergeable" else "cannot_be_merged",
            "detailed_merge_status": status,
            "sha": mr.sha,
            "merge_commit_sha": mr.merge_commit_sha,
            "squash_commit_sha": mr.squash_commit_sha,
            "has_conflicts": conflicts,
            "blocking_discussions_resolved": True,
            "squash": False,
            "web_url": f"{self.web}/{mr.project.path}/-/merge_requests/{mr.iid}",
            "references": {"short": f"!{mr.iid}", "full": f"{mr.project.path}!{mr.iid}"},
            "diff_refs": {"base_sha": base, "head_sha": mr.sha, "start_sha": base},
        }

    def _detailed_merge_status(self, mr: MergeRequest) -> tuple[str, bool]:
        """https://docs.gitlab.com/ee/api/merge_requests.html#merge-status"""
        if mr.state != "opened":
            return "not_open", False
        if mr.draft:
            return "draft_status", False
        target = _git(mr.project.repo, "rev-parse", f"refs/heads/{mr.target_branch}")
        if self._merged_tree(mr.project.repo, target, mr.sha) is None:
            return "conflict", True
        if len(mr.approved_by) < mr.project.approvals_required:
            return "not_approved", False
        if mr.project.only_allow_merge_if_pipeline_succeeds and self._pipeline(mr) != "success":
            return "ci_must_pass", False
        if mr.project.merge_method == "ff" and not _is_ancestor(mr.project.repo, target, mr.sha):
            return "need_rebase", False
        return "mergeable", False

    def _pipeline(self, mr: MergeRequest) -> str | None:
        latest = [s for s in self.statuses if s.sha == mr.sha]
        return latest[-1].status if latest else None

    # GET /projects/:id/merge_requests/:iid/approvals
    # (https://docs.gitlab.com/ee/api/merge_request_approvals.html#for-a-merge-request)
    def _approvals_doc(self, mr: MergeRequest) -> dict[str, Any]:
        left = max(0, mr.project.approvals_required - len(mr.approved_by))
        return {
            "id": mr.id,
            "iid": mr.iid,
            "project_id": mr.project.id,
            "title": mr.title,
            "state": mr.state,
            "merge_status": "can_be_merged",
            "approved": left == 0,
            "approvals_required": mr.project.approvals_required,
            "approvals_left": left,
            "approved_by": [{"user": u.doc()} for u in mr.approved_by],
            "user_has_approved": self.bot in mr.approved_by,
            "user_can_approve": True,
        }

    # GET /projects/:id/merge_requests/:iid/versions
    # (#get-merge-request-diff-versions): newest first
    def _versions_doc(self, mr: MergeRequest) -> list[dict[str, Any]]:
        return [
            {
                "id": vid,
                "head_commit_sha": head,
                "base_commit_sha": base,
                "start_commit_sha": base,
                "created_at": _iso(when),
                "merge_request_id": mr.id,
                "state": "collected",
                "real_size": "1",
                "patch_id_sha": None,
            }
            for vid, head, base, when in reversed(mr.versions)
        ]

    # GET /projects/:id/merge_requests/:iid/notes (https://docs.gitlab.com/ee/api/notes.html#list-all-merge-request-notes)
    def _notes_doc(self, mr: MergeRequest, query: Any) -> list[dict[str, Any]]:
        notes = [self._note_doc(mr, n) for n in mr.notes]
        # sort: asc|desc (default desc), order_by: created_at|updated_at
        return notes if query.get("sort") == "asc" else list(reversed(notes))

    def _note_doc(self, mr: MergeRequest, note: Note) -> dict[str, Any]:
        return {
            "id": note.id,
            "type": None,
            "body": note.body,
            "attachment": None,
            "author": note.author.doc(),
            "created_at": _iso(note.created_at),
            "updated_at": _iso(note.created_at),
            "system": note.system,
            "noteable_id": mr.id,
            "noteable_type": "MergeRequest",
            "noteable_iid": mr.iid,
            "project_id": mr.project.id,
            "resolvable": False,
            "confidential": False,
            "internal": False,
        }

    # POST /projects/:id/merge_requests/:iid/notes (#create-new-merge-request-note)
    def _create_note(self, mr: MergeRequest, body: dict[str, Any]) -> web.Response:
        text = body.get("body")
        if not isinstance(text, str) or not text:
            return _error(400, "body is missing")
        if len(text) > 1_000_000:
            return _error(400, "Note is too long")
        note = Note(next(self._ids), self.bot, text, self._clock.now())
        mr.notes.append(note)
        return web.json_response(self._note_doc(mr, note), status=201)

    # GET /projects/:id/members/all/:user_id
    # (https://docs.gitlab.com/ee/api/members.html#get-a-member-of-a-group-or-project-including-inherited-and-invited-members)
    def _member(self, project: Project, user_id: str) -> web.Response:
        level = project.members.get(int(user_id)) if user_id.isdigit() else None
        user = self.users.get(int(user_id)) if user_id.isdigit() else None
        if level is None or user is None:
            return _error(404, "404 Not found")
        return web.json_response({**user.doc(), "access_level": level, "expires_at": None})

    # POST /projects/:id/statuses/:sha (https://docs.gitlab.com/ee/api/commits.html#set-the-pipeline-status-of-a-commit)
    def _post_status(self, project: Project, sha: str, body: dict[str, Any]) -> web.Response:
        state = body.get("state")
        if state not in ("pending", "running", "success", "failed", "canceled", "skipped"):
            return _error(400, "state does not have a valid value")
        if _git(project.repo, "cat-file", "-t", sha, check=False) != "commit":
            return _error(404, "404 Commit Not Found")
        name = str(body.get("name") or body.get("context") or "default")
        ref = str(body.get("ref") or self._ref_of(project, sha))
        # an unfinished status of the same name and ref is moved on; a finished one is
        # followed by a new one (lib/api/commit_statuses.rb), and a move the state
        # machine does not have is a 400
        current = next(
            (
                s
                for s in reversed(self.statuses)
                if s.sha == sha
                and s.name == name
                and s.ref == ref
                and s.status in ("pending", "running")
            ),
            None,
        )
        if current is not None and current.status == state:
            verb = {"pending": "enqueue", "running": "run"}[state]
            return _error(
                400,
                f"Cannot transition status via :{verb} from :{state}"
                f' (Reason(s): Status cannot transition via "{verb}")',
            )
        if current is None:
            current = Status(
                next(self._ids), sha, ref, state, name, None, None, self.bot, self._clock.now()
            )
            self.statuses.append(current)
        current.status = state
        current.target_url = body.get("target_url") or current.target_url
        current.description = body.get("description") or current.description
        return web.json_response(self._status_doc(current), status=201)

    def _ref_of(self, project: Project, sha: str) -> str:
        for (pid, _), mr in self.mrs.items():
            if pid == project.id and mr.sha == sha:
                return mr.source_branch
        return project.default_branch

    def _status_doc(self, s: Status) -> dict[str, Any]:
        return {
            "id": s.id,
            "sha": s.sha,
            "ref": s.ref,
            "status": s.status,
            "name": s.name,
            "target_url": s.target_url,
            "description": s.description,
            "created_at": _iso(s.created_at),
            "started_at": None,
            "finished_at": None,
            "allow_failure": False,
            "coverage": None,
            "author": s.author.doc(),
        }

    # PUT /projects/:id/merge_requests/:iid/merge (#merge-a-merge-request)
    async def _merge(self, mr: MergeRequest, body: dict[str, Any]) -> web.Response:
        project = mr.project
        if self.on_merge is not None:
            hook, self.on_merge = self.on_merge, None
            await hook(mr)
        if project.members.get(self.bot.id, 0) < DEVELOPER:
            return _error(401, "401 Unauthorized")  # "you don't have permissions to accept"
        status, _ = self._detailed_merge_status(mr)
        if mr.state != "opened" or status in (
            "draft_status",
            "not_approved",
            "ci_must_pass",
            "not_open",
        ):
            return _error(405, "405 Method Not Allowed")
        sha = body.get("sha")
        if sha is not None and sha != mr.sha:
            return _error(409, "SHA does not match HEAD of source branch")
        if status in ("conflict", "need_rebase"):
            return _error(406, "Branch cannot be merged")
        target_ref = f"refs/heads/{mr.target_branch}"
        before = _git(project.repo, "rev-parse", target_ref)
        # fast-forward and semi-linear merge methods need the head on top of the branch
        linear = project.merge_method in ("ff", "rebase_merge")
        if linear and not _is_ancestor(project.repo, before, mr.sha):
            return _error(406, "Branch cannot be merged")
        if project.merge_method == "ff":
            after = mr.sha
        else:
            tree = self._merged_tree(project.repo, before, mr.sha)
            assert tree is not None
            message = str(
                body.get("merge_commit_message")
                or (
                    f"Merge branch '{mr.source_branch}' into '{mr.target_branch}'\n\n{mr.title}\n\n"
                    f"See merge request {project.path}!{mr.iid}"
                )
            )
            after = _git(
                project.repo, "commit-tree", tree, "-p", before, "-p", mr.sha, "-m", message
            )
            mr.merge_commit_sha = after
        _git(project.repo, "update-ref", target_ref, after, before)
        mr.state, mr.merged_by = "merged", self.bot
        self._update_head_ref(mr)
        await self.send(
            project,
            "Merge Request Hook",
            self._mr_hook(
                mr, "merge", self.bot, changes={"state_id": {"previous": 1, "current": 3}}
            ),
        )
        await self.send(
            project,
            "Push Hook",
            self._push_hook(project, mr.target_branch, before, after, self.bot),
        )
        return web.json_response(self._mr_doc(mr))

    def _merged_tree(self, repo: Path, target: str, head: str) -> str | None:
        result = subprocess.run(
            ["git", "merge-tree", "--write-tree", target, head],
            cwd=repo,
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout.split()[0] if result.returncode == 0 else None

    def _update_head_ref(self, mr: MergeRequest) -> None:
        """``refs/merge-requests/<iid>/head`` in the target project, fetched from a fork
        (https://docs.gitlab.com/ee/user/project/merge_requests/merge_request_troubleshooting.html#check-out-merge-requests-locally-through-the-head-ref)."""
        ref = f"refs/merge-requests/{mr.iid}/head"
        if mr.source is not mr.project:
            _git(
                mr.project.repo,
                "fetch",
                "-q",
                str(mr.source.repo),
                f"+refs/heads/{mr.source_branch}:{ref}",
            )
        else:
            _git(mr.project.repo, "update-ref", ref, mr.sha)

    def _add_version(self, mr: MergeRequest) -> None:
        base = _git(mr.project.repo, "merge-base", f"refs/heads/{mr.target_branch}", mr.sha)
        mr.versions.append((next(self._ids), mr.sha, base, self._clock.now()))

    # -- webhooks (https://docs.gitlab.com/ee/user/project/integrations/webhook_events.html) -
    def _mr_hook(
        self,
        mr: MergeRequest,
        action: str,
        user: User,
        *,
        oldrev: str | None = None,
        changes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """#merge-request-events"""
        message = _git(mr.source.repo, "log", "-1", "--format=%B", mr.sha)
        attrs: dict[str, Any] = {
            "id": mr.id,
            "iid": mr.iid,
            "target_branch": mr.target_branch,
            "source_branch": mr.source_branch,
            "source_project_id": mr.source.id,
            "author_id": mr.author.id,
            "title": mr.title,
            "created_at": _iso(mr.versions[0][3]),
            "updated_at": _iso(self._clock.now()),
            "state": mr.state,
            "state_id": {"opened": 1, "closed": 2, "merged": 3}.get(mr.state, 1),
            "merge_status": "unchecked",
            "target_project_id": mr.project.id,
            "description": mr.description,
            "draft": mr.draft,
            "work_in_progress": mr.draft,
            "url": f"{self.web}/{mr.project.path}/-/merge_requests/{mr.iid}",
            "source": mr.source.doc(self.web),
            "target": mr.project.doc(self.web),
            "last_commit": {
                "id": mr.sha,
                "message": message,
                "title": message.splitlines()[0],
                "timestamp": _iso(self._clock.last),
                "url": f"{self.web}/{mr.source.path}/-/commit/{mr.sha}",
                "author": {"name": mr.author.username, "email": "[REDACTED]"},
            },
            "labels": [
                {"id": i + 1, "title": t, "type": "ProjectLabel"} for i, t in enumerate(mr.labels)
            ],
            "action": action,
            "detailed_merge_status": self._detailed_merge_status(mr)[0],
            "merge_commit_sha": mr.merge_commit_sha,
        }
        if oldrev is not None:
            attrs["oldrev"] = oldrev
        return {
            "object_kind": "merge_request",
            "event_type": "merge_request",
            "user": {**user.doc(), "email": "[REDACTED]"},
            "project": mr.project.doc(self.web),
            "object_attributes": attrs,
            "labels": attrs["labels"],
            "changes": changes
            or {"updated_at": {"previous": None, "current": attrs["updated_at"]}},
            "repository": {
                "name": mr.project.path.rsplit("/", 1)[-1],
                "url": mr.project.doc(self.web)["url"],
                "description": "",
                "homepage": f"{self.web}/{mr.project.path}",
            },
        }

    def _note_hook(self, mr: MergeRequest, note: Note) -> dict[str, Any]:
        """#comment-on-a-merge-request"""
        hook = self._mr_hook(mr, "update", note.author)
        attrs = hook["object_attributes"]
        mr_doc = {k: v for k, v in attrs.items() if k not in ("action", "oldrev")}
        return {
            "object_kind": "note",
            "event_type": "note",
            "user": hook["user"],
            "project_id": mr.project.id,
            "project": hook["project"],
            "repository": hook["repository"],
            "object_attributes": {
                "id": note.id,
                "note": note.body,
                "noteable_type": "MergeRequest",
                "author_id": note.author.id,
                "created_at": _iso(note.created_at),
                "updated_at": _iso(note.created_at),
                "project_id": mr.project.id,
                "attachment": None,
                "line_code": None,
                "commit_id": "",
                "noteable_id": mr.id,
                "system": note.system,
                "st_diff": None,
                "action": "create",
                "url": f"{attrs['url']}#note_{note.id}",
            },
            "merge_request": mr_doc,
        }

    def _push_hook(
        self, project: Project, branch: str, before: str, after: str, user: User
    ) -> dict[str, Any]:
        """#push-events: ``commits`` holds at most the newest 20, newest first (git log order)."""
        span = after if before == ZERO else f"{before}..{after}"
        ids = _git(project.repo, "rev-list", "--max-count=20", span).split()
        commits = []
        for sha in ids:
            message = _git(project.repo, "log", "-1", "--format=%B", sha)
            commits.append(
                {
                    "id": sha,
                    "message": message,
                    "title": message.splitlines()[0] if message else "",
                    "timestamp": _iso(self._clock.last),
                    "url": f"{self.web}/{project.path}/-/commit/{sha}",
                    "author": {"name": user.username, "email": "[REDACTED]"},
                    "added": [],
                    "modified": [],
                    "removed": [],
                }
            )
        return {
            "object_kind": "push",
            "event_name": "push",
            "before": before,
            "after": after,
            "ref": f"refs/heads/{branch}",
            "ref_protected": True,
            "checkout_sha": after,
            "message": None,
            "user_id": user.id,
            "user_name": user.username,
            "user_username": user.username,
            "user_email": "",
            "user_avatar": None,
            "project_id": project.id,
            "project": project.doc(self.web),
            "commits": commits,
            "total_commits_count": len(_git(project.repo, "rev-list", span).split()),
            "push_options": {},
            "repository": {
                "name": project.path.rsplit("/", 1)[-1],
                "url": project.doc(self.web)["url"],
            },
        }

    async def send(self, project: Project, event: str, payload: dict[str, Any]) -> list[Delivery]:
        """Post ``payload`` to every hook of ``project``, with GitLab's delivery headers
        (https://docs.gitlab.com/ee/user/project/integrations/webhooks.html#delivery-headers)
        and, where the hook has one, the signing token's signature (gitlab-org/gitlab!230944)."""
        event_uuid = str(uuid.uuid4())
        body = json.dumps(payload).encode()
        sent = []
        for hook in self.hooks.get(project.id, []):
            key = str(uuid.uuid4())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "GitLab/18.6.0",
                "X-Gitlab-Event": event,
                "X-Gitlab-Webhook-UUID": hook.uuid,
                "X-Gitlab-Event-UUID": event_uuid,
                "X-Gitlab-Instance": self.web,
                "Idempotency-Key": key,
            }
            if hook.token is not None:
                headers["X-Gitlab-Token"] = hook.token
            if hook.signing_token is not None:
                stamp = str(int(time.time()))
                secret = base64.b64decode(hook.signing_token.removeprefix("whsec_"))
                mac = hmac.new(secret, f"{key}.{stamp}.".encode() + body, hashlib.sha256).digest()
                headers |= {
                    "webhook-id": key,
                    "webhook-timestamp": stamp,
                    "webhook-signature": "v1," + base64.b64encode(mac).decode(),
                }
            delivery = Delivery(hook.url, headers, body)
            await self.deliver(delivery)
            sent.append(delivery)
        return sent

    async def deliver(self, delivery: Delivery) -> int:
        """Send (or resend: "Resend request" keeps the ``Idempotency-Key``) one delivery."""
        async with (
            aiohttp.ClientSession() as http,
            http.post(delivery.url, data=delivery.body, headers=delivery.headers) as resp,
        ):
            delivery.status = resp.status
        self.deliveries.append(delivery)
        return delivery.status


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def _paged(request: web.Request, items: list[Any]) -> web.Response:
    """https://docs.gitlab.com/ee/api/rest/index.html#offset-based-pagination"""
    per_page = min(100, int(request.query.get("per_page", "20") or 20))
    page = max(1, int(request.query.get("page", "1") or 1))
    chunk = items[(page - 1) * per_page : page * per_page]
    more = page * per_page < len(items)
    headers = {
        "X-Page": str(page),
        "X-Per-Page": str(per_page),
        "X-Total": str(len(items)),
        "X-Next-Page": str(page + 1) if more else "",
        "X-Prev-Page": str(page - 1) if page > 1 else "",
    }
    return web.json_response(chunk, headers=headers)


def _is_ancestor(repo: Path, ancestor: str, descendant: str) -> bool:
    return (
        subprocess.run(
            ["git", "merge-base", "--is-ancestor", ancestor, descendant], cwd=repo, check=False
        ).returncode
        == 0
    )
