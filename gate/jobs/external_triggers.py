"""How an external job asks another CI system to run, and to stop: one class per flavour.

Each flavour turns the job request (:class:`JobRequest`) into the external
system's own trigger call and its answer into a :class:`Triggered` handle,
and cancels a run from that handle:

* ``webhook``: a JSON POST of the request (optionally signed with HMAC-SHA256),
  cancelled by a second POST (``"action": "cancel"``);
* ``gitlab``: the pipeline trigger API
  (``POST /api/v4/projects/:id/trigger/pipeline``, form fields ``token``, ``ref``,
  ``variables[KEY]``; https://docs.gitlab.com/ci/triggers/), cancelled with
  ``POST /api/v4/projects/:id/pipelines/:pipeline_id/cancel`` and an access token
  (https://docs.gitlab.com/api/pipelines/#cancel-a-pipelines-jobs);
* ``jenkins``: ``POST /job/<name>/buildWithParameters`` (Jenkins answers ``201`` with
  ``Location: <jenkins>/queue/item/<n>/``, or ``303`` to the same queue item when an
  identical request is queued already: ``ParametersDefinitionProperty._doBuild``),
  cancelled with ``POST /queue/cancelItem?id=<n>`` (``204``; ``404`` once the item
  left the queue: ``Queue.doCancelItem``), then ``POST <build>/stop``.

Every secret (trigger tokens, API tokens, the run's token) stays out of logs
and out of what is recorded: :func:`scrub` removes them from any text an
external system answered.
"""

from __future__ import annotations

import abc
import base64
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from gate.builders.base import TransientBackendError
from gate.sources.webhooks import hmac_sha256_hex

#: the longest an external system's answer is quoted in a summary
_QUOTE = 300
#: what the gate waits for one trigger or cancel call
HTTP_TIMEOUT = 30.0
#: a variable name GitLab and Jenkins both take
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")


class TriggerRefused(Exception):
    """The external system refused the request (a 4xx): retrying will not help."""


class TriggerUnavailable(TransientBackendError):
    """The external system is unreachable or overloaded (connection error, 5xx, 429)."""


@dataclass(frozen=True)
class JobRequest:
    """What the gate asks the external system to run (docs/pipelines.md, External jobs)."""

    #: the JSON document a webhook receives (the token included)
    document: dict[str, Any]
    #: the same as flat ``RPMGATE_*`` variables, for GitLab variables and Jenkins parameters
    variables: dict[str, str]
    #: the run's token (the external system presents it with the result)
    token: str


@dataclass(frozen=True)
class Triggered:
    """The external system's handle on a run it accepted."""

    #: pipeline id, queue item number, or what a webhook receiver answered (None: nothing)
    remote_id: str | None
    #: where a person sees it (pipeline web_url, queue item URL)
    remote_url: str | None


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value.rstrip("/")


class _TriggerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the external system's base URL (webhook: the endpoint itself)
    url: str

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        return _url(value)


class WebhookTriggerConfig(_TriggerConfig):
    kind: Literal["webhook"] = "webhook"
    #: signs every request: ``X-Rpmgate-Signature-256: sha256=<hex HMAC of the body>``
    secret: SecretStr | None = None
    #: where cancellations go (default: ``url``)
    cancel_url: str | None = None

    @field_validator("cancel_url")
    @classmethod
    def _cancel_http(cls, value: str | None) -> str | None:
        return None if value is None else _url(value)


class GitlabTriggerConfig(_TriggerConfig):
    kind: Literal["gitlab"] = "gitlab"
    #: the project's id or full path (``group/project``)
    project: Annotated[str, Field(min_length=1, max_length=500)]
    #: a pipeline trigger token (Settings > CI/CD > Pipeline trigger tokens)
    token: SecretStr
    #: the branch or tag whose pipeline runs
    ref: Annotated[str, Field(min_length=1, max_length=255)] = "main"
    #: an access token with the ``api`` scope, to cancel pipelines (a trigger token
    #: cannot); without it a superseded pipeline runs to its end
    cancel_token: SecretStr | None = None


