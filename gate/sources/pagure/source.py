"""The Pagure source: what a PR says now, merging it through Pagure, reporting on it.

* **Events in.**  A signed web-hook (``POST /api/sources/<name>/webhook``, see
  :mod:`~gate.sources.pagure.webhook`) or a fedora-messaging message
  (:mod:`~gate.sources.pagure.messaging`) is stored as a delivery
  ``pagure.<topic>``; :meth:`PagureSource.parse_event` turns it into a hint
  (:class:`~gate.events.ReviewUpdated`, :class:`~gate.events.RefUpdated`).
* **Events are hints.**  :meth:`read_review` re-reads the PR
  (``GET /api/0/<repo>/pull-request/<id>``): its state, its head
  (``commit_stop``), its target branch, and the approval flag when one is
  configured.  A command approval is the gate's record (``Review.approved`` is
  None), made for the head the PR had when the command was given: Pagure
  resets nothing on new commits, the gate does, since a new head is a new
  revision the command was not given for.
* **Merging.**  Pagure's merge API has no guard on the head commit: it merges
  whatever the PR's branch holds when its task runs.  So the PR is re-read just
  before (open, at the tested revision) and the call is made; a push in the
  window between the two is caught by the gate's check that the branch's new
  tree is the tested tree (the merge is then a post item, not a tested one).
* **Speculative merges** fetch ``refs/pull/<id>/head`` through the gate's clone.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gate.events import Event, RefUpdated, Refused, ReviewUpdated
from gate.merger import Merger
from gate.sources import webhooks
from gate.sources.base import ChangeSource, GitProject, MergeOutcome, Report, Review, SourceParts
from gate.sources.pagure.client import PagureClient, PagureError
from gate.sources.pagure.config import PagureConfig
from gate.sources.pagure.intake import Intake, event_type
from gate.sources.pagure.messages import Malformed, parse
from gate.sources.pagure.messaging import Consumer
from gate.sources.pagure.reporter import PagureReporter
from gate.sources.pagure.webhook import SIGNATURE_HEADER, Rejected, verify

log = logging.getLogger(__name__)


class PagureSource(ChangeSource):
    def __init__(self, name: str, config: PagureConfig, parts: SourceParts) -> None:
        self.name = name
        self.config = config
        self.projects: Mapping[str, GitProject] = parts.projects
        self.merger: Merger = parts.merger
        self.store = parts.store
        token = config.token.get_secret_value() if config.token is not None else None
        self.client = PagureClient(config.url, token, config.timeout)
        #: project path on Pagure -> the gate's project name
        self.by_path = {(p.name or gate_name): gate_name for gate_name, p in self.projects.items()}
        self.intake = Intake(name, config, self.client, set(self.by_path), parts.store)
        self.reporter = PagureReporter(name, config, self.client, parts.public_url)
        self.consumer = (
            Consumer(name, config.messaging, config.url, self.intake.take_message)
            if config.messaging is not None and parts.store is not None
            else None
        )
        #: a PR's web page (``Depends-On:`` lines name them): <url>/<path>/pull-request/<id>
        self._pr_url = re.compile(
            re.escape(config.url)
            + r"/(?P<path>[^?#]+?)/pull-request/(?P<id>[0-9]{1,9})/?(?:[?#].*)?$"
        )

    def projects_changed(self) -> None:
        self.by_path = {(p.name or gate_name): gate_name for gate_name, p in self.projects.items()}
        self.intake.paths = frozenset(self.by_path)

    @classmethod
    def create(cls, name: str, config: PagureConfig, parts: SourceParts) -> PagureSource:
        return cls(name, config, parts)

    def _path(self, project: str) -> str:
        cfg = self.projects[project]
        return cfg.name or project

    # -- intake ---------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [web.post(webhooks.path(self.name, "webhook"), self._webhook)]

    async def _webhook(self, request: web.Request) -> web.Response:
        """Pagure's web-hook: verified over the raw body, stored, then answered."""
        body = await webhooks.read_body(request, self.name)
        if isinstance(body, web.Response):
            return body
        got = verify(self.config, body, request.headers.get(SIGNATURE_HEADER))
        if isinstance(got, Rejected):
            return webhooks.refuse(request, self.name, got.status, got.why)
        if self.store is None:
            return webhooks.refuse(request, self.name, 503, "this gate stores no deliveries")
        payload = await self.intake.payload(
            got.topic, got.msg, got.msg_id, "webhook", got.timestamp
        )
        return await webhooks.accept(
            request, self.store, self.name, event_type(got.topic), payload, got.msg_id
        )

    def parse_event(self, event_type: str, payload: dict[str, Any]) -> Event | None:
        if payload.get("topic") != event_type.removeprefix("pagure."):
            raise Refused(f"{event_type}: the stored topic is {str(payload.get('topic'))[:100]!r}")
        try:
            hint = parse(payload, self.config.approval.command)
        except Malformed as exc:
            raise Refused(f"malformed {event_type} message: {exc}") from None
        if hint.note:
            log.info("%s: %s: %s", self.name, event_type, hint.note)
        if hint.kind == "unknown":
            log.warning("%s: %s kept, not acted on (an unknown topic)", self.name, event_type)
            return None
        if hint.kind == "nothing":
            return None
        project = self.by_path.get(hint.project)
        if project is None:
            log.info("%s: %s: %s is not a gate project", self.name, event_type, hint.project)
            return None
        if hint.kind == "push":
            if hint.branch != self.projects[project].branch:
                return None
            return RefUpdated(project=project)
        assert hint.pr is not None
        return ReviewUpdated(
            source=self.name,
            project=project,
            review=str(hint.pr),
            approved_revision=hint.approved_revision,
            approved_by=hint.approved_by,
        )

    async def start(self) -> None:
        if self.consumer is not None:
            await self.consumer.start()

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        await self.client.close()

    # -- git ------------------------------------------------------------------------------
    async def resolve(self, project: str, ref: str) -> str:
        cfg = self.projects[project]
        return await self.merger.resolve(project, cfg.git, ref)

    async def branch_head(self, project: str) -> str:
        cfg = self.projects[project]
        return await self.merger.branch_head(project, cfg.git, cfg.branch)

    async def is_merged(self, project: str, commit: str) -> bool:
        cfg = self.projects[project]
        return await self.merger.is_on_branch(project, cfg.git, commit, cfg.branch)

    def scm_url(self, project: str) -> str | None:
        return self.config.scm_url(self._path(project))

    def review_for_url(self, url: str) -> tuple[str, str] | None:
        match = self._pr_url.match(url.strip())
        if match is None:
            return None
        project = self.by_path.get(match["path"])
        return (project, str(int(match["id"]))) if project is not None else None

    # -- reviews --------------------------------------------------------------------------
    async def _pr(self, project: str, review: str) -> dict[str, Any]:
        if not review.isdigit() or len(review) > 9:
            raise Refused(f"{review!r} is not a Pagure PR number")
        try:
            return await self.client.pull_request(self._path(project), int(review))
        except PagureError as exc:
            if exc.status in (403, 404):
                raise Refused(f"{self.name}: PR {review} of {project}: {exc.message}") from None
            raise

    async def read_review(self, project: str, review: str) -> Review:
        doc = await self._pr(project, review)
        head = doc.get("commit_stop")
        if not isinstance(head, str) or not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", head):
            raise Refused(f"{self.name}: PR {review} of {project} has no commits")
        status = doc.get("status")
        branch = str(doc.get("branch") or "")
        user = doc.get("user")
        page = f"{self.config.url}/{self._path(project)}/pull-request/{int(review)}"
        approved, why = await self._approval(project, review, head)
        target = self.projects[project].branch
        if branch != target:
            approved, why = False, f"targets {branch!r}; the gate merges into {target!r}"
        mergeable = doc.get("cached_merge_status") != "CONFLICTS"
        if not mergeable:
            why = "Pagure finds conflicts with the branch"
        elif approved is None and not why:
            why = f"waiting for {self.config.approval.command} from someone with commit access"
        return Review(
            id=str(int(review)),
            project=project,
            revision=head,
            fetch_ref=f"refs/pull/{int(review)}/head",
            branch=branch,
            title=str(doc.get("title") or "")[:500],
            url=str(doc.get("full_url") or page),
            owner=str(user.get("name") or "") if isinstance(user, dict) else "",
            open=status == "Open",
            merged=status == "Merged",
            approved=approved,
            why_not=why,
            mergeable=mergeable,
        )

    async def _approval(self, project: str, review: str, head: str) -> tuple[bool | None, str]:
        """The connection's rule for the PR at ``head``: None leaves it to the command."""
        rule = self.config.approval
        if rule.flag is None:
            return None, ""
        flags = await self.client.pull_request_flags(self._path(project), int(review))
        flagged = any(
            isinstance(f.get("user"), dict)
            and f["user"].get("name") == rule.flag.user
            and (rule.flag.username is None or f.get("username") == rule.flag.username)
            and f.get("status") == rule.flag.status
            and f.get("commit_hash") in (None, head)
            for f in flags
        )
        wanted = f"{rule.flag.status} flag from {rule.flag.user}"
        if rule.command is None:
            return flagged, "" if flagged else f"no {wanted} on {head[:12]}"
        if rule.require == "any":
            return (True, "") if flagged else (None, "")
        return (None, "") if flagged else (False, f"no {wanted} on {head[:12]}")

    async def merge(self, project: str, commit: str, review: Review | None = None) -> MergeOutcome:
        """Merge ``review`` through Pagure if it is still open at the tested revision.

        Pagure's merge call has no guard on the head, so the PR is read just before
        it; a PR merged already at that revision (a repeat after a crash) is ok."""
        if review is None:
            return MergeOutcome(False, f"{self.name} merges pull requests, {commit[:12]} is none")
        pr = int(review.id)
        try:
            now = await self._pr(project, review.id)
            if self._merged_at(now, review.revision):
                return MergeOutcome(True, head=await self.branch_head(project))
            if now.get("status") != "Open":
                return MergeOutcome(False, f"PR {pr} is {str(now.get('status')).lower()}")
            if now.get("commit_stop") != review.revision:
                moved = str(now.get("commit_stop"))[:12]
                return MergeOutcome(False, f"PR {pr} moved to {moved} since it was tested")
            try:
                await self.client.merge(self._path(project), pr)
            except PagureError as exc:
                # Pagure answers 409 for a PR merged meanwhile too: look before refusing
                if self._merged_at(await self._pr(project, review.id), review.revision):
                    return MergeOutcome(True, head=await self.branch_head(project))
                return MergeOutcome(False, f"Pagure refused the merge: {exc.message} ({exc.code})")
        except Refused as exc:
            return MergeOutcome(False, str(exc))
        return MergeOutcome(True, head=await self.branch_head(project))

    @staticmethod
    def _merged_at(doc: dict[str, Any], revision: str) -> bool:
        return doc.get("status") == "Merged" and doc.get("commit_stop") == revision

    async def report(self, project: str, report: Report) -> None:
        if report.review is None or not report.review.isdigit():
            return
        if self.config.token is None:
            log.info("%s: no token, PR %s not told %s", self.name, report.review, report.phase)
            return
        await self.reporter.report(self._path(project), int(report.review), report)
