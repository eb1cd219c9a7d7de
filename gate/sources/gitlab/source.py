"""A GitLab instance as a source of changes: merge requests in, merged through GitLab.

* **Events** arrive on ``POST /api/sources/<name>/webhook`` (a project or group
  webhook with Merge request, Push and Comment events): verified
  (:mod:`.verify`), stored under GitLab's delivery id, answered 202; the loop
  reads each into a hint (:mod:`.hooks`) and :meth:`GitLabSource.parse_event`
  turns it into a :class:`~gate.events.ReviewUpdated` (the gate then re-reads the
  merge request) or a :class:`~gate.events.RefUpdated` (a direct push).
* **What a merge request is now**: ``GET …/merge_requests/:iid`` plus the
  connection's approval rule (:meth:`read_review`).  Its revision is fetched by
  ``refs/merge-requests/<iid>/head`` from the target project, which GitLab keeps
  for merge requests from forks too.
* **Merging**: ``PUT …/merge_requests/:iid/merge`` with ``sha=`` the tested head,
  so GitLab refuses (409) if the merge request moved since; GitLab makes the
  merge commit its merge method makes, and the gate checks its tree.
* **Reports**: a commit status and a note (:mod:`.reporter`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aiohttp import web

from gate.events import Event, RefUpdated, Refused, ReviewUpdated
from gate.merger import Merger
from gate.sources import webhooks
from gate.sources.base import (
    ChangeSource,
    GitProject,
    MergeOutcome,
    Report,
    Review,
    SourceParts,
    StoreDelivery,
)
from gate.sources.gitlab import hooks
from gate.sources.gitlab.client import GitLabClient, GitLabError
from gate.sources.gitlab.config import GitLabConfig
from gate.sources.gitlab.reporter import Reporter
from gate.sources.gitlab.verify import delivery_key, verifier

log = logging.getLogger(__name__)

#: ``detailed_merge_status`` values that mean GitLab will not merge it now
#: (https://docs.gitlab.com/ee/api/merge_requests.html#merge-status); ``ci_must_pass``
#: and ``ci_still_running`` are not among them: the gate's own status may be that
#: pipeline, and it marks it passed before merging
NOT_MERGEABLE = {
    "blocked_status": "blocked by another merge request",
    "conflict": "has conflicts",
    "discussions_not_resolved": "has unresolved threads",
    "draft_status": "is a draft",
    "jira_association_missing": "names no Jira issue",
    "locked_paths": "touches locked paths",
    "locked_lfs_files": "touches locked LFS files",
    "merge_request_blocked": "is blocked",
    "need_rebase": "needs a rebase (fast-forward merge method)",
    "not_approved": "lacks the approvals the project's rules require",
    "not_open": "is not open",
    "policies_denied": "is denied by a policy",
    "requested_changes": "has changes requested",
    "security_policy_violations": "violates a security policy",
    "title_regex": "has a title the project refuses",
}
#: a merge request's page: ``<url>/<path>/-/merge_requests/<iid>`` (older: without ``-/``)
MR_PAGE = re.compile(
    r"^(?P<path>[A-Za-z0-9_.][A-Za-z0-9_./+-]*?)/(?:-/)?merge_requests/(?P<iid>\d{1,10})/?(?:[#?].*)?$"
)
#: changes in a metadata-only ``update`` that can change the gate's answer
RELEVANT_CHANGES = {"labels", "draft", "work_in_progress", "target_branch", "state_id"}


def _iid(review: str) -> int:
    if not review.isdigit() or len(review) > 10 or int(review) <= 0:
        raise Refused(f"{review!r} is not a merge request iid")
    return int(review)


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class GitLabSource(ChangeSource):
    def __init__(
        self,
        name: str,
        config: GitLabConfig,
        projects: Mapping[str, GitProject],
        merger: Merger,
        *,
        store: StoreDelivery | None = None,
        public_url: str = "",
    ) -> None:
        self.name = name
        self.config = config
        self.projects = projects
        self.merger = merger
        self.store = store
        self.public_url = public_url
        self.client = GitLabClient(
            config.api,
            config.token.get_secret_value(),
            bearer=config.token_header == "bearer",
            timeout=config.timeout,
        )
        self.reporter = Reporter(self.client, config.report, public_url)
        self.verifier = verifier(
            config.webhook_token.get_secret_value(),
            config.signing_token.get_secret_value() if config.signing_token else None,
            config.signature_tolerance,
        )
        #: a project's path there (case-folded: GitLab paths are case-insensitive) -> gate name
        self.by_path = {self.path(p).casefold(): p for p in projects}

    def projects_changed(self) -> None:
        self.by_path = {self.path(p).casefold(): p for p in self.projects}

    @classmethod
    def create(cls, name: str, config: GitLabConfig, parts: SourceParts) -> GitLabSource:
        return cls(
            name,
            config,
            parts.projects,
            parts.merger,
            store=parts.store,
            public_url=parts.public_url,
        )

    def path(self, project: str) -> str:
        """A gate project's path in GitLab."""
        cfg = self.projects[project]
        return getattr(cfg, "name", None) or project

    def _project_of(self, path: str) -> str | None:
        return self.by_path.get(path.casefold())

    # -- intake --------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [web.post(webhooks.path(self.name, "webhook"), self._webhook)]

    async def _webhook(self, request: web.Request) -> web.Response:
        """One delivery: verified before anything is read into JSON, stored, answered."""
        body = await webhooks.read_body(request, self.name)
        if isinstance(body, web.Response):
            return body
        refusal = self.verifier.verify(request.headers, body)
        if refusal is not None:
            return webhooks.refuse(request, self.name, refusal.status, refusal.why)
        declared = request.headers.get("X-Gitlab-Event")
        if not declared:
            return webhooks.refuse(request, self.name, 400, "no X-Gitlab-Event header")
        doc = webhooks.json_object(request, self.name, body)
        if isinstance(doc, web.Response):
            return doc
        if self.store is None:
            return webhooks.refuse(request, self.name, 503, "deliveries cannot be stored")
        kind = f"gitlab.{hooks.event_type(declared)}"
        return await webhooks.accept(
            request, self.store, self.name, kind, doc, delivery_key(request.headers)
        )

    def parse_event(self, event_type: str, payload: dict[str, Any]) -> Event | None:
        kind = event_type.removeprefix("gitlab.")
        try:
            if kind == hooks.MERGE_REQUEST_HOOK:
                return self._merge_request(hooks.merge_request(payload))
            if kind == hooks.PUSH_HOOK:
                return self._push(hooks.push(payload))
            if kind == hooks.NOTE_HOOK:
                hint = hooks.note(payload)
                return None if hint is None else self._note(hint)
        except hooks.NotUnderstood as exc:
            raise Refused(f"malformed GitLab {kind} delivery: {exc}") from None
        log.info("%s: %s deliveries are kept but not acted on", self.name, event_type[:80])
        return None

    def _ours(self, path: str, what: str) -> str | None:
        project = self._project_of(path)
        if project is None:
            log.info("%s: %s of %s: not a project of this gate", self.name, what, path[:200])
        return project

    def _merge_request(self, hint: hooks.MergeRequestHint) -> Event | None:
        project = self._ours(hint.project_path, f"merge request !{hint.iid}")
        if project is None:
            return None
        branch = self.projects[project].branch
        if hint.target_branch != branch and "target_branch" not in hint.changed:
            log.info("%s: !%d targets %s, not %s", self.name, hint.iid, hint.target_branch, branch)
            return None
        if (
            hint.action == "update"
            and not hint.new_revision
            and not RELEVANT_CHANGES & set(hint.changed)
        ):
            # a title, a description, an assignee: nothing the gate acts on
            log.info("%s: !%d: metadata-only update", self.name, hint.iid)
            return None
        return ReviewUpdated(source=self.name, project=project, review=str(hint.iid))

    def _push(self, hint: hooks.PushHint) -> Event | None:
        project = self._ours(hint.project_path, f"push to {hint.ref[:200]}")
        if project is None:
            return None
        if hint.branch != self.projects[project].branch:
            return None  # another branch, a merge request's source branch, …
        if hint.deleted:
            log.warning("%s: %s: branch %s deleted", self.name, project, hint.branch)
            return None
        title = hint.head.get("title") if hint.head else None
        log.info("%s: %s pushed to %s (%s)", self.name, hint.after[:12], project, str(title)[:80])
        return RefUpdated(
            project=project,
            old=None if hooks.ZERO.match(hint.before) else hint.before,
            new=hint.after,
        )

    def _note(self, hint: hooks.NoteHint) -> Event | None:
        if hint.system or self.config.approval.mode != "command":
            return None
        if hint.action != "create" or not hooks.is_command(hint.note, self.config.approval.command):
            return None
        project = self._ours(hint.project_path, f"comment on !{hint.iid}")
        if project is None:
            return None
        # who may give the command is checked when the merge request is read again
        # (read_review): the comment is a hint like any other event
        return ReviewUpdated(source=self.name, project=project, review=str(hint.iid))

    # -- git ------------------------------------------------------------------------------
    async def resolve(self, project: str, ref: str) -> str:
        return await self.merger.resolve(project, self.projects[project].git, ref)

    async def branch_head(self, project: str) -> str:
        cfg = self.projects[project]
        return await self.merger.branch_head(project, cfg.git, cfg.branch)

    async def is_merged(self, project: str, commit: str) -> bool:
        cfg = self.projects[project]
        return await self.merger.is_on_branch(project, cfg.git, commit, cfg.branch)

    async def push_build_branch(self, project: str, commit: str, branch: str) -> MergeOutcome:
        result = await self.merger.push_branch(project, self.projects[project].git, commit, branch)
        return MergeOutcome(result.ok, result.reason)

    async def delete_build_branch(self, project: str, branch: str) -> None:
        await self.merger.delete_branch(project, self.projects[project].git, branch)

    async def build_branches(self, project: str, namespace: str) -> list[str]:
        git = self.projects[project].git
        return sorted(await self.merger.remote_branches(project, git, namespace))

    # -- merge requests --------------------------------------------------------------------
    async def _read(self, project: str, iid: int) -> dict[str, Any]:
        try:
            return await self.client.merge_request(self.path(project), iid)
        except GitLabError as exc:
            if exc.status == 404:
                raise Refused(f"{self.path(project)} has no merge request !{iid}") from None
            raise

    async def read_review(self, project: str, review: str) -> Review:
        iid = _iid(review)
        mr = await self._read(project, iid)
        sha = mr.get("sha")
        if not isinstance(sha, str) or not hooks.SHA.match(sha):
            raise Refused(f"merge request !{iid} has no head commit yet")
        state = mr.get("state")
        branch = str(mr.get("target_branch") or "")
        approved, why_not = await self._approval(project, iid, mr)
        if branch != self.projects[project].branch:
            approved, why_not = (
                False,
                f"targets {branch[:100]}, not {self.projects[project].branch}",
            )
        status = mr.get("detailed_merge_status")
        blocked = NOT_MERGEABLE.get(status) if isinstance(status, str) else None
        if mr.get("has_conflicts") is True:
            blocked = NOT_MERGEABLE["conflict"]
        if mr.get("draft") is True or mr.get("work_in_progress") is True:
            blocked = NOT_MERGEABLE["draft_status"]
        author = mr.get("author")
        return Review(
            id=str(iid),
            project=project,
            revision=sha,
            fetch_ref=f"refs/merge-requests/{iid}/head",
            branch=branch,
            title=str(mr.get("title") or "")[:500],
            url=str(mr.get("web_url") or ""),
            owner=str(author.get("username") or "") if isinstance(author, dict) else "",
            open=state in ("opened", "locked"),
            merged=state == "merged",
            approved=approved,
            why_not=why_not or (f"merge request {blocked}" if blocked else ""),
            mergeable=blocked is None,
        )

    async def _approval(self, project: str, iid: int, mr: dict[str, Any]) -> tuple[bool, str]:
        rule = self.config.approval
        if rule.mode == "label":
            labels = mr.get("labels")
            has = isinstance(labels, list) and rule.label in labels
            return has, "" if has else f"no {rule.label!r} label"
        if rule.mode == "command":
            return await self._commanded(project, iid, mr)
        approvals = await self.client.approvals(self.path(project), iid)
        by = approvals.get("approved_by")
        count = len(by) if isinstance(by, list) else 0
        if approvals.get("approved") is not True:
            left = approvals.get("approvals_left")
            return False, f"GitLab's approval rules are not met ({left} approvals left)"
        if count < rule.min_approvals:
            return False, f"{count} of {rule.min_approvals} approvals"
        return True, ""

    async def _commanded(self, project: str, iid: int, mr: dict[str, Any]) -> tuple[bool, str]:
        """A command comment, by a member allowed to give it, newer than the head's push."""
        rule = self.config.approval
        path = self.path(project)
        versions = await self.client.versions(path, iid)
        pushed = next(
            (
                _when(v.get("created_at"))
                for v in versions
                if isinstance(v, dict) and v.get("head_commit_sha") == mr.get("sha")
            ),
            None,
        )
        if pushed is None:
            return False, "GitLab has no diff version of the current head yet"
        for note in reversed(await self.client.notes(path, iid)):
            if not isinstance(note, dict) or note.get("system") is True:
                continue
            made = _when(note.get("created_at"))
            if made is None or made < pushed:
                break  # older than the current revision: it approved another one
            body = note.get("body")
            author = note.get("author")
            if not isinstance(body, str) or not hooks.is_command(body, rule.command):
                continue
            user_id = author.get("id") if isinstance(author, dict) else None
            if not isinstance(user_id, int):
                continue
            member = await self.client.member(path, user_id)
            level = member.get("access_level") if member else None
            if isinstance(level, int) and level >= rule.command_access_level:
                return True, ""
        return (
            False,
            f"no {rule.command} comment since the last push by a member with"
            f" access level {rule.command_access_level} or more",
        )

    async def merge(self, project: str, commit: str, review: Review | None = None) -> MergeOutcome:
        cfg = self.projects[project]
        if review is None:
            # a change proposed through rpmgate's own API: pushed like plain git
            result = await self.merger.push(project, cfg.git, commit, cfg.branch)
            return MergeOutcome(result.ok, result.reason)
        iid = _iid(review.id)
        path = self.path(project)
        mr = await self._read(project, iid)
        done = self._already(mr, review)
        if done is not None:
            return done
        if self.config.report.success_before_merge:
            await self.reporter.passed(path, review.revision, self.public_url)
        status, body = await self.client.merge(path, iid, review.revision)
        if status == 200 and isinstance(body, dict):
            return MergeOutcome(True, head=self._head_after(body, review))
        if status == 409:
            return MergeOutcome(
                False, f"!{iid} moved since {review.revision[:12]} was tested (GitLab: {body})"
            )
        # 405 also answers a merge request merged meanwhile (a retry after a lost answer)
        mr = await self._read(project, iid)
        done = self._already(mr, review)
        if done is not None:
            return done
        if mr.get("sha") not in (None, review.revision):
            # GitLab checks mergeability before the sha: a push that reset the approvals
            # (or the pipeline) answers 405, not 409; the reason is still the push
            return MergeOutcome(
                False,
                f"!{iid} moved since {review.revision[:12]} was tested"
                f" (GitLab answered HTTP {status}: {body})",
            )
        return MergeOutcome(False, f"GitLab refused to merge !{iid} (HTTP {status}): {body}")

    def _already(self, mr: dict[str, Any], review: Review) -> MergeOutcome | None:
        if mr.get("state") != "merged":
            return None
        if mr.get("sha") != review.revision:
            return MergeOutcome(False, f"!{review.id} was merged at another revision")
        return MergeOutcome(True, "merged already", head=self._head_after(mr, review))

    @staticmethod
    def _head_after(mr: dict[str, Any], review: Review) -> str | None:
        """The commit GitLab put on the branch: its merge or squash commit, or (a
        fast-forward) the head itself."""
        for key in ("merge_commit_sha", "squash_commit_sha"):
            value = mr.get(key)
            if isinstance(value, str) and hooks.SHA.match(value):
                return value
        return review.revision

    async def report(self, project: str, report: Report) -> None:
        await self.reporter.report(self.path(project), report)

    def review_for_url(self, url: str) -> tuple[str, str] | None:
        base = self.config.url + "/"
        if not url.startswith(base):
            return None
        match = MR_PAGE.match(url[len(base) :])
        if match is None:
            return None
        project = self._project_of(match["path"])
        return None if project is None else (project, str(int(match["iid"])))

    def scm_url(self, project: str) -> str | None:
        return self.config.scm_url(self.path(project))

    async def close(self) -> None:
        await self.client.close()
