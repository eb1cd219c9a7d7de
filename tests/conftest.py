"""Fixtures for gate scenarios: a real distgit world and a running gate."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gate.config import parse_config
from gate.daemon import Gate
from gate.demo_world import PackageSpec, World
from gate.web.app import store_delivery

POSTGRES_URL = os.environ.get("RPMGATE_TEST_DATABASE_URL")


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path / "world").create()


@asynccontextmanager
async def running_gate(world: World, **overrides: Any) -> AsyncIterator[Gate]:
    gate = Gate(parse_config(world.config(**overrides)))
    await gate.start()
    try:
        await gate.wait_idle(120)
        yield gate
    finally:
        await gate.stop()


@pytest.fixture
def gate_for() -> Callable[..., Any]:
    return running_gate


def propose(gate: Gate, world: World, project: str, spec: PackageSpec, title: str,
            on: str | None = None, approve: bool = True) -> None:
    """A packager proposes (and approves) a change, through the same path as the API."""
    ref = world.propose(project, spec, title, on=on)
    store_delivery(gate, "api", "change.proposed",
                   {"project": project, "ref": ref, "title": title, "approve": approve}, None)


NOVA_1201 = PackageSpec("nova", "12.0.1", lookaside=True)
CEILO_801 = PackageSpec("ceilometer", "8.0.1", requires=("nova >= 12.0.1",))
HORIZON_BROKEN = PackageSpec("horizon", "9.0.1", requires=("python-django-compat",),
                             broken_build=True)
DJANGO_NO_COMPAT = PackageSpec("python-django", "1.8.1")
