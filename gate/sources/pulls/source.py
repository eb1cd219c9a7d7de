"""A review system of pull requests (GitHub, Forgejo): the part they share.

:class:`PullRequestSource` is a ``ChangeSource`` whose changes are pull
requests of ``owner/repo`` repositories.  It does what both systems do the
same way:

* the gate's git work (resolve, branch head, "is it merged") goes through
  the gate's own clone of the project (``Merger``); a pull request's head is
  fetched by ``refs/pull/<n>/head``, which both systems publish;
* :meth:`read_review` re-reads the pull request and evaluates the
  connection's approval rule on what the system says now;
* :meth:`merge` re-reads, then merges through the system's merge call with
  the sha guard (the system refuses if the head moved), treats "merged
  already" as done (a repeated merge after a lost answer), and names the
  branch head the system made so the gate can check its tree;
* :meth:`report`: a commit status (context ``rpmgate``) and a comment;
* the webhook endpoint: read the raw body, verify its signature, store it
  under ``<system>.<event type>``, answer 202 (``gate.sources.webhooks``).

What differs is left to the subclass: the merge call and its answers, the
words of reviews and permissions, the webhook headers and signature, and how
each delivery's payload becomes an event (``parse_event``).
"""

from __future__ import annotations

import abc
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDictProxy

from gate.events import Refused
from gate.faults import is_transient
from gate.merger import Merger
from gate.sources import webhooks
from gate.sources.base import ChangeSource, GitProject, MergeOutcome, Report, Review, StoreDelivery
from gate.sources.pulls.approval import by_reviews
from gate.sources.pulls.config import REPO_PATH, PullRequestConnection
from gate.sources.pulls.model import Malformed, PullRequest, Verdict, pull_request
from gate.sources.pulls.rest import ApiError, RestClient

log = logging.getLogger(__name__)

#: GitHub caps a commit status description at 140 characters
DESCRIPTION_MAX = 140
#: the longest comment posted (GitHub's limit is 65536 characters)
COMMENT_MAX = 60000


@dataclass(frozen=True)
class Intake:
    """What a delivery's headers say, once its signature was checked."""

    #: the event type as the system names it (``pull_request``, ``pull_request_sync``)
    event: str
    #: the system's delivery id (deduplication: a redelivery is stored once)
    delivery: str | None


