"""A fake Forgejo for tests: the REST API under ``/api/v1`` and signed webhook deliveries.

It holds real bare git repositories (``refs/pull/<n>/head``, as Forgejo
keeps them), answers the calls with the shapes and status codes of Forgejo's
handlers (each cites its source file in the Forgejo tree: routers/api/v1/...,
services/convert/..., services/webhook/...), and posts deliveries with the
headers services/webhook/shared/payloader.go ``AddDefaultHeaders`` sets.
Where Forgejo differs from GitHub, this fake does too: a merge answers an
empty 200, a merged pull request is ``state: closed`` with ``merged: true``,
reviews say ``REQUEST_CHANGES`` and carry ``dismissed``, the permission call
is refused to a caller that is not a repository admin, and the event type is
fine-grained (``pull_request_sync``).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests import forge_git
from tests.fakeforge import Delivery, FakeServer, now

#: modules/webhook/type.go ``HookEventType.Event()``: the coarse X-Forgejo-Event
EVENT_OF_TYPE = {
    "push": "push",
    "pull_request": "pull_request",
    "pull_request_sync": "pull_request",
    "pull_request_label": "pull_request",
    "pull_request_comment": "issue_comment",
    "pull_request_review_approved": "pull_request_approved",
    "pull_request_review_rejected": "pull_request_rejected",
}
#: models/perm/access_mode.go, weakest first
LEVELS = ("none", "read", "write", "admin", "owner")

#: who the token authenticated, and the decoded JSON body, on each request
LOGIN = web.RequestKey("login", str)
BODY = web.RequestKey("body", Any)


@dataclass
class Pull:
    repo: str
    number: int
    title: str
    body: str
    user: str
    head_ref: str
    head_sha: str
    base: str
    base_sha: str
    state: str = "open"
    merged: bool = False
    merge_commit_sha: str | None = None
    merged_by: str | None = None
    labels: list[str] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    comments: list[dict[str, Any]] = field(default_factory=list)
    created_at: str = field(default_factory=now)


@dataclass
class Repo:
    full_name: str
    path: Path
    #: login -> access mode (read, write, admin, owner)
    modes: dict[str, str]
    pulls: dict[int, Pull] = field(default_factory=dict)
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class FakeForgejo(FakeServer):
    def __init__(self, secret: str, tokens: Mapping[str, str]) -> None:
        super().__init__()
        self.secret = secret
        self.tokens = dict(tokens)
        self.repos: dict[str, Repo] = {}
        self._ids = itertools.count(500)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        api = "/api/v1/repos/{owner}/{repo}"
        app.router.add_get(api + "/pulls/{index}", self.get_pull)
        app.router.add_get(api + "/pulls/{index}/reviews", self.list_reviews)
        app.router.add_post(api + "/pulls/{index}/merge", self.merge_pull)
        app.router.add_get(api + "/collaborators/{collaborator}/permission", self.permission)
        app.router.add_post(api + "/statuses/{sha}", self.create_status)
        app.router.add_post(api + "/issues/{index}/comments", self.create_comment)
        return app

    def add_repo(self, full_name: str, path: Path, modes: Mapping[str, str]) -> Repo:
        self.repos[full_name] = Repo(full_name, path, dict(modes))
        return self.repos[full_name]

    # -- what people do (services/webhook/notifier.go says what each sends) ----------------
    async def open_pull(
        self, repo: str, sha: str, *, user: str, title: str = "", body: str = "", base: str = "main"
    ) -> Pull:
        r = self.repos[repo]
        number = max([0, *r.pulls]) + 1
        base_sha = await forge_git.rev(r.path, f"refs/heads/{base}")
        assert base_sha is not None
        await forge_git.git(r.path, "update-ref", f"refs/pull/{number}/head", sha)
        pr = Pull(
            repo, number, title or f"PR {number}", body, user, f"pr-{number}", sha, base, base_sha
        )
        r.pulls[number] = pr
        await self._pull_event("pull_request", pr, "opened", user)  # NewPullRequest
        return pr

    async def push_to_pull(self, repo: str, number: int, sha: str, deliver: bool = True) -> None:
        """PullRequestSynchronized: ``pull_request_sync``, action ``synchronized``."""
        pr = self.repos[repo].pulls[number]
        await forge_git.git(self.repos[repo].path, "update-ref", f"refs/pull/{number}/head", sha)
        pr.head_sha = sha
        if not deliver:  # a push whose delivery is late or lost
            return
        await self._pull_event("pull_request_sync", pr, "synchronized", pr.user)

    async def review(self, repo: str, number: int, user: str, state: str = "APPROVED") -> None:
        """PullRequestReview: ``pull_request_review_approved``/``_rejected``, action ``reviewed``,
        ``review: {type, content}``; the review itself as services/convert/pull_review.go
        ``ToPullReview`` shows it."""
        pr = self.repos[repo].pulls[number]
        pr.reviews.append(
            {
                "id": next(self._ids),
                "user": self._user(user),
                "team": None,
                "state": state,
                "body": "",
                "commit_id": pr.head_sha,
                "stale": False,
                "official": self.repos[repo].modes.get(user) in ("write", "admin", "owner"),
                "dismissed": False,
                "comments_count": 0,
                "submitted_at": now(),
                "updated_at": now(),
                "html_url": f"{self._html(pr)}#issuecomment-1",
                "pull_request_url": self._html(pr),
            }
        )
        kind = {"APPROVED": "approved", "REQUEST_CHANGES": "rejected"}[state]
        await self._pull_event(
            f"pull_request_review_{kind}",
            pr,
            "reviewed",
            user,
            requested_reviewer=self._user(user),
            review={"type": f"pull_request_review_{kind}", "content": ""},
        )

    async def dismiss(self, repo: str, number: int, user: str) -> None:
        """A dismissed review keeps its state and gets ``dismissed: true``; no webhook."""
        for review in self.repos[repo].pulls[number].reviews:
            if review["user"]["login"] == user:
                review["dismissed"] = True

    async def label(self, repo: str, number: int, name: str, by: str) -> None:
        """IssueChangeLabels: ``pull_request_label``, action ``label_updated``."""
        pr = self.repos[repo].pulls[number]
        pr.labels.append(name)
        await self._pull_event("pull_request_label", pr, "label_updated", by)

    async def close(self, repo: str, number: int, by: str) -> None:
        """IssueChangeStatus: ``pull_request``, action ``closed``."""
        pr = self.repos[repo].pulls[number]
        pr.state = "closed"
        await self._pull_event("pull_request", pr, "closed", by)

    async def comment(self, repo: str, number: int, by: str, body: str) -> None:
        """CreateIssueComment on a pull request: ``pull_request_comment`` (X-Forgejo-Event
        ``issue_comment``), the pull request included and ``repository.permissions``
        computed for the commenter."""
        pr = self.repos[repo].pulls[number]
        comment = self._comment_doc(pr, by, body)
        pr.comments.append(comment)
        await self._send(
            "pull_request_comment",
            {
                "action": "created",
                "issue": self._issue_doc(pr),
                "pull_request": self._pull_doc(pr),
                "comment": comment,
                "repository": self._repo_doc(repo, self.repos[repo].modes.get(by, "read")),
                "sender": self._user(by),
                "is_pull": True,
            },
        )

    async def push_branch(self, repo: str, branch: str, before: str, after: str, by: str) -> None:
        """PushCommits: ``push`` (modules/structs/hook.go ``PushPayload``)."""
        await self._send(
            "push",
            {
                "ref": f"refs/heads/{branch}",
                "before": before,
                "after": after,
                "compare_url": f"{self.url}/{repo}/compare/{before}...{after}",
                "commits": [],
                "total_commits": 0,
                "head_commit": None,
                "repository": self._repo_doc(repo, "owner"),
                "pusher": self._user(by),
                "sender": self._user(by),
            },
        )

    async def _pull_event(self, kind: str, pr: Pull, action: str, by: str, **extra: Any) -> None:
        await self._send(
            kind,
            {
                "action": action,
                "number": pr.number,
                "pull_request": self._pull_doc(pr),
                "requested_reviewer": None,
                "repository": self._repo_doc(pr.repo, "owner"),
                "sender": self._user(by),
                "commit_id": "",
                "review": None,
                **extra,
            },
        )

    # -- deliveries ----------------------------------------------------------------------
    def sign(self, body: bytes) -> str:
        return hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()

    async def _send(self, kind: str, payload: dict[str, Any]) -> Delivery:
        """services/webhook/shared/payloader.go: the body is ``json.MarshalIndent(payload,
        "", "  ")``; ``AddDefaultHeaders`` sets the X-Forgejo-, X-Gitea-, X-Gogs- trio,
        ``X-Hub-Signature(-256)`` and ``X-GitHub-*``."""
        body = json.dumps(payload, indent=2).encode()
        signature = self.sign(body)
        sha1 = hmac.new(self.secret.encode(), body, hashlib.sha1).hexdigest()
        task_uuid = str(uuid.uuid4())
        event = EVENT_OF_TYPE[kind]
        headers = {"Content-Type": "application/json", "User-Agent": "Go-http-client/1.1"}
        for prefix in ("X-Forgejo", "X-Gitea", "X-Gogs"):
            headers[f"{prefix}-Delivery"] = task_uuid
            headers[f"{prefix}-Event"] = event
            headers[f"{prefix}-Event-Type"] = kind
            headers[f"{prefix}-Signature"] = signature
        headers["X-Hub-Signature"] = f"sha1={sha1}"
        headers["X-Hub-Signature-256"] = f"sha256={signature}"
        headers["X-GitHub-Delivery"] = task_uuid
        headers["X-GitHub-Event"] = event
        headers["X-GitHub-Event-Type"] = kind
        delivery = Delivery(task_uuid, kind, body, headers)
        await self.post(delivery)
        return delivery

    # -- documents (services/convert) ----------------------------------------------------
    def _user(self, login: str) -> dict[str, Any]:
        return {
            "id": abs(hash(login)) % 100000,
            "login": login,
            "login_name": "",
            "full_name": "",
            "email": f"{login}@noreply.forge.invalid",
            "html_url": f"{self.url}/{login}",
            "username": login,
        }

    def _repo_doc(self, full_name: str, mode: str) -> dict[str, Any]:
        """convert.ToRepo: ``permissions`` is the access of the user it was made for."""
        owner, name = full_name.split("/")
        level = LEVELS.index(mode) if mode in LEVELS else 0
        return {
            "id": abs(hash(full_name)) % 100000,
            "owner": self._user(owner),
            "name": name,
            "full_name": full_name,
            "private": False,
            "fork": False,
            "html_url": f"{self.url}/{full_name}",
            "clone_url": f"{self.url}/{full_name}.git",
            "default_branch": "main",
            "permissions": {"admin": level >= 3, "push": level >= 2, "pull": level >= 1},
        }

    def _html(self, pr: Pull) -> str:
        return f"{self.url}/{pr.repo}/pulls/{pr.number}"

    def _pull_doc(self, pr: Pull) -> dict[str, Any]:
        """services/convert/pull.go ``ToAPIPullRequest``."""
        repo = self._repo_doc(pr.repo, "read")
        closed = pr.state != "open"
        return {
            "id": pr.number * 31,
            "url": self._html(pr),
            "number": pr.number,
            "user": self._user(pr.user),
            "title": pr.title,
            "body": pr.body,
            "labels": [{"id": i, "name": n, "color": "ededed"} for i, n in enumerate(pr.labels)],
            "milestone": None,
            "assignee": None,
            "assignees": None,
            "requested_reviewers": None,
            "state": "closed" if closed else "open",
            "draft": pr.title.startswith("WIP:"),
            "is_locked": False,
            "comments": len(pr.comments),
            "html_url": self._html(pr),
            "diff_url": f"{self._html(pr)}.diff",
            "patch_url": f"{self._html(pr)}.patch",
            "mergeable": not closed,
            "merged": pr.merged,
            "merged_at": now() if pr.merged else None,
            "merge_commit_sha": pr.merge_commit_sha,
            "merged_by": self._user(pr.merged_by) if pr.merged_by else None,
            "allow_maintainer_edit": False,
            "base": {
                "label": pr.base,
                "ref": pr.base,
                "sha": pr.base_sha,
                "repo_id": repo["id"],
                "repo": repo,
            },
            "head": {
                "label": pr.head_ref,
                "ref": pr.head_ref,
                "sha": pr.head_sha,
                "repo_id": repo["id"],
                "repo": repo,
            },
            "merge_base": pr.base_sha,
            "due_date": None,
            "created_at": pr.created_at,
            "updated_at": now(),
            "closed_at": now() if closed else None,
            "pin_order": 0,
        }

    def _issue_doc(self, pr: Pull) -> dict[str, Any]:
        return {
            "id": pr.number * 37,
            "url": f"{self.url}/api/v1/repos/{pr.repo}/issues/{pr.number}",
            "html_url": self._html(pr),
            "number": pr.number,
            "user": self._user(pr.user),
            "title": pr.title,
            "body": pr.body,
            "state": pr.state,
            "pull_request": {"merged": pr.merged, "merged_at": None, "draft": False},
        }

    def _comment_doc(self, pr: Pull, by: str, body: str) -> dict[str, Any]:
        return {
            "id": next(self._ids),
            "html_url": f"{self._html(pr)}#issuecomment-1",
            "pull_request_url": self._html(pr),
            "issue_url": "",
            "user": self._user(by),
            "body": body,
            "assets": [],
            "created_at": now(),
            "updated_at": now(),
        }

    # -- the REST API ------------------------------------------------------------------
    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """services/auth: ``Authorization: token <t>`` (or ``Bearer``); an unknown token is
        401.  Anonymous reads of a public repository are allowed, writes are not."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        login = self.tokens.get(token) if scheme.lower() in ("token", "bearer") else None
        try:
            body = await request.json() if request.can_read_body else None
        except ValueError:
            return _error(400, "invalid JSON body")
        self.calls.append((request.method, request.path, body))
        if login is None and "Authorization" in request.headers:
            return _error(401, "user does not exist")
        if login is None and request.method != "GET":
            return _error(401, "token is required")
        request[LOGIN] = login or ""
        request[BODY] = body
        return await handler(request)

    def _repo(self, request: web.Request) -> Repo | None:
        return self.repos.get(f"{request.match_info['owner']}/{request.match_info['repo']}")

    def _mode(self, repo: Repo, login: str) -> int:
        mode = repo.modes.get(login, "read")
        return LEVELS.index(mode)

    def _pull(self, request: web.Request) -> tuple[Repo, Pull] | web.Response:
        repo = self._repo(request)
        try:
            index = int(request.match_info["index"])
        except ValueError:
            return _error(404, "")
        if repo is None or index not in repo.pulls:
            return _error(404, "")
        return repo, repo.pulls[index]

    async def get_pull(self, request: web.Request) -> web.Response:
        """routers/api/v1/repo/pull.go ``GetPullRequest``: 200 PullRequest, 404."""
        found = self._pull(request)
        if isinstance(found, web.Response):
            return found
        return web.json_response(self._pull_doc(found[1]))

    async def list_reviews(self, request: web.Request) -> web.Response:
        """routers/api/v1/repo/pull_review.go ``ListPullReviews``: ``page``/``limit``
        (at most 50, setting.API.MaxResponseItems), ``Link`` header for the next page."""
        found = self._pull(request)
        if isinstance(found, web.Response):
            return found
        limit = min(50, int(request.query.get("limit", "50")))
        page = max(1, int(request.query.get("page", "1")))
        reviews = found[1].reviews
        chunk = reviews[(page - 1) * limit : page * limit]
        headers = {"X-Total-Count": str(len(reviews))}
        if page * limit < len(reviews):
            nxt = request.url.update_query({"page": str(page + 1), "limit": str(limit)})
            headers["Link"] = f'<{nxt}>; rel="next"'
        return web.json_response(chunk, headers=headers)

    async def permission(self, request: web.Request) -> web.Response:
        """routers/api/v1/repo/collaborators.go ``GetRepoPermissions``: 404 for an unknown
        user; 403 unless the caller is a site admin, a repository admin or the user."""
        repo = self._repo(request)
        if repo is None:
            return _error(404, "")
        user = request.match_info["collaborator"]
        caller = request[LOGIN]
        if caller != user and self._mode(repo, caller) < LEVELS.index("admin"):
            return _error(
                403,
                "Only admins can query all permissions, repo admins can query all repo "
                "permissions, collaborators can query only their own",
            )
        mode = repo.modes.get(user, "read")
        return web.json_response({"permission": mode, "role_name": mode, "user": self._user(user)})

    async def merge_pull(self, request: web.Request) -> web.Response:
        """routers/api/v1/repo/pull.go ``MergePullRequest``: ``Do`` required (422); closed:
        404; merged already: 405 "PR already merged"; a user who may not merge: 405;
        ``head_commit_id`` not the head: 409 "head out of date"; conflicts: 409; merged:
        200 with an empty body."""
        found = self._pull(request)
        if isinstance(found, web.Response):
            return found
        repo, pr = found
        if self.before_merge is not None:
            await self.before_merge()
        body = request[BODY] or {}
        style = body.get("Do")
        if style not in (
            "merge",
            "rebase",
            "rebase-merge",
            "squash",
            "fast-forward-only",
            "manually-merged",
        ):
            return web.json_response(
                [{"fieldNames": ["Do"], "classification": "RequiredError", "message": "Required"}],
                status=422,
            )
        if pr.merged:
            return _error(405, "")
        if pr.state != "open":
            return _error(404, "")
        if self._mode(repo, request[LOGIN]) < LEVELS.index("write"):
            return _error(405, "User not allowed to merge PR")
        if style not in ("merge", "squash", "fast-forward-only"):
            return _error(405, f"{style} is not allowed an allowed merge style for this repository")
        head = body.get("head_commit_id") or ""
        if head and head != pr.head_sha:
            return _error(409, "head out of date")
        before = await forge_git.rev(repo.path, f"refs/heads/{pr.base}") or ""
        message = body.get("MergeTitleField") or f"Merge pull request '{pr.title}' (#{pr.number})"
        new = await forge_git.merge(repo.path, pr.base, pr.head_sha, style, message)
        if new is None:
            return web.json_response({"message": "merge conflicts", "url": self.url}, status=409)
        pr.state, pr.merged, pr.merge_commit_sha = "closed", True, new
        pr.merged_by = request[LOGIN]
        self.later(self._merged(pr, before, new, request[LOGIN]))
        return web.Response(status=200)

    async def _merged(self, pr: Pull, before: str, new: str, by: str) -> None:
        """MergePullRequest (``pull_request`` closed) and PushCommits of the base branch."""
        await self._pull_event("pull_request", pr, "closed", by)
        await self.push_branch(pr.repo, pr.base, before, new, by)

    async def create_status(self, request: web.Request) -> web.Response:
        """routers/api/v1/repo/status.go ``NewCommitStatus``: 201 CommitStatus; ``state``
        one of pending, success, error, failure, warning."""
        repo = self._repo(request)
        if repo is None:
            return _error(404, "")
        if self._mode(repo, request[LOGIN]) < LEVELS.index("write"):
            return _error(403, "")
        body = request[BODY] or {}
        sha = request.match_info["sha"]
        if body.get("state") not in ("pending", "success", "error", "failure", "warning"):
            return _error(422, "invalid state")
        if not await forge_git.has_commit(repo.path, sha):
            return _error(404, "")
        status = {
            "id": next(self._ids),
            "status": body["state"],
            "target_url": body.get("target_url", ""),
            "description": body.get("description", ""),
            "url": f"{self.url}/api/v1/repos/{repo.full_name}/statuses/{sha}",
            "context": body.get("context", ""),
            "creator": self._user(request[LOGIN]),
            "created_at": now(),
            "updated_at": now(),
        }
        repo.statuses.setdefault(sha, []).append(status)
        return web.json_response(status, status=201)

    async def create_comment(self, request: web.Request) -> web.Response:
        """routers/api/v1/repo/issue_comment.go ``CreateIssueComment``: 201 Comment."""
        found = self._pull(request)
        if isinstance(found, web.Response):
            return found
        body = request[BODY] or {}
        if not isinstance(body.get("body"), str):
            return _error(422, "body is required")
        comment = self._comment_doc(found[1], request[LOGIN], body["body"])
        found[1].comments.append(comment)
        return web.json_response(comment, status=201)


def _error(status: int, message: str) -> web.Response:
    """``ctx.Error``: an APIError ``{"message", "url"}``."""
    return web.json_response({"message": message, "url": "/api/swagger"}, status=status)
