"""The gate on PostgreSQL: migrations, a full scenario, durable deliveries.

Runs only when ``RPMGATE_TEST_DATABASE_URL`` names a PostgreSQL database the
tests may create schemas in, e.g.
``RPMGATE_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test``.
Each test gets a schema of its own (``rpmgate_<random>``, selected through the
connection's ``search_path``), dropped afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel, select

from gate.config import parse_config
from gate.daemon import Gate
from gate.deliveries import store_delivery
from gate.demo_world import World
from repo_state.db import make_engine, migrate, session
from repo_state.models import ChangeRow, Delivery
from tests.conftest import (
    POSTGRES_URL,
    postgres_schema,
    propose_classic,
    running_gate,
)
from tests.invariants import check_invariants, failure_of, results

if not POSTGRES_URL:
    pytest.skip(
        "set RPMGATE_TEST_DATABASE_URL=postgresql://... to run the PostgreSQL tests",
        allow_module_level=True,
    )

pytestmark = pytest.mark.postgres

TABLES = {
    "alembic_version",
    "build",
    "change",
    "delivery",
    "external_run",
    "generation",
    "item",
    "item_build",
    "job_run",
    "project",
    "queue",
}


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    """A fresh schema and a database URL whose connections use it; dropped afterwards."""
    with postgres_schema() as found:
        yield found


@pytest.fixture
def pg_url(pg_schema: tuple[str, str]) -> str:
    return pg_schema[1]


def test_migrations_create_the_schema_from_scratch_and_are_idempotent(
    pg_schema: tuple[str, str],
) -> None:
    schema, url = pg_schema
    assert "search_path%3D" in url  # the URL survives alembic's %-interpolation
    engine = make_engine(url)
    try:
        assert inspect(engine).get_table_names(schema=schema) == []

        migrate(engine)
        assert set(inspect(engine).get_table_names(schema=schema)) == TABLES
        with engine.connect() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
            # the migrations describe exactly the models the code uses
            diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
        assert diff == []

        migrate(engine)  # a restart runs them again
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [
                (version,)
            ]
        assert set(inspect(engine).get_table_names(schema=schema)) == TABLES
    finally:
        engine.dispose()


@pytest.mark.slow
async def test_a_b_merge_in_order_while_c_and_d_are_rejected_on_postgresql(
    world: World, pg_url: str
) -> None:
    async with running_gate(world, database_url=pg_url) as gate:
        assert gate.engine.dialect.name == "postgresql"
        propose_classic(gate, world)
        await gate.wait_idle(180)

        assert results(gate) == {"merged": ["A", "B"], "rejected": ["C", "D"]}
        assert "rpmbuild failed" in failure_of(gate, "C")
        assert failure_of(gate, "D") == (
            "repoclosure: 1 unresolved dependency: "
            "horizon-9.0.0-1.noarch requires python-django-compat"
        )
        nvrs = gate.publishers["liberty"].state().nvrs()
        assert nvrs["nova"] == "nova-12.0.1-1"
        assert nvrs["ceilometer"] == "ceilometer-8.0.1-1"
        assert gate.publishers["liberty"].generations() == [1, 2, 3]
        check_invariants(gate)
        with session(gate.engine) as s:
            change = s.exec(select(ChangeRow).where(ChangeRow.title == "A")).one()
        assert change.created_at.tzinfo is not None  # timestamps come back as UTC


def test_deliveries_are_committed_before_acknowledgement(world: World, pg_url: str) -> None:
    gate = Gate(parse_config(world.config(database_url=pg_url)))
    other = make_engine(pg_url)
    try:
        delivery, created = store_delivery(
            gate,
            "api",
            "change.proposed",
            {"project": "nova", "ref": "refs/changes/01/1/1"},
            "review-1-ps-1",
        )
        assert created
        # a separate engine (another process, after a crash) sees the committed row
        with session(other) as s:
            row = s.get(Delivery, delivery.id)
        assert row is not None
        assert (row.source, row.event_type, row.delivery_key) == (
            "api",
            "change.proposed",
            "api:change.proposed:review-1-ps-1",
        )
        assert row.processed_at is None

        again, created = store_delivery(
            gate, "api", "change.proposed", {"other": True}, "review-1-ps-1"
        )
        assert not created and again.id == delivery.id
        with session(other) as s:
            assert len(s.exec(select(Delivery)).all()) == 1
    finally:
        other.dispose()
        gate.engine.dispose()


def test_concurrent_redeliveries_store_one_row(pg_url: str) -> None:
    engine = make_engine(pg_url)
    migrate(engine)
    gates = [SimpleNamespace(engine=make_engine(pg_url), wake=lambda: None) for _ in range(8)]
    start = threading.Barrier(len(gates))
    outcomes: list[tuple[int | None, bool]] = []
    lock = threading.Lock()

    def deliver(gate: SimpleNamespace) -> None:
        start.wait()
        row, created = store_delivery(
            gate,
            "gitlab",
            "merge_request",  # type: ignore[arg-type]
            {"object_kind": "merge_request"},
            "same-uuid",
        )
        with lock:
            outcomes.append((row.id, created))

    threads = [threading.Thread(target=deliver, args=(g,)) for g in gates]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(outcomes) == len(gates)
        assert sum(created for _, created in outcomes) == 1
        assert len({row_id for row_id, _ in outcomes}) == 1
        with session(engine) as s:
            assert len(s.exec(select(Delivery)).all()) == 1
    finally:
        for g in gates:
            g.engine.dispose()
        engine.dispose()
