"""Fixtures for gate scenarios: a real distgit world and a running gate."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url, text

from gate.config import parse_config
from gate.daemon import Gate
from gate.deliveries import store_delivery
from gate.demo_world import CLASSIC_CHANGES, PackageSpec, World
from gate.model import QueueState
from gate.planning_rows import PlanningRows
from gate.queue_view import load_queue_state
from repo_state.db import make_engine

POSTGRES_URL = os.environ.get("RPMGATE_TEST_DATABASE_URL")


@contextmanager
def postgres_schema(application: str | None = None) -> Iterator[tuple[str, str]]:
    """A fresh schema on ``RPMGATE_TEST_DATABASE_URL`` and a URL whose connections use it
    (and carry ``application`` as their application name), dropped afterwards: tests
    sharing the server see nothing of each other."""
    assert POSTGRES_URL is not None
    schema = f"rpmgate_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    query = {"options": f"-csearch_path={schema}"}
    if application is not None:
        query["application_name"] = application
    url = make_url(POSTGRES_URL).update_query_dict(query)
    try:
        yield schema, url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.engine.dispose()


@pytest.fixture(autouse=True)
def planning_rows_agree_with_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every planning pass of every test checks what ``gate.planning_rows`` kept in memory
    against a full read of the database at the same instant (the gate's writes are all
    made on the loop's thread, as these reads are, so nothing commits between the two)."""
    kept = PlanningRows.queue_state

    def checked(
        rows: PlanningRows, s: Any, queue: str, projects: tuple[str, ...], repo: str
    ) -> QueueState:
        state = kept(rows, s, queue, projects, repo)
        read = load_queue_state(s, queue, projects, repo)
        assert replace(state, now=0.0) == replace(read, now=0.0), (state, read)
        return state

    monkeypatch.setattr(PlanningRows, "queue_state", checked)


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


def propose(
    gate: Gate,
    world: World,
    project: str,
    spec: PackageSpec,
    title: str,
    on: str | None = None,
    approve: bool = True,
) -> None:
    """A packager proposes (and approves) a change, through the same path as the API."""
    ref = world.propose(project, spec, title, on=on)
    store_delivery(
        gate,
        "api",
        "change.proposed",
        {"project": project, "ref": ref, "title": title, "approve": approve},
        None,
    )


_CLASSIC = {label: spec for label, _, spec, _ in CLASSIC_CHANGES}
NOVA_1201 = _CLASSIC["A"]
CEILO_801 = _CLASSIC["B"]
HORIZON_BROKEN = _CLASSIC["C"]
DJANGO_NO_COMPAT = _CLASSIC["D"]


def propose_classic(gate: Gate, world: World) -> None:
    """A, B, C and D of the classic case, in order, titled by their labels."""
    for label, project, spec, _ in CLASSIC_CHANGES:
        propose(gate, world, project, spec, label)
    gate.wake()
