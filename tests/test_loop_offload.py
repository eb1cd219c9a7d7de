"""The planning pass reads its queue's state outside the event loop, in one snapshot.

Shown by order, not by time: a load held in its worker thread until the loop has
answered ``/healthz`` finishes after that answer; were the load in the loop, the
request could not be answered until the load gave up waiting.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.engine import Engine

from gate.demo_world import World
from gate.model import QueueState
from repo_state.db import make_engine, session, snapshot
from tests.conftest import POSTGRES_URL
from tests.served import ClientFactory, served

#: how long the held load waits for the loop before giving up (only reached on failure)
GIVE_UP = 20.0


async def test_the_loop_answers_a_request_while_a_planning_load_is_in_progress(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with served(world, aiohttp_client) as (gate, client):
        loop = asyncio.get_running_loop()
        order: list[str] = []
        started = asyncio.Event()
        answered = threading.Event()
        read = gate._read_state

        def held_read(name: str) -> QueueState:
            loop.call_soon_threadsafe(started.set)
            order.append("load started")
            order.append("load released" if answered.wait(GIVE_UP) else "load gave up")
            return read(name)

        gate._read_state = held_read  # type: ignore[method-assign]
        try:
            gate.wake()  # a planning pass: each queue's state is loaded
            await asyncio.wait_for(started.wait(), GIVE_UP)
            resp = await client.get("/healthz")
            order.append(f"healthz answered {resp.status}")
            answered.set()
            async with gate.planning:  # the pass with the held load is over
                pass
        finally:
            answered.set()
            gate._read_state = read  # type: ignore[method-assign]
        assert order[:3] == ["load started", f"healthz answered {resp.status}", "load released"]
        assert gate.planning.locked() is False


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty database of each kind (PostgreSQL: a fresh schema, when one is set up)."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
        yield engine
        engine.dispose()
        return
    if not POSTGRES_URL:
        pytest.skip("set RPMGATE_TEST_DATABASE_URL=postgresql://... to run the PostgreSQL tests")
    schema = f"rpmgate_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = make_engine(url.render_as_string(hide_password=False))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.engine.dispose()


def test_a_snapshot_sees_one_state_while_others_commit(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))

    def commit_another(n: int) -> None:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})

    def count(s: object) -> int:
        return int(s.execute(text("SELECT count(*) FROM t")).scalar_one())  # type: ignore[attr-defined]

    with snapshot(engine) as s:
        first = count(s)
        commit_another(2)
        again = count(s)
    assert (first, again) == (1, 1)

    # without one (a plain session), the second query sees the commit in between
    with session(engine) as s:
        first = count(s)
        commit_another(3)
        again = count(s)
    assert (first, again) == (2, 3)
