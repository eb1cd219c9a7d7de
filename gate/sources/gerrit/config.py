"""``type: gerrit``: one connection to a Gerrit server.

Connection (where Gerrit is and how the gate logs in) is kept apart from
policy (which votes make a change ready for the gate, what the gate votes
back).  Secrets come from the environment through ``${VAR}`` in the file.

Events reach the gate by the webhooks plugin (``webhook:``: Gerrit posts each
event to ``/api/sources/<name>/events/<token>``), by ``gerrit stream-events``
over SSH (``stream:``), or both: a duplicate is stored once.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from gate.registry import DriverConfig

#: the label names Gerrit allows (project-config.html#label_custom): letters,
#: digits and "-", not starting with "-"
LABEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookConfig(_Strict):
    """How a webhooks-plugin delivery proves it comes from this Gerrit.

    The plugin signs nothing, so a delivery is accepted only when it is posted
    to the unguessable ``token`` path and/or comes from an address in
    ``allow_from``; at least one of the two is required.
    """

    #: the last path segment of the webhook URL; 32 characters or more
    token: SecretStr | None = None
    #: addresses or networks (``192.0.2.10``, ``2001:db8::/32``) the plugin posts from
    allow_from: tuple[str, ...] = ()

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            secret = value.get_secret_value()
            if len(secret) < 32 or not secret.replace("-", "").replace("_", "").isalnum():
                raise ValueError(
                    "the webhook token must be 32 or more letters, digits, '-' or '_' "
                    "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
                )
        return value

    @field_validator("allow_from")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)  # ValueError names the bad entry
        return value

    @model_validator(mode="after")
    def _something_authenticates(self) -> WebhookConfig:
        if self.token is None and not self.allow_from:
            raise ValueError("set token, allow_from or both: the webhooks plugin signs nothing")
        return self

    def allows(self, address: str | None) -> bool:
        """Whether ``address`` (the TCP peer) may post; True when no allowlist is set."""
        if not self.allow_from:
            return True
        if address is None:
            return False
        try:
            peer = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(peer in ipaddress.ip_network(n, strict=False) for n in self.allow_from)


class StreamConfig(_Strict):
    """``gerrit stream-events`` over SSH (the account needs the Stream Events capability)."""

    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 29418
    user: str
    #: the private key the gate logs in with
    key: Path
    #: known_hosts file holding Gerrit's SSH host key (never trust on first use)
    known_hosts: Path
    #: the longest wait between two connection attempts, in seconds
    max_backoff: Annotated[float, Field(gt=0)] = 60.0
    #: on the first connection, also look for changes updated this many seconds
    #: before the daemon started (later connections resume from the last event seen)
    catch_up: Annotated[float, Field(ge=0)] = 600.0

    @field_validator("host", "user")
    @classmethod
    def _not_an_option(cls, value: str) -> str:
        if not value or value.startswith("-") or any(c.isspace() for c in value):
            raise ValueError(f"{value!r} is not a host or user name")
        return value


class ApprovalRule(_Strict):
    """One vote the change needs: the highest vote on ``label`` is ``value`` or more."""

    label: Annotated[str, Field(pattern=LABEL_NAME)]
    value: int


#: the OpenStack recipe: a core reviewer's +2 and the approver's Workflow +1
OPENSTACK_APPROVALS = (
    ApprovalRule(label="Code-Review", value=2),
    ApprovalRule(label="Workflow", value=1),
)


class GerritConfig(DriverConfig):
    """A Gerrit server: its REST API, its events, what gates and what is reported."""

    type: Literal["gerrit"] = "gerrit"
    #: the web and REST root, e.g. https://review.rdoproject.org/r
    url: str
    #: the gate's account and its HTTP password (Settings > HTTP Credentials)
    user: str = ""
    password: SecretStr = SecretStr("")
    #: how the HTTP password is sent: Gerrit's default is basic (auth.gitBasicAuthPolicy)
    auth: Literal["basic", "digest"] = "basic"
    #: the clone URL of project ``{name}`` when a project gives no ``git:``
    git: str = "{url}/{name}"
    #: the URL Koji clones for SCM builds, ``#<sha>`` appended
    scm: str = "git+{url}/{name}.git"
    webhook: WebhookConfig | None = None
    stream: StreamConfig | None = None
    #: what makes an open change ready for the gate, all of them on its current patch set;
    #: a vote at a label's lowest value (a veto, e.g. Code-Review -2) blocks it
    approvals: tuple[ApprovalRule, ...] = OPENSTACK_APPROVALS
    #: the label the gate votes: ``verified_success`` just before it submits (Gerrit's
    #: submit rules need it), ``verified_failure`` when it rejects
    verified_label: Annotated[str, Field(pattern=LABEL_NAME)] = "Verified"
    verified_success: int = 1
    verified_failure: int = -1
    #: vote at all (False: comments only, e.g. when another system owns Verified)
    vote: bool = True
    #: the tag on the gate's messages (Gerrit hides "autogenerated:" ones by default)
    tag: str = "autogenerated:rpmgate"
    #: seconds a REST request may take
    timeout: Annotated[float, Field(gt=0)] = 30.0

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("git", "scm")
    @classmethod
    def _template(cls, value: str) -> str:
        if "{name}" not in value:
            raise ValueError("the template must contain {name}")
        value.format(url="", name="")  # KeyError/ValueError name a bad placeholder
        return value

    def git_url(self, name: str) -> str:
        """The clone URL of the project ``name`` on this Gerrit."""
        return self.git.format(url=self.url, name=name)

    def scm_url(self, name: str) -> str:
        return self.scm.format(url=self.url, name=name)
