"""Group commit of accepted deliveries: concurrent accepts share a transaction, and each
is answered only once it is committed; duplicates, faults and bad rows as before.

Every test runs on SQLite and, when ``RPMGATE_TEST_DATABASE_URL`` names one, on
PostgreSQL (a schema of its own, dropped afterwards); the PostgreSQL variants
skip otherwise.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import select

import gate.deliveries as deliveries
from gate.deliveries import Accept, DeliveryWriter, Stored, store_one
from gate.plumbing import Plumbing
from gate.runtime import Runtime
from gate.web.app import make_app
from repo_state.db import make_engine, migrate, session
from repo_state.models import Delivery
from repo_state.pool import Pool
from tests.conftest import POSTGRES_URL, postgres_schema
from tests.memory import MemoryMerger, memory_config

PROPOSAL = {"project": "nova", "ref": "refs/heads/topic", "title": "A"}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database; on PostgreSQL its connections carry an application
    name of their own (``?application_name=``), so a test can terminate them."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'gate.db'}"
        migrate_and_dispose(url)
        yield url
        return
    if not POSTGRES_URL:
        pytest.skip("set RPMGATE_TEST_DATABASE_URL=postgresql://... to run the PostgreSQL tests")
    with postgres_schema(application=f"rpmgate-commit-{uuid.uuid4().hex[:12]}") as (_, url):
        migrate_and_dispose(url)
        yield url


def migrate_and_dispose(url: str) -> None:
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()


@pytest.fixture
def runtime(db_url: str, tmp_path: Path) -> Iterator[Runtime]:
    """The parts the web app stores deliveries with: the real engine and writer."""
    engine = make_engine(db_url)
    rt = Runtime(
        config=memory_config(tmp_path, database_url=db_url),
        engine=engine,
        pool=Pool(tmp_path / "pool"),
        merger=MemoryMerger({}, tmp_path / "git"),  # type: ignore[arg-type]
        sources={},
        backends={},
        publishers={},
        plumbing=Plumbing(),
    )
    yield rt
    engine.dispose()


def rows(engine: Engine) -> list[Delivery]:
    with session(engine) as s:
        return list(s.exec(select(Delivery).order_by(Delivery.id)).all())  # type: ignore[arg-type]


async def post_until_taken(client: TestClient[Any, Any], key: str) -> tuple[int, int]:
    """A client's retries after a 503 (Retry-After): the same request and key until
    taken; returns (status, delivery id)."""
    for _ in range(200):
        resp = await client.post("/api/changes", json=PROPOSAL, headers={"Idempotency-Key": key})
        if resp.status != 503:
            assert resp.status in (200, 202), await resp.text()
            return resp.status, int((await resp.json())["delivery"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"{key} was never taken")


# -- batching ------------------------------------------------------------------------


async def test_concurrent_requests_share_commits_and_every_accepted_row_is_stored(
    runtime: Runtime,
) -> None:
    """64 clients at once through the real app: each answered 202 with its own delivery,
    every one of them in the database under its key, in fewer transactions than rows."""
    async with TestClient(TestServer(make_app(runtime))) as client:
        keys = [f"k-{i}" for i in range(64 * 4)]
        answers = await asyncio.gather(*(post_until_taken(client, k) for k in keys))
    assert {status for status, _ in answers} == {202}
    stored = {d.id: d for d in rows(runtime.engine)}
    assert len(stored) == len(keys)
    for key, (_, delivery_id) in zip(keys, answers, strict=True):
        assert stored[delivery_id].delivery_key == f"api:change.proposed:{key}"
    writer = runtime.deliveries
    assert writer.rows == len(keys)
    assert writer.commits < len(keys), "no two accepts ever shared a commit"


async def test_a_batch_stores_its_rows_in_the_order_they_were_accepted(
    runtime: Runtime,
) -> None:
    """Deliveries are processed in id order (an approval follows its proposal)."""
    writer = runtime.deliveries
    stored = await asyncio.gather(
        *(writer.store("api", "change.proposed", {"n": i}, f"order-{i}") for i in range(50))
    )
    assert writer.commits == 1  # all 50 were waiting when the first commit began
    ids = [row.id or 0 for row, _ in stored]
    assert ids == sorted(ids) and len(set(ids)) == 50


async def test_a_woken_loop_is_told_once_a_batch_with_new_rows_is_committed(
    runtime: Runtime,
) -> None:
    woken: list[int] = []
    writer = DeliveryWriter(runtime.engine, lambda: woken.append(len(rows(runtime.engine))))
    await asyncio.gather(*(writer.store("api", "x", {}, f"w-{i}") for i in range(5)))
    assert woken == [5]  # woken after the commit, with every row already visible
    await writer.store("api", "x", {}, "w-0")
    assert woken == [5]  # a duplicate stores nothing: nothing to wake for


# -- duplicates ------------------------------------------------------------------------


async def test_duplicates_in_one_batch_are_refused_exactly_as_one_by_one(
    runtime: Runtime,
) -> None:
    """The same sequence of accepts, alone (the path before group commit) and together:
    the same answers.  A key seen earlier (stored before, or earlier in the batch)
    answers that row, not created; only the first of a key creates it."""
    sequence = ["a", "seen-before", "b", "a", "a", "c", "b", "seen-before", "d"]

    def accepts(source: str) -> list[Accept]:
        return [Accept.of(source, "change.proposed", {"n": k}, k) for k in sequence]

    for source in ("alone", "together"):  # a key stored before the sequence
        store_one(runtime.engine, Accept.of(source, "change.proposed", {}, "seen-before"))
    alone = [store_one(runtime.engine, a) for a in accepts("alone")]
    writer = runtime.deliveries
    together = await asyncio.gather(*(writer.put(a) for a in accepts("together")))
    assert writer.commits == 1

    def shape(results: list[Stored]) -> list[tuple[str, bool]]:
        """(which key's row answered, created) for each accept."""
        return [(row.delivery_key.rsplit(":", 1)[1], created) for row, created in results]

    assert shape(together) == shape(alone)
    assert [created for _, created in together] == [
        True, False, True, False, False, True, False, False, True
    ]  # fmt: skip
    # every accept of a key got the same row, the first one stored under it
    by_key: dict[str, set[int]] = {}
    for (row, _), key in zip(together, sequence, strict=True):
        by_key.setdefault(key, set()).add(row.id or 0)
    assert all(len(ids) == 1 for ids in by_key.values())
    keys = [d.delivery_key for d in rows(runtime.engine) if d.source == "together"]
    assert sorted(keys) == sorted({f"together:change.proposed:{k}" for k in sequence})


async def test_a_redelivered_webhook_in_the_same_batch_is_answered_as_a_duplicate(
    runtime: Runtime,
) -> None:
    """A review system's webhook path (``Runtime.store``): created once, then not."""
    created = await asyncio.gather(
        *(runtime.store("gitlab", "gitlab.note", {"i": i}, "uuid-1") for i in range(4))
    )
    assert created == [True, False, False, False]
    assert len(rows(runtime.engine)) == 1


# -- faults ----------------------------------------------------------------------------


async def test_a_commit_whose_answer_was_lost_is_found_again_not_doubled(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's COMMIT landed but the connection died before saying so (a transient
    fault after the commit): every client retries with its key and finds its row;
    nothing is stored twice, nothing is lost."""
    real = deliveries.store_together
    lost: list[int] = []

    def commit_then_lose_the_answer(engine: Engine, batch: list[Accept]) -> list[Stored]:
        result = real(engine, batch)
        if not lost:
            lost.append(len(batch))
            raise OperationalError("COMMIT", {}, Exception("server closed the connection"))
        return result

    monkeypatch.setattr(deliveries, "store_together", commit_then_lose_the_answer)
    async with TestClient(TestServer(make_app(runtime))) as client:
        keys = [f"lost-{i}" for i in range(40)]
        answers = await asyncio.gather(*(post_until_taken(client, k) for k in keys))
    assert lost and lost[0] > 1
    stored = rows(runtime.engine)
    assert sorted(d.delivery_key for d in stored) == sorted(
        f"api:change.proposed:{k}" for k in keys
    )
    by_id = {d.id: d.delivery_key for d in stored}
    for key, (status, delivery_id) in zip(keys, answers, strict=True):
        assert by_id[delivery_id] == f"api:change.proposed:{key}"
        assert status in (200, 202)  # 200: its first try was committed after all


async def test_a_locked_sqlite_database_during_batch_commits_loses_no_request(
    tmp_path: Path,
) -> None:
    """Another process holds SQLite's write lock over and over ("database is locked",
    as in tests/test_faults.py) while 64 clients post: every request is taken in the
    end, each exactly once, and every 202 is in the database."""
    db = tmp_path / "gate.db"
    migrate_and_dispose(f"sqlite:///{db}")
    engine = make_engine(f"sqlite:///{db}?timeout=0.02")
    rt = Runtime(
        config=memory_config(tmp_path),
        engine=engine,
        pool=Pool(tmp_path / "pool"),
        merger=MemoryMerger({}, tmp_path / "git"),  # type: ignore[arg-type]
        sources={},
        backends={},
        publishers={},
        plumbing=Plumbing(),
    )
    faults: list[Exception] = []
    real_commit = DeliveryWriter._commit

    def counting(self: DeliveryWriter, batch: list[Accept]) -> list[Any]:
        outcomes = real_commit(self, batch)
        faults.extend(o for o in outcomes if isinstance(o, OperationalError))
        if faults:
            failed.set()
        return outcomes

    halt = threading.Event()
    locked = []

    holding, failed = threading.Event(), threading.Event()

    def locker() -> None:
        conn = sqlite3.connect(db, timeout=30, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")  # held until a batch has failed on it
        holding.set()
        failed.wait(10)
        conn.execute("COMMIT")
        while not halt.wait(0.03):  # then on and off
            conn.execute("BEGIN IMMEDIATE")
            locked.append(1)
            halt.wait(0.08)
            conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=locker, daemon=True)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(DeliveryWriter, "_commit", counting)
            async with TestClient(TestServer(make_app(rt))) as client:
                thread.start()
                await asyncio.to_thread(holding.wait, 10)  # the first batch meets the lock
                keys = [f"locked-{i}" for i in range(64 * 3)]
                answers = await asyncio.gather(*(post_until_taken(client, k) for k in keys))
    finally:
        halt.set()
        thread.join(10)
    assert locked and faults, "the lock never made a batch fail"
    stored = {d.id: d.delivery_key for d in rows(engine)}
    assert len(stored) == len(keys)
    for key, (_, delivery_id) in zip(keys, answers, strict=True):
        assert stored[delivery_id] == f"api:change.proposed:{key}"
    engine.dispose()


async def test_terminated_postgresql_connections_during_batch_commits_lose_no_request(
    runtime: Runtime, db_url: str
) -> None:
    """pg_terminate_backend on the app's connections, again and again, while 64 clients
    post: every request is taken in the end, each stored exactly once."""
    if not db_url.startswith("postgresql"):
        pytest.skip("pg_terminate_backend is PostgreSQL's")
    assert POSTGRES_URL is not None
    application = make_url(db_url).query["application_name"]
    admin = make_engine(POSTGRES_URL).execution_options(isolation_level="AUTOCOMMIT")
    killed: list[int] = []
    halt = threading.Event()

    def killer() -> None:
        while not halt.wait(0.005):
            with admin.connect() as conn:
                killed.append(
                    conn.execute(
                        text(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = :app"
                        ),
                        {"app": application},
                    ).scalar_one()
                )

    thread = threading.Thread(target=killer, daemon=True)
    try:
        async with TestClient(TestServer(make_app(runtime))) as client:
            thread.start()
            # rounds of 64 clients (at least 4) until a kill has met a batch commit: on
            # a quiet machine the kills may all land between commits for a while
            keys: list[str] = []
            answers: list[tuple[int, int]] = []
            for n in range(20):
                batch = [f"pg-{n}-{i}" for i in range(64)]
                keys += batch
                answers += await asyncio.gather(*(post_until_taken(client, k) for k in batch))
                if n >= 3 and runtime.deliveries.faults:
                    break
    finally:
        halt.set()
        thread.join(10)
        admin.dispose()
    assert sum(killed) >= 3, f"only {sum(killed)} connections were terminated"
    assert runtime.deliveries.faults >= 1, "no batch commit was ever interrupted"
    stored = {d.id: d.delivery_key for d in rows(runtime.engine)}
    assert len(stored) == len(keys)
    for key, (_, delivery_id) in zip(keys, answers, strict=True):
        assert stored[delivery_id] == f"api:change.proposed:{key}"


async def test_a_connection_postgresql_ended_while_idle_costs_no_request_a_retry(
    runtime: Runtime, db_url: str
) -> None:
    """Batches go without a pre-ping: a pooled connection the server ended (a restart,
    an idle timeout) is found dead by the INSERT, and the batch stored on a new one,
    even for a caller that does not retry (a webhook endpoint: ``tries=1``)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("pg_terminate_backend is PostgreSQL's")
    assert POSTGRES_URL is not None
    writer = runtime.deliveries
    assert (await writer.store("api", "change.proposed", {}, "before"))[1]
    admin = make_engine(POSTGRES_URL).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            ended = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :app"
                ),
                {"app": make_url(db_url).query["application_name"]},
            ).scalar_one()
    finally:
        admin.dispose()
    assert ended >= 1

    outcomes = await asyncio.gather(
        *(writer.store("api", "change.proposed", {}, f"after-{i}", tries=1) for i in range(3))
    )

    assert all(created for _, created in outcomes)
    assert writer.faults == 1
    assert sorted(d.delivery_key for d in rows(runtime.engine)) == sorted(
        f"api:change.proposed:{k}" for k in ("before", "after-0", "after-1", "after-2")
    )


