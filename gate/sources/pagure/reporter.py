"""Reports on the PR page: a flag (status + link) and a comment.

The flag (``POST /api/0/<repo>/pull-request/<id>/flag``) lands on the PR's
head *as it is when posted* (pagure/api/fork.py ``api_pull_request_add_flag``
warns of the race): the PR is read first and the flag is left out when its
head is no longer the revision the report is about, so a result is never
shown against code it was not for.  One ``uid`` per connection, so each new
phase updates the gate's flag on that commit instead of adding another.
"""

from __future__ import annotations

import logging

from gate.sources.base import Report
from gate.sources.pagure.client import PagureClient
from gate.sources.pagure.config import PagureConfig

log = logging.getLogger(__name__)

#: the phase of a report -> Pagure's flag status (pagure/default_config.py FLAG_STATUSES_LABELS)
FLAG_STATUS = {
    "enqueued": "pending",
    "failed": "failure",
    "merged": "success",
    "dequeued": "canceled",
}
LINK_ORDER = ("log", "status", "speculative_repo", "repository")


def flag_url(report: Report, fallback: str) -> str:
    """The flag's link (Pagure requires one): the log of a failure, else the status page."""
    for name in LINK_ORDER:
        url = report.links.get(name, "")
        if url.startswith(("http://", "https://")):
            return url
    return fallback


def comment_text(report: Report) -> str:
    lines = [report.message.strip()]
    labels = {
        "status": "status",
        "log": "log",
        "speculative_repo": "speculative repository",
        "repository": "repository",
    }
    links = [f"* {labels.get(k, k)}: {v}" for k, v in report.links.items() if v]
    if links:
        lines += ["", *links]
    return "\n".join(lines)


class PagureReporter:
    def __init__(self, name: str, config: PagureConfig, client: PagureClient, public_url: str):
        self.name = name
        self.config = config
        self.client = client
        self.fallback = public_url or config.url
        self.uid = f"rpmgate-{name}"[:32]

    async def report(self, path: str, pr: int, report: Report) -> None:
        """Flag and comment; raises what the API raised (the gate retries transient faults)."""
        now = await self.client.pull_request(path, pr)
        if now.get("commit_stop") == report.revision:
            await self.client.flag(
                path,
                pr,
                username=self.config.report.flag_name,
                status=FLAG_STATUS[report.phase],
                comment=report.message.strip().splitlines()[0][:200]
                if report.message.strip()
                else report.phase,
                url=flag_url(report, self.fallback),
                uid=self.uid,
            )
        else:
            log.info(
                "%s: PR %s#%s moved from %s: no %s flag",
                self.name,
                path,
                pr,
                report.revision[:12],
                report.phase,
            )
        if self.config.report.comment and report.phase in self.config.report.comment_on:
            await self.client.comment(path, pr, comment_text(report))
