"""``type: github``: a GitHub or GitHub Enterprise Server connection."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from gate.sources.pulls.config import PullRequestConnection


class GitHubConfig(PullRequestConnection):
    """A GitHub connection authenticated with a token (a fine-grained personal access
    token or a bot account's token; a GitHub App installation token is not yet
    supported, see docs/sources/github.md)."""

    type: Literal["github"] = "github"
    url: str = "https://github.com"
    #: how GitHub merges (``merge_method`` of the merge call): ``merge`` makes a merge
    #: commit whose tree is the tested tree when the branch did not move; ``squash``
    #: and ``rebase`` make new commits (the gate checks their tree)
    merge_method: Literal["merge", "squash", "rebase"] = "merge"

    @model_validator(mode="after")
    def _api_root(self) -> GitHubConfig:
        if self.approval.by == "command":
            raise ValueError(
                "approval.by: command is not available on GitHub: an issue_comment delivery "
                "names neither the pull request's head nor the commenter's permission, so a "
                "command cannot be bound to the revision it approves; use reviews or a label"
            )
        if not self.api_url:
            # github.com's API has its own host; GitHub Enterprise Server serves
            # it under /api/v3 of the instance
            # (https://docs.github.com/en/enterprise-server@latest/rest/quickstart)
            root = self.web_root()
            api = "https://api.github.com" if root == "https://github.com" else f"{root}/api/v3"
            object.__setattr__(self, "api_url", api)
        return self