class PullRequestSource(ChangeSource, abc.ABC):
    """Pull requests on a GitHub-shaped system; subclasses supply what differs."""

    #: the ``type:`` of the connection, prefix of its stored event types
    system: str = "abstract"
    #: the path segment of a pull request's web page (``pull`` or ``pulls``)
    web_segment: str = "pull"

    def __init__(
        self,
        name: str,
        config: PullRequestConnection,
        api: RestClient,
        projects: Mapping[str, GitProject],
        merger: Merger,
        store: StoreDelivery | None,
        public_url: str = "",
    ) -> None:
        self.name = name
        self.config = config
        self.api = api
        self.projects = projects
        self.merger = merger
        self.store = store
        self.public_url = public_url.rstrip("/")
        self._url_pattern = re.compile(
            "^"
            + re.escape(config.web_root())
            + r"/(?P<repo>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)/"
            + re.escape(self.web_segment)
            + r"/(?P<number>[1-9][0-9]{0,9})/?(?:[#?].*)?$"
        )

    # -- what differs ----------------------------------------------------------------
    @abc.abstractmethod
    def verify(self, headers: CIMultiDictProxy[str], body: bytes) -> tuple[int, str] | None:
        """None when ``body`` carries a valid signature; else (status, why) to refuse with."""

    @abc.abstractmethod
    def intake(self, headers: CIMultiDictProxy[str]) -> Intake | None:
        """The event type and delivery id of a verified delivery; None: no event type."""

    @abc.abstractmethod
    async def verdicts(self, repo: str, number: int) -> list[Verdict]:
        """The pull request's reviews, oldest first, in the approval rule's words."""

    @abc.abstractmethod
    async def permitted(self, repo: str, user: str) -> bool:
        """Whether ``user`` has ``approval.permission`` on ``repo``."""

    @abc.abstractmethod
    async def merge_pull(self, repo: str, pr: PullRequest) -> MergeOutcome:
        """Merge ``pr`` at ``pr.head.sha`` with the system's sha guard."""

    # -- projects and repositories ---------------------------------------------------
    def repo_of(self, project: str) -> str:
        """The ``owner/repo`` path of a gate project of this connection."""
        cfg = self.projects.get(project)
        if cfg is None:
            raise Refused(f"project {project!r} is not a project of source {self.name!r}")
        repo = getattr(cfg, "name", None) or project
        if not REPO_PATH.match(repo):  # it goes into API paths: owner/repository exactly
            raise Refused(f"project {project!r}: {repo!r} is not an owner/repository path")
        return repo

    def project_for(self, repo: str, branch: str | None) -> str | None:
        """The gate project of repository ``repo`` (and target ``branch``, when known).

        Repository paths compare case-insensitively: both systems treat
        ``Owner/Repo`` and ``owner/repo`` as one repository.
        """
        wanted = repo.casefold()
        candidates = [p for p in self.projects if self.repo_of(p).casefold() == wanted]
        if branch is not None:
            candidates = [p for p in candidates if self.projects[p].branch == branch]
        return candidates[0] if candidates else None

    # -- ChangeSource: git through the gate's clone ------------------------------------
    async def resolve(self, project: str, ref: str) -> str:
        return await self.merger.resolve(project, self.projects[project].git, ref)

    async def branch_head(self, project: str) -> str:
        cfg = self.projects[project]
        return await self.merger.branch_head(project, cfg.git, cfg.branch)

    async def is_merged(self, project: str, commit: str) -> bool:
        cfg = self.projects[project]
        return await self.merger.is_on_branch(project, cfg.git, commit, cfg.branch)

    def scm_url(self, project: str) -> str | None:
        return self.config.scm_url(self.repo_of(project))

    def review_for_url(self, url: str) -> tuple[str, str] | None:
        found = self._url_pattern.match(url.strip())
        if found is None:
            return None
        project = self.project_for(found["repo"], None)
        return None if project is None else (project, found["number"])

    async def close(self) -> None:
        await self.api.close()

    # -- reading a pull request --------------------------------------------------------
    async def pull(self, repo: str, number: int) -> PullRequest:
        """``GET /repos/{owner}/{repo}/pulls/{n}`` (both systems).

        GitHub: https://docs.github.com/en/rest/pulls/pulls#get-a-pull-request
        Forgejo: routers/api/v1/repo/pull.go ``GetPullRequest``
        """
        try:
            doc = await self.api.get(f"/repos/{repo}/pulls/{number}")
        except ApiError as exc:
            if exc.status == 404:
                raise Refused(f"{repo}: no pull request {number}") from None
            if is_transient(exc):
                raise
            # a revoked token, a repository the bot may not read: say so, do not guess
            raise Refused(f"{self.name} refused to read {repo}#{number}: {exc}") from None
        try:
            return pull_request(doc)
        except Malformed as exc:
            raise Refused(f"{repo}#{number}: {exc}") from None

    async def read_review(self, project: str, review: str) -> Review:
        repo = self.repo_of(project)
        number = _number(review)
        pr = await self.pull(repo, number)
        branch = self.projects[project].branch
        approved: bool | None
        if not pr.open:
            approved, why = False, "closed"
        elif pr.draft:
            approved, why = False, "a draft"
        elif pr.base.ref != branch:
            approved, why = False, f"targets branch {pr.base.ref}, not {branch}"
        else:
            try:
                approved, why = await self.approval(repo, pr)
            except ApiError as exc:
                if is_transient(exc):
                    raise
                # Forgejo: 403 on the permission call when the bot is no repository admin
                raise Refused(
                    f"{self.name} refused a call the approval rule needs: {exc}"
                ) from None
        mergeable = pr.mergeable is not False and not pr.draft
        if pr.mergeable is False:
            why = why or "the system reports a conflict with the branch"
        return Review(
            id=str(pr.number),
            project=project,
            revision=pr.head.sha,
            fetch_ref=f"refs/pull/{pr.number}/head",
            branch=pr.base.ref,
            title=pr.title,
            url=pr.html_url or f"{self.config.web_root()}/{repo}/{self.web_segment}/{number}",
            owner=pr.user.login if pr.user else "",
            open=pr.open,
            merged=pr.merged,
            approved=approved,
            why_not=why,
            mergeable=mergeable,
        )

    async def approval(self, repo: str, pr: PullRequest) -> tuple[bool | None, str]:
        """The connection's approval rule on ``pr`` now (None: decided by a recorded command)."""
        rule = self.config.approval
        if rule.by == "label":
            if rule.label in pr.label_names:
                return True, ""
            return False, f"no label {rule.label!r}"
        if rule.by == "command":
            return (
                None,
                f"waiting for {rule.command!r} from a user with {rule.permission} permission",
            )
        verdicts = await self.verdicts(repo, pr.number)
        users = {v.user for v in verdicts if v.verdict in ("approve", "reject")}
        allowed = {user: await self.permitted(repo, user) for user in sorted(users)}
        return by_reviews(verdicts, pr.head.sha, allowed, rule)

    # -- merging -------------------------------------------------------------------------
    async def merge(self, project: str, commit: str, review: Review | None = None) -> MergeOutcome:
        if review is None:
            return MergeOutcome(
                False, f"{self.name}: changes of {project} merge through their pull request"
            )
        repo = self.repo_of(project)
        try:
            return await self._merge_review(repo, review)
        except Refused as exc:
            return MergeOutcome(False, str(exc))
        except ApiError as exc:
            if is_transient(exc):
                raise
            return MergeOutcome(False, f"{self.name}: {exc}")

    async def _merge_review(self, repo: str, review: Review) -> MergeOutcome:
        pr = await self.pull(repo, _number(review.id))
        if pr.merged:
            # merged by an earlier try whose answer was lost, or by someone else:
            # either way the branch now has it; the gate checks the tree
            return MergeOutcome(True, head=pr.merge_commit_sha)
        if not pr.open:
            return MergeOutcome(False, f"pull request #{pr.number} is closed")
        if pr.head.sha != review.revision:
            return MergeOutcome(
                False,
                f"pull request #{pr.number} moved to {pr.head.sha[:12]} "
                f"since {review.revision[:12]} was tested",
            )
        return await self.merge_pull(repo, pr)

    async def after_refusal(self, repo: str, number: int, reason: str) -> MergeOutcome:
        """A refused merge call: done if the pull request is merged (a repeat), else refused."""
        pr = await self.pull(repo, number)
        if pr.merged:
            return MergeOutcome(True, head=pr.merge_commit_sha)
        return MergeOutcome(False, reason)

    # -- reporting -------------------------------------------------------------------------
    async def report(self, project: str, report: Report) -> None:
        repo = self.repo_of(project)
        settings = self.config.report
        if settings.status:
            await self.post_status(repo, report)
        if report.review is not None and report.phase in settings.comment_on:
            await self.post_comment(repo, _number(report.review), report)

    async def post_status(self, repo: str, report: Report) -> None:
        """``POST /repos/{owner}/{repo}/statuses/{sha}`` (both systems; same body).

        GitHub: https://docs.github.com/en/rest/commits/statuses#create-a-commit-status
        Forgejo: routers/api/v1/repo/status.go ``NewCommitStatus``
        """
        state = {
            "enqueued": "pending",
            "failed": "failure",
            "merged": "success",
            "dequeued": "error",
        }[report.phase]
        body: dict[str, str] = {
            "state": state,
            "context": self.config.report.context,
            "description": _status_description(report),
        }
        target = report.links.get("log") or report.links.get("status") or self.public_url
        if target.startswith(("http://", "https://")):
            body["target_url"] = target
        await self.api.post(f"/repos/{repo}/statuses/{report.revision}", body)

    async def post_comment(self, repo: str, number: int, report: Report) -> None:
        """``POST /repos/{owner}/{repo}/issues/{n}/comments`` (both systems).

        GitHub: https://docs.github.com/en/rest/issues/comments#create-an-issue-comment
        Forgejo: routers/api/v1/repo/issue_comment.go ``CreateIssueComment``
        """
        lines = [report.message.strip()]
        names = {
            "status": "status",
            "log": "log",
            "speculative_repo": "speculative repository",
            "repository": "repository",
        }
        links = [f"[{names.get(k, k)}]({v})" for k, v in report.links.items() if v]
        if links:
            lines.append(" · ".join(links))
        await self.api.post(
            f"/repos/{repo}/issues/{number}/comments",
            {"body": "\n\n".join(lines)[:COMMENT_MAX]},
        )

    # -- the webhook endpoint ----------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [web.post(webhooks.path(self.name, "webhook"), self.webhook)]

    async def webhook(self, request: web.Request) -> web.Response:
        """Verify, then store under ``<system>.<event>``; nothing is parsed here."""
        body = await webhooks.read_body(request, self.name)
        if isinstance(body, web.Response):
            return body
        problem = self.verify(request.headers, body)
        if problem is not None:
            return webhooks.refuse(request, self.name, *problem)
        intake = self.intake(request.headers)
        if intake is None:
            return webhooks.refuse(request, self.name, 400, "no event type header")
        payload = webhooks.json_object(request, self.name, body)
        if isinstance(payload, web.Response):
            return payload
        if self.store is None:
            return webhooks.refuse(request, self.name, 503, "this gate stores no deliveries")
        return await webhooks.accept(
            request,
            self.store,
            self.name,
            f"{self.system}.{intake.event}",
            payload,
            intake.delivery,
        )


def _number(review: str) -> int:
    if not re.fullmatch(r"[1-9][0-9]{0,9}", review):
        raise Refused(f"{review!r} is not a pull request number")
    return int(review)


def _status_description(report: Report) -> str:
    """The report's first line, as the comment says it (without the ``rpmgate:`` the
    status's context already says)."""
    lines = report.message.strip().splitlines()
    text = lines[0].removeprefix("rpmgate:").strip() if lines else report.phase
    return text[:DESCRIPTION_MAX] or report.phase