# -- a bad row -------------------------------------------------------------------------


def refuse_poison_rows(engine: Engine) -> None:
    """A database constraint that refuses one row: deliveries of event type ``poison``."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER no_poison BEFORE INSERT ON delivery "
                    "WHEN NEW.event_type = 'poison' "
                    "BEGIN SELECT RAISE(ABORT, 'poison refused'); END"
                )
            )
        else:
            conn.execute(
                text("ALTER TABLE delivery ADD CONSTRAINT no_poison CHECK (event_type <> 'poison')")
            )


async def test_a_row_the_database_refuses_fails_alone_not_its_batch_mates(
    runtime: Runtime,
) -> None:
    refuse_poison_rows(runtime.engine)
    writer = runtime.deliveries
    outcomes = await asyncio.gather(
        *(
            writer.store("api", "poison" if i == 3 else "change.proposed", {"n": i}, f"p-{i}")
            for i in range(8)
        ),
        return_exceptions=True,
    )
    assert isinstance(outcomes[3], IntegrityError)
    good = [o for i, o in enumerate(outcomes) if i != 3]
    assert all(isinstance(o, tuple) and o[1] for o in good), good
    assert sorted(d.delivery_key for d in rows(runtime.engine)) == sorted(
        f"api:change.proposed:p-{i}" for i in range(8) if i != 3
    )
    # the next batch is committed together again
    commits = writer.commits
    await asyncio.gather(*(writer.store("api", "x", {}, f"after-{i}") for i in range(5)))
    assert writer.commits == commits + 1


async def test_a_key_stored_by_another_writer_between_lookup_and_insert_is_a_duplicate(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process stores one of the batch's keys just before the batch's INSERT:
    the INSERT skips that key (ON CONFLICT DO NOTHING), which then answers the other's
    row (as a concurrent ``store_delivery`` always did), and its batch-mates are
    created, in the same commit."""
    real_now = deliveries.utcnow
    raced: list[str] = []

    def now_after_a_race() -> Any:  # called as the batch's rows are made, before its INSERT
        if not raced:
            other = Accept.of("api", "change.proposed", {"by": "other"}, "race")
            raced.append(other.delivery_key)
            thread = threading.Thread(target=store_one, args=(runtime.engine, other))
            thread.start()  # its own connection and transaction
            thread.join()
        return real_now()

    monkeypatch.setattr(deliveries, "utcnow", now_after_a_race)
    writer = runtime.deliveries
    keys = ["r-0", "race", "r-2", "r-3"]
    outcomes = await asyncio.gather(
        *(writer.store("api", "change.proposed", {"by": "us"}, k) for k in keys)
    )
    assert raced
    assert [created for _, created in outcomes] == [True, False, True, True]
    assert writer.commits == 1  # not committed row by row: the race broke nothing
    with session(runtime.engine) as s:
        row = s.exec(select(Delivery).where(Delivery.delivery_key == raced[0])).one()
    assert row.payload == '{"by": "other"}' and outcomes[1][0].id == row.id


# -- shutdown --------------------------------------------------------------------------


async def test_shutdown_drains_every_accept_taken(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accepts queued behind a slow commit when the daemon stops are committed and
    answered before ``close`` returns (``Gate.stop`` awaits it before disposing of
    the engine)."""
    real = deliveries.store_together

    def slow(engine: Engine, batch: list[Accept]) -> list[Stored]:
        time.sleep(0.2)
        return real(engine, batch)

    monkeypatch.setattr(deliveries, "store_together", slow)
    writer = runtime.deliveries
    first = asyncio.ensure_future(writer.store("api", "x", {}, "first"))
    await asyncio.sleep(0.05)  # the first batch is committing in its thread
    behind = [asyncio.ensure_future(writer.store("api", "x", {}, f"behind-{i}")) for i in range(9)]
    await asyncio.sleep(0)  # they are queued behind it
    await writer.close()
    assert all(t.done() for t in [first, *behind])
    assert all(t.result()[1] for t in [first, *behind])
    assert writer.commits == 2
    assert len(rows(runtime.engine)) == 10
