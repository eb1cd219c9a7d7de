"""The built-in drivers, one line each (see ``gate.registry``).

A new review system, backend, job type or publisher is a module of its own
(its config model and its implementation) plus one line here.
"""

from __future__ import annotations

from gate.builders.base import BackendParts, draft_retention_seconds
from gate.builders.koji_config import KojiBackendConfig
from gate.builders.local import LocalBackend, LocalBackendConfig
from gate.jobs.builddeps import BuildDepsJobConfig, builddeps_job
from gate.jobs.command import CommandJob, CommandJobConfig
from gate.jobs.dependencies import (
    ConflictsJobConfig,
    InstallabilityJobConfig,
    RepoclosureJobConfig,
    UpgradeJobConfig,
    conflicts_job,
    installability_job,
    repoclosure_job,
    upgrade_job,
)
from gate.jobs.external import ExternalJobConfig, external_job
from gate.publisher_config import PublisherConfig
from gate.registry import (
    BACKENDS,
    JOBS,
    PUBLISHERS,
    SOURCES,
    BackendDriver,
    JobDriver,
    PublisherDriver,
    SourceDriver,
)
from gate.sources.forgejo.config import ForgejoConfig
from gate.sources.forgejo.source import ForgejoSource
from gate.sources.gerrit.config import GerritConfig
from gate.sources.gerrit.source import GerritSource
from gate.sources.github.config import GitHubConfig
from gate.sources.github.source import GitHubSource
from gate.sources.gitlab.config import GitLabConfig
from gate.sources.gitlab.source import GitLabSource
from gate.sources.pagure.config import PagureConfig
from gate.sources.pagure.source import PagureSource
from gate.sources.plaingit import PlainGitConfig, PlainGitSource
from publishers.createrepo import Publisher
from repo_state.pool import Pool


def _local(name: str, cfg: LocalBackendConfig, parts: BackendParts) -> LocalBackend:
    return LocalBackend(
        parts.state_dir / "builds" / name,
        parts.pool,
        cfg.workers,
        sandbox=parts.sandbox,
        drafts=cfg.drafts,
        draft_retention=draft_retention_seconds(cfg.draft_retention),
    )


def _koji(name: str, cfg: KojiBackendConfig, parts: BackendParts) -> object:
    from gate.builders.koji import KojiBackend  # imports the koji client only when used

    return KojiBackend(
        cfg.koji_config(), parts.pool, parts.state_dir / "backends" / name, sandbox=parts.sandbox
    )


def _command(cfg: CommandJobConfig) -> CommandJob:
    return CommandJob(cfg.name, cfg.command, cfg.timeout, cfg.env)


def _createrepo(name: str, cfg: PublisherConfig, pool: Pool) -> Publisher:
    return Publisher(cfg.root, pool, arches=cfg.arches, keep=cfg.keep)


SOURCES.register(SourceDriver("git", PlainGitConfig, PlainGitSource.create))
SOURCES.register(SourceDriver("gerrit", GerritConfig, GerritSource.create))
SOURCES.register(SourceDriver("gitlab", GitLabConfig, GitLabSource.create))
SOURCES.register(SourceDriver("github", GitHubConfig, GitHubSource.create))
SOURCES.register(SourceDriver("forgejo", ForgejoConfig, ForgejoSource.create))
SOURCES.register(SourceDriver("pagure", PagureConfig, PagureSource.create))
BACKENDS.register(
    BackendDriver("local", LocalBackendConfig, _local, check="gate.builders.local_checks:offline")
)
BACKENDS.register(
    BackendDriver(
        "koji",
        KojiBackendConfig,
        _koji,
        check="gate.builders.koji_checks:offline",
        check_online="gate.builders.koji_checks:online",
    )
)
JOBS.register(JobDriver("repoclosure", RepoclosureJobConfig, repoclosure_job))
JOBS.register(JobDriver("installability", InstallabilityJobConfig, installability_job))
JOBS.register(JobDriver("conflicts", ConflictsJobConfig, conflicts_job))
JOBS.register(JobDriver("upgrade", UpgradeJobConfig, upgrade_job))
JOBS.register(JobDriver("builddeps", BuildDepsJobConfig, builddeps_job))
JOBS.register(JobDriver("command", CommandJobConfig, _command))
JOBS.register(JobDriver("external", ExternalJobConfig, external_job))
PUBLISHERS.register(PublisherDriver("createrepo", PublisherConfig, _createrepo))
