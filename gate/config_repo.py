"""Configuration as code: the gate's policy kept in a git repository.

With ``config_repo: {git: …, branch: …, path: rpmgate.yaml}`` in the local
file, the daemon reads the document at ``path`` on ``branch`` and lays its
top-level keys over the local file's (as Zuul keeps its configuration in
config projects).  The local file keeps what belongs to the host
(:data:`HOST_ONLY`: directories, the database, the listener, the sandbox,
API tokens, and ``config_repo`` itself); the repository holds the gate's
policy (projects, queues and their jobs, publishers, ...).

The daemon follows the branch (every ``config_repo.poll_interval`` seconds,
on ``SIGHUP`` and on ``rpmgate reload``).  Each new commit goes through the
same checks as a reload of the file (``gate.reload``) before it is applied; a
commit that fails them is refused, reported (log, ``/healthz``, the status
document) and not tried again until the branch moves.  The commit applied
last is recorded under ``<state_dir>/config-repo/applied``, so a daemon that
starts while the branch's head is refused (or the repository is unreachable)
starts with it rather than not at all.  Each generation's manifest names the
configuration (and commit) in force when it was published.

The clone is one of :class:`gate.merger.Merger`'s (``--end-of-options``
before every value, the branch checked as a branch name, the path checked by
the config model: nothing from the config reaches git as an option).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gate import config_check
from gate.config import (
    Config,
    ConfigError,
    ConfigRepoConfig,
    expand,
    parse_config,
    parse_document,
    read_document,
)
from gate.config_status import ConfigStatus, digest_of, now_iso
from gate.merger import GitError, Merger
from gate.reload import Candidate, CandidateRefused, Reloader, describe_error, refusal

log = logging.getLogger("rpmgate")

#: keys only the local file may set: the host's, and secrets
HOST_ONLY = (
    "config_repo",
    "state_dir",
    "database_url",
    "listen",
    "sandbox",
    "auth",
    "public_url",
)
#: the merger's name of the clone
CLONE = "config"


class ConfigRepo:
    """The repository a gate's policy is read from, and the commit applied last."""

    def __init__(self, local: Path, settings: ConfigRepoConfig, state_dir: Path) -> None:
        self.local = Path(local)
        self.settings = settings
        self.dir = Path(state_dir) / "config-repo"
        self.merger = Merger(self.dir / "git")

    @classmethod
    def of(cls, local: Path) -> ConfigRepo | None:
        """The repository the local file names (None: it names none)."""
        data = read_document(local)
        if not isinstance(data, dict) or data.get("config_repo") is None:
            return None
        try:
            settings = ConfigRepoConfig.model_validate(
                expand(data["config_repo"], ("config_repo",))
            )
        except ValidationError as exc:
            lines = [
                f"  config_repo.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors()
            ]
            raise ConfigError("\n".join([f"{local}: invalid configuration", *lines])) from None
        state_dir = expand(data.get("state_dir"), ("state_dir",))
        if not isinstance(state_dir, str):
            raise ConfigError(f"{local}: invalid configuration\n  state_dir: required")
        base = Path(local).resolve().parent
        return cls(local, settings, base / state_dir)

    @property
    def where(self) -> str:
        s = self.settings
        return f"{s.git}@{s.branch}:{s.path}"

    async def head(self) -> str:
        return await self.merger.branch_head(CLONE, self.settings.git, self.settings.branch)

    async def candidate(self, commit: str | None = None) -> Candidate:
        """The configuration of ``commit`` (default: the branch's head) over the local file.

        Raises :class:`CandidateRefused` (naming the commit) when the commit's
        document cannot be read or is not a configuration, and ConfigError when
        the local file is not.
        """
        local = read_document(self.local)
        if not isinstance(local, dict):
            raise ConfigError(f"{self.local}: the top level must be a mapping of keys")
        try:
            commit = commit or await self.head()
        except GitError as exc:
            raise CandidateRefused(
                422, [f"config_repo: cannot read branch {self.settings.branch}: {exc}"], None
            ) from None
        name = f"{self.settings.git}@{commit[:12]}:{self.settings.path}"
        try:
            text = await self.merger.file_at(CLONE, self.settings.git, commit, self.settings.path)
        except GitError as exc:
            raise CandidateRefused(422, [f"config_repo: {exc}"], commit) from None
        if text is None:
            problem = f"config_repo.path: commit {commit[:12]} has no file {self.settings.path}"
            raise CandidateRefused(422, [problem], commit)
        try:
            document = parse_document(text, name)
            if not isinstance(document, dict):
                raise ConfigError(f"{name}: the top level must be a mapping of keys")
            host = [key for key in HOST_ONLY if key in document]
            if host:
                raise CandidateRefused(
                    422,
                    [
                        f"{key}: set in the config repository, but only the local file "
                        f"{self.local} may set it (the host's settings and secrets)"
                        for key in host
                    ],
                    commit,
                )
            config = parse_config({**local, **document}, name, self.local.resolve().parent)
        except ConfigError as exc:
            raise CandidateRefused(422, describe_error(exc), commit) from None
        config._source = self.local.resolve()
        return Candidate(config, commit)

    # -- the commit applied last -----------------------------------------------------------

    @property
    def _applied_file(self) -> Path:
        return self.dir / "applied"

    def recorded(self) -> str | None:
        try:
            return self._applied_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def record(self, candidate: Candidate) -> None:
        if candidate.commit is None or candidate.commit == self.recorded():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self._applied_file.with_suffix(".tmp")
        tmp.write_text(candidate.commit + "\n")
        os.replace(tmp, self._applied_file)

    # -- start and follow -------------------------------------------------------------------

    async def initial(self) -> tuple[Config, ConfigStatus]:
        """The configuration to start with: the head's, else the commit applied last
        (the head's refusal reported); ConfigError when neither will do."""
        refused: list[str] = []
        head: str | None = None
        try:
            candidate = await self.candidate()
            refused = _offline_errors(candidate.config)
            head = candidate.commit
        except CandidateRefused as exc:
            refused, head = exc.findings, exc.commit
        if not refused:
            self.record(candidate)
            return candidate.config, self._status(candidate.config, head, None)
        recorded = self.recorded()
        if recorded is None or recorded == head:
            lines = [f"  {line}" for line in refused]
            where = f"{self.where} at {head[:12]}" if head else self.where
            raise ConfigError("\n".join([f"{where}: invalid configuration", *lines]))
        log.error(
            "config repository %s: %s refused, starting with %s applied before:\n  %s",
            self.where,
            head[:12] if head else "the branch",
            recorded[:12],
            "\n  ".join(refused),
        )
        try:
            fallback = await self.candidate(recorded)
        except CandidateRefused as exc:
            lines = [f"{self.where} at {recorded[:12]}: invalid configuration", *exc.findings]
            raise ConfigError("\n  ".join(lines)) from None
        return fallback.config, self._status(
            fallback.config, recorded, refusal("start", head, refused)
        )

    def _status(self, config: Config, commit: str | None, refused: Any) -> ConfigStatus:
        return ConfigStatus(
            digest=digest_of(config),
            source=f"{self.local} + {self.where}",
            commit=commit,
            applied_at=now_iso(),
            last_refused=refused,
            newest_refused=refused is not None,
        )

    async def follow(self, reloader: Reloader) -> None:
        """Reload whenever the branch moves to a commit neither applied nor refused."""
        interval = self.settings.poll_interval
        while interval > 0:
            await asyncio.sleep(interval)
            try:
                head = await self.head()
            except GitError as exc:
                log.warning("config repository %s: cannot read the branch: %s", self.where, exc)
                continue
            status = reloader.runtime.config_status
            refused = status.last_refused.commit if status.last_refused else None
            if head not in (status.commit, refused):
                await reloader.reload("config_repo")


def _offline_errors(config: Config) -> list[str]:
    return [str(f) for f in config_check.errors(config_check.offline_findings(config))]