class JenkinsTriggerConfig(_TriggerConfig):
    kind: Literal["jenkins"] = "jenkins"
    #: the job's full name, folders separated by ``/`` (``openstack/packstack``)
    job: Annotated[str, Field(pattern=r"^[^/\s?#]+(/[^/\s?#]+)*$", max_length=500)]
    #: a user and API token (HTTP basic auth; requests so authenticated need no crumb)
    user: str | None = None
    api_token: SecretStr | None = None
    #: the job's "Trigger builds remotely" token (``?token=``), if it has one
    token: SecretStr | None = None
    #: fetch a CSRF crumb first (``/crumbIssuer/api/json``): for Jenkins that
    #: requires one of requests not authenticated by an API token
    crumb: bool = False


TriggerConfig = Annotated[
    WebhookTriggerConfig | GitlabTriggerConfig | JenkinsTriggerConfig, Field(discriminator="kind")
]


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret in ``secrets`` replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _quote_answer(status: int, body: str) -> str:
    body = " ".join(body.split())
    return f"{status} {body[:_QUOTE]}" if body else str(status)


async def _answer(resp: aiohttp.ClientResponse, what: str) -> str:
    """The body of a successful answer; raises for the others."""
    text = await resp.text(errors="replace")
    if resp.status == 429 or resp.status >= 500:
        raise TriggerUnavailable(f"{what}: {_quote_answer(resp.status, text)}")
    if resp.status >= 400:
        raise TriggerRefused(f"{what}: {_quote_answer(resp.status, text)}")
    return text


class Trigger(abc.ABC):
    """One flavour: how a run is started and stopped on the external system."""

    kind: str

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    @abc.abstractmethod
    def describe(self) -> str:
        """Where requests go, for the job's log (no secret in it)."""

    @abc.abstractmethod
    def secrets(self) -> list[str]:
        """The configured secrets, to scrub from anything recorded."""

    @abc.abstractmethod
    async def trigger(self, request: JobRequest) -> Triggered:
        """Ask for the run; raises :class:`TriggerRefused` or :class:`TriggerUnavailable`."""

    @abc.abstractmethod
    async def cancel(self, run: int, handle: Triggered, reason: str) -> str:
        """Ask the external system to stop the run; returns what it answered, in words."""


class WebhookTrigger(Trigger):
    kind = "webhook"

    def __init__(self, session: aiohttp.ClientSession, config: WebhookTriggerConfig) -> None:
        super().__init__(session)
        self.config = config

    def describe(self) -> str:
        return f"webhook {self.config.url}"

    def secrets(self) -> list[str]:
        return [self.config.secret.get_secret_value()] if self.config.secret else []

    def _headers(self, event: str, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "X-Rpmgate-Event": event}
        if self.config.secret is not None:
            signature = hmac_sha256_hex(self.config.secret.get_secret_value(), body)
            headers["X-Rpmgate-Signature-256"] = f"sha256={signature}"
        return headers

    async def _post(self, url: str, event: str, doc: dict[str, Any]) -> str:
        body = json.dumps(doc, sort_keys=True).encode()
        try:
            async with self.session.post(
                url, data=body, headers=self._headers(event, body), allow_redirects=False
            ) as resp:
                return await _answer(resp, f"webhook {event}")
        except aiohttp.ClientError as exc:
            raise TriggerUnavailable(f"webhook {event}: {exc}") from exc

    async def trigger(self, request: JobRequest) -> Triggered:
        text = await self._post(self.config.url, "run", request.document)
        # A receiver may answer with its own handle: {"id": ..., "url": ...} (optional).
        try:
            doc = json.loads(text) if text.strip() else {}
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        remote_id, remote_url = doc.get("id"), doc.get("url")
        return Triggered(
            str(remote_id)[:200] if isinstance(remote_id, str | int) else None,
            remote_url[:2000] if isinstance(remote_url, str) else None,
        )

    async def cancel(self, run: int, handle: Triggered, reason: str) -> str:
        doc = {"action": "cancel", "run": run, "id": handle.remote_id, "reason": reason}
        await self._post(self.config.cancel_url or self.config.url, "cancel", doc)
        return "cancel request accepted"


