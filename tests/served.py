"""A gate in this process with its web app behind aiohttp's test client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient

from gate.config import parse_config
from gate.daemon import Gate
from gate.demo_world import World
from gate.web.app import make_app

ClientFactory = Callable[..., Awaitable[TestClient]]


@asynccontextmanager
async def served(
    world: World, aiohttp_client: ClientFactory, *, start: bool = True, **overrides: Any
) -> AsyncIterator[tuple[Gate, TestClient]]:
    """A gate on ``world`` with its web app behind a test client; started unless asked not."""
    gate = Gate(parse_config(world.config(**overrides)))
    try:
        client = await aiohttp_client(make_app(gate.runtime))
        if start:
            await gate.start()
            await gate.wait_idle(120)
        yield gate, client
    finally:
        await gate.stop()
