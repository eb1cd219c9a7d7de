"""The embedded source: plain git repositories, no review system.

A change is a ref or a commit of the project's repository; it is proposed and
approved through rpmgate's own API.  Merging is a fast-forward push of the
tested merge commit (never forced), so a branch that moved to something the
item was not tested on refuses the push.  Reports go to the gate's log and
its status API; there is nobody else to tell.
"""

from __future__ import annotations

import logging

from gate.config import Config
from gate.merger import Merger
from gate.sources.base import ChangeSource, MergeOutcome

log = logging.getLogger(__name__)


class PlainGitSource(ChangeSource):
    name = "git"

    def __init__(self, config: Config, merger: Merger) -> None:
        self.config = config
        self.merger = merger

    def _project(self, project: str) -> tuple[str, str]:
        cfg = self.config.projects[project]
        return cfg.git, cfg.branch

    async def resolve(self, project: str, ref: str) -> str:
        url, _ = self._project(project)
        return await self.merger.resolve(project, url, ref)

    async def branch_head(self, project: str) -> str:
        url, branch = self._project(project)
        return await self.merger.branch_head(project, url, branch)

    async def merge(self, project: str, commit: str) -> MergeOutcome:
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

    async def report(self, project: str, change_ref: str, result: str, message: str) -> None:
        log.info("report %s %s: %s%s", project, change_ref, result,
                 f": {message}" if message else "")
