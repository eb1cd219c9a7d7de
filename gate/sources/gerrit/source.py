"""A Gerrit connection as a source of changes (Zuul's gerritsource + gerritconnection).

* Intake: the webhooks plugin posts to this source's route; ``stream:`` runs
  ``gerrit stream-events`` over SSH.  Both store each event as a delivery of
  type ``gerrit.<type>`` under a key that one event has in both shapes
  (:func:`hints.delivery_key`), so a duplicate is stored once.
* :meth:`parse_event` turns a stored event into a hint for the gate:
  ``ReviewUpdated`` for a change's events, ``RefUpdated`` for a push to a
  project's branch, nothing for Gerrit's bookkeeping and replication.
* :meth:`read_review` is the truth the gate acts on: the change re-read with
  the REST API, the approval rule evaluated on its current patch set.
* :meth:`merge` votes ``Verified`` and submits the tested revision through
  Gerrit; naming the revision makes Gerrit refuse if the change moved.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from gate.events import Event, RefUpdated, Refused, ReviewUpdated
from gate.faults import until_it_answers
from gate.merger import Merger
from gate.sources.base import ChangeSource, GitProject, MergeOutcome, Report, Review, SourceParts
from gate.sources.gerrit import hints
from gate.sources.gerrit.approval import equivalent_revisions, evaluate
from gate.sources.gerrit.client import GerritClient, GerritError
from gate.sources.gerrit.config import GerritConfig
from gate.sources.gerrit.reporter import review_post
from gate.sources.gerrit.stream import StreamEvents
from gate.sources.gerrit.verify import verify
from gate.sources.webhooks import accept, json_object, path, read_body, refuse

log = logging.getLogger(__name__)

#: delivery types this source stores that are not Gerrit's: what a catch-up after
#: a stream-events reconnection found (a change updated, a branch's head)
CATCH_UP_CHANGE = "rpmgate-catch-up"
CATCH_UP_BRANCH = "rpmgate-branch-head"


def _key(kind: str, *parts: object) -> str:
    """A delivery key of bounded length: one per (change, update) or (branch, head)."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()
    return f"{kind}:{digest}"


