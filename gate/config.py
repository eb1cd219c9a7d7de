"""Typed configuration, validated at load; errors name the offending key.

One YAML file.  Connections (where things are: git URLs, Koji hubs,
directories, the database) are kept apart from gate policy (which projects
share a queue, which jobs gate, how wide the window is).  See docs/config.md
for every key.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

import gate.drivers  # noqa: F401 - registers the built-in drivers
from gate.build_matrix import (
    BUILD_NAME_PATTERN,
    NamedBuildConfig,
    build_problems,
    build_repos,
    build_targets,
)
from gate.builders.local import LocalBackendConfig
from gate.jobs.base import JobConfig
from gate.jobs.dependencies import RepoclosureJobConfig
from gate.packages import PackageConfig, PackageOrderError, built_after, package_order
from gate.pipeline import (
    ARCH_PATTERN,
    NOT_ARCHES,
    FlakyConfig,
    RunnerRule,
    effective_arches,
    pipeline_problems,
)
from gate.publisher_config import PublisherConfig
from gate.queue_rules import WINDOW_DEFAULT, WindowRule, WindowStep
from gate.refs import InvalidRef, check_branch
from gate.registry import (
    BACKENDS,
    JOBS,
    NAME_PATTERN,
    PUBLISHERS,
    REGISTRIES,
    SOURCES,
    DriverConfig,
    Registry,
)
from gate.sources.plaingit import PlainGitConfig

NAME = NAME_PATTERN


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LookasideConfig(_Strict):
    #: URL template: {name} {filename} {hashtype} {hash}; file:// and plain paths work
    url: str
    cache_dir: Path | None = None


class ProjectConfig(_Strict):
    #: git URL or local path of the distgit repository; default: the source's URL
    #: of ``name`` (a review system's connection knows where its projects are)
    git: str = ""
    #: the project's path in its review system (``redhat/centos-stream/rpms/nova``);
    #: default: the project's key
    name: str | None = None
    branch: str = "main"
    #: spec file path inside the repository (default: <package>.spec)
    spec: str | None = None
    #: source package name (default: the project name)
    package: str | None = None
    #: several packages built from the project, in order (gate/packages.py);
    #: instead of ``package``/``spec``
    packages: Annotated[dict[str, PackageConfig] | None, Field(min_length=1)] = None
    lookaside: LookasideConfig | None = None
    #: for SCM builds in Koji: git+https://host/rpms/<name>.git (the sha is appended)
    scm_url: str | None = None
    #: the review system (``sources.<name>``) that owns the branch; default plain git
    source: str = "git"

    @field_validator("branch")
    @classmethod
    def _branch_is_a_branch(cls, value: str) -> str:
        try:
            return check_branch(value)
        except InvalidRef as exc:
            raise ValueError(str(exc)) from None

    @field_validator("git", "scm_url")
    @classmethod
    def _not_an_option(cls, value: str | None, info: ValidationInfo) -> str | None:
        # git reads a leading "-" as an option wherever an argument is parsed;
        # an empty git is "the source's URL", an empty scm_url is nothing
        if value is not None and (
            value.startswith("-") or (info.field_name == "scm_url" and not value)
        ):
            raise ValueError(f"{value!r} is not a repository URL or path")
        return value

    @field_validator("name")
    @classmethod
    def _a_path(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.+/-]*", value):
            raise ValueError(f"{value!r} is not a project path (letters, digits, . _ + - /)")
        if value is not None and ".." in value.split("/"):
            raise ValueError(f"{value!r} is not a project path")
        return value


class WindowConfig(_Strict):
    """A queue's window: Zuul's dependent-pipeline options, with rpmgate's defaults
    (gate/queue_rules.py ``WindowRule`` says why they differ from Zuul's)."""

    start: Annotated[int, Field(ge=1)] = WINDOW_DEFAULT.start
    floor: Annotated[int, Field(ge=1)] = WINDOW_DEFAULT.floor
    #: None: no limit (Zuul's ``window-ceiling`` default)
    ceiling: Annotated[int | None, Field(ge=1)] = WINDOW_DEFAULT.ceiling
    increase_type: WindowStep = WINDOW_DEFAULT.increase_type
    increase: Annotated[int, Field(ge=0)] = WINDOW_DEFAULT.increase
    decrease_type: WindowStep = WINDOW_DEFAULT.decrease_type
    decrease_factor: Annotated[int, Field(ge=1)] = WINDOW_DEFAULT.decrease_factor

    @model_validator(mode="after")
    def _bounds(self) -> WindowConfig:
        if self.floor > self.start:
            raise ValueError(f"floor ({self.floor}) must not exceed start ({self.start})")
        if self.ceiling is not None and self.ceiling < self.start:
            raise ValueError(f"ceiling ({self.ceiling}) must not be below start ({self.start})")
        if self.increase_type == "exponential" and self.increase < 1:
            raise ValueError("increase must be at least 1 with increase_type exponential")
        return self

    def rule(self) -> WindowRule:
        return WindowRule(
            start=self.start,
            floor=self.floor,
            increase=self.increase,
            decrease_factor=self.decrease_factor,
            increase_type=self.increase_type,
            decrease_type=self.decrease_type,
            ceiling=self.ceiling,
        )


class QueueConfig(_Strict):
    projects: Annotated[tuple[str, ...], Field(min_length=1)]
    #: name of the publisher (repository) this queue publishes to
    repo: str
    backend: str = "local"
    #: build target (Koji target; a label for the local backend)
    target: str = "rpmgate"
    #: named builds of each change, each with its own target (gate/build_matrix.py);
    #: default: one build named ``default`` on ``target``
    builds: Annotated[dict[str, NamedBuildConfig] | None, Field(min_length=1)] = None
    window: WindowConfig = WindowConfig()
    #: each entry validated by its driver's model (gate.registry.JOBS)
    jobs: tuple[JobConfig, ...] = (RepoclosureJobConfig(),)
    #: seconds between polls of each project's branch (direct pushes -> post items)
    poll_interval: Annotated[float, Field(ge=0)] = 60.0
    #: the arch trees jobs run on (each one of the publisher's ``arches``);
    #: default: the publisher's arches (docs/pipelines.md)
    arches: Annotated[
        tuple[Annotated[str, Field(pattern=ARCH_PATTERN)], ...] | None, Field(min_length=1)
    ] = None
    #: stages in order, each a list of job names; default: one stage of every job
    pipeline: tuple[tuple[str, ...], ...] | None = None
    #: which runner a job's run gets: the first rule whose ``match`` fits wins
    runners: tuple[RunnerRule, ...] = ()
    #: when a job is reported as flaky on the status document
    flaky: FlakyConfig = FlakyConfig()
    #: with drafts, when an item's draft starts: once its jobs passed (issue 13), or
    #: with its jobs (lower latency, drafts of items whose jobs fail: docs/config.md)
    draft_start: Literal["jobs-passed", "with-jobs"] = "jobs-passed"

    @field_validator("builds")
    @classmethod
    def _build_names(
        cls, value: dict[str, NamedBuildConfig] | None
    ) -> dict[str, NamedBuildConfig] | None:
        for name in value or {}:
            if not re.match(BUILD_NAME_PATTERN, name):
                raise ValueError(
                    f"{name!r} is not a build name (lowercase letters, digits, . _ -; "
                    "it is part of keys and paths)"
                )
        return value

    @field_validator("arches")
    @classmethod
    def _real_arches(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for arch in value or ():
            if arch in NOT_ARCHES:
                raise ValueError(
                    f"{arch} is not an arch tree: noarch packages are in every arch's tree"
                )
        if value is not None and len(set(value)) != len(value):
            raise ValueError("an arch is listed twice")
        return value

    @field_validator("jobs", mode="before")
    @classmethod
    def _job_shorthand(cls, value: Any) -> Any:
        """``repoclosure`` alone names a job; a job without ``type`` is a command job
        (``repoclosure`` by name), as before job types had names of their own."""
        return JOBS.check_types(job_entries(value))

    @field_validator("jobs")
    @classmethod
    def _unique_job_names(cls, jobs: tuple[JobConfig, ...]) -> tuple[JobConfig, ...]:
        names = [j.name for j in jobs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate job names: {', '.join(dupes)}")
        return jobs


def _default_sources() -> dict[str, DriverConfig]:
    return {"git": PlainGitConfig()}


def _default_backends() -> dict[str, DriverConfig]:
    return {"local": LocalBackendConfig()}


def job_entries(value: Any) -> Any:
    """A queue's ``jobs`` with every entry's ``type`` made explicit."""
    if not isinstance(value, list):
        return value
    jobs = []
    for job in value:
        if isinstance(job, str):
            job = {"type": job, "name": job}
        elif isinstance(job, dict) and "type" not in job:
            kind = "repoclosure" if job.get("name") == "repoclosure" else "command"
            job = {"type": kind, **job}
        jobs.append(job)
    return jobs


class SandboxConfig(_Strict):
    """How rpmbuild runs a change's spec here (see gate/builders/sandbox.py)."""

    #: account that runs rpmbuild when the daemon runs as root (default: nobody)
    user: str | None = None
    #: auto: use bubblewrap when it works on this host; required: refuse to start
    #: without it; off: never (environment and user switch only)
    bubblewrap: Literal["auto", "required", "off"] = "auto"


class ListenConfig(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    #: seconds a client has to send a request's headers (after connecting, or
    #: after keepalive_timeout of idling since the previous response)
    header_timeout: Annotated[float, Field(gt=0, le=3600)] = 10.0
    #: seconds a client has to send a request's body
    body_timeout: Annotated[float, Field(gt=0, le=3600)] = 30.0
    #: seconds an idle keep-alive connection is kept open
    keepalive_timeout: Annotated[float, Field(ge=0, le=3600)] = 15.0
    #: connections served at once; more are answered 503 and closed
    max_connections: Annotated[int, Field(ge=1, le=100_000)] = 512


class HealthConfig(_Strict):
    """What ``/healthz`` holds the daemon to (see gate/health.py, docs/runbook.md)."""

    #: seconds since the loop last ran before it counts as wedged (it runs at
    #: least every 30 s, so this must be more)
    loop_max_age: Annotated[float, Field(gt=30, le=86400)] = 120.0
    #: seconds a queue with active items may go without an item changing state
    #: while none of its work is running (nothing is doing the runnable work)
    stall_after: Annotated[float, Field(gt=0, le=7 * 86400)] = 900.0
    #: the same while some of its work runs (a build, jobs, a push, a publish):
    #: longer than the longest real build the queue waits for
    stall_after_busy: Annotated[float, Field(gt=0, le=30 * 86400)] = 86400.0
    #: free space (for unprivileged users) the state directory's and each
    #: publisher root's filesystem must keep; "2GiB", "500MB" or bytes
    min_free_bytes: ByteSize = ByteSize(2 * 1024**3)
    #: the same as a percentage of the filesystem's size (0: no such floor)
    min_free_percent: Annotated[float, Field(ge=0, le=100)] = 1.0
    #: seconds a backend's reachability probe is reused before it is asked again
    probe_interval: Annotated[float, Field(gt=0, le=3600)] = 30.0
    #: seconds a backend probe may take before it counts as a failure
    probe_timeout: Annotated[float, Field(gt=0, le=600)] = 10.0
    #: seconds the database query and the disk measurement may take
    check_timeout: Annotated[float, Field(gt=0, le=600)] = 5.0


class ConfigRepoConfig(_Strict):
    """Configuration as code: the gate follows a branch of a git repository holding
    its policy (see gate/config_repo.py, docs/config.md#configuration-as-code)."""

    #: URL or local path of the repository
    git: str
    branch: str = "main"
    #: the file of the config document inside the repository
    path: str = "rpmgate.yaml"
    #: seconds between looks at the branch (0: only on SIGHUP and ``rpmgate reload``)
    poll_interval: Annotated[float, Field(ge=0)] = 60.0

    @field_validator("git")
    @classmethod
    def _not_an_option(cls, value: str) -> str:
        if not value or value.startswith("-"):
            raise ValueError(f"{value!r} is not a repository URL or path")
        return value

    @field_validator("branch")
    @classmethod
    def _branch_is_a_branch(cls, value: str) -> str:
        try:
            return check_branch(value)
        except InvalidRef as exc:
            raise ValueError(str(exc)) from None

    @field_validator("path")
    @classmethod
    def _inside(cls, value: str) -> str:
        parts = value.split("/")
        if (
            not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.+/-]*", value)
            or ".." in parts
            or "" in parts
        ):
            raise ValueError(f"{value!r} is not a relative path inside the repository")
        return value


class ApiToken(_Strict):
    #: who holds it: recorded on every request it makes (deliveries, generations)
    name: Annotated[str, Field(pattern=NAME, max_length=100)]
    token: Annotated[str, Field(min_length=16)]


def _token_kind(value: Any) -> str:
    return "token:bare" if isinstance(value, str) else "token:named"


TokenConfig = Annotated[
    Annotated[ApiToken, Tag("token:named")]
    | Annotated[Annotated[str, Field(min_length=16)], Tag("token:bare")],
    Discriminator(_token_kind),
]


class AuthConfig(_Strict):
    #: bearer tokens accepted by the admin and change API (empty: open, for local
    #: use); ``{name: releng, token: ${RELENG_TOKEN}}``, or a bare string named
    #: by its position (``token-1`` for the first)
    api_tokens: tuple[TokenConfig, ...] = ()

    @field_validator("api_tokens")
    @classmethod
    def _unique(cls, tokens: tuple[ApiToken | str, ...]) -> tuple[ApiToken | str, ...]:
        named = _named(tokens)
        names = [t.name for t in named]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"two tokens are named {twice[0]!r}")
        if len({t.token for t in named}) != len(named):
            raise ValueError("the same token is listed twice")
        return tokens

    def named_tokens(self) -> tuple[ApiToken, ...]:
        return _named(self.api_tokens)


def _named(tokens: tuple[ApiToken | str, ...]) -> tuple[ApiToken, ...]:
    return tuple(
        t if isinstance(t, ApiToken) else ApiToken(name=f"token-{i + 1}", token=t)
        for i, t in enumerate(tokens)
    )


class Config(_Strict):
    """The whole config.  Driver sections (``sources``, ``backends``, ``publishers``,
    jobs) are checked by the model their ``type`` registered: parse with
    :func:`parse_config`, which builds the model from the registries."""

    #: where rpmgate keeps clones, the RPM pool, logs and speculative repos
    state_dir: Path
    #: SQLAlchemy URL; default sqlite:///<state_dir>/rpmgate.db
    database_url: str | None = None
    listen: ListenConfig = ListenConfig()
    #: URL the daemon is reached at (speculative repos are served under it)
    public_url: str | None = None
    #: seconds a finished item's speculative repositories are kept (and served) after
    #: it finished; 0: removed when it finishes (gate/retention.py)
    speculative_retention: Annotated[float, Field(ge=0, le=366 * 86400)] = 86400.0
    #: seconds the RPMs of a build no item uses and no kept generation serves stay
    #: in the pool after it was last of use; ``keep``: never deleted (gate/pool_gc.py)
    pool_retention: Annotated[float, Field(ge=3600, le=366 * 86400)] | Literal["keep"] = 7 * 86400.0
    auth: AuthConfig = AuthConfig()
    sandbox: SandboxConfig = SandboxConfig()
    health: HealthConfig = HealthConfig()
    #: follow a git branch for the policy part of this document (gate/config_repo.py)
    config_repo: ConfigRepoConfig | None = None
    #: review systems; a source ``git`` (plain git, rpmgate's own API) always exists
    sources: dict[str, DriverConfig] = Field(default_factory=lambda: _default_sources())
    backends: dict[str, DriverConfig] = Field(default_factory=lambda: _default_backends())
    publishers: dict[str, PublisherConfig]
    projects: dict[str, ProjectConfig]
    queues: dict[str, QueueConfig]

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        """The built-in ``git`` source and ``local`` backend exist unless redefined;
        a publisher without ``type`` is a createrepo_c one."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key, name, default in (
            ("sources", "git", {"type": "git"}),
            ("backends", "local", {"type": "local"}),
        ):
            if isinstance(data.get(key), dict):
                data[key] = {name: default, **data[key]}
        if isinstance(data.get("publishers"), dict):
            data["publishers"] = {
                name: {"type": "createrepo", **pub} if isinstance(pub, dict) else pub
                for name, pub in data["publishers"].items()
            }
        return data

    @field_validator("sources", mode="before")
    @classmethod
    def _source_types(cls, value: Any) -> Any:
        return SOURCES.check_types(value)

    @field_validator("backends", mode="before")
    @classmethod
    def _backend_types(cls, value: Any) -> Any:
        return BACKENDS.check_types(value)

    @field_validator("publishers", mode="before")
    @classmethod
    def _publisher_types(cls, value: Any) -> Any:
        return PUBLISHERS.check_types(value)

    @field_validator("projects", "queues", "publishers", "backends", "sources")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.match(NAME, name):
                raise ValueError(f"{name!r} is not a valid name (letters, digits, . _ + -)")
        return value

    @model_validator(mode="after")
    def _references(self) -> Config:
        seen: dict[str, str] = {}
        for pname, pcfg in list(self.projects.items()):
            if pcfg.source not in self.sources:
                raise _KeyError(f"projects.{pname}.source", f"unknown source {pcfg.source!r}")
            name = pcfg.name or pname
            git = pcfg.git or self.sources[pcfg.source].git_url(name)
            if not git:
                raise _KeyError(
                    f"projects.{pname}.git",
                    f"required: source {pcfg.source!r} has no URL of its own for {name!r}",
                )
            if (name, git) != (pcfg.name, pcfg.git):
                self.projects[pname] = pcfg.model_copy(update={"name": name, "git": git})
            _check_packages(pname, pcfg)
        for qname, queue in self.queues.items():
            for i, project in enumerate(queue.projects):
                if project not in self.projects:
                    raise _KeyError(f"queues.{qname}.projects.{i}", f"unknown project {project!r}")
                if project in seen:
                    raise _KeyError(
                        f"queues.{qname}.projects.{i}",
                        f"project {project!r} is already in queue {seen[project]!r}",
                    )
                seen[project] = qname
            if queue.repo not in self.publishers:
                raise _KeyError(f"queues.{qname}.repo", f"unknown publisher {queue.repo!r}")
            _check_build_repos(qname, queue, self.publishers, self.arches_of(qname))
            if queue.backend not in self.backends:
                raise _KeyError(f"queues.{qname}.backend", f"unknown backend {queue.backend!r}")
            _check_package_sources(qname, queue, self.projects, self.backends[queue.backend])
            published = self.publishers[queue.repo].arches
            for i, arch in enumerate(queue.arches or ()):
                if arch not in published:
                    raise _KeyError(
                        f"queues.{qname}.arches.{i}",
                        f"{arch} is not one of publisher {queue.repo}'s arches "
                        f"({', '.join(published)}): add it there, the repository has a tree "
                        "per arch",
                    )
            problems = pipeline_problems(
                f"queues.{qname}",
                self.arches_of(qname),
                queue.jobs,
                queue.pipeline,
                queue.runners,
                arch_stages=len(self.builds_of(qname)) < 2,
            )
            problems += _build_problems(f"queues.{qname}", queue, self.arches_of(qname))
            if problems:
                # every finding at once, each naming its key (as _format prints them)
                raise _KeyError(
                    problems[0][0],
                    "\n  ".join(
                        [problems[0][1], *(f"{key}: {message}" for key, message in problems[1:])]
                    ),
                )
        repos = [
            r for q in self.queues.values() for r in set(build_repos(q.builds, q.repo).values())
        ]
        for repo in set(repos):
            if repos.count(repo) > 1:
                raise _KeyError("queues", f"two queues publish to repository {repo!r}")
        return self

    #: the file this config was loaded from (None: built in code)
    _source: Path | None = PrivateAttr(default=None)
    #: probable mistakes found while loading that do not stop the daemon
    #: (``key: message``, e.g. a bare ``$VAR``); see gate/config_check.py
    _notes: tuple[str, ...] = PrivateAttr(default=())

    # -- derived values ----------------------------------------------------------------
    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def notes(self) -> tuple[str, ...]:
        return self._notes

    def secret_paths(self) -> list[Path]:
        """Files and directories a build must never see: the config's own directory
        (it may hold an environment file of secrets) and credential files it names."""
        paths = [self._source.parent] if self._source is not None else []
        for section in [*self.sources.values(), *self.backends.values()]:
            named = getattr(section, "secret_paths", None)
            if callable(named):
                paths += [Path(p) for p in named()]
        return paths

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'rpmgate.db'}"

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.listen.host}:{self.listen.port}").rstrip("/")

    def arches_of(self, queue: str) -> tuple[str, ...]:
        """The arches ``queue``'s jobs run on: its own ``arches``, else its publisher's."""
        qcfg = self.queues[queue]
        return effective_arches(qcfg.arches, self.publishers[qcfg.repo].arches)

    def queue_of(self, project: str) -> str:
        for name, queue in self.queues.items():
            if project in queue.projects:
                return name
        raise KeyError(project)

    def package_of(self, project: str) -> str:
        packages = self.projects[project].packages
        if packages:  # the first: a project of several has one build per package
            return next(iter(packages))
        return self.projects[project].package or project

    def spec_of(self, project: str, package: str | None = None) -> str:
        """The spec of ``package`` (default: the project's first) of ``project``."""
        packages = self.projects[project].packages
        if packages:
            if package is not None and package in packages:
                return packages[package].spec
            return next(iter(packages.values())).spec
        return self.projects[project].spec or f"{self.package_of(project)}.spec"

    def packages_of(self, project: str) -> dict[str, PackageConfig]:
        """The packages of a project of several (gate/packages.py); empty for one."""
        packages = self.projects[project].packages or {}
        return dict(packages) if len(packages) > 1 else {}

    def set_size(self, queue: str, project: str) -> int:
        """How many builds an item of ``project`` has per purpose: named builds times
        packages (``gate.item_builds``; 1: the item's own columns are the set)."""
        return len(self.builds_of(queue)) * max(1, len(self.packages_of(project)))

    def builds_of(self, queue: str) -> dict[str, str]:
        """Name -> target of each named build of ``queue`` (``default`` when none is named)."""
        qcfg = self.queues[queue]
        return build_targets(qcfg.builds, qcfg.target, qcfg.repo)

    def build_of(self, queue: str) -> tuple[str, str]:
        """The (name, target) of ``queue``'s own build (the one publishing to its ``repo``,
        first in ``builds_of``), whose rows are the item's own columns (``build_key``,
        ``final_build_id``; ``gate.item_builds``)."""
        return next(iter(self.builds_of(queue).items()))

    def repos_of(self, queue: str) -> dict[str, str]:
        """Name -> publisher of each named build of ``queue`` (the first: the queue's ``repo``)."""
        qcfg = self.queues[queue]
        return build_repos(qcfg.builds, qcfg.repo)

    def build_digest(self, project: str) -> str:
        """A digest of every setting that shapes a build of ``project``: its section,
        its queue's target and backend, and that backend's section.  A failed
        bootstrap build is tried again when it changes (the fix was in the config)."""
        queue = self.queues[self.queue_of(project)]
        doc = {
            "project": self.projects[project].model_dump(mode="json"),
            "target": queue.target,
            **({"builds": {n: b.target for n, b in queue.builds.items()}} if queue.builds else {}),
            "backend": self.backends[queue.backend].model_dump(mode="json"),
        }
        encoded = json.dumps(doc, sort_keys=True, default=str).encode()
        return hashlib.sha256(encoded).hexdigest()


def _check_build_repos(
    qname: str, queue: QueueConfig, publishers: Mapping[str, Any], arches: tuple[str, ...]
) -> None:
    """Each named build publishes to a publisher of its own, with the queue's arch trees.

    Exactly one build publishes to the queue's ``repo`` (the one without
    ``repo``, or naming it): the queue's own build, whose generations are the
    queue's (``gate.build_matrix.build_order``).  Two builds sharing a
    publisher are refused: two builds of one package in one repository would
    replace each other.
    """
    if not queue.builds:
        return
    by_repo: dict[str, str] = {}
    for name, build in queue.builds.items():
        repo = build.repo or queue.repo
        key = f"queues.{qname}.builds.{name}.repo"
        if repo not in publishers:
            raise _KeyError(key, f"unknown publisher {repo!r}")
        if repo in by_repo:
            raise _KeyError(
                key,
                f"builds {by_repo[repo]} and {name} both publish to {repo!r}: "
                "give each named build a publisher of its own (builds.<name>.repo)",
            )
        by_repo[repo] = name
        missing = [a for a in arches if a not in publishers[repo].arches]
        if missing:
            raise _KeyError(
                key,
                f"publisher {repo} has no tree for {', '.join(missing)} "
                "(each named build's repository has the queue's arches)",
            )
    if queue.repo not in by_repo:
        raise _KeyError(
            f"queues.{qname}.builds",
            f"no named build publishes to the queue's repo {queue.repo!r} (its generations "
            "are the queue's): leave one build's repo out",
        )


def _build_problems(
    where: str, queue: QueueConfig, arches: tuple[str, ...]
) -> list[tuple[str, str]]:
    builds = list(build_targets(queue.builds, queue.target, queue.repo))
    return build_problems(where, builds, arches, queue.jobs, queue.pipeline)


def _check_packages(name: str, project: ProjectConfig) -> None:
    if project.packages is None:
        return
    where = f"projects.{name}.packages"
    for key in ("package", "spec"):
        if getattr(project, key) is not None:
            raise _KeyError(
                f"projects.{name}.{key}",
                "give either packages or package/spec (each package has its own spec)",
            )
    try:
        package_order(built_after(project.packages, where=where), where)
    except PackageOrderError as exc:
        raise _KeyError(exc.key, str(exc)) from None


def _check_package_sources(
    qname: str, queue: QueueConfig, projects: Mapping[str, ProjectConfig], backend: Any
) -> None:
    """A project of several packages is built from one SRPM per package spec: a
    backend that would build it from its SCM URL cannot (Koji's ``buildSRPMFromSCM``
    builds the one spec at the top of the checkout)."""
    for key in ("scratch_source", "final_source"):
        if getattr(backend, key, None) != "scm":
            continue
        for project in queue.projects:
            packages = projects[project].packages or {}
            if len(packages) > 1:
                raise _KeyError(
                    f"backends.{queue.backend}.{key}",
                    f"scm: project {project} of queue {qname} has {len(packages)} packages, "
                    "each with its own spec, and a build from the SCM URL builds the spec "
                    "at the top of the checkout only: use srpm",
                )


class _KeyError(ValueError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def _format(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in error.errors():
        loc = ".".join(str(p) for p in _user_loc(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg += _did_you_mean(str(err["loc"][-1]), _keys_at(err["loc"][:-1]))
        lines.append(f"  {loc}: {msg}" if loc else f"  {msg}")
    return "\n".join(lines)


def _did_you_mean(key: str, known: list[str]) -> str:
    """`` (did you mean 'branch'?)`` for a key close to a known one, else the known keys."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f" (known: {', '.join(sorted(known))})" if known else ""


def _keys_at(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the model at ``loc`` (a path of a validation error) accepts.

    The path names every step: mapping keys, list positions and, at each
    discriminated union, the tag of the member that was used (``backend:local``).
    """
    annotation: Any = config_model()
    for part in loc:
        if isinstance(part, str) and part.startswith("function-"):
            continue
        if isinstance(part, str) and _TAG.match(part):
            kind, _, type_ = part.partition(":")
            registry = {r.kind: r for r in REGISTRIES}.get(kind)
            annotation = registry.get(type_).config if registry else ApiToken
            continue
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return []
            annotation = field.annotation
        elif typing.get_origin(annotation) in (dict, tuple, list):
            annotation = typing.get_args(annotation)[-1 if isinstance(part, str) else 0]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """``X`` of ``Annotated[X, ...]`` and of ``X | None``."""
    while True:
        if typing.get_origin(annotation) is Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
            annotation = args[0]
            continue
        return annotation


#: tags the discriminated unions put in error paths (never a user's key: those
#: follow the names rule, which has no ":")
_TAG = re.compile(r"^(source|backend|job|publisher|token):")


def _user_loc(loc: tuple[int | str, ...]) -> list[int | str]:
    """The user's keys only: discriminated unions put their tag in the path."""
    return [
        part
        for part in loc
        if not (isinstance(part, str) and (part.startswith("function-") or _TAG.match(part)))
    ]


_MODELS: dict[tuple[int, ...], type[Config]] = {}


def _driver_type_problems(data: dict[str, Any]) -> list[str]:
    """Each section whose ``type`` no registered driver has, named by its key."""
    sections: list[tuple[str, Any, Registry[Any]]] = [
        ("sources", data.get("sources"), SOURCES),
        ("backends", data.get("backends"), BACKENDS),
        ("publishers", data.get("publishers"), PUBLISHERS),
    ]
    queues = data.get("queues")
    if isinstance(queues, dict):
        for name, queue in queues.items():
            if isinstance(queue, dict) and isinstance(queue.get("jobs"), list):
                jobs = dict(enumerate(job_entries(queue["jobs"])))
                sections.append((f"queues.{name}.jobs", jobs, JOBS))
    problems = []
    for where, entries, registry in sections:
        if not isinstance(entries, dict):
            continue
        for key, entry in entries.items():
            type_ = entry.get("type") if isinstance(entry, dict) else None
            if isinstance(type_, str) and type_ not in registry.types():
                problems.append(
                    f"  {where}.{key}: unknown {registry.kind} type {type_!r} "
                    f"(known: {', '.join(registry.types())})"
                )
    return problems


def config_model() -> type[Config]:
    """:class:`Config` with every driver section typed by the registered drivers."""
    versions = tuple(r.version for r in REGISTRIES)
    model = _MODELS.get(versions)
    if model is None:
        # the unions are built at run time from the registries: typed as Any here
        jobs: Any = tuple[JOBS.union(), ...]  # type: ignore[misc]
        queue: Any = create_model(
            "QueueConfig", __base__=QueueConfig, jobs=(jobs, (RepoclosureJobConfig(),))
        )
        sections: dict[str, Any] = {
            "sources": (
                dict[str, SOURCES.union()],  # type: ignore[misc]
                Field(default_factory=_default_sources),
            ),
            "backends": (
                dict[str, BACKENDS.union()],  # type: ignore[misc]
                Field(default_factory=_default_backends),
            ),
            "publishers": (dict[str, PUBLISHERS.union()], ...),  # type: ignore[misc]
            "queues": (dict[str, queue], ...),
        }
        model = create_model("Config", __base__=Config, **sections)
        _MODELS[versions] = model
    return model


def parse_config(data: Any, source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate a loaded YAML document; relative paths resolve against ``base_dir``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")
    notes: list[str] = []
    try:
        data = _expand(data, (), notes)
    except _KeyError as exc:
        raise ConfigError(f"{source}: invalid configuration\n  {exc}") from None
    problems = _driver_type_problems(data)
    if problems:
        raise ConfigError("\n".join([f"{source}: invalid configuration", *problems]))
    try:
        config = config_model().model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(exc, source)) from None
    config = _resolve_paths(config, base_dir) if base_dir else config
    config._notes = tuple(notes)
    return config


def read_document(path: Path, name: str | None = None) -> Any:
    """The YAML document of the file ``path`` (``name``: how errors name it)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{name or path}: cannot read: {exc.strerror}") from None
    return parse_document(text, name or str(path))


def parse_document(text: str, name: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: not valid YAML: {exc}") from None


def load_config(path: Path) -> Config:
    data = read_document(path)
    config = parse_config(data, str(path), Path(path).resolve().parent)
    config._source = Path(path).resolve()
    return config


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
#: ``$NAME`` not braced and not escaped: left as written, but probably meant ``${NAME}``
_BARE_VAR = re.compile(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)")
#: values a shell reads, where ``$NAME`` is the shell's business (command jobs)
_SHELL_VALUE = re.compile(r"^queues\.[^.]+\.jobs\.\d+\.command$")


def expand(value: Any, path: tuple[str, ...] = ()) -> Any:
    """``value`` (a part of a config document at ``path``) with ``${VAR}`` expanded."""
    try:
        return _expand(value, path)
    except _KeyError as exc:
        raise ConfigError(str(exc)) from None


def _expand(value: Any, path: tuple[str, ...], notes: list[str] | None = None) -> Any:
    """Replace ``${VAR}`` with the environment's value (secrets stay out of the file).

    Only the braced form is expanded, so ``$HOME`` in a job's command reaches
    the shell untouched; ``$${VAR}`` is a literal ``${VAR}``; ``${VAR:-text}``
    is ``text`` when VAR is unset or empty.  An unset variable without a
    default is an error naming the key, never a literal.  A bare ``$VAR``
    outside a command job is left as written and noted in ``notes``: it is
    almost always a ``${VAR}`` that lost its braces.
    """
    if isinstance(value, str):
        key = ".".join(path)

        def sub(match: re.Match[str]) -> str:
            if match.start() > 0 and value[match.start() - 1] == "$":
                return match.group(0)
            name, default = match.group(1), match.group(2)
            if default is not None and not os.environ.get(name):
                return default
            if name not in os.environ:
                raise _KeyError(key, f"environment variable {name} is not set")
            return os.environ[name]

        if notes is not None and not _SHELL_VALUE.match(key):
            for bare in _BARE_VAR.finditer(value):
                name = bare.group(1)
                notes.append(
                    f"{key}: ${name} is not expanded (only ${{{name}}} is) and stays as "
                    f"written; write ${{{name}}} to use the environment variable"
                )
        return _VAR.sub(sub, value).replace("$${", "${")
    if isinstance(value, dict):
        return {k: _expand(v, (*path, str(k)), notes) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, (*path, str(i)), notes) for i, v in enumerate(value)]
    return value


def _resolve_paths(config: Config, base: Path) -> Config:
    def rel(p: Path) -> Path:
        return p if p.is_absolute() else (base / p)

    publishers = {
        name: pub.model_copy(update={"root": rel(pub.root)})
        for name, pub in config.publishers.items()
    }
    return config.model_copy(update={"state_dir": rel(config.state_dir), "publishers": publishers})
