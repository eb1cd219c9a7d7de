"""The GitHub ``ChangeSource``: pull requests of github.com or GitHub Enterprise Server.

Everything GitHub shares with Forgejo is in ``gate.sources.pulls``; here is
what is GitHub's own: its reviews and roles, its merge call, its webhook
headers and signature, its payloads.
"""

from __future__ import annotations

from typing import Any

from multidict import CIMultiDictProxy

from gate.events import Event
from gate.sources.base import MergeOutcome, SourceParts
from gate.sources.github import connection, payloads
from gate.sources.github.config import GitHubConfig
from gate.sources.pulls.model import PullRequest, Verdict
from gate.sources.pulls.source import Intake, PullRequestSource


class GitHubSource(PullRequestSource):
    system = "github"
    web_segment = "pull"
    config: GitHubConfig

    @classmethod
    def create(cls, name: str, config: GitHubConfig, parts: SourceParts) -> GitHubSource:
        return cls(
            name,
            config,
            connection.client(config),
            parts.projects,
            parts.merger,
            parts.store,
            parts.public_url,
        )

    def verify(self, headers: CIMultiDictProxy[str], body: bytes) -> tuple[int, str] | None:
        return connection.verify(self.config.webhook_secret.get_secret_value(), headers, body)

    def intake(self, headers: CIMultiDictProxy[str]) -> Intake | None:
        return connection.intake(headers)

    def parse_event(self, event_type: str, payload: dict[str, Any]) -> Event | None:
        return payloads.parse(self.name, event_type, payload, self.project_for)

    async def verdicts(self, repo: str, number: int) -> list[Verdict]:
        return await connection.verdicts(self.api, repo, number)

    async def permitted(self, repo: str, user: str) -> bool:
        level = await connection.permission(self.api, repo, user)
        return connection.at_least(level, self.config.approval.permission)

    async def merge_pull(self, repo: str, pr: PullRequest) -> MergeOutcome:
        outcome = await connection.merge(self.api, repo, pr, self.config.merge_method)
        if isinstance(outcome, MergeOutcome):
            return outcome
        return await self.after_refusal(repo, pr.number, outcome)
