"""The fake Pagure: API 0 over HTTP, real git behind it, signed web-hooks out.

Each handler names the Pagure function it follows (pagure.io/pagure, mirrored as
github:Pagure/pagure, commit bee168305d5c, 2026-03).  The world side (a packager
opens a PR, comments, pushes) is methods of :class:`FakePagure`; each notifies
as ``pagure/lib/notify.py`` ``log`` does: the message is recorded (what
fedora-messaging would carry: ``messages``) and, when the project has web-hooks,
POSTed signed as ``pagure/lib/tasks_services.py`` ``call_web_hooks`` signs it.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import re
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakepagure.state import Comment, Flag, Project, PullRequest, State, git, now

# pagure/api/__init__.py APIERROR (the texts the real API answers)
ERRORS = {
    "ENOPROJECT": "Project not found",
    "ENOREQ": "Pull-Request not found",
    "ENOGROUP": "Group not found",
    "EINVALIDREQ": "Invalid or incomplete input submitted",
    "EINVALIDTOK": "Invalid or expired token. Please visit {url}/settings#nav-api-tab to get "
    "or renew your API token.",
    "ENOPRCLOSE": "You are not allowed to merge/close pull-request for this project",
    "EPRCONFLICTS": "This pull-request conflicts and thus cannot be merged",
}
#: pagure/default_config.py FLAG_STATUSES_LABELS
FLAG_STATUSES = ("success", "failure", "error", "pending", "canceled")

ROUTE = re.compile(
    r"^(?:fork/(?P<user>[^/]+)/)?(?:(?P<ns>[^/]+)/)?(?P<repo>[^/]+)"
    r"(?:/pull-request/(?P<pr>[0-9]+)(?:/(?P<action>merge|flag|comment))?)?$"
)


class ApiError(Exception):
    def __init__(self, status: int, code: str, errors: Any = None) -> None:
        super().__init__(code)
        self.status, self.code, self.errors = status, code, errors


@dataclass
class Sent:
    """One notification: its topic, the message, and the web-hook answers."""

    topic: str
    msg: dict[str, Any]
    project: str
    msg_id: str
    answers: list[int] = field(default_factory=list)


class FakePagure:
    def __init__(self, root: Path) -> None:
        self.state = State(root)
        self.sent: list[Sent] = []
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        #: status to answer the next calls of an action ("merge", "flag", "comment", "GET")
        self.fail_next: dict[str, list[int]] = {}
        #: run inside a merge, after the API checks, before git (a PR moving meanwhile)
        self.during_merge: Callable[[PullRequest], Awaitable[None]] | None = None
        self._runner: web.AppRunner | None = None
        self._i = 0
        self.url = ""

    # -- serving -----------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/api/0/{tail:.*}", self._api)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self.state.app_url = self.url
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the world -------------------------------------------------------------------------
    def user(self, name: str, fullname: str = "") -> str:
        self.state.add_user(name, fullname)
        return name

    def token(self, user: str, acls: tuple[str, ...]) -> str:
        return self.state.add_token(user, acls)

    def group(self, name: str, members: list[str]) -> None:
        for member in members:
            self.user(member)
        self.state.groups[name] = list(members)

    def project(
        self, fullname: str, owner: str, files: dict[str, str], branch: str = "main"
    ) -> Project:
        namespace, _, name = fullname.rpartition("/")
        self.user(owner)
        project = Project(name, namespace or None, owner, id=self.state._id())
        self.state.projects[project.fullname] = project
        self.state.create_repo(project.fullname, branch, files, owner)
        return project

    def adopt(self, fullname: str, owner: str, bare: Path) -> Project:
        """A project whose repository is an existing bare repository (a test world's)."""
        namespace, _, name = fullname.rpartition("/")
        self.user(owner)
        project = Project(name, namespace or None, owner, id=self.state._id())
        self.state.projects[project.fullname] = project
        self.state.paths[project.fullname] = bare
        return project

    def fork(self, fullname: str, user: str) -> Project:
        parent = self.state.projects[fullname]
        self.user(user)
        fork = Project(
            parent.name, parent.namespace, user, id=self.state._id(), fork_of=parent.fullname
        )
        self.state.projects[fork.fullname] = fork
        self.state.copy_repo(parent.fullname, fork.fullname)
        return fork

    async def open_pr(
        self,
        fullname: str,
        user: str,
        files: dict[str, str],
        title: str,
        *,
        branch: str = "main",
        branch_from: str | None = None,
        message: str | None = None,
    ) -> PullRequest:
        """``user`` pushes ``files`` to a branch of their fork and opens a PR
        (pagure/lib/query.py new_pull_request: notifies ``pull-request.new``)."""
        fork_name = f"forks/{user}/{fullname}"
        if fork_name not in self.state.projects:
            self.fork(fullname, user)
        branch_from = branch_from or f"pr-{uuid.uuid4().hex[:8]}"
        base = self.state.head(fullname, branch)
        self.state.commit(fork_name, branch_from, files, message or title, user, base=base)
        pr = PullRequest(
            id=self._next_pr(fullname),
            project=fullname,
            title=title,
            branch=branch,
            branch_from=branch_from,
            repo_from=fork_name,
            user=user,
        )
        self.state.prs[(fullname, pr.id)] = pr
        commits = self.state.diff_commits(pr)
        pr.commit_start, pr.commit_stop = commits[-1], commits[0]
        self.state.sync_pull_ref(pr)
        await self.notify(
            fullname, "pull-request.new", {"pullrequest": self._pr(pr), "agent": user}
        )
        return pr

    async def open_pr_from(
        self, fullname: str, user: str, commit: str, title: str, *, branch: str = "main"
    ) -> PullRequest:
        """``user`` pushes ``commit`` (present in the project's repository, e.g. made by a
        test world under a scratch ref) to a branch of their fork and opens a PR."""
        fork_name = f"forks/{user}/{fullname}"
        if fork_name not in self.state.projects:
            self.fork(fullname, user)
        branch_from = f"pr-{uuid.uuid4().hex[:8]}"
        self._push_commit(fullname, fork_name, commit, branch_from)
        pr = PullRequest(
            id=self._next_pr(fullname),
            project=fullname,
            title=title,
            branch=branch,
            branch_from=branch_from,
            repo_from=fork_name,
            user=user,
        )
        self.state.prs[(fullname, pr.id)] = pr
        commits = self.state.diff_commits(pr)
        pr.commit_start, pr.commit_stop = commits[-1], commits[0]
        self.state.sync_pull_ref(pr)
        await self.notify(
            fullname, "pull-request.new", {"pullrequest": self._pr(pr), "agent": user}
        )
        return pr

    async def update_pr_from(self, fullname: str, pr_id: int, commit: str, message: str) -> None:
        """The PR's branch moves to ``commit`` (a new commit on top, or a force-push)."""
        pr = self.state.prs[(fullname, pr_id)]
        self._push_commit(fullname, pr.repo_from or fullname, commit, pr.branch_from)
        await self._refresh(pr, message)

    def _push_commit(self, src: str, dst: str, commit: str, branch: str) -> None:
        git(
            self.state.repo(dst),
            "fetch",
            "-q",
            str(self.state.repo(src)),
            f"+{commit}:refs/heads/{branch}",
        )

    async def _refresh(self, pr: PullRequest, message: str) -> None:
        """pagure/lib/git.py diff_pull_request after a push to the PR's branch."""
        commits = self.state.diff_commits(pr)
        pr.commit_start, pr.commit_stop = commits[-1], commits[0]
        pr.last_updated = now()
        self.state.sync_pull_ref(pr)
        await self.notify(
            pr.project,
            "pull-request.updated",
            {"pullrequest": self._pr(pr, with_comments=False), "agent": "pagure"},
        )
        self._add_comment(pr, pr.user, f"**1 new commit added**\n\n * ``{message}``\n", True)

    async def receive(self, fullname: str, branch: str, old: str, new: str, user: str) -> None:
        """The ``git.receive`` of a push made to the repository directly."""
        revs = git(self.state.repo(fullname), "rev-list", "--reverse", new, "--not", old).split()
        await self._receive(fullname, branch, old, revs or [new], user, None)

    async def push_to_pr(
        self, fullname: str, pr_id: int, files: dict[str, str], message: str
    ) -> str:
        """A new commit on the PR's branch; Pagure refreshes the PR
        (pagure/lib/git.py diff_pull_request: ``pull-request.updated`` and a
        notification comment "**1 new commit added**")."""
        pr = self.state.prs[(fullname, pr_id)]
        source = pr.repo_from or fullname
        sha = self.state.commit(source, pr.branch_from, files, message, pr.user)
        await self._refresh(pr, message)
        return sha

    async def comment(self, fullname: str, pr_id: int, user: str, text: str) -> None:
        """pagure/lib/query.py add_pull_request_comment: ``pull-request.comment.added``
        with the PR (and its comments) and ``agent``."""
        self.user(user)
        pr = self.state.prs[(fullname, pr_id)]
        self._add_comment(pr, user, text)
        await self.notify(
            fullname, "pull-request.comment.added", {"pullrequest": self._pr(pr), "agent": user}
        )

    async def close(self, fullname: str, pr_id: int, user: str) -> None:
        """pagure/lib/query.py close_pull_request(merged=False)."""
        pr = self.state.prs[(fullname, pr_id)]
        pr.status, pr.closed_by, pr.closed_at = "Closed", user, now()
        await self.notify(
            fullname,
            "pull-request.closed",
            {"pullrequest": self._pr(pr), "merged": False, "agent": user},
        )

    async def push(
        self,
        fullname: str,
        branch: str,
        files: dict[str, str],
        message: str,
        user: str = "packager",
    ) -> str:
        """A direct push; pagure/hooks/default.py send_notifications: ``git.receive``."""
        repo = self.state.repo(fullname)
        old = git(repo, "rev-parse", "-q", "--verify", f"refs/heads/{branch}", check=False)
        sha = self.state.commit(fullname, branch, files, message, user)
        old = old or "0" * 40  # a new branch
        await self._receive(fullname, branch, old, [sha], user, None)
        return sha

    # -- notifying -------------------------------------------------------------------------
    async def notify(self, fullname: str, topic: str, msg: dict[str, Any]) -> Sent:
        """pagure/lib/notify.py log -> tasks_services.py call_web_hooks."""
        project = self.state.projects[fullname]
        sent = Sent(topic, copy.deepcopy(msg), fullname, f"{time.gmtime().tm_year}-{uuid.uuid4()}")
        self.sent.append(sent)
        for url in sorted(project.webhooks):
            sent.answers.append(await self.deliver(project, sent, url))
        return sent

    def signed_body(self, project: Project, sent: Sent) -> tuple[bytes, dict[str, str]]:
        """The exact bytes and headers ``call_web_hooks`` sends for ``sent``."""
        self._i += 1
        msg = {**sent.msg, "pagure_instance": f"{self.url}/", "project_fullname": project.fullname}
        doc = {
            "topic": sent.topic,
            "msg": msg,
            "timestamp": int(time.time()),
            "msg_id": sent.msg_id,
            "i": self._i,
        }
        content = json.dumps(doc, sort_keys=True).encode()
        key = project.hook_token.encode()
        headers = {
            "X-Pagure": f"{self.url}/",
            "X-Pagure-project": project.fullname,
            "X-Pagure-Signature": hmac.new(key, content, hashlib.sha1).hexdigest(),
            "X-Pagure-Signature-256": hmac.new(key, content, hashlib.sha256).hexdigest(),
            "X-Pagure-Topic": sent.topic,
            "Content-Type": "application/json",
        }
        return content, headers

    async def deliver(
        self, project: Project, sent: Sent, url: str, body: bytes | None = None, **headers: str
    ) -> int:
        """POST one delivery (``requests.post(url, headers=..., data=content, timeout=60)``);
        ``body``/``headers`` override what is sent (tests of hostile deliveries)."""
        content, signed = self.signed_body(project, sent)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                url,
                data=content if body is None else body,
                headers={**signed, **headers},
                timeout=aiohttp.ClientTimeout(total=60),
            ) as response,
        ):
            return response.status

    # -- helpers ---------------------------------------------------------------------------
    def _next_pr(self, fullname: str) -> int:
        return 1 + max((i for (p, i) in self.state.prs if p == fullname), default=0)

    def _pr(self, pr: PullRequest, with_comments: bool = True) -> dict[str, Any]:
        return self.state.pr_json(pr, with_comments)

    def _add_comment(
        self, pr: PullRequest, user: str, text: str, notification: bool = False
    ) -> None:
        pr.comments.append(Comment(self.state._id(), user, text, notification))
        pr.last_updated = now()

    async def _receive(
        self,
        fullname: str,
        branch: str,
        old: str,
        revs: list[str],
        user: str,
        pr_id: int | None,
    ) -> None:
        project = self.state.projects[fullname]
        await self.notify(
            fullname,
            "git.receive",
            {
                "agent": user,
                "authors": [self.state.users[user].to_json(self.url)]
                if user in self.state.users
                else [],
                "branch": branch,
                "changed_files": {},
                "end_commit": revs[-1],
                "forced": False,
                "old_commit": old,
                "pull_request_id": pr_id,
                "repo": self.state.project_json(project),
                "start_commit": revs[0],
                "total_commits": len(revs),
            },
        )

    # -- the API ---------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        """pagure/api/__init__.py api_method: an APIError is ``{"error", "error_code"}``."""
        tail = request.match_info["tail"].rstrip("/")
        form = dict(await request.post()) if request.method == "POST" else {}
        self.calls.append((request.method, tail, {k: str(v) for k, v in form.items()}))
        try:
            failing = self.fail_next.get(self._action(tail, request.method))
            if failing:
                return web.json_response({"error": "injected"}, status=failing.pop(0))
            return web.json_response(await self._dispatch(request, tail, form))
        except ApiError as err:
            doc: dict[str, Any] = {
                "error": ERRORS[err.code].format(url=self.url),
                "error_code": err.code,
            }
            if err.errors is not None:
                doc["errors"] = err.errors
            return web.json_response(doc, status=err.status)

    @staticmethod
    def _action(tail: str, method: str) -> str:
        match = ROUTE.match(tail)
        return (match.group("action") if match and match.group("action") else None) or method

    async def _dispatch(self, request: web.Request, tail: str, form: dict[str, Any]) -> Any:
        if tail.startswith("group/") and request.method == "GET":
            return self._group(tail.removeprefix("group/"))
        match = ROUTE.match(tail)
        if match is None:
            raise web.HTTPNotFound()
        fullname = "/".join(p for p in (match["ns"], match["repo"]) if p)
        if match["user"]:
            fullname = f"forks/{match['user']}/{fullname}"
        project = self.state.projects.get(fullname)
        if project is None:
            raise ApiError(404, "ENOPROJECT")
        if match["pr"] is None:
            if request.method != "GET":
                raise web.HTTPMethodNotAllowed(request.method, ["GET"])
            # pagure/api/project.py api_project
            return self.state.project_json(project)
        pr = self.state.prs.get((fullname, int(match["pr"])))
        action = match["action"]
        if request.method == "GET" and action is None:
            # pagure/api/fork.py api_pull_request_view
            if pr is None:
                raise ApiError(404, "ENOREQ")
            return self._pr(pr)
        if request.method == "GET" and action == "flag":
            # pagure/api/fork.py api_pull_request_get_flag: flags of commit_stop
            if pr is None:
                raise ApiError(404, "ENOREQ")
            return {
                "flags": [
                    f.to_json(self.state.users, self.url)
                    for f in self.state.flags
                    if f.commit_hash == pr.commit_stop
                ]
            }
        if request.method != "POST" or action is None:
            raise web.HTTPMethodNotAllowed(request.method, ["GET"])
        acl = {
            "merge": "pull_request_merge",
            "flag": "pull_request_flag",
            "comment": "pull_request_comment",
        }[action]
        user = self._token_user(request, acl)
        if pr is None:
            raise ApiError(404, "ENOREQ")
        if action == "merge":
            return await self._merge(project, pr, user)
        if action == "flag":
            return await self._flag(pr, user, form)
        return await self._comment(pr, user, form)

    def _token_user(self, request: web.Request, acl: str) -> str:
        """pagure/utils.py check_api_acls: ``Authorization: token <t>``; 401 EINVALIDTOK."""
        header = request.headers.get("Authorization", "")
        given = header.split("token", 1)[1].strip() if "token" in header else ""
        token = self.state.tokens.get(given) if given else None
        if token is None:
            raise ApiError(401, "EINVALIDTOK", "Invalid token")
        if acl not in token.acls:
            raise ApiError(401, "EINVALIDTOK", f"Missing ACLs: {acl}")
        return token.user

    def _group(self, name: str) -> dict[str, Any]:
        """pagure/api/group.py api_view_group."""
        if name not in self.state.groups:
            raise ApiError(404, "ENOGROUP")
        return {
            "creator": self.state.users[self.state.groups[name][0]].to_json(self.url)
            if self.state.groups[name]
            else None,
            "date_created": now(),
            "description": name,
            "display_name": name,
            "group_type": "user",
            "members": list(self.state.groups[name]),
            "name": name,
        }

    async def _comment(self, pr: PullRequest, user: str, form: dict[str, Any]) -> dict[str, Any]:
        """pagure/api/fork.py api_pull_request_add_comment."""
        text = str(form.get("comment") or "")
        if not text.strip():
            raise ApiError(400, "EINVALIDREQ", {"comment": ["This field is required."]})
        await self.comment(pr.project, pr.id, user, text)
        return {"message": "Comment added"}

    async def _flag(self, pr: PullRequest, user: str, form: dict[str, Any]) -> dict[str, Any]:
        """pagure/api/fork.py api_pull_request_add_flag (AddPullRequestFlagForm) and
        pagure/lib/query.py add_pull_request_flag: same uid on the commit -> updated."""
        errors: dict[str, list[str]] = {}
        for name in ("username", "comment", "url"):
            if not str(form.get(name) or "").strip():
                errors[name] = ["This field is required."]
        status = str(form.get("status") or "")
        if status not in FLAG_STATUSES:
            errors["status"] = ["Not a valid choice"]
        uid = str(form.get("uid") or "") or uuid.uuid4().hex
        if len(uid) > 32:
            errors["uid"] = ["Field cannot be longer than 32 characters."]
        url = str(form.get("url") or "")
        if url and not re.match(r"^https?://", url):
            errors["url"] = ["Invalid URL."]
        if errors:
            raise ApiError(400, "EINVALIDREQ", errors)
        assert pr.commit_stop is not None
        existing = next(
            (f for f in self.state.flags if f.uid == uid and f.commit_hash == pr.commit_stop), None
        )
        values = {
            "username": str(form["username"]),
            "status": status,
            "comment": str(form["comment"]),
            "url": url,
        }
        if existing is None:
            flag = Flag(uid, pr.commit_stop, user, **values)
            self.state.flags.append(flag)
            action = "added"
        else:
            flag = existing
            for key, value in values.items():
                setattr(flag, key, value)
            flag.date_updated = now()
            action = "updated"
        await self.notify(
            pr.project,
            f"pull-request.flag.{action}",
            {
                "pullrequest": self._pr(pr),
                "flag": flag.to_json(self.state.users, self.url),
                "agent": user,
            },
        )
        return {
            "flag": flag.to_json(self.state.users, self.url),
            "message": f"Flag {action}",
            "uid": uid,
            "avatar_url": "https://seccdn.libravatar.org/avatar/0",
            "user": user,
        }

    async def _merge(self, project: Project, pr: PullRequest, user: str) -> dict[str, Any]:
        """pagure/api/fork.py api_pull_request_merge -> pagure/lib/git.py
        merge_pull_request: merges the *current* head of the PR's branch (no guard
        on a commit); any PagureException (closed, conflicts, nothing to merge) is
        answered 409 EPRCONFLICTS."""
        if user not in project.committers(self.state.groups):
            raise ApiError(403, "ENOPRCLOSE")
        if self.during_merge is not None:
            await self.during_merge(pr)
        if pr.status != "Open":
            raise ApiError(409, "EPRCONFLICTS")  # "This pull-request was merged or closed by"
        target = self.state.repo(pr.project)
        source = self.state.repo(pr.repo_from or pr.project)
        head = git(target, "rev-parse", f"refs/heads/{pr.branch}")
        tip = git(source, "rev-parse", f"refs/heads/{pr.branch_from}")
        git(target, "fetch", "-q", str(source), f"+{tip}:refs/pagure-fetch/{pr.id}")
        if await _ok(target, "merge-base", "--is-ancestor", tip, head):
            # up to date: closed as merged, and still an error ("Nothing to do")
            pr.status, pr.closed_by, pr.closed_at = "Merged", user, now()
            raise ApiError(409, "EPRCONFLICTS")
        fast_forward = await _ok(target, "merge-base", "--is-ancestor", head, tip)
        if fast_forward and not project.settings.get("always_merge"):
            new = tip
        else:
            new = await asyncio.to_thread(self._merge_commit, target, head, tip, pr)
            if new is None:
                raise ApiError(409, "EPRCONFLICTS")  # "Merge conflicts!"
        git(target, "update-ref", f"refs/heads/{pr.branch}", new, head)
        revs = git(target, "rev-list", "--reverse", new, "--not", head).split()
        pr.status, pr.closed_by, pr.closed_at = "Merged", user, now()
        await self._receive(pr.project, pr.branch, head, revs, user, pr.id)
        await self.notify(
            pr.project,
            "pull-request.closed",
            {"pullrequest": self._pr(pr), "merged": True, "agent": user},
        )
        return {"message": "Changes merged!"}

    def _merge_commit(self, target: Path, head: str, tip: str, pr: PullRequest) -> str | None:
        """A merge commit "Merge #<id> `<title>`" with parents [head, tip]."""
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            git(work, "init", "-q")
            git(work, "fetch", "-q", str(target), head, tip)
            git(work, "checkout", "-q", head)
            git(work, "merge", "--no-ff", "--no-edit", "-q", tip, check=False)
            if git(work, "rev-parse", "-q", "--verify", "MERGE_HEAD", check=False):
                return None
            git(work, "commit", "-q", "--amend", "-m", f"Merge #{pr.id} `{pr.title}`")
            sha = git(work, "rev-parse", "HEAD")
            git(work, "push", "-q", str(target), f"{sha}:refs/pagure-merge/{pr.id}")
            return sha


async def _ok(cwd: Path, *args: str) -> bool:
    proc = await asyncio.create_subprocess_exec(
        "git", *args, cwd=cwd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await proc.wait() == 0
