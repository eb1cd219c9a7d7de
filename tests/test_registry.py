"""A review system and a job type of a test's own, added by registration alone.

The toy source takes changes from a webhook route of its own and turns its
deliveries into the gate's events; the toy job checks that the speculative
repository exists.  Neither needs an edit of the core: a driver is a config
model, an implementation and a registry entry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytest
from aiohttp import web
from sqlmodel import select

from gate.config import ConfigError, parse_config
from gate.config_check import Finding, offline_findings, online_findings
from gate.daemon import Gate
from gate.demo_world import World
from gate.events import ChangeProposed, Event
from gate.jobs.base import Job, JobConfig, JobContext, JobResult
from gate.registry import (
    BACKENDS,
    JOBS,
    SOURCES,
    BackendDriver,
    DriverConfig,
    JobDriver,
    SourceDriver,
)
from gate.sources import webhooks
from gate.sources.base import SourceParts
from gate.sources.plaingit import PlainGitSource
from gate.web.app import make_app
from repo_state.db import session
from repo_state.models import ChangeRow, ItemRow, JobRunRow
from tests.conftest import NOVA_1201
from tests.invariants import check_invariants, results
from tests.served import ClientFactory

pytestmark = pytest.mark.slow


class ToyConfig(DriverConfig):
    type: Literal["toy"] = "toy"
    #: the path the toy review system posts to, under /api/sources/<name>/
    hook: str = "toy"


class ToySource(PlainGitSource):
    """Plain git repositories, changes announced by a webhook of the toy review system."""

    def __init__(self, parts: SourceParts, name: str, hook: str) -> None:
        super().__init__(parts.projects, parts.merger, name)
        self.store = parts.store
        self.hook = hook

    @classmethod
    def make(cls, name: str, config: ToyConfig, parts: SourceParts) -> ToySource:
        return cls(parts, name, config.hook)

    def routes(self) -> list[web.RouteDef]:
        async def hook(request: web.Request) -> web.Response:
            body = await request.json()
            assert self.store is not None
            await self.store(self.name, "review-approved", body, request.headers.get("X-Toy-Id"))
            return web.json_response({"accepted": True}, status=202)

        return [web.post(webhooks.path(self.name, self.hook), hook)]

    def parse_event(self, event_type: str, payload: dict[str, Any]) -> Event | None:
        if event_type != "review-approved":
            return None
        return ChangeProposed(
            project=payload["project"],
            ref=payload["ref"],
            title=payload.get("title", ""),
            approve=True,
        )


class AlwaysConfig(JobConfig):
    type: Literal["always"] = "always"


class Always(Job):
    """Passes when the speculative repository is there; remembers what it saw."""

    seen: list[JobContext] = []

    def __init__(self, name: str) -> None:
        self.name = name

    async def run(self, ctx: JobContext) -> JobResult:
        Always.seen.append(ctx)
        ctx.log_path.parent.mkdir(parents=True, exist_ok=True)
        ctx.log_path.write_text(f"repo at {ctx.repo_path}\n")
        ok = (ctx.repo_path / "x86_64" / "repodata" / "repomd.xml").exists()
        return JobResult(
            self.name, ok, "repository found" if ok else "no repository", str(ctx.log_path)
        )


@pytest.fixture
def toys() -> Iterator[None]:
    with (
        SOURCES.registered(SourceDriver("toy", ToyConfig, ToySource.make)),
        JOBS.registered(JobDriver("always", AlwaysConfig, lambda c: Always(c.name))),
    ):
        yield


def toy_config(world: World) -> dict[str, Any]:
    doc = world.config()
    doc["sources"] = {"reviews": {"type": "toy", "hook": "reviews"}}
    doc["projects"]["nova"]["source"] = "reviews"
    doc["queues"]["liberty"]["jobs"] = ["repoclosure", {"type": "always", "name": "smoke"}]
    return doc


async def test_a_registered_source_and_job_drive_the_gate(
    toys: None, world: World, aiohttp_client: ClientFactory
) -> None:
    gate = Gate(parse_config(toy_config(world)))
    try:
        client = await aiohttp_client(make_app(gate.runtime))
        await gate.start()
        await gate.wait_idle(120)
        Always.seen.clear()
        ref = world.propose("nova", NOVA_1201, "A")

        resp = await client.post(
            "/api/sources/reviews/reviews",
            json={"project": "nova", "ref": ref, "title": "A"},
            headers={"X-Toy-Id": "review-1"},
        )
        assert resp.status == 202
        await gate.wait_idle(120)

        assert results(gate) == {"merged": ["A"]}
        assert (
            gate.sources["reviews"].name == "reviews" and "nova" in gate.sources["reviews"].projects
        )
        with session(gate.engine) as s:
            change = s.exec(select(ChangeRow).where(ChangeRow.title == "A")).one()
            item = s.exec(select(ItemRow).where(ItemRow.change_id == change.id)).one()
            smoke = s.exec(
                select(JobRunRow).where(JobRunRow.name == "smoke", JobRunRow.item_id == item.id)
            ).all()
        assert change.state == "merged"
        assert [r.state for r in smoke] == ["passed"]
        assert [ctx.item_id for ctx in Always.seen] == [item.id]
        check_invariants(gate)
    finally:
        await gate.stop()


def test_without_the_registration_the_config_names_the_known_types(world: World) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(toy_config(world))
    # the built-in types, whichever review-system drivers this build has
    from gate.registry import SOURCES

    known = ", ".join(SOURCES.types())
    assert f"  sources.reviews: unknown source type 'toy' (known: {known})" in str(error.value)


class ToyBackendConfig(DriverConfig):
    type: Literal["toy-backend"] = "toy-backend"
    hub: str = ""


def toy_backend_check(config: Any, name: str, section: DriverConfig) -> list[Finding]:
    """A toy backend's own check-config rule: its ``hub`` must be set."""
    assert isinstance(section, ToyBackendConfig)
    return [] if section.hub else [Finding(f"backends.{name}.hub", "missing", "set hub: URL")]


def test_a_registered_backend_brings_its_own_check_config_rules(world: World) -> None:
    """check-config runs the checks a backend driver names, offline and online; the
    core knows no backend by name (the Koji and local checks come the same way)."""
    driver = BackendDriver(
        "toy-backend",
        ToyBackendConfig,
        lambda *a: None,
        check="tests.test_registry:toy_backend_check",
        check_online="tests.test_registry:toy_backend_check",
    )
    doc = world.config()
    doc["backends"] = {"toy": {"type": "toy-backend"}}
    doc["queues"]["liberty"]["backend"] = "toy"
    with BACKENDS.registered(driver):
        config = parse_config(doc)
        offline = [str(f) for f in offline_findings(config) if f.key.startswith("backends.")]
        online = [str(f) for f in online_findings(config) if f.key.startswith("backends.")]
    assert offline == online == ["backends.toy.hub: missing; set hub: URL"]
