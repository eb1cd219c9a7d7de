"""The parts a running gate is made of, built once from the config.

:class:`Runtime` holds them (database engine, RPM pool, git clones, review
systems, build backends, publishers, task plumbing); the daemon builds one and
hands each stage module the parts it uses, so no stage depends on the daemon
and a test can assemble a runtime from in-memory parts.

Creating a runtime first kills the process groups a previous run of the
daemon left alive (``gate.processes``): before the database, the drivers and
the HTTP server, so nothing of this run can race them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from gate.builders.base import BackendParts, BuildBackend
from gate.builders.sandbox import Sandbox
from gate.config import Config
from gate.config_status import ConfigStatus, digest_of, now_iso
from gate.deliveries import store_delivery
from gate.merger import Merger
from gate.plumbing import Plumbing
from gate.processes import ProcessGroups
from gate.registry import BACKENDS, PUBLISHERS, SOURCES
from gate.sources.base import ChangeSource, SourceParts, StoreDelivery
from publishers.createrepo import Publisher
from repo_state.db import make_engine, migrate
from repo_state.pool import Pool


@dataclass
class Runtime:
    config: Config
    engine: Engine
    pool: Pool
    merger: Merger
    #: review systems, by source name (``sources.<name>``)
    sources: dict[str, ChangeSource]
    backends: dict[str, BuildBackend]
    publishers: dict[str, Publisher]
    plumbing: Plumbing
    #: the process groups the gate starts (None: a runtime of in-memory parts)
    processes: ProcessGroups | None = None
    #: the configuration in force and the last one refused (``gate.reload``)
    config_status: ConfigStatus = field(default_factory=ConfigStatus)
    #: reads, checks and applies the configuration again (``gate.reload.Reloader.reload``:
    #: trigger -> (HTTP status, answer)); None: this runtime cannot reload
    reloader: Callable[[str], Awaitable[tuple[int, Any]]] | None = None

    def __post_init__(self) -> None:
        if not self.config_status.digest:
            self.config_status = ConfigStatus(
                digest=digest_of(self.config),
                source=str(self.config.source or "<config>"),
                applied_at=now_iso(),
            )

    @classmethod
    def create(
        cls,
        config: Config,
        *,
        backends: dict[str, BuildBackend] | None = None,
        sources: dict[str, ChangeSource] | None = None,
    ) -> Runtime:
        """Make the state directory, kill what a previous run left running, open and
        migrate the database, build every driver."""
        state_dir = Path(config.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        processes = ProcessGroups.under(state_dir)
        processes.kill_leftovers()
        engine = make_engine(config.db_url)
        migrate(engine)
        pool = Pool(state_dir / "pool")
        merger = Merger(state_dir / "git", processes=processes)
        plumbing = Plumbing()
        runtime = cls(
            config=config,
            engine=engine,
            pool=pool,
            merger=merger,
            sources={},
            backends={},
            publishers=make_publishers(config, pool),
            plumbing=plumbing,
            processes=processes,
        )
        runtime.sources = (
            sources if sources is not None else make_sources(config, merger, runtime.store)
        )
        if backends is None:
            backends = make_backends(config, pool, make_sandbox(config, processes))
        runtime.backends = backends
        return runtime

    @property
    def state_dir(self) -> Path:
        return Path(self.config.state_dir)

    def source_of(self, project: str) -> ChangeSource:
        return self.sources[self.config.projects[project].source]

    def publisher_for(self, queue: str) -> Publisher:
        return self.publishers[self.config.queues[queue].repo]

    def wake(self) -> None:
        self.plumbing.wake()

    def store(
        self, source: str, event_type: str, payload: dict[str, object], key: str | None
    ) -> bool:
        """How a source's webhook endpoint stores what it accepted (returns: created)."""
        return store_delivery(self, source, event_type, dict(payload), key)[1]


def make_sandbox(config: Config, processes: ProcessGroups | None = None) -> Sandbox:
    """How builds run a change's spec on this host (checked once, at start)."""
    return Sandbox.create(
        config.sandbox.bubblewrap,
        config.sandbox.user,
        hidden=config.secret_paths(),
        processes=processes,
    )


def make_backends(
    config: Config, pool: Pool, sandbox: Sandbox | None = None
) -> dict[str, BuildBackend]:
    parts = BackendParts(
        state_dir=Path(config.state_dir), pool=pool, sandbox=sandbox or make_sandbox(config)
    )
    return {
        name: BACKENDS.get(cfg.type).create(name, cfg, parts)
        for name, cfg in config.backends.items()
    }


def make_sources(
    config: Config, merger: Merger, store: StoreDelivery | None = None
) -> dict[str, ChangeSource]:
    sources = {}
    for name, cfg in config.sources.items():
        projects = {p: c for p, c in config.projects.items() if c.source == name}
        parts = SourceParts(
            projects=projects, merger=merger, store=store, public_url=config.base_url
        )
        sources[name] = SOURCES.get(cfg.type).create(name, cfg, parts)
    return sources


def make_publishers(config: Config, pool: Pool) -> dict[str, Publisher]:
    return {
        name: PUBLISHERS.get(cfg.type).create(name, cfg, pool)
        for name, cfg in config.publishers.items()
    }
