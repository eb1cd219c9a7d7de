"""``type: pagure``: a Pagure instance (src.fedoraproject.org, pagure.io) as a source.

Connection settings (where the API is, the bot's token, the webhook keys, the
message bus) are kept apart from gate policy (who approves and how, what is
reported), as the style guide asks.  Secrets are :class:`~pydantic.SecretStr`
so that no repr or log line shows them; give them as ``${VAR}``.

::

    sources:
      fedora:
        type: pagure
        url: https://src.fedoraproject.org
        token: ${PAGURE_TOKEN}              # API token of the bot account
        webhook_keys:                       # each project's "Private web-hook key"
          rpms/nova: ${NOVA_HOOK_KEY}
        approval:
          command: /gate                    # a comment from someone with commit access
        messaging:                          # optional: fedora-messaging instead of/with webhooks
          amqp_url: amqps://fedora:@rabbitmq.fedoraproject.org/%2Fpublic_pubsub
          topic_prefix: org.fedoraproject.prod
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from gate.registry import DriverConfig

#: Pagure's flag statuses (pagure/default_config.py FLAG_STATUSES_LABELS)
FlagStatus = Literal["success", "failure", "error", "pending", "canceled"]
#: a project's path on Pagure: ``name`` or ``namespace/name``, a fork's
#: ``forks/<user>/...`` (pagure/lib/model.py Project.fullname)
PROJECT_PATH = re.compile(r"^(?:forks/[A-Za-z0-9_.+-]+/)?(?:[A-Za-z0-9_.+-]+/)?[A-Za-z0-9_.+-]+$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FlagApproval(_Section):
    """A PR flag that approves (a CI system's verdict on the PR's head commit)."""

    #: the Pagure account that set the flag (``flag.user.name``: the owner of the
    #: API token; the display name ``username`` is free text anyone may choose)
    user: str
    #: the flag's display name (``flag.username``), when one account sets several
    username: str | None = None
    status: FlagStatus = "success"


class ApprovalConfig(_Section):
    """What approves a pull request.  Pagure has no votes: a command and/or a flag.

    A command counts for the head commit (``commit_stop``) the PR had when it was
    given, and only from a user with commit access to the project (owner, admin,
    commit; directly or through a group) or a member of ``extra_groups``.  Pagure
    does not reset anything when new commits come, the gate does: a new head
    needs a new command.
    """

    #: a comment whose whole text (trimmed) is this approves; null: no command
    command: str | None = "/gate"
    #: a flag that approves; null: none
    flag: FlagApproval | None = None
    #: with both: "any" (either approves) or "all" (the flag, then the command)
    require: Literal["any", "all"] = "any"
    #: groups whose members may approve without commit access (Fedora's
    #: provenpackager has commit everywhere through Pagure's EXTERNAL_COMMITTER,
    #: which the API does not show)
    extra_groups: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _something_approves(self) -> ApprovalConfig:
        if self.command is None and self.flag is None:
            raise ValueError("approval needs a command, a flag or both")
        if self.command is not None and (not self.command.strip() or "\n" in self.command):
            raise ValueError("approval.command: one line of text")
        return self


class ReportConfig(_Section):
    """How results reach the PR page."""

    #: the flag's display name on the PR (``username`` of the flag API)
    flag_name: str = "rpmgate"
    #: post a comment at each phase as well as the flag
    comment: bool = True
    #: phases that get a comment (all get a flag)
    comment_on: tuple[Literal["enqueued", "failed", "merged", "dequeued"], ...] = (
        "enqueued",
        "failed",
        "merged",
        "dequeued",
    )


class MessagingConfig(_Section):
    """A fedora-messaging (AMQP) consumer of the instance's ``pagure.*`` messages."""

    #: the broker (Fedora's public one needs the certificate fedora-messaging ships)
    amqp_url: SecretStr
    #: topics are ``<prefix>.pagure.<pagure topic>``; ``org.fedoraproject.stg`` for staging
    topic_prefix: str = "org.fedoraproject.prod"
    exchange: str = "amq.topic"
    #: the queue's name; Fedora's public broker wants a UUID.  Default: derived from
    #: the connection (stable, so messages wait in the queue while the gate is down)
    queue: str | None = None
    #: a durable queue outlives the gate (messages sent meanwhile are kept)
    durable: bool = True
    #: TLS client settings (paths), as fedora-messaging's ``[tls]`` section
    ca_cert: str | None = None
    certfile: str | None = None
    keyfile: str | None = None

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", value):
            raise ValueError(f"{value!r} is not a topic prefix (dotted words)")
        return value

    def queue_name(self, connection: str, url: str) -> str:
        return self.queue or str(uuid.uuid5(uuid.NAMESPACE_URL, f"rpmgate:{connection}:{url}"))


class PagureConfig(DriverConfig):
    """A Pagure instance: its API, the bot's token, how events come, who approves."""

    type: Literal["pagure"] = "pagure"
    #: the web and API root (``https://src.fedoraproject.org``)
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/[^\s]*)?$")]
    #: the bot account's API token (ACLs: pull_request_merge, pull_request_flag,
    #: pull_request_comment); null: read-only (no merge, no report)
    token: SecretStr | None = None
    #: the "Private web-hook key" of each project (Settings > Hooks), by project path
    #: (a fork's key makes its pushes seen and ignored rather than refused)
    webhook_keys: dict[str, SecretStr] = {}
    #: the key of projects not listed in ``webhook_keys`` (one key for all; rare)
    webhook_key: SecretStr | None = None
    approval: ApprovalConfig = ApprovalConfig()
    report: ReportConfig = ReportConfig()
    messaging: MessagingConfig | None = None
    #: clone URL of a project: ``{url}`` and ``{name}`` are replaced
    git_url_template: str = "{url}/{name}.git"
    #: Koji SCM URL (without the ``#commit``); null: the project's ``scm_url``
    scm_url_template: str | None = "git+{url}/{name}.git"
    #: seconds an API call may take
    timeout: Annotated[float, Field(gt=0, le=600)] = 60.0

    @field_validator("url")
    @classmethod
    def _no_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("webhook_keys")
    @classmethod
    def _paths(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for path in value:
            if not PROJECT_PATH.match(path):
                raise ValueError(f"{path!r} is not a Pagure project path (namespace/name)")
        return value

    def git_url(self, name: str) -> str | None:
        return self.git_url_template.format(url=self.url, name=name)

    def scm_url(self, name: str) -> str | None:
        template = self.scm_url_template
        return template.format(url=self.url, name=name) if template else None

    def webhook_secret(self, project_path: str) -> str | None:
        key = self.webhook_keys.get(project_path) or self.webhook_key
        return key.get_secret_value() if key is not None else None
