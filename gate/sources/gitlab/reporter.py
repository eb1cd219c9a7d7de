"""What the gate writes back on a merge request: a commit status and a note.

The commit status (``POST /projects/:id/statuses/:sha``, name ``rpmgate`` by
default, https://docs.gitlab.com/ee/api/commits.html#set-the-pipeline-status-of-a-commit)
is what the merge request widget shows next to the pipelines; the note
(https://docs.gitlab.com/ee/api/notes.html#create-new-merge-request-note) is where
the packager reads why.

A note is written as the bot, and GitLab runs the quick actions (``/merge``,
``/approve``, ``/label``) it finds at the start of a line of a note, with the
bot's rights: the gate's messages quote commit titles and build logs, which
anyone can write, so such lines are defused, and so are ``@`` mentions.
"""

from __future__ import annotations

import logging
import re

from gate.sources.base import Report
from gate.sources.gitlab.client import GitLabClient, GitLabError
from gate.sources.gitlab.config import ReportRule

log = logging.getLogger(__name__)

#: a report's phase -> the commit status state
#: (pending, running, success, failed, canceled: the API's states)
STATE = {"enqueued": "running", "failed": "failed", "merged": "success", "dequeued": "canceled"}
#: a zero-width space: breaks a quick action or a mention without changing what is read
ZWSP = "\u200b"


def defuse(text: str) -> str:
    """``text`` with no line GitLab would run as a quick action and no mention."""
    text = re.sub(r"(?m)^(\s*)/", rf"\1{ZWSP}/", text)
    return re.sub(r"@(?=[\w.-])", f"@{ZWSP}", text)


def note_body(report: Report) -> str:
    lines = [f"**rpmgate**: {defuse(report.message)}"]
    for label, key in (
        ("status", "status"),
        ("log", "log"),
        ("speculative repository", "speculative_repo"),
        ("repository", "repository"),
    ):
        if report.links.get(key):
            lines.append(f"- {label}: {report.links[key]}")
    return "\n".join(lines)


def description(report: Report) -> str:
    if report.phase == "enqueued" and report.queue:
        # position counts the items ahead (0: the head); people count from 1
        where = f" at position {report.position + 1}" if report.position is not None else ""
        return f"queued in {report.queue}{where}"
    if report.phase == "merged" and report.generation is not None:
        return f"merged, published in generation {report.generation}"
    first = report.message.strip().splitlines()[0] if report.message.strip() else report.phase
    return first[:255]


class Reporter:
    def __init__(self, client: GitLabClient, rule: ReportRule, public_url: str = "") -> None:
        self.client = client
        self.rule = rule
        self.public_url = public_url

    def target_url(self, report: Report) -> str:
        links = report.links
        if report.phase == "failed" and links.get("log"):
            return links["log"]
        return links.get("status") or links.get("repository") or self.public_url

    async def report(self, path: str, report: Report) -> None:
        """The status first (the widget), then the note; either may raise (the gate retries)."""
        try:
            await self.client.set_status(
                path,
                report.revision,
                STATE[report.phase],
                name=self.rule.status_name,
                target_url=self.target_url(report),
                description=description(report),
            )
        except GitLabError as exc:
            # an unfinished status is moved on, and GitLab's state machine has no
            # running -> running: a second "enqueued" (after a reset) is already shown
            if exc.status != 400 or "Cannot transition status" not in exc.message:
                raise
            log.info("%s: status of %s is %s already", path, report.revision[:12], report.phase)
        if report.review is not None and report.phase in self.rule.comment_on:
            await self.client.create_note(path, int(report.review), note_body(report))

    async def passed(self, path: str, sha: str, target_url: str) -> None:
        """Mark ``sha`` tested before merging it (projects where pipelines must succeed)."""
        await self.client.set_status(
            path,
            sha,
            "success",
            name=self.rule.status_name,
            target_url=target_url or self.public_url,
            description="passed the gate; merging",
        )
