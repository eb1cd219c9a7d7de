"""The embedded source: plain git repositories, no review system.

A change is a ref or a commit of the project's repository; it is proposed and
approved through rpmgate's own API.  Merging is a fast-forward push of the
tested merge commit (never forced), so a branch that moved to something the
item was not tested on refuses the push.  Reports go to the gate's log and
its status API; there is nobody else to tell.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal

from gate.merger import Merger
from gate.registry import DriverConfig
from gate.sources.base import (
    ChangeSource,
    GitProject,
    MergeOutcome,
    Report,
    Review,
    SourceParts,
)

log = logging.getLogger(__name__)


class PlainGitConfig(DriverConfig):
    """``type: git``: changes through rpmgate's own API, merged by pushing."""

    type: Literal["git"] = "git"


class PlainGitSource(ChangeSource):
    def __init__(
        self, projects: Mapping[str, GitProject], merger: Merger, name: str = "git"
    ) -> None:
        self.projects = projects
        self.merger = merger
        self.name = name

    @classmethod
    def create(cls, name: str, config: PlainGitConfig, parts: SourceParts) -> PlainGitSource:
        return cls(parts.projects, parts.merger, name)

    def _project(self, project: str) -> tuple[str, str]:
        cfg = self.projects[project]
        return cfg.git, cfg.branch

    async def resolve(self, project: str, ref: str) -> str:
        url, _ = self._project(project)
        return await self.merger.resolve(project, url, ref)

    async def branch_head(self, project: str) -> str:
        url, branch = self._project(project)
        return await self.merger.branch_head(project, url, branch)

    async def merge(self, project: str, commit: str, review: Review | None = None) -> MergeOutcome:
        url, branch = self._project(project)
        result = await self.merger.push(project, url, commit, branch)
        return MergeOutcome(result.ok, result.reason)

    async def is_merged(self, project: str, commit: str) -> bool:
        url, branch = self._project(project)
        return await self.merger.is_on_branch(project, url, commit, branch)

    async def push_build_branch(self, project: str, commit: str, branch: str) -> MergeOutcome:
        url, _ = self._project(project)
        result = await self.merger.push_branch(project, url, commit, branch)
        return MergeOutcome(result.ok, result.reason)

    async def delete_build_branch(self, project: str, branch: str) -> None:
        url, _ = self._project(project)
        await self.merger.delete_branch(project, url, branch)

    async def build_branches(self, project: str, namespace: str) -> list[str]:
        url, _ = self._project(project)
        return sorted(await self.merger.remote_branches(project, url, namespace))

    async def report(self, project: str, report: Report) -> None:
        log.info("report %s %s %s: %s", project, report.ref, report.phase, report.message)
