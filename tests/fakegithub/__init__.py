"""A fake GitHub (Enterprise Server shaped: the REST API under ``/api/v3``) for tests.

It holds real bare git repositories (a pull request's head is
``refs/pull/<n>/head`` there, as on GitHub), answers the REST calls a client
makes with GitHub's documented shapes and status codes, and posts webhook
deliveries signed as GitHub signs them to a receiver (rpmgate's real
endpoint).  Every handler cites the documentation it follows.  It is faithful
to GitHub, not to rpmgate's client: it does not know what the client expects.

People act through the ``FakeGitHub`` methods (open a pull request, push to
it, review, label, close, push a branch); each changes the state and sends the
delivery GitHub would.
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

DOCS = "https://docs.github.com/rest"

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
    draft: bool = False
    labels: list[str] = field(default_factory=list)
    #: GitHub review objects, oldest first
    reviews: list[dict[str, Any]] = field(default_factory=list)
    comments: list[dict[str, Any]] = field(default_factory=list)
    created_at: str = field(default_factory=now)


@dataclass
class Repo:
    full_name: str
    path: Path
    #: login -> role (read, triage, write, maintain, admin)
    roles: dict[str, str]
    pulls: dict[int, Pull] = field(default_factory=dict)
    #: sha -> statuses, newest last
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class FakeGitHub(FakeServer):
    def __init__(self, secret: str, tokens: Mapping[str, str]) -> None:
        super().__init__()
        #: the webhook secret the deliveries are signed with
        self.secret = secret
        #: token -> login of the account it authenticates
        self.tokens = dict(tokens)
        self.repos: dict[str, Repo] = {}
        self._ids = itertools.count(1000)
        self.hook_id = 4242
        #: answer every call as GitHub does when the token's rate limit is spent
        self.rate_limited = False

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        api = "/api/v3/repos/{owner}/{repo}"
        app.router.add_get(api + "/pulls/{number}", self.get_pull)
        app.router.add_get(api + "/pulls/{number}/reviews", self.list_reviews)
        app.router.add_put(api + "/pulls/{number}/merge", self.merge_pull)
        app.router.add_get(api + "/collaborators/{user}/permission", self.permission)
        app.router.add_post(api + "/statuses/{sha}", self.create_status)
        app.router.add_post(api + "/issues/{number}/comments", self.create_comment)
        return app

    def add_repo(self, full_name: str, path: Path, roles: Mapping[str, str]) -> Repo:
        self.repos[full_name] = Repo(full_name, path, dict(roles))
        return self.repos[full_name]

    # -- what people do (each sends GitHub's delivery) ------------------------------------
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
        await self.send_pull_event(pr, "opened", user)
        return pr

    async def push_to_pull(self, repo: str, number: int, sha: str, deliver: bool = True) -> None:
        pr = self.repos[repo].pulls[number]
        before = pr.head_sha
        await forge_git.git(self.repos[repo].path, "update-ref", f"refs/pull/{number}/head", sha)
        pr.head_sha = sha
        if not deliver:  # a push whose delivery is late or lost
            return
        await self.send_pull_event(pr, "synchronize", pr.user, before=before, after=sha)

    async def review(self, repo: str, number: int, user: str, state: str = "APPROVED") -> None:
        """A submitted review (https://docs.github.com/en/rest/pulls/reviews#create-a-review-for-a-pull-request)."""
        pr = self.repos[repo].pulls[number]
        review = {
            "id": next(self._ids),
            "node_id": "PRR_fake",
            "user": self._user(user),
            "body": "",
            "state": state,
            "html_url": f"{self._html(pr)}#pullrequestreview-1",
            "pull_request_url": f"{self.url}/api/v3/repos/{repo}/pulls/{number}",
            "submitted_at": now(),
            "commit_id": pr.head_sha,
            "author_association": "COLLABORATOR",
        }
        pr.reviews.append(review)
        # the event's review.state is lower case (webhook-events-and-payloads#pull_request_review)
        await self._send(
            "pull_request_review",
            {
                "action": "submitted",
                "review": {**review, "state": state.lower()},
                "pull_request": self._pull_doc(pr),
                "repository": self._repo_doc(repo),
                "sender": self._user(user),
            },
        )

    async def label(self, repo: str, number: int, name: str, by: str) -> None:
        pr = self.repos[repo].pulls[number]
        pr.labels.append(name)
        await self.send_pull_event(pr, "labeled", by, label={"name": name, "color": "ededed"})

    async def close(self, repo: str, number: int, by: str) -> None:
        pr = self.repos[repo].pulls[number]
        pr.state = "closed"
        await self.send_pull_event(pr, "closed", by)

    async def push_branch(self, repo: str, branch: str, before: str, after: str, by: str) -> None:
        """A push to a branch (webhook-events-and-payloads#push)."""
        await self._send(
            "push",
            {
                "ref": f"refs/heads/{branch}",
                "before": before,
                "after": after,
                "created": False,
                "deleted": False,
                "forced": False,
                "base_ref": None,
                "compare": f"{self.url}/{repo}/compare/{before[:12]}...{after[:12]}",
                "commits": [],
                "head_commit": {"id": after},
                "repository": self._repo_doc(repo),
                "pusher": {"name": by, "email": f"{by}@users.invalid"},
                "sender": self._user(by),
            },
        )

    async def ping(self, repo: str) -> None:
        await self._send(
            "ping",
            {
                "zen": "Keep it logically awesome.",
                "hook_id": self.hook_id,
                "hook": {"type": "Repository", "id": self.hook_id, "events": ["*"]},
                "repository": self._repo_doc(repo),
                "sender": self._user("admin"),
            },
        )

    async def send_pull_event(self, pr: Pull, action: str, by: str, **extra: Any) -> None:
        await self._send(
            "pull_request",
            {
                "action": action,
                "number": pr.number,
                "pull_request": self._pull_doc(pr),
                "repository": self._repo_doc(pr.repo),
                "sender": self._user(by),
                **extra,
            },
        )

    # -- deliveries ----------------------------------------------------------------------
    def sign(self, body: bytes) -> str:
        digest = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        return f"sha256={digest}"

    async def _send(self, event: str, payload: dict[str, Any]) -> Delivery:
        """POST as GitHub does: JSON body, ``X-GitHub-Event``, ``X-GitHub-Delivery`` (a GUID),
        ``X-Hub-Signature-256`` (https://docs.github.com/en/webhooks/webhook-events-and-payloads#delivery-headers)."""
        body = json.dumps(payload, indent=2).encode()
        digest1 = hmac.new(self.secret.encode(), body, hashlib.sha1).hexdigest()
        delivery = Delivery(
            str(uuid.uuid4()),
            event,
            body,
            {
                "Content-Type": "application/json",
                "User-Agent": "GitHub-Hookshot/fake",
                "X-GitHub-Event": event,
                "X-GitHub-Delivery": "",
                "X-GitHub-Hook-ID": str(self.hook_id),
                "X-GitHub-Hook-Installation-Target-Type": "repository",
                "X-Hub-Signature": f"sha1={digest1}",
                "X-Hub-Signature-256": self.sign(body),
            },
        )
        delivery.headers["X-GitHub-Delivery"] = delivery.id
        await self.post(delivery)
        return delivery

    # -- documents ---------------------------------------------------------------------
    def _user(self, login: str) -> dict[str, Any]:
        return {
            "login": login,
            "id": abs(hash(login)) % 100000,
            "type": "Bot" if login.endswith("[bot]") else "User",
            "html_url": f"{self.url}/{login}",
        }

    def _repo_doc(self, full_name: str) -> dict[str, Any]:
        owner, name = full_name.split("/")
        return {
            "id": abs(hash(full_name)) % 100000,
            "name": name,
            "full_name": full_name,
            "private": False,
            "owner": self._user(owner),
            "html_url": f"{self.url}/{full_name}",
            "clone_url": f"{self.url}/{full_name}.git",
            "default_branch": "main",
        }

    def _html(self, pr: Pull) -> str:
        return f"{self.url}/{pr.repo}/pull/{pr.number}"

    def _pull_doc(self, pr: Pull) -> dict[str, Any]:
        """A pull request (https://docs.github.com/en/rest/pulls/pulls#get-a-pull-request)."""
        repo = self._repo_doc(pr.repo)
        return {
            "url": f"{self.url}/api/v3/repos/{pr.repo}/pulls/{pr.number}",
            "id": pr.number * 7919,
            "html_url": self._html(pr),
            "number": pr.number,
            "state": pr.state,
            "locked": False,
            "title": pr.title,
            "user": self._user(pr.user),
            "body": pr.body or None,
            "labels": [{"name": n, "color": "ededed", "default": False} for n in pr.labels],
            "created_at": pr.created_at,
            "updated_at": now(),
            "closed_at": None if pr.state == "open" else now(),
            "merged_at": now() if pr.merged else None,
            "merge_commit_sha": pr.merge_commit_sha,
            "draft": pr.draft,
            "head": {
                "label": f"{pr.user}:{pr.head_ref}",
                "ref": pr.head_ref,
                "sha": pr.head_sha,
                "user": self._user(pr.user),
                "repo": repo,
            },
            "base": {
                "label": f"{pr.repo.split('/')[0]}:{pr.base}",
                "ref": pr.base,
                "sha": pr.base_sha,
                "user": repo["owner"],
                "repo": repo,
            },
            "author_association": "CONTRIBUTOR",
            "merged": pr.merged,
            "mergeable": None if pr.merged else True,
            "mergeable_state": "clean" if pr.state == "open" else "unknown",
            "merged_by": self._user(pr.merged_by) if pr.merged_by else None,
            "comments": len(pr.comments),
        }

    # -- the REST API ------------------------------------------------------------------
    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """https://docs.github.com/en/rest/authentication/authenticating-to-the-rest-api:
        ``Authorization: Bearer <token>`` (or ``token <token>``); a wrong one is 401
        "Bad credentials"."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        login = self.tokens.get(token) if scheme.lower() in ("bearer", "token") else None
        try:
            body = await request.json() if request.can_read_body else None
        except ValueError:
            return _error(400, "Problems parsing JSON")
        self.calls.append((request.method, request.path, body))
        if login is None:
            return _error(401, "Bad credentials")
        if self.rate_limited:
            # rate-limits-for-the-rest-api: 403 (or 429), x-ratelimit-remaining 0
            answer = _error(403, "API rate limit exceeded for user ID 1.")
            answer.headers.update({"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "0"})
            return answer
        request[LOGIN] = login
        request[BODY] = body
        return await handler(request)

    def _pull(self, request: web.Request) -> tuple[Repo, Pull] | web.Response:
        repo = self.repos.get(f"{request.match_info['owner']}/{request.match_info['repo']}")
        try:
            number = int(request.match_info["number"])
        except ValueError:
            return _error(404, "Not Found")
        if repo is None or number not in repo.pulls:
            return _error(404, "Not Found")
        return repo, repo.pulls[number]

    async def get_pull(self, request: web.Request) -> web.Response:
        """https://docs.github.com/en/rest/pulls/pulls#get-a-pull-request"""
        found = self._pull(request)
        if isinstance(found, web.Response):
            return found
        return web.json_response(self._pull_doc(found[1]))

    async def list_reviews(self, request: web.Request) -> web.Response:
        """https://docs.github.com/en/rest/pulls/reviews#list-reviews-for-a-pull-request
        (chronological; ``per_page`` at most 100, pages linked by ``Link: rel="next"``)."""
        found = self._pull(request)
        if isinstance(found, web.Response):
            return found
        per_page = min(100, int(request.query.get("per_page", "30")))
        page = int(request.query.get("page", "1"))
        reviews = found[1].reviews
        chunk = reviews[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(reviews):
            nxt = request.url.update_query({"page": str(page + 1), "per_page": str(per_page)})
            headers["Link"] = f'<{nxt}>; rel="next"'
        return web.json_response(chunk, headers=headers)

    async def permission(self, request: web.Request) -> web.Response:
        """https://docs.github.com/en/rest/collaborators/collaborators#get-repository-permissions-for-a-user:
        ``permission`` is admin, write, read or none (maintain reads as write,
        triage as read); ``role_name`` the role.  On a public repository
        anyone may read."""
        repo = self.repos.get(f"{request.match_info['owner']}/{request.match_info['repo']}")
        if repo is None:
            return _error(404, "Not Found")
        user = request.match_info["user"]
        role = repo.roles.get(user, "read")
        legacy = {"maintain": "write", "triage": "read"}.get(role, role)
        return web.json_response(
            {"permission": legacy, "role_name": role, "user": self._user(user)}
        )

    async def merge_pull(self, request: web.Request) -> web.Response:
        """https://docs.github.com/en/rest/pulls/pulls#merge-a-pull-request:
        200 ``{sha, merged: true, message}``; 405 "Pull Request is not mergeable";
        409 "Head branch was modified. Review and try the merge again." when ``sha``
        is not the head; 422 for an unknown ``merge_method``; 403 without write access."""
        found = self._pull(request)
        if isinstance(found, web.Response):
            return found
        repo, pr = found
        if self.before_merge is not None:
            await self.before_merge()
        body = request[BODY] or {}
        if repo.roles.get(request[LOGIN]) not in ("write", "maintain", "admin"):
            return _error(403, "Resource not accessible by personal access token")
        method = body.get("merge_method", "merge")
        if method not in ("merge", "squash", "rebase"):
            return _error(422, "Validation Failed")
        if method == "rebase":
            return _error(405, "This fake merges with merge or squash only")
        if pr.state != "open" or pr.merged:
            return _error(405, "Pull Request is not mergeable")
        if "sha" in body and body["sha"] != pr.head_sha:
            return _error(409, "Head branch was modified. Review and try the merge again.")
        title = (
            body.get("commit_title")
            or f"Merge pull request #{pr.number} from {pr.user}/{pr.head_ref}"
        )
        before = await forge_git.rev(repo.path, f"refs/heads/{pr.base}") or ""
        new = await forge_git.merge(
            repo.path, pr.base, pr.head_sha, method, f"{title}\n\n{pr.title}"
        )
        if new is None:
            return _error(405, "Pull Request is not mergeable")
        pr.state, pr.merged, pr.merge_commit_sha, pr.merged_by = (
            "closed",
            True,
            new,
            request[LOGIN],
        )
        # what GitHub sends after a merge, once it answered: the pull request
        # closed, the branch pushed
        self.later(self._merged(pr, before, new, request[LOGIN]))
        return web.json_response(
            {"sha": new, "merged": True, "message": "Pull Request successfully merged"}
        )

    async def _merged(self, pr: Pull, before: str, new: str, by: str) -> None:
        await self.send_pull_event(pr, "closed", by)
        await self.push_branch(pr.repo, pr.base, before, new, by)

    async def create_status(self, request: web.Request) -> web.Response:
        """https://docs.github.com/en/rest/commits/statuses#create-a-commit-status:
        201; ``state`` one of error, failure, pending, success (else 422); an unknown
        sha 422 "No commit found for SHA"."""
        repo = self.repos.get(f"{request.match_info['owner']}/{request.match_info['repo']}")
        if repo is None:
            return _error(404, "Not Found")
        if repo.roles.get(request[LOGIN]) not in ("write", "maintain", "admin"):
            return _error(404, "Not Found")
        body = request[BODY] or {}
        sha = request.match_info["sha"]
        if body.get("state") not in ("error", "failure", "pending", "success"):
            return _error(422, "Validation Failed")
        if not await forge_git.has_commit(repo.path, sha):
            return _error(422, f"No commit found for SHA: {sha}")
        status = {
            "id": next(self._ids),
            "state": body["state"],
            "description": body.get("description"),
            "target_url": body.get("target_url"),
            "context": body.get("context", "default"),
            "created_at": now(),
            "updated_at": now(),
            "creator": self._user(request[LOGIN]),
        }
        repo.statuses.setdefault(sha, []).append(status)
        return web.json_response(status, status=201)

    async def create_comment(self, request: web.Request) -> web.Response:
        """https://docs.github.com/en/rest/issues/comments#create-an-issue-comment: 201;
        ``body`` required (422)."""
        found = self._pull(request)
        if isinstance(found, web.Response):
            return found
        body = request[BODY] or {}
        if not isinstance(body.get("body"), str) or not body["body"]:
            return _error(422, "Validation Failed")
        pr = found[1]
        comment = {
            "id": next(self._ids),
            "body": body["body"],
            "user": self._user(request[LOGIN]),
            "created_at": now(),
            "html_url": f"{self._html(pr)}#issuecomment-1",
        }
        pr.comments.append(comment)
        return web.json_response(comment, status=201)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message, "documentation_url": DOCS}, status=status)
