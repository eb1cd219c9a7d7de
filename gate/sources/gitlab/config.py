"""``type: gitlab``: one GitLab instance (gitlab.com for CentOS Stream), as the gate sees it.

The connection (where the instance is, the bot's token, the webhook's secrets)
is kept apart from the policy (what approves a merge request for the gate, what
is reported back): a connection's rule applies to every project of it.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from gate.registry import DriverConfig

#: a label or a command as a packager types it (no newline, no markup games)
_WORD = r"^[^\s,][^\n\r,]{0,63}$"
#: GitLab's access levels (https://docs.gitlab.com/ee/api/members.html#roles)
DEVELOPER, MAINTAINER, OWNER = 30, 40, 50


class ApprovalRule(BaseModel):
    """What makes a merge request approved for the gate (the connection's rule).

    ``approvals`` (default): GitLab's own approval rules are met (``approved`` in
    ``GET …/merge_requests/:iid/approvals``) and at least ``min_approvals`` people
    approved the current revision (GitLab resets approvals on a push when the
    project is set to, which CentOS Stream is).  ``label``: the merge request
    carries ``label`` (only Reporters and up may set labels).  ``command``: a
    comment whose first line is ``command``, by a member with at least
    ``command_access_level``, made after the current revision was pushed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["approvals", "label", "command"] = "approvals"
    min_approvals: Annotated[int, Field(ge=0, le=50)] = 1
    label: Annotated[str, Field(pattern=_WORD)] = "gate"
    command: Annotated[str, Field(pattern=r"^/[a-z][a-z0-9_-]{0,31}$")] = "/gate"
    command_access_level: Annotated[int, Field(ge=DEVELOPER, le=OWNER)] = DEVELOPER


class ReportRule(BaseModel):
    """What the gate writes back on a merge request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the commit status's name (``POST /projects/:id/statuses/:sha``)
    status_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_./:-]{0,63}$")] = "rpmgate"
    #: the phases that also get a comment (a note) on the merge request
    comment_on: frozenset[Literal["enqueued", "failed", "merged", "dequeued"]] = frozenset(
        {"enqueued", "failed", "merged", "dequeued"}
    )
    #: before merging, mark the tested revision's status ``success`` (a project with
    #: "Pipelines must succeed" refuses the merge while the gate's own status runs)
    success_before_merge: bool = True


class GitLabConfig(DriverConfig):
    """``sources.<name>`` of ``type: gitlab``."""

    type: Literal["gitlab"] = "gitlab"
    #: the instance's web root: ``https://gitlab.com``
    url: str
    #: the REST API root; default ``<url>/api/v4``
    api_url: str | None = None
    #: where the gate clones projects from; default ``<url>`` (``<git_base>/<path>.git``)
    git_base: str | None = None
    #: the bot's personal, project or group access token (scope ``api``), ``${VAR}``
    token: SecretStr
    #: how the token is sent: ``PRIVATE-TOKEN`` (personal, project and group access
    #: tokens) or ``Authorization: Bearer`` (an OAuth token)
    token_header: Literal["private-token", "bearer"] = "private-token"
    #: the webhook's secret token (GitLab sends it as ``X-Gitlab-Token``)
    webhook_token: SecretStr
    #: the webhook's signing token (``whsec_<base64>``), where the instance signs
    #: deliveries (``webhook-signature``); when set, unsigned deliveries are refused
    signing_token: SecretStr | None = None
    #: how far a signed delivery's ``webhook-timestamp`` may be from now
    signature_tolerance: Annotated[int, Field(ge=30, le=3600)] = 300
    #: seconds for one REST call
    timeout: Annotated[float, Field(gt=0, le=300)] = 30.0
    approval: ApprovalRule = ApprovalRule()
    report: ReportRule = ReportRule()

    @field_validator("url", "api_url", "git_base")
    @classmethod
    def _a_base(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.rstrip("/")
        if not value or value.startswith("-") or any(c.isspace() for c in value):
            raise ValueError(f"{value!r} is not a URL")
        return value

    @model_validator(mode="after")
    def _web_url(self) -> GitLabConfig:
        if not re.match(r"^https?://[^/\s]+", self.url):
            raise ValueError(f"url: {self.url!r} is not an http(s) URL")
        for field in ("token", "webhook_token"):
            if not getattr(self, field).get_secret_value():
                raise ValueError(f"{field}: empty (is its ${{VAR}} set?)")
        return self

    @property
    def api(self) -> str:
        return self.api_url or f"{self.url}/api/v4"

    def git_url(self, name: str) -> str | None:
        """The clone URL of project ``name`` (``redhat/centos-stream/rpms/nova``)."""
        return f"{self.git_base or self.url}/{name}.git"

    def scm_url(self, name: str) -> str | None:
        """``git+<clone URL>`` when that is https (kojid's ``git+https://``); an ssh or
        plain-http ``git_base`` gives none: the project's ``scm_url`` is needed."""
        url = self.git_url(name)
        return f"git+{url}" if url and url.startswith("https://") else None
