"""A gate whose projects live on a fake Gerrit: the demo world's bare repositories
served as Gerrit projects, events posted by the webhooks plugin (or streamed over SSH)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import col, select

from gate.config import parse_config
from gate.daemon import Gate
from gate.demo_world import PackageSpec, World
from gate.web.app import make_app
from repo_state.db import session
from repo_state.models import Delivery
from tests.fakegerrit import BOT_PASSWORD, accounts, push
from tests.fakegerrit.server import FakeGerrit
from tests.fakegerrit.state import GerritState, git

TOKEN = "gerrit-webhook-token-0123456789abcdefghij"
ServerFactory = Callable[..., Awaitable[TestServer]]
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def gerrit_name(project: str) -> str:
    """Where the world's project lives on the fake Gerrit (a path, as on RDO)."""
    return f"rpms/{project}"


@dataclass
class GerritWorld:
    world: World
    state: GerritState
    fake: FakeGerrit
    url: str

    def upload(
        self,
        project: str,
        spec: PackageSpec,
        title: str,
        *,
        change_id: str | None = None,
        depends: str = "",
        on: str = "origin/main",
    ) -> int:
        """A packager commits ``spec`` and pushes it to refs/for/main: the change number."""
        work = self.world.workdir(project)
        git(work, "fetch", "-q", "origin", "+refs/heads/main:refs/remotes/origin/main")
        git(work, "checkout", "-q", "--detach", on)
        self.world._write(project, spec)
        git(work, "add", "-A")
        git(work, "commit", "-q", "--allow-empty", "-m", title)
        message = title + (f"\n\nDepends-On: {depends}" if depends else "")
        number, _ = push(self.state, work, gerrit_name(project), message, change_id=change_id)
        return number

    def approve(self, number: int) -> None:
        """A core reviewer's +2 and Workflow +1: the OpenStack recipe."""
        self.state.vote(number, "core", **{"Code-Review": 2, "Workflow": 1})

    def change_url(self, number: int) -> str:
        change = self.state.changes[number]
        return f"{self.url}/c/{change.project}/+/{number}"

    def messages(self, number: int, author: str = "rpmgate") -> list[str]:
        return [
            m["message"]
            for m in self.state.changes[number].messages
            if m["author"]["username"] == author
        ]

    def verified(self, number: int) -> dict[int, int]:
        """The gate's Verified votes by patch set."""
        change = self.state.changes[number]
        return {ps: v for (ps, label, who), v in change.votes.items() if label == "Verified"}


async def start_fake(
    world: World, aiohttp_server: ServerFactory, projects: list[str]
) -> GerritWorld:
    state = GerritState()
    accounts(state)
    for project in projects:
        state.add_project(gerrit_name(project), world.remote(project))
    fake = FakeGerrit(state)
    server = await aiohttp_server(fake.app())
    state.url = str(server.make_url("")).rstrip("/")
    return GerritWorld(world, state, fake, state.url)


def gerrit_source(g: GerritWorld, **extra: Any) -> dict[str, Any]:
    return {
        "type": "gerrit",
        "url": g.url,
        "user": "rpmgate",
        "password": BOT_PASSWORD,
        "webhook": {"token": TOKEN},
        **extra,
    }


def use_gerrit(doc: dict[str, Any], source: str, projects: list[str]) -> None:
    for project in projects:
        doc["projects"][project].update(source=source, name=gerrit_name(project))


def hold_jobs(doc: dict[str, Any], hold: Path) -> None:
    """A job that waits while ``hold`` is missing: items stay queued while a test acts."""
    wait = f"while [ ! -e {hold} ]; do sleep 0.05; done"
    doc["queues"]["liberty"]["jobs"] = [
        "repoclosure",
        {"type": "command", "name": "hold", "command": wait},
    ]


@asynccontextmanager
async def gate_served(
    doc: dict[str, Any],
    aiohttp_client: ClientFactory,
    fakes: list[GerritWorld],
    source_names: list[str],
    hold: Path | None = None,
) -> AsyncIterator[tuple[Gate, TestClient[Any, Any]]]:
    """The gate with its web app on a real port; each fake posts its webhooks there."""
    gate = Gate(parse_config(doc))
    try:
        client = await aiohttp_client(make_app(gate.runtime))
        for fake, name in zip(fakes, source_names, strict=True):
            fake.fake.webhooks.append(str(client.make_url(f"/api/sources/{name}/events/{TOKEN}")))
            fake.fake.start_webhooks()
        if hold is not None:
            hold.touch()
        await gate.start()
        await gate.wait_idle(120)
        if hold is not None:
            hold.unlink()
        yield gate, client
    finally:
        await gate.stop()


async def settle(gate: Gate, *fakes: GerritWorld, idle: bool = True) -> None:
    """Every event posted, every delivery processed (and, with ``idle``, every queue empty)."""
    for fake in fakes:
        await fake.fake.delivered()
    if idle:
        await gate.wait_idle(180)
        return
    gate.wake()
    async with asyncio.timeout(60):
        while True:
            with session(gate.engine) as s:
                pending = s.exec(
                    select(Delivery).where(col(Delivery.processed_at).is_(None))
                ).first()
            if pending is None:
                return
            await asyncio.sleep(0.05)
