"""The config keys GitHub and Forgejo connections share.

Connection (where, with which credentials) is kept apart from policy (which
approval gates, what is reported): ``url``/``api_url``/``token``/
``webhook_secret`` say how to talk to the system, ``approval``/``report``/
``merge_method`` what the gate does there.  Secrets are ``SecretStr``: a
printed or logged config shows ``**********``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from gate.registry import DriverConfig
from gate.sources.pulls.approval import ApprovalConfig

Phase = Literal["enqueued", "failed", "merged", "dequeued"]

#: an owner/repository path as both systems allow them
REPO_PATH = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class ReportConfig(BaseModel):
    """``report:``: what the gate tells a pull request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: a commit status on the tested head at every phase
    status: bool = True
    #: the status's context (its name in the checks list)
    context: str = Field(default="rpmgate", min_length=1, max_length=100)
    #: the phases that also get a comment
    comment_on: tuple[Phase, ...] = ("enqueued", "failed", "merged")


class PullRequestConnection(DriverConfig):
    """What a GitHub or Forgejo connection is configured with."""

    #: the web root packagers open (pull request pages, ``Depends-On:`` URLs)
    url: str
    #: the REST API root; default from ``url`` (each system's own rule)
    api_url: str = ""
    #: the bot account's token (``${VAR}``); sent only in the Authorization header
    token: SecretStr
    #: the secret the webhook is signed with (``${VAR}``); deliveries that do not
    #: carry its signature are refused
    webhook_secret: SecretStr = Field(min_length=1)
    approval: ApprovalConfig = ApprovalConfig()
    report: ReportConfig = ReportConfig()

    @field_validator("url", "api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    def web_root(self) -> str:
        return self.url.rstrip("/")

    def git_url(self, name: str) -> str | None:
        """The clone URL of repository ``owner/name`` (both: ``<web root>/<path>.git``)."""
        return f"{self.web_root()}/{name}.git" if REPO_PATH.match(name) else None

    def scm_url(self, name: str) -> str | None:
        url = self.git_url(name)
        return f"git+{url}" if url else None
