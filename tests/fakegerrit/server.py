"""The fake Gerrit's REST API on aiohttp, and the webhooks plugin that posts its events.

Each handler follows the section of
https://gerrit-review.googlesource.com/Documentation/rest-api-changes.html
(or rest-api-projects.html, rest-api.html) named next to it, in the shapes
Gerrit answers with: JSON after the ``)]}'`` line, errors as plain text.
Requests under ``/a/`` are authenticated with an account's HTTP password,
by basic authentication (Gerrit >= 2.14's default) or digest (Gerrit <= 2.13,
and ``auth.gitBasicAuthPolicy``), as the fake is told.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
from aiohttp import web

from tests.fakegerrit import githttp
from tests.fakegerrit.state import (
    Account,
    BadRequest,
    Change,
    Conflict,
    Forbidden,
    GerritState,
    NotFound,
    PatchSet,
    gerrit_time,
    git,
)

XSSI = ")]}'\n"
ACCOUNT = web.RequestKey("account", Account)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def gerrit_json(value: Any, status: int = 200) -> web.Response:
    """rest-api.html#output: ``)]}'`` then the JSON."""
    return web.Response(
        text=XSSI + json.dumps(value, indent=2),
        status=status,
        content_type="application/json",
        charset="utf-8",
    )


def webhook_shape(event: dict[str, Any]) -> dict[str, Any]:
    """An event as the webhooks plugin posts it (plugins/webhooks EventHandler uses a
    plain Gson: ``Project.NameKey`` is ``{"name": ...}``, ``Change.Key`` ``{"key": ...}``)."""
    shaped = dict(event)
    if isinstance(shaped.get("project"), str):
        shaped["project"] = {"name": shaped["project"]}
    if isinstance(shaped.get("changeKey"), dict) and "id" in shaped["changeKey"]:
        shaped["changeKey"] = {"key": shaped["changeKey"]["id"]}
    return shaped