class GerritSource(ChangeSource):
    def __init__(
        self,
        name: str,
        config: GerritConfig,
        projects: Mapping[str, GitProject],
        merger: Merger,
        parts: SourceParts,
    ) -> None:
        self.name = name
        self.config = config
        self.projects = projects
        self.merger = merger
        self.parts = parts
        self.client = GerritClient(
            config.url,
            config.user,
            config.password.get_secret_value(),
            config.auth,
            config.timeout,
        )
        self.stream: StreamEvents | None = None
        if config.stream is not None:
            self.stream = StreamEvents(name, config.stream, self._streamed, self._catch_up)

    @classmethod
    def create(cls, name: str, config: GerritConfig, parts: SourceParts) -> GerritSource:
        return cls(name, config, parts.projects, parts.merger, parts)

    # -- projects ------------------------------------------------------------

    def _gerrit_name(self, project: str) -> str:
        return str(getattr(self.projects[project], "name", None) or project)

    def _project_for(self, gerrit_name: str, branch: str | None) -> str | None:
        """The gate project that is ``gerrit_name``'s ``branch`` on this connection."""
        for key, cfg in self.projects.items():
            if self._gerrit_name(key) == gerrit_name and (branch is None or cfg.branch == branch):
                return key
        return None

    def _git(self, project: str) -> tuple[str, str]:
        cfg = self.projects[project]
        return cfg.git or self.config.git_url(self._gerrit_name(project)), cfg.branch

    # -- intake --------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        if self.config.webhook is None:
            return []
        if self.config.webhook.token is not None:
            return [web.post(path(self.name, "events", "{token}"), self._webhook)]
        return [web.post(path(self.name, "events"), self._webhook)]

    async def _webhook(self, request: web.Request) -> web.Response:
        assert self.config.webhook is not None
        problem = verify(self.config.webhook, request.match_info.get("token"), request.remote)
        if problem is not None:
            return refuse(request, self.name, *problem)
        body = await read_body(request, self.name)
        if isinstance(body, web.Response):
            return body
        payload = json_object(request, self.name, body)
        if isinstance(payload, web.Response):
            return payload
        try:
            kind = hints.event_type(payload)
        except hints.Malformed:
            return refuse(request, self.name, 400, "not a Gerrit event: no type")
        if self.parts.store is None:
            return refuse(request, self.name, 503, "this gate stores no events")
        return await accept(
            request,
            self.parts.store,
            self.name,
            f"gerrit.{kind}",
            payload,
            hints.delivery_key(payload),
        )

    async def _store(self, event_type: str, payload: dict[str, Any], key: str) -> None:
        store = self.parts.store
        if store is None:
            return
        await until_it_answers(
            lambda: store(self.name, event_type, payload, key), f"{self.name}: store {event_type}"
        )

    async def _streamed(self, payload: dict[str, Any]) -> None:
        try:
            kind = hints.event_type(payload)
        except hints.Malformed:
            log.warning("%s: stream-events: an event without a type", self.name)
            return
        await self._store(f"gerrit.{kind}", payload, hints.delivery_key(payload))

    async def _catch_up(self, since: float) -> None:
        """What happened while stream-events was not connected, as hints."""
        names = sorted({self._gerrit_name(p) for p in self.projects})
        if not names:
            return
        when = datetime.fromtimestamp(max(since, 0), UTC).strftime("%Y-%m-%d %H:%M:%S")
        projects = " OR ".join(f'project:"{n}"' for n in names if '"' not in n)
        found = await self.client.query_changes(f'after:"{when}" ({projects})')
        for change in found:
            number, project, branch = (
                change.get("_number"),
                change.get("project"),
                change.get("branch"),
            )
            payload = {
                "type": CATCH_UP_CHANGE,
                "change": {"project": project, "branch": branch, "number": number},
                "updated": change.get("updated"),
            }
            key = _key("gerrit-catch-up", project, number, change.get("updated"))
            await self._store(f"gerrit.{CATCH_UP_CHANGE}", payload, key)
        for project in self.projects:
            name, (_, branch) = self._gerrit_name(project), self._git(project)
            head = (await self.client.branch(name, branch)).get("revision")
            payload = {"type": CATCH_UP_BRANCH, "project": name, "branch": branch, "revision": head}
            await self._store(
                f"gerrit.{CATCH_UP_BRANCH}", payload, _key("gerrit-branch", name, branch, head)
            )
        log.info("%s: caught up since %s: %d changes", self.name, when, len(found))

    async def start(self) -> None:
        if self.stream is not None:
            self.stream.start()

    async def close(self) -> None:
        if self.stream is not None:
            await self.stream.stop()
        await self.client.close()

    # -- events --------------------------------------------------------------

    def parse_event(self, event_type: str, payload: dict[str, Any]) -> Event | None:
        kind = event_type.removeprefix("gerrit.")
        if kind in hints.IGNORED_EVENTS:
            return None
        if kind == CATCH_UP_BRANCH:
            project = self._project_for(str(payload.get("project")), str(payload.get("branch")))
            return RefUpdated(project=project) if project else None
        if kind == CATCH_UP_CHANGE:
            kind = "comment-added"  # a change to look at again, like any change event
        if kind != "ref-updated" and kind not in hints.CHANGE_EVENTS:
            log.info("%s: event type %r is not one the gate acts on", self.name, kind)
            return None
        try:
            hint = hints.parse({**payload, "type": kind})
        except hints.Malformed as exc:
            raise Refused(f"malformed Gerrit {kind} event: {exc}") from None
        if hint.ref is not None:
            return self._ref_updated(hint)
        if kind in hints.QUIET_CHANGE_EVENTS:
            return None
        if kind == "comment-added" and self._own(payload.get("author")):
            # the gate's own report (a vote, a comment) says nothing new of the change;
            # read as a hint it would enqueue a change it just rejected (still
            # approved: Verified is no part of the rule) again, and again
            return None
        project = self._project_for(hint.project, hint.branch)
        if project is None or hint.change is None:
            log.debug(
                "%s: %s of %s is not for a project of this gate", self.name, kind, hint.project
            )
            return None
        return ReviewUpdated(source=self.name, project=project, review=str(hint.change))

    def _own(self, account: Any) -> bool:
        """Whether the event's account is the gate's own (``user``)."""
        return (
            bool(self.config.user)
            and isinstance(account, dict)
            and account.get("username") == self.config.user
        )

    def _ref_updated(self, hint: hints.Hint) -> Event | None:
        assert hint.ref is not None
        if hints.is_bookkeeping(hint.ref) or hints.patchset_of_ref(hint.ref):
            return None  # NoteDb, sequences, notes; a patch set (patchset-created says it)
        if not hint.ref.startswith("refs/heads/") or hint.new == "0" * 40:
            return None
        project = self._project_for(hint.project, hint.ref.removeprefix("refs/heads/"))
        if project is None:
            return None
        return RefUpdated(project=project, old=hint.old, new=hint.new)

    # -- reading ---------------------------------------------------------------

    def _number(self, review: str) -> int:
        if not review.isdigit() or len(review) > 11:
            raise Refused(f"{review!r} is not a Gerrit change number")
        return int(review)

    def change_url(self, project: str, number: int) -> str:
        return f"{self.config.url}/c/{self._gerrit_name(project)}/+/{number}"

    async def read_review(self, project: str, review: str) -> Review:
        number = self._number(review)
        name, (_, branch) = self._gerrit_name(project), self._git(project)
        url = self.change_url(project, number)
        try:
            change = await self.client.get_change(name, number)
        except GerritError as exc:
            if exc.status != 404:
                raise
            return Review(
                id=review,
                project=project,
                revision="",
                fetch_ref="",
                branch=branch,
                url=url,
                open=False,
                approved=False,
                mergeable=False,
                why_not=f"change {number} is not in {self.name} (deleted, or hidden from the gate)",
            )
        if change.get("project") != name or change.get("branch") != branch:
            raise Refused(
                f"change {number} is for {change.get('project')} {change.get('branch')}, "
                f"not {name} {branch}"
            )
        current = str(change.get("current_revision") or "")
        revision = (change.get("revisions") or {}).get(current) or {}
        approved, why_not = evaluate(change, self.config.approvals)
        is_open = change.get("status") == "NEW"
        mergeable = True
        if is_open and current:
            answer = await self.client.mergeable(name, number, current)
            mergeable = bool(answer.get("mergeable", True))
            if not mergeable:
                why_not = "; ".join(filter(None, [why_not, "merge conflict with the branch"]))
        owner = change.get("owner") or {}
        return Review(
            id=str(number),
            project=project,
            revision=hints.sha(current, "current_revision") if current else "",
            fetch_ref=str(revision.get("ref") or ""),
            branch=branch,
            title=str(change.get("subject") or ""),
            url=url,
            owner=str(owner.get("username") or owner.get("name") or ""),
            open=is_open,
            merged=change.get("status") == "MERGED",
            approved=approved,
            why_not=why_not,
            mergeable=mergeable,
            equivalent=equivalent_revisions(change),
        )

    def review_for_url(self, url: str) -> tuple[str, str] | None:
        """``Depends-On:`` URLs of this Gerrit: ``<url>/c/<project>/+/<n>`` (PolyGerrit),
        ``<url>/#/c/<n>/`` and ``<url>/<n>`` (the old UI; only when one project is ours)."""
        base = self.config.url
        if not url.startswith(base + "/"):
            return None
        rest = unquote(url[len(base) + 1 :].split("?")[0])
        match = re.fullmatch(r"c/(.+)/\+/(\d+)(?:/.*)?", rest)
        if match:
            name, number = match.group(1), match.group(2)
            for project in self.projects:
                if self._gerrit_name(project) == name:
                    return project, number
            return None
        match = re.fullmatch(r"(?:#/c/)?(\d+)/?(?:\d+/?)?", rest)
        if match and len(self.projects) == 1:
            return next(iter(self.projects)), match.group(1)
        return None

    def scm_url(self, project: str) -> str | None:
        return self.config.scm_url(self._gerrit_name(project))

    # -- git ---------------------------------------------------------------------

    async def resolve(self, project: str, ref: str) -> str:
        url, _ = self._git(project)
        return await self.merger.resolve(project, url, ref)

    async def branch_head(self, project: str) -> str:
        url, branch = self._git(project)
        return await self.merger.branch_head(project, url, branch)

    async def is_merged(self, project: str, commit: str) -> bool:
        url, branch = self._git(project)
        return await self.merger.is_on_branch(project, url, commit, branch)

    # -- build branches (Koji SCM builds of a tested merge) ------------------------
    # A direct push to refs/heads/<namespace>/*: Gerrit checks it against the
    # project's access rights (Create Reference, Push with force, Delete
    # Reference, Push Merge Commit, Forge Committer: access-control.html) and
    # refuses with "prohibited by Gerrit: not permitted: create" and the like,
    # which the gate reports as the reason the merge cannot be built.

    async def push_build_branch(self, project: str, commit: str, branch: str) -> MergeOutcome:
        url, _ = self._git(project)
        result = await self.merger.push_branch(project, url, commit, branch)
        return MergeOutcome(result.ok, result.reason)

    async def delete_build_branch(self, project: str, branch: str) -> None:
        url, _ = self._git(project)
        await self.merger.delete_branch(project, url, branch)

    async def build_branches(self, project: str, namespace: str) -> list[str]:
        url, _ = self._git(project)
        return sorted(await self.merger.remote_branches(project, url, namespace))

    # -- merging -----------------------------------------------------------------

    async def merge(self, project: str, commit: str, review: Review | None = None) -> MergeOutcome:
        if review is None:
            return MergeOutcome(False, f"{self.name} merges changes through Gerrit, not by push")
        number = self._number(review.id)
        name, (_, branch) = self._gerrit_name(project), self._git(project)
        change = await self.client.get_change(name, number, ("CURRENT_REVISION",))
        status, current = change.get("status"), change.get("current_revision")
        if status == "MERGED" and current == review.revision:
            return MergeOutcome(True, head=await self._head(name, branch))  # done before a crash
        if status != "NEW":
            return MergeOutcome(False, f"change {number} is {str(status).lower()} in Gerrit")
        if current != review.revision:
            return MergeOutcome(
                False, f"change {number} moved to {str(current)[:12]} since it was tested"
            )
        try:
            if self.config.vote:
                await self.client.set_review(
                    name,
                    number,
                    review.revision,
                    labels={self.config.verified_label: self.config.verified_success},
                    tag=self.config.tag,
                )
            await self.client.submit_revision(name, number, review.revision)
        except GerritError as exc:
            if exc.status >= 500 or exc.status == 429:
                raise
            if exc.status == 409 and exc.message.startswith("change is merged"):
                return MergeOutcome(True, head=await self._head(name, branch))
            return MergeOutcome(False, f"Gerrit refused to submit change {number}: {exc.message}")
        return MergeOutcome(True, head=await self._head(name, branch))

    async def _head(self, name: str, branch: str) -> str:
        return hints.sha((await self.client.branch(name, branch)).get("revision"), "revision")

    # -- reporting ---------------------------------------------------------------

    async def report(self, project: str, report: Report) -> None:
        if report.review is None:
            log.info(
                "%s: %s %s (no change to comment on): %s",
                self.name,
                project,
                report.phase,
                report.message,
            )
            return
        post = review_post(self.config, report.phase, report.message, dict(report.links))
        await self.client.set_review(
            self._gerrit_name(project),
            self._number(report.review),
            report.revision,
            message=post.message,
            labels=post.labels,
            tag=self.config.tag,
        )
