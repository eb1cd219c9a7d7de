"""How the Koji backend reaches a hub: a profile, overrides, auth, retry policy.

Koji users keep connection settings in profiles (``/etc/koji.conf``,
``/etc/koji.conf.d/*.conf``, ``~/.koji/config.d/``, ``~/.koji/config``) and
select one by name (``koji -p stream``).  :meth:`KojiConfig.resolve` reads the
profile with koji's own ``koji.read_config`` so rpmgate sees exactly what the
``koji`` CLI sees, then applies the overrides set in rpmgate's config.
Everything that is gate policy rather than connection (which target, SRPM or
SCM, tagging after publish, polling) lives next to it but is never read from
the profile.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import koji
from pydantic import ConfigDict, model_validator

from gate.builders.base import DEFAULT_DRAFT_RETENTION, draft_retention_seconds
from gate.registry import DriverConfig

SourceMode = Literal["srpm", "scm"]
AuthType = Literal["ssl", "gssapi", "password", "noauth"]

# koji's own spelling of authtypes in profiles; "kerberos" is the old name of gssapi
_AUTHTYPE_ALIASES = {
    "kerberos": "gssapi",
    "gssapi": "gssapi",
    "ssl": "ssl",
    "password": "password",
    "noauth": "noauth",
}


class KojiConfigError(ValueError):
    """The Koji connection settings are incomplete or contradictory."""


@dataclass(frozen=True)
class KojiConnection:
    """Resolved connection settings: what ``koji.ClientSession`` and downloads use."""

    server: str
    weburl: str
    topurl: str
    authtype: AuthType
    cert: str | None = None
    serverca: str | None = None
    no_ssl_verify: bool = False
    principal: str | None = None
    keytab: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    profile: str | None = None

    def verify(self) -> str | bool:
        """The ``verify`` argument for HTTPS requests (a CA bundle path, or a bool)."""
        if self.serverca:
            return self.serverca
        return not self.no_ssl_verify


@dataclass
class KojiConfig:
    """Settings of the ``koji`` build backend.

    Connection fields left ``None`` come from the Koji profile ``profile``;
    the rest are rpmgate's policy.
    """

    #: Koji profile name, read with ``koji.read_config`` (e.g. "koji", "stream", "cbs")
    profile: str | None = None
    #: a config file read instead of ``~/.koji/config`` (the CLI's ``--config``)
    config_file: str | None = None
    server: str | None = None
    weburl: str | None = None
    topurl: str | None = None
    #: "ssl", "gssapi" ("kerberos"), "password" or "noauth"; None: as the profile says,
    #: else inferred (a readable cert -> ssl, a user -> password, a principal -> gssapi)
    authtype: str | None = None
    cert: str | None = None
    serverca: str | None = None
    no_ssl_verify: bool | None = None
    principal: str | None = None
    keytab: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    #: build target used when a request names none
    target: str | None = None
    #: what scratch builds are built from: the speculative merge as an uploaded
    #: SRPM (works everywhere), or the project's SCM URL (needs the commit on a
    #: git server the hub's ``allowed_scms`` lists)
    scratch_source: SourceMode = "srpm"
    #: what final builds are built from; production hubs usually refuse
    #: non-scratch builds from SRPMs (policy ``build_from_srpm``), so "scm" there
    final_source: SourceMode = "srpm"
    #: tag the final build into this tag after its repo generation is published
    tag_after_publish: str | None = None
    #: final builds ahead of the tip as Koji draft builds, promoted at the tip
    #: (``auto``: when the hub is Koji >= 1.34; ``off``: the serial tip)
    drafts: str = "auto"
    #: seconds an unpromoted draft no item can use any more is kept before the gate
    #: deletes it (``deleteBuild``, which needs the ``admin`` permission); ``keep``:
    #: never, left to ``koji-gc`` or an admin (gate/draft_gc.py)
    draft_retention: float | str = DEFAULT_DRAFT_RETENTION
    #: the ``%dist`` the target's build tag defines; None: read ``rpm.macro.dist``
    #: from the build tag's extra on the hub
    dist: str | None = None
    #: ``build()`` priority offset and channel, passed through when set
    priority: int | None = None
    channel: str | None = None
    #: where SRPMs are uploaded (under the hub's work dir)
    upload_dir: str = "cli-build"
    #: SCM builds: the gate pushes the commit it tested to the branch
    #: ``<scm_branch_namespace>/<purpose>-<key>`` of the distgit before submitting
    #: (kojid clones every branch; a merge commit only the gate has is on none) and
    #: deletes it when the build is over
    scm_branch_namespace: str = "rpmgate/builds"

    #: seconds between two polls of the in-flight tasks
    poll_interval: float = 10.0
    #: blocking ClientSession calls in flight at once (each has its own session)
    max_concurrent_calls: int = 4
    max_concurrent_downloads: int = 4
    #: calls per multicall HTTP request
    multicall_batch: int = 1000
    #: seconds before one HTTP request to the hub or top URL times out
    call_timeout: float = 120.0
    #: transient faults are retried with exponential backoff from ``retry_initial``
    #: seconds, waits capped at ``retry_max_interval``; calls give up after
    #: ``retry_deadline`` seconds (polling never gives up, it rides out outages)
    retry_initial: float = 1.0
    retry_max_interval: float = 60.0
    retry_deadline: float = 600.0

    def __post_init__(self) -> None:
        for name in ("scratch_source", "final_source"):
            if getattr(self, name) not in ("srpm", "scm"):
                raise KojiConfigError(
                    f"{name} must be 'srpm' or 'scm', not {getattr(self, name)!r}"
                )
        if self.drafts not in ("auto", "off"):
            raise KojiConfigError(f"drafts must be 'auto' or 'off', not {self.drafts!r}")
        try:
            draft_retention_seconds(self.draft_retention)
        except ValueError as exc:
            raise KojiConfigError(str(exc)) from None
        if self.max_concurrent_calls < 1 or self.max_concurrent_downloads < 1:
            raise KojiConfigError("max_concurrent_calls and max_concurrent_downloads must be >= 1")
        if self.poll_interval <= 0:
            raise KojiConfigError("poll_interval must be positive")
        from gate.refs import InvalidRef, check_branch

        try:
            check_branch(f"{self.scm_branch_namespace}/x")
        except InvalidRef:
            raise KojiConfigError(
                f"scm_branch_namespace {self.scm_branch_namespace!r} does not make valid "
                "branch names"
            ) from None

    def resolve(self) -> KojiConnection:
        """Merge the profile (if any) with the overrides into concrete settings."""
        base: dict[str, Any] = {}
        if self.profile:
            try:
                base = koji.read_config(self.profile, user_config=self.config_file)
            except koji.ConfigurationError as exc:
                raise KojiConfigError(f"koji profile {self.profile!r}: {exc}") from exc
        elif self.config_file:
            raise KojiConfigError("config_file needs a profile to read from it")

        def pick(name: str) -> Any:
            value = getattr(self, name)
            return value if value is not None else (base.get(name) or None)

        server = pick("server")
        if not server:
            raise KojiConfigError("no Koji hub: set server or a profile that has one")
        topurl = pick("topurl")
        if not topurl:
            raise KojiConfigError("no topurl: the backend downloads RPMs from the hub's top URL")
        weburl = pick("weburl") or server.rsplit("/", 1)[0] + "/koji"
        cert = _path(pick("cert"))
        no_ssl_verify = (
            self.no_ssl_verify
            if self.no_ssl_verify is not None
            else bool(base.get("no_ssl_verify", False))
        )
        return KojiConnection(
            server=server.rstrip("/"),
            weburl=weburl.rstrip("/"),
            topurl=topurl.rstrip("/"),
            authtype=self._authtype(
                pick("authtype"), cert, pick("user"), pick("principal"), pick("keytab")
            ),
            cert=cert,
            serverca=_path(pick("serverca")),
            no_ssl_verify=no_ssl_verify,
            principal=pick("principal"),
            keytab=_path(pick("keytab")),
            user=pick("user"),
            password=pick("password"),
            profile=self.profile,
        )

    @staticmethod
    def _authtype(
        value: str | None,
        cert: str | None,
        user: str | None,
        principal: str | None,
        keytab: str | None,
    ) -> AuthType:
        if value:
            try:
                return _AUTHTYPE_ALIASES[value.lower()]  # type: ignore[return-value]
            except KeyError:
                raise KojiConfigError(
                    f"unknown authtype {value!r} (ssl, gssapi, kerberos, password, noauth)"
                ) from None
        # As the koji CLI decides when a profile names no authtype, except that a
        # daemon does not try Kerberos unless told to: it would pick up whatever
        # ticket the service account happens to hold.
        if cert and os.access(cert, os.R_OK):
            return "ssl"
        if user:
            return "password"
        if principal or keytab:
            return "gssapi"
        return "noauth"


def _path(value: str | None) -> str | None:
    return os.path.expanduser(value) if value else None


class KojiBackendConfig(DriverConfig):
    """The ``koji`` backend's config section: every key a field of :class:`KojiConfig`."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: Literal["koji"]

    @model_validator(mode="after")
    def _known_keys(self) -> KojiBackendConfig:
        known = {f.name for f in dataclasses.fields(KojiConfig)}
        for key in self.model_extra or {}:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(f"unknown key {key!r} ({hint}known: {', '.join(sorted(known))})")
        try:
            KojiConfig(**(self.model_extra or {})).resolve()
        except (KojiConfigError, TypeError) as exc:
            raise ValueError(str(exc)) from None
        return self

    def koji_config(self) -> KojiConfig:
        return KojiConfig(**(self.model_extra or {}))

    def secret_paths(self) -> list[str]:
        """Credential files this section names (hidden from builds)."""
        extra = self.model_extra or {}
        return [
            os.path.expanduser(str(extra[k]))
            for k in ("cert", "keytab", "config_file")
            if extra.get(k)
        ]