class GitlabTrigger(Trigger):
    kind = "gitlab"

    def __init__(self, session: aiohttp.ClientSession, config: GitlabTriggerConfig) -> None:
        super().__init__(session)
        self.config = config
        # ":id  integer/string  The ID or URL-encoded path of the project"
        self.api = f"{config.url}/api/v4/projects/{quote(config.project, safe='')}"

    def describe(self) -> str:
        return f"GitLab {self.api}/trigger/pipeline (ref {self.config.ref})"

    def secrets(self) -> list[str]:
        found = [self.config.token.get_secret_value()]
        if self.config.cancel_token is not None:
            found.append(self.config.cancel_token.get_secret_value())
        return found

    async def trigger(self, request: JobRequest) -> Triggered:
        # The form the triggers doc gives: token, ref, variables[KEY]=value.
        form = {"token": self.config.token.get_secret_value(), "ref": self.config.ref}
        form.update({f"variables[{k}]": v for k, v in request.variables.items()})
        try:
            async with self.session.post(
                f"{self.api}/trigger/pipeline", data=form, allow_redirects=False
            ) as resp:
                text = await _answer(resp, "GitLab pipeline trigger")
        except aiohttp.ClientError as exc:
            raise TriggerUnavailable(f"GitLab pipeline trigger: {exc}") from exc
        # 201 Created with the pipeline: {"id": 287, "web_url": ..., "status": "pending", ...}
        try:
            pipeline = json.loads(text)
        except ValueError:
            pipeline = None
        if not isinstance(pipeline, dict) or not isinstance(pipeline.get("id"), int):
            raise TriggerRefused(
                f"GitLab pipeline trigger: no pipeline in the answer: {text[:200]}"
            )
        web_url = pipeline.get("web_url")
        return Triggered(str(pipeline["id"]), web_url if isinstance(web_url, str) else None)

    async def cancel(self, run: int, handle: Triggered, reason: str) -> str:
        if handle.remote_id is None:
            return "no pipeline to cancel"
        if self.config.cancel_token is None:
            return f"pipeline {handle.remote_id} left running: no cancel_token configured"
        url = f"{self.api}/pipelines/{quote(handle.remote_id, safe='')}/cancel"
        headers = {"PRIVATE-TOKEN": self.config.cancel_token.get_secret_value()}
        try:
            async with self.session.post(url, headers=headers, allow_redirects=False) as resp:
                text = await _answer(resp, f"GitLab cancel of pipeline {handle.remote_id}")
        except aiohttp.ClientError as exc:
            raise TriggerUnavailable(f"GitLab cancel: {exc}") from exc
        try:
            status = json.loads(text).get("status", "?")
        except (ValueError, AttributeError):
            status = "?"
        return f"pipeline {handle.remote_id} cancelled (status {status})"


