"""``type: forgejo``: a Forgejo (or Gitea) connection."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from gate.sources.pulls.config import PullRequestConnection


class ForgejoConfig(PullRequestConnection):
    """A Forgejo connection authenticated with an access token of the bot account."""

    type: Literal["forgejo"] = "forgejo"
    #: how Forgejo merges (``Do`` of the merge call, routers/api/v1/repo/pull.go):
    #: ``merge`` makes a merge commit whose tree is the tested tree when the branch did
    #: not move; ``fast-forward-only`` keeps the pull request's commits; ``rebase``,
    #: ``rebase-merge`` and ``squash`` make new commits (the gate checks their tree)
    merge_method: Literal["merge", "rebase", "rebase-merge", "squash", "fast-forward-only"] = (
        "merge"
    )

    @model_validator(mode="after")
    def _api_root(self) -> ForgejoConfig:
        if self.approval.permission == "maintain":
            raise ValueError("approval.permission: Forgejo has no 'maintain' level (write, admin)")
        if not self.api_url:
            # the API is served under /api/v1 of the instance (routers/api/v1/api.go)
            object.__setattr__(self, "api_url", f"{self.web_root()}/api/v1")
        return self
