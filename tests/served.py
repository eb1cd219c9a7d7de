"""A gate in this process with its web app behind aiohttp's test client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml
from aiohttp.test_utils import TestClient

from gate.config import load_config, parse_config
from gate.daemon import Gate
from gate.demo_world import World
from gate.web.app import make_app

ClientFactory = Callable[..., Awaitable[TestClient]]


@asynccontextmanager
async def served(
    world: World,
    aiohttp_client: ClientFactory,
    *,
    start: bool = True,
    config_file: Path | None = None,
    **overrides: Any,
) -> AsyncIterator[tuple[Gate, TestClient]]:
    """A gate on ``world`` with its web app behind a test client; started unless asked not.

    ``config_file``: write the config there and load it from the file, as the daemon does
    (the gate then knows the file's directory, which builds must not see)."""
    doc = world.config(**overrides)
    if config_file is None:
        config = parse_config(doc)
    else:
        config_file.write_text(yaml.safe_dump(doc))
        config = load_config(config_file)
    gate = Gate(config)
    try:
        client = await aiohttp_client(make_app(gate.runtime))
        if start:
            await gate.start()
            await gate.wait_idle(120)
        yield gate, client
    finally:
        await gate.stop()