class FakeGerrit:
    """One fake Gerrit: its state, its REST app, and the webhooks it posts."""

    def __init__(self, state: GerritState, *, digest: bool = False) -> None:
        self.state = state
        self.digest = digest
        self._nonces: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        #: webhooks plugin remotes (webhooks.config ``[remote "x"] url = ...``)
        self.webhooks: list[str] = []
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._poster: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        #: what each webhook post was answered (status codes)
        self.posted: list[int] = []
        self._hooks: Path | None = None
        state.listeners.append(self._queue.put_nowait)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors])
        for prefix in ("", "/a"):
            app.router.add_get(prefix + "/changes/", self.list_changes)
            app.router.add_get(prefix + "/changes/{change}", self.get_change)
            app.router.add_get(prefix + "/changes/{change}/", self.get_change)
            app.router.add_get(prefix + "/changes/{change}/detail", self.get_change)
            app.router.add_get(
                prefix + "/changes/{change}/revisions/{revision}/mergeable", self.mergeable
            )
            app.router.add_post(
                prefix + "/changes/{change}/revisions/{revision}/review", self.set_review
            )
            app.router.add_post(prefix + "/changes/{change}/submit", self.submit_change)
            app.router.add_post(
                prefix + "/changes/{change}/revisions/{revision}/submit", self.submit_revision
            )
            app.router.add_get(prefix + "/projects/{project}/branches/{branch:.+}", self.get_branch)
        # git over authenticated HTTP (Documentation/access-control.html#_push_access)
        app.router.add_route(
            "*",
            "/a/{project:.+?}/{service:info/refs|git-upload-pack|git-receive-pack}",
            self.git_service,
        )
        app.on_cleanup.append(self._cleanup)
        return app

    # -- plumbing --------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        if request.path.startswith("/a/"):
            who = self._authenticate(request)
            if who is None:
                return self._challenge()
            request[ACCOUNT] = who
        elif request.method != "GET":
            # anonymous users may read public changes, never write
            return web.Response(status=403, text="Authentication required\n")
        try:
            return await handler(request)
        except NotFound as exc:
            return web.Response(status=404, text=f"{exc}\n")
        except Conflict as exc:
            return web.Response(status=409, text=f"{exc}\n")
        except BadRequest as exc:
            return web.Response(status=400, text=f"{exc}\n")
        except Forbidden as exc:
            return web.Response(status=403, text=f"{exc}\n")

    def _authenticate(self, request: web.Request) -> Account | None:
        header = request.headers.get("Authorization", "")
        if not self.digest and header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return None
            account = self.state.accounts.get(user)
            if (
                account
                and account.http_password
                and secrets.compare_digest(account.http_password, password)
            ):
                return account
            return None
        if self.digest and header.startswith("Digest "):
            return self._digest(request, header[7:])
        return None

    def _challenge(self) -> web.Response:
        if not self.digest:
            return web.Response(
                status=401,
                text="Unauthorized\n",
                headers={"WWW-Authenticate": 'Basic realm="Gerrit Code Review"'},
            )
        nonce = secrets.token_hex(16)
        self._nonces.add(nonce)
        return web.Response(
            status=401,
            text="Unauthorized\n",
            headers={
                "WWW-Authenticate": (
                    f'Digest realm="Gerrit Code Review", qop="auth", nonce="{nonce}", algorithm=MD5'
                )
            },
        )

    def _digest(self, request: web.Request, header: str) -> Account | None:
        """RFC 2617 digest with qop=auth, as Gerrit 2.13's ProjectDigestFilter checks it."""
        fields = {k: a or b for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', header)}
        account = self.state.accounts.get(fields.get("username", ""))
        if account is None or fields.get("nonce") not in self._nonces:
            return None

        def md5(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()

        ha1 = md5(f"{account.username}:Gerrit Code Review:{account.http_password}")
        ha2 = md5(f"{request.method}:{fields.get('uri', '')}")
        expected = md5(
            f"{ha1}:{fields['nonce']}:{fields.get('nc', '')}:{fields.get('cnonce', '')}:"
            f"{fields.get('qop', '')}:{ha2}"
        )
        return account if secrets.compare_digest(expected, fields.get("response", "")) else None

    def _change(self, request: web.Request) -> Change:
        """rest-api-changes.html#change-id: "<project>~<number>", "<number>",
        "<project>~<branch>~<Change-Id>" or a Change-Id."""
        ident = unquote(request.match_info["change"])
        number: int | None = None
        if ident.isdigit():
            number = int(ident)
        elif "~" in ident:
            parts = ident.split("~")
            if len(parts) == 2 and parts[1].isdigit():
                change = self.state.changes.get(int(parts[1]))
                if change and change.project == parts[0]:
                    return change
            elif len(parts) == 3:
                for change in self.state.changes.values():
                    if (change.project, change.branch, change.change_id) == tuple(parts):
                        return change
        else:
            for change in self.state.changes.values():
                if change.change_id == ident:
                    return change
        if number is not None and number in self.state.changes:
            return self.state.changes[number]
        raise NotFound(f"Not found: {ident}")

    # -- ChangeInfo ------------------------------------------------------------

    def change_info(self, change: Change, options: set[str]) -> dict[str, Any]:
        """ChangeInfo (rest-api-changes.html#change-info) with the query options asked."""
        info: dict[str, Any] = {
            "id": f"{change.project}~{change.branch}~{change.change_id}",
            "project": change.project,
            "branch": change.branch,
            "change_id": change.change_id,
            "subject": change.subject,
            "status": change.status,
            "created": gerrit_time(change.created),
            "updated": gerrit_time(change.updated),
            "_number": change.number,
            "owner": change.owner.info()
            if "DETAILED_ACCOUNTS" in options
            else {"_account_id": change.owner.id},
        }
        if change.submitted is not None:
            info["submitted"] = gerrit_time(change.submitted)
        if change.work_in_progress:
            info["work_in_progress"] = True
        if "LABELS" in options or "DETAILED_LABELS" in options:
            info["labels"] = self._labels(change, detailed="DETAILED_LABELS" in options)
        if "SUBMITTABLE" in options:
            info["submittable"] = change.status == "NEW" and not self.state.blocking(change)
        if "MESSAGES" in options:
            info["messages"] = change.messages
        revisions = (
            change.patchsets
            if "ALL_REVISIONS" in options
            else [change.current]
            if "CURRENT_REVISION" in options
            else []
        )
        if revisions:
            info["current_revision"] = change.current.revision
            info["revisions"] = {
                ps.revision: self._revision_info(
                    change, ps, commit="CURRENT_COMMIT" in options and ps is change.current
                )
                for ps in revisions
            }
        return info

    def _labels(self, change: Change, detailed: bool) -> dict[str, Any]:
        """LabelInfo (#label-info) of the current patch set."""
        labels: dict[str, Any] = {}
        ps = change.current.number
        for label in self.state.labels.values():
            votes = {
                account: value
                for (n, name, account), value in change.votes.items()
                if n == ps and name == label.name
            }
            info: dict[str, Any] = {}
            by_id = {a.id: a for a in self.state.accounts.values()}
            if label.lowest in votes.values() and label.lowest < 0:
                who = next(a for a, v in votes.items() if v == label.lowest)
                info["rejected"] = {"_account_id": who}
            elif label.highest in votes.values():
                who = next(a for a, v in votes.items() if v == label.highest)
                info["approved"] = {"_account_id": who}
            if detailed:
                info["all"] = [
                    {**by_id[account].info(), "value": value} for account, value in votes.items()
                ]
                info["values"] = {
                    (f"{v:+d}" if v else " 0"): label.name for v in sorted(label.values)
                }
                info["default_value"] = 0
            labels[label.name] = info
        return labels

    def _revision_info(self, change: Change, ps: PatchSet, commit: bool) -> dict[str, Any]:
        """RevisionInfo (#revision-info), with CommitInfo (#commit-info) when asked."""
        ref = ps.ref(change.number)
        info: dict[str, Any] = {
            "kind": ps.kind,
            "_number": ps.number,
            "created": gerrit_time(ps.created),
            "uploader": ps.uploader.info(),
            "ref": ref,
            "fetch": {"http": {"url": f"{self.state.url}/{change.project}", "ref": ref}},
        }
        if commit:
            info["commit"] = {
                "parents": [{"commit": ps.parent}],
                "subject": change.subject,
                "message": change.message,
            }
        return info

    # -- handlers ----------------------------------------------------------------

    async def list_changes(self, request: web.Request) -> web.Response:
        """#list-changes: ``GET /changes/?q=...&n=...&S=...&o=...``; the last ChangeInfo
        of a page carries ``_more_changes: true`` when there are more."""
        query = request.query.get("q", "status:open")
        limit = int(request.query.get("n", "500"))
        start = int(request.query.get("S", request.query.get("start", "0")))
        options = set(request.query.getall("o", []))
        try:
            matcher = QueryParser(query).parse()
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        found = sorted(
            (c for c in self.state.changes.values() if matcher(c)),
            key=lambda c: (-c.updated, -c.number),
        )
        page = found[start : start + limit]
        infos = [self.change_info(c, options) for c in page]
        if infos and start + limit < len(found):
            infos[-1]["_more_changes"] = True
        return gerrit_json(infos)

    async def get_change(self, request: web.Request) -> web.Response:
        """#get-change (and #get-change-detail): one ChangeInfo, with the options given."""
        options = set(request.query.getall("o", []))
        if request.path.endswith("/detail"):
            options |= {"LABELS", "DETAILED_LABELS", "DETAILED_ACCOUNTS", "MESSAGES"}
        return gerrit_json(self.change_info(self._change(request), options))

    async def mergeable(self, request: web.Request) -> web.Response:
        """#get-mergeable: MergeableInfo (#mergeable-info) of a revision on its branch."""
        change = self._change(request)
        ps = self.state.resolve_revision(change, request.match_info["revision"])
        project = self.state.projects[change.project]
        repo = project.repo
        head = git(repo, "rev-parse", f"refs/heads/{change.branch}")
        clean = (
            subprocess.run(
                ["git", "merge-tree", "--write-tree", head, ps.revision],
                cwd=repo,
                capture_output=True,
            ).returncode
            == 0
        )
        return gerrit_json(
            {"submit_type": project.submit_type, "strategy": "recursive", "mergeable": clean}
        )

    async def set_review(self, request: web.Request) -> web.Response:
        """#set-review: ReviewInput in, ReviewResult out."""
        change = self._change(request)
        ps = self.state.resolve_revision(change, request.match_info["revision"])
        try:
            body = await request.json()
        except ValueError:
            raise BadRequest("Invalid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("Expected JSON object")
        return gerrit_json(self.state.review(change, ps, request[ACCOUNT], body))

    async def submit_change(self, request: web.Request) -> web.Response:
        """#submit-change: submits the current revision; answers the merged ChangeInfo."""
        change = self._change(request)
        self.state.submit(change, change.current, request[ACCOUNT])
        return gerrit_json(self.change_info(change, set()))

    async def submit_revision(self, request: web.Request) -> web.Response:
        """#submit-revision: like #submit-change, refused (409) unless the revision is current."""
        change = self._change(request)
        ps = self.state.resolve_revision(change, request.match_info["revision"])
        self.state.submit(change, ps, request[ACCOUNT])
        return gerrit_json(self.change_info(change, set()))

    async def git_service(self, request: web.Request) -> web.StreamResponse:
        """Smart HTTP on ``/a/<project>[.git]``; a push is then received as Gerrit does
        (ref-updated for each branch it moved, created or deleted)."""
        name = unquote(request.match_info["project"]).removesuffix(".git")
        project = self.state.projects.get(name)
        if project is None:
            raise NotFound(f"Repository not found: {name}")
        if self._hooks is None:
            self._hooks = githttp.hooks_dir()
        account = request[ACCOUNT]
        access = self.state.access(account)
        response = await githttp.http_backend(
            request, project.repo, account.username, access, self._hooks
        )
        if request.match_info["service"] == "git-receive-pack":
            self.state.receive(name, account)
        return response

    async def get_branch(self, request: web.Request) -> web.Response:
        """rest-api-projects.html#get-branch: BranchInfo {ref, revision}."""
        name = unquote(request.match_info["project"])
        project = self.state.projects.get(name)
        if project is None:
            raise NotFound(f"Not found: {name}")
        branch = unquote(request.match_info["branch"])
        ref = branch if branch.startswith("refs/") else f"refs/heads/{branch}"
        try:
            sha = git(project.repo, "rev-parse", "--verify", "-q", ref)
        except Exception:
            raise NotFound(f"Not found: {branch}") from None
        return gerrit_json({"ref": ref, "revision": sha})

    # -- the webhooks plugin -------------------------------------------------------

    def start_webhooks(self) -> None:
        if self._poster is None:
            self._poster = asyncio.get_running_loop().create_task(self._post_events())

    async def _post_events(self) -> None:
        """plugins/webhooks PostTask: POST each event as JSON to every remote, retrying
        a failed post (maxTries 5, retryInterval) -- so a receiver may see it twice."""
        self._http = aiohttp.ClientSession()
        while True:
            event = await self._queue.get()
            for url in list(self.webhooks):
                for _ in range(5):
                    try:
                        async with self._http.post(url, json=webhook_shape(event)) as resp:
                            self.posted.append(resp.status)
                            if resp.status < 500:
                                break
                    except aiohttp.ClientError:
                        self.posted.append(0)
                    await asyncio.sleep(0.05)
            self._queue.task_done()

    async def delivered(self) -> None:
        """Wait until every event so far was posted."""
        if self._poster is not None:
            await self._queue.join()

    async def _cleanup(self, app: web.Application) -> None:
        if self._poster is not None:
            self._poster.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poster
        if self._http is not None:
            await self._http.close()
        if self._hooks is not None:
            shutil.rmtree(self._hooks, ignore_errors=True)


class QueryParser:
    """The part of Documentation/user-search.html the gate uses: ``status:``,
    ``is:open``, ``project:``, ``branch:``, ``change:``, ``after:``/``since:``,
    ``AND`` (implicit), ``OR``, ``-``/``NOT`` and parentheses; values may be quoted."""

    def __init__(self, query: str) -> None:
        lexer = shlex.shlex(query, posix=True, punctuation_chars="()")
        lexer.wordchars += ":~/.-+@"
        lexer.whitespace_split = True
        self.tokens = list(lexer)
        self.pos = 0

    def parse(self) -> Callable[[Change], bool]:
        matcher = self._or()
        if self.pos != len(self.tokens):
            raise ValueError(
                f"line 1:{self.pos} no viable alternative at input '{self.tokens[self.pos]}'"
            )
        return matcher

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _or(self) -> Callable[[Change], bool]:
        terms = [self._and()]
        while self._peek() == "OR":
            self.pos += 1
            terms.append(self._and())
        return lambda c: any(t(c) for t in terms)

    def _and(self) -> Callable[[Change], bool]:
        terms = [self._not()]
        while self._peek() not in (None, ")", "OR"):
            if self._peek() == "AND":
                self.pos += 1
            terms.append(self._not())
        return lambda c: all(t(c) for t in terms)

    def _not(self) -> Callable[[Change], bool]:
        if self._peek() == "NOT":
            self.pos += 1
            inner = self._not()
            return lambda c: not inner(c)
        return self._atom()

    def _atom(self) -> Callable[[Change], bool]:
        token = self._peek()
        if token is None:
            raise ValueError("unexpected end of query")
        self.pos += 1
        if token == "(":
            inner = self._or()
            if self._peek() != ")":
                raise ValueError("missing )")
            self.pos += 1
            return inner
        negate = token.startswith("-")
        op, _, value = token.lstrip("-").partition(":")
        if not value:
            raise ValueError(f"unsupported query term {token!r}")
        term = self._term(op, value)
        return (lambda c: not term(c)) if negate else term

    def _term(self, op: str, value: str) -> Callable[[Change], bool]:
        if op == "status":
            wanted = {"open": "NEW", "new": "NEW", "merged": "MERGED", "abandoned": "ABANDONED"}
            status = wanted.get(value, value.upper())
            if value == "closed":
                return lambda c: c.status != "NEW"
            return lambda c: c.status == status
        if op == "is" and value in ("open", "closed", "merged", "abandoned", "wip"):
            if value == "wip":
                return lambda c: c.work_in_progress
            return self._term("status", value)
        if op == "project":
            return lambda c: c.project == value
        if op == "branch":
            return lambda c: c.branch == value.removeprefix("refs/heads/")
        if op == "change":
            return lambda c: str(c.number) == value or c.change_id == value
        if op in ("after", "since"):
            when = datetime.strptime(value[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            return lambda c: c.updated >= when.timestamp()
        raise ValueError(f"Unsupported operator {op}:{value}")
