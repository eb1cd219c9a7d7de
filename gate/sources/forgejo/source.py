"""The Forgejo ``ChangeSource``: pull requests of a Forgejo (or Gitea) instance.

Everything Forgejo shares with GitHub is in ``gate.sources.pulls``; here is
what is Forgejo's own: its reviews and access modes, its merge call (which
answers nothing: the merge commit is read back from the pull request), its
webhook headers and signature, its payloads, and comment commands.
"""

from __future__ import annotations

from typing import Any

from multidict import CIMultiDictProxy

from gate.events import Event
from gate.sources.base import MergeOutcome, SourceParts
from gate.sources.forgejo import connection, payloads
from gate.sources.forgejo.config import ForgejoConfig
from gate.sources.pulls.model import PullRequest, Verdict
from gate.sources.pulls.source import Intake, PullRequestSource


class ForgejoSource(PullRequestSource):
    system = "forgejo"
    web_segment = "pulls"
    config: ForgejoConfig

    @classmethod
    def create(cls, name: str, config: ForgejoConfig, parts: SourceParts) -> ForgejoSource:
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
        return payloads.parse(
            self.name, event_type, payload, self.project_for, self.config.approval
        )

    async def verdicts(self, repo: str, number: int) -> list[Verdict]:
        return await connection.verdicts(self.api, repo, number)

    async def permitted(self, repo: str, user: str) -> bool:
        level = await connection.permission(self.api, repo, user)
        return connection.at_least(level, self.config.approval.permission)

    async def merge_pull(self, repo: str, pr: PullRequest) -> MergeOutcome:
        refused = await connection.merge(self.api, repo, pr, self.config.merge_method)
        # merged or not, the pull request now says so, with the merge commit
        return await self.after_refusal(repo, pr.number, refused or "not merged")