class JenkinsTrigger(Trigger):
    kind = "jenkins"

    def __init__(self, session: aiohttp.ClientSession, config: JenkinsTriggerConfig) -> None:
        super().__init__(session)
        self.config = config
        self.job_url = config.url + "".join(
            f"/job/{quote(part, safe='')}" for part in config.job.split("/")
        )
        # HTTP basic with a user's API token: Jenkins' CrumbFilter lets such requests
        # through without a crumb (Jenkins >= 2.96)
        self._auth: dict[str, str] = (
            {"Authorization": "Basic " + _basic(config.user, config.api_token.get_secret_value())}
            if config.user and config.api_token
            else {}
        )

    def describe(self) -> str:
        return f"Jenkins {self.job_url}/buildWithParameters"

    def secrets(self) -> list[str]:
        return [
            s.get_secret_value()
            for s in (self.config.api_token, self.config.token)
            if s is not None
        ]

    async def _crumb(self) -> dict[str, str]:
        """``{crumbRequestField: crumb}`` from the crumb issuer (its session cookie is kept
        by the client session, as Jenkins binds crumbs to the web session)."""
        if not self.config.crumb:
            return {}
        async with self.session.get(
            f"{self.config.url}/crumbIssuer/api/json", headers=self._auth
        ) as resp:
            text = await _answer(resp, "Jenkins crumb issuer")
        try:
            doc = json.loads(text)
            return {str(doc["crumbRequestField"]): str(doc["crumb"])}
        except (ValueError, KeyError, TypeError):
            raise TriggerRefused(f"Jenkins crumb issuer: unexpected answer {text[:200]}") from None

    async def _post(self, url: str, what: str, **kwargs: Any) -> aiohttp.ClientResponse:
        headers = {**self._auth, **await self._crumb()}
        resp = await self.session.post(url, headers=headers, allow_redirects=False, **kwargs)
        return resp

    async def trigger(self, request: JobRequest) -> Triggered:
        params = {"token": self.config.token.get_secret_value()} if self.config.token else {}
        try:
            resp = await self._post(
                f"{self.job_url}/buildWithParameters", "trigger", params=params,
                data=request.variables,
            )  # fmt: skip
            async with resp:
                await _answer(resp, "Jenkins buildWithParameters")
                location = resp.headers.get("Location", "")
                status = resp.status
        except aiohttp.ClientError as exc:
            raise TriggerUnavailable(f"Jenkins buildWithParameters: {exc}") from exc
        queued = re.search(r"/queue/item/([0-9]{1,19})/?$", location)
        if status not in (201, 303) or queued is None:
            raise TriggerRefused(
                f"Jenkins buildWithParameters: answered {status} without a queue item "
                f"(Location {location[:200]!r}); is the job parameterized?"
            )
        return Triggered(queued.group(1), _without_query(location))

    async def cancel(self, run: int, handle: Triggered, reason: str) -> str:
        if handle.remote_id is None:
            return "no queue item to cancel"
        try:
            resp = await self._post(
                f"{self.config.url}/queue/cancelItem", "cancel", params={"id": handle.remote_id}
            )
            async with resp:
                status = resp.status
                text = await resp.text(errors="replace")
            if status == 204:
                return f"queue item {handle.remote_id} cancelled"
            if status != 404:
                return f"queue item {handle.remote_id}: {_quote_answer(status, text)}"
            # Left the queue: it is a build now.  The item's API names it (executable).
            build = await self._build_of(handle)
            if build is None:
                return f"queue item {handle.remote_id} is gone and started no build"
            resp = await self._post(f"{build.rstrip('/')}/stop", "stop")
            async with resp:
                await _answer(resp, f"Jenkins stop of {build}")
            return f"build {build} stopped"
        except aiohttp.ClientError as exc:
            raise TriggerUnavailable(f"Jenkins cancel: {exc}") from exc

    async def _build_of(self, handle: Triggered) -> str | None:
        url = f"{self.config.url}/queue/item/{handle.remote_id}/api/json"
        async with self.session.get(url, headers=self._auth) as resp:
            if resp.status == 404:
                return None
            text = await _answer(resp, "Jenkins queue item")
        try:
            executable = json.loads(text).get("executable") or {}
            build = executable.get("url")
        except (ValueError, AttributeError):
            return None
        return (
            build if isinstance(build, str) and build.startswith(("http://", "https://")) else None
        )


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def make_trigger(
    session: aiohttp.ClientSession,
    config: WebhookTriggerConfig | GitlabTriggerConfig | JenkinsTriggerConfig,
) -> Trigger:
    if isinstance(config, GitlabTriggerConfig):
        return GitlabTrigger(session, config)
    if isinstance(config, JenkinsTriggerConfig):
        return JenkinsTrigger(session, config)
    return WebhookTrigger(session, config)


def variable_name(name: str) -> bool:
    """Whether ``name`` can be a GitLab variable or a Jenkins parameter."""
    return bool(_VARIABLE.match(name))
