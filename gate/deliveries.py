"""Storing an accepted request as a delivery row: the first durable step of every event.

The web API, a review system's webhook endpoint and the admin commands answer
202 only once the delivery is committed, so nothing answered 202 is lost.  A
repeated idempotency key finds the row stored first instead of making another.

Two ways in:

* :class:`DeliveryWriter` (``Runtime.deliveries``), what every request handler
  awaits: *group commit*.  Accepts that arrive while a commit is under way
  wait together and are committed next, in one transaction, in a worker
  thread (the event loop goes on serving requests meanwhile).  Each caller is
  answered once its own batch is committed.  A batch that fails for a reason
  no retry covers (a constraint) is committed again row by row, so one bad
  row fails alone; a transient fault is handed to every caller of the batch,
  who retries with the same key (``gate.faults``): a commit whose answer was
  lost is found again, never doubled.
* :func:`store_delivery`, one row in one transaction, synchronously: for the
  gate's own deliveries from inside a stage, and tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Select, Table, create_engine
from sqlalchemy import select as select_core
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import select

from gate.faults import is_transient, retried_call
from repo_state.db import session
from repo_state.models import Delivery, utcnow

log = logging.getLogger(__name__)

#: the most rows one transaction takes (also bounds the ``IN (...)`` of its lookup)
MAX_BATCH = 500
DELIVERY: Table = Delivery.__table__  # type: ignore[attr-defined]


class Accepts(Protocol):
    """Where deliveries are stored, and whom to wake once one is."""

    @property
    def engine(self) -> Engine: ...

    def wake(self) -> None: ...


@dataclass(frozen=True)
class Accept:
    """One accepted request, ready to be a row: its key is fixed before the first try."""

    source: str
    event_type: str
    delivery_key: str
    #: the payload as stored (JSON text)
    payload: str
    requested_by: str | None = None

    @classmethod
    def of(
        cls,
        source: str,
        event_type: str,
        payload: dict[str, Any],
        key: str | None,
        requested_by: str | None = None,
    ) -> Accept:
        return cls(
            source=source,
            event_type=event_type,
            delivery_key=f"{source}:{event_type}:{key or uuid.uuid4()}",
            payload=json.dumps(payload, sort_keys=True),
            requested_by=requested_by,
        )

    def row(self) -> Delivery:
        return Delivery(
            source=self.source,
            event_type=self.event_type,
            delivery_key=self.delivery_key,
            payload=self.payload,
            requested_by=self.requested_by,
        )


class StoredRow(Protocol):
    """What a request is answered with: the stored row's id (and key)."""

    @property
    def id(self) -> int | None: ...

    @property
    def delivery_key(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Receipt:
    """A row a batch stored or found.  Not a :class:`Delivery`: building a table
    model costs more CPU than its share of the INSERT (measured), for an id."""

    id: int
    delivery_key: str


#: what storing one accept came to: (the row, whether this accept created it)
Stored = tuple[Delivery, bool]
#: the same from the writer: a receipt of a batch, or the row of a lone commit
Accepted = tuple[StoredRow, bool]


def store_delivery(
    to: Accepts,
    source: str,
    event_type: str,
    payload: dict[str, Any],
    key: str | None,
    requested_by: str | None = None,
) -> Stored:
    """Commit the event alone; returns (delivery, created).  Idempotent on ``key``."""
    stored = store_one(to.engine, Accept.of(source, event_type, payload, key, requested_by))
    if stored[1]:
        to.wake()
    return stored


def store_one(engine: Engine, accept: Accept) -> Stored:
    """One accept in one transaction: the row stored first under its key, or a new one."""
    key = accept.delivery_key
    with session(engine) as s:
        existing = s.exec(select(Delivery).where(Delivery.delivery_key == key)).first()
        if existing is not None:
            return existing, False
        row = accept.row()
        s.add(row)
        try:
            s.commit()
        except IntegrityError:
            s.rollback()
            again = s.exec(select(Delivery).where(Delivery.delivery_key == key)).first()
            if again is None:
                raise  # another constraint than the key's: the row itself is refused
            return again, False
        s.refresh(row)
    return row, True


def store_together(engine: Engine, batch: list[Accept]) -> list[Accepted]:
    """Every accept of ``batch`` in one transaction, in order (rows get ids in that order).

    The same answers as :func:`store_one` for each in turn: a key already
    stored, or taken by an earlier accept of the batch, answers that row, not
    created.  Raises if the transaction fails: nothing of it is stored then.

    One statement stores the batch: ``INSERT ... ON CONFLICT (delivery_key) DO
    NOTHING RETURNING id, delivery_key`` (SQLAlchemy Core: the ORM's unit of
    work costs twice the CPU per row, and a batch is what the event loop's
    thread waits behind).  Whatever it did not return was stored before (by
    an earlier request, or by another writer a moment ago: the conflict waits
    for that one's commit), and is looked up afterwards -- in the common case,
    nothing is.  Given an autocommit engine (:func:`autocommit_engine`, what
    :class:`DeliveryWriter` uses on PostgreSQL), that statement is a
    transaction of its own, committed (``synchronous_commit``: on disk) when
    its answer arrives.
    """
    table = DELIVERY
    now = utcnow()
    fresh: dict[str, dict[str, Any]] = {}
    for accept in batch:
        if accept.delivery_key not in fresh:
            fresh[accept.delivery_key] = {
                "source": accept.source,
                "event_type": accept.event_type,
                "delivery_key": accept.delivery_key,
                "payload": accept.payload,
                "requested_by": accept.requested_by,
                "received_at": now,
            }
    found: dict[str, Receipt] = {}
    insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    statement = insert(table).on_conflict_do_nothing(index_elements=[table.c.delivery_key])
    with engine.begin() as conn:
        inserted = conn.execute(
            statement.returning(table.c.id, table.c.delivery_key), list(fresh.values())
        )
        created = {str(key): Receipt(int(id_), str(key)) for id_, key in inserted}
        if len(created) < len(fresh):
            lookup = select_keys(table, {key for key in fresh if key not in created})
            found = {str(key): Receipt(int(id_), str(key)) for key, id_ in conn.execute(lookup)}
    results: list[Accepted] = []
    for accept in batch:
        key = accept.delivery_key
        mine = created.pop(key, None)  # the first accept of a key created its row
        results.append((mine, True) if mine is not None else (found[key], False))
        if mine is not None:
            found[key] = mine
    return results


def autocommit_engine(engine: Engine) -> Engine:
    """The engine a batch is stored with: on PostgreSQL, one of its own in autocommit.

    Each batch is then one round trip to the server (the INSERT) instead of
    five (the pool's pre-ping, BEGIN, a lookup, the INSERT, COMMIT); on a busy
    machine each trip waits for the server's process to get a core, and the
    64 clients of a batch wait with it.  Its own pool (one connection: one
    batch is in flight at a time), because switching a pooled connection to
    autocommit and back costs psycopg2 a ``SET`` each way; without pre-ping,
    since :meth:`DeliveryWriter._store_batch` tries a batch again on a fresh
    connection when it finds its connection dead, which a ping would have
    found a trip earlier.  SQLite is in process: its statements cost no trip,
    and its transaction stays.
    """
    if engine.dialect.name != "postgresql":
        return engine
    return create_engine(engine.url, isolation_level="AUTOCOMMIT", pool_size=1)


def select_keys(table: Table, keys: set[str]) -> Select[str, int]:
    return select_core(table.c.delivery_key, table.c.id).where(table.c.delivery_key.in_(keys))


#: an accept's outcome as the worker thread hands it back: stored, or why not
Outcome = Accepted | Exception


class DeliveryWriter:
    """Group commit of accepted deliveries (see the module's docstring).

    One batch is in flight at a time; accepts arriving meanwhile wait for the
    next, which takes all of them (up to :data:`MAX_BATCH`).  Nothing waits
    for a batch to fill: a lone request is committed at once, as before.
    """

    def __init__(self, engine: Engine, wake: Callable[[], None]) -> None:
        self.engine = engine
        self.wake = wake
        self._queue: list[tuple[Accept, asyncio.Future[Accepted]]] = []
        self._drain: asyncio.Task[None] | None = None
        #: what batches are stored with (:func:`autocommit_engine`), made at the first
        self._batches: Engine | None = None
        #: transactions committed, rows created in them, and batches that failed
        #: transiently (``bench/bench_ingest.py`` and the tests read them)
        self.commits = 0
        self.rows = 0
        self.faults = 0

    async def store(
        self,
        source: str,
        event_type: str,
        payload: dict[str, Any],
        key: str | None,
        requested_by: str | None = None,
        *,
        tries: int = 1,
    ) -> Accepted:
        """Commit the event with whatever else is waiting; returns (delivery, created).

        Idempotent on ``key`` (without one, a key is drawn once, for every try).
        A transient fault of its batch is tried again, ``tries`` times in all
        (``gate.faults``' waits between), then raised; anything else at once.
        """
        accept = Accept.of(source, event_type, payload, key, requested_by)
        try:  # the common case, without a retrying policy to set up per request
            return await self.put(accept)
        except Exception as exc:
            if tries <= 1 or not is_transient(exc):
                raise
        return await retried_call(
            lambda: self.put(accept), f"storing a {source} {event_type} delivery", tries=tries - 1
        )

    async def put(self, accept: Accept) -> Accepted:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Accepted] = loop.create_future()
        self._queue.append((accept, future))
        drain = self._drain
        if drain is None or drain.done() or drain.get_loop() is not loop:
            self._drain = loop.create_task(self._drain_queue(), name="delivery-writer")
        return await future

    async def close(self) -> None:
        """Wait until every accept taken so far is committed (or failed) and answered;
        then close the connection batches are stored with (a later batch opens another)."""
        while self._drain is not None and not self._drain.done():
            await asyncio.wait({self._drain})
        batches, self._batches = self._batches, None
        if batches is not None and batches is not self.engine:
            batches.dispose()

    async def _drain_queue(self) -> None:
        while self._queue:
            taken, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                outcomes = await asyncio.to_thread(self._commit, [a for a, _ in taken])
            except BaseException:
                # cancelled while the thread runs (the loop is going away): the
                # thread's commit may still land, but no caller is answered 202
                for _, future in [*taken, *self._queue]:
                    future.cancel()
                self._queue.clear()
                raise
            for (_, future), outcome in zip(taken, outcomes, strict=True):
                if future.done():  # its request was cancelled; the row stays stored
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
            if any(not isinstance(o, Exception) and o[1] for o in outcomes):
                self.wake()

    def _commit(self, batch: list[Accept]) -> list[Outcome]:
        """In the worker thread: the batch together, else row by row."""
        try:
            stored = self._store_batch(batch)
        except Exception as exc:
            if is_transient(exc):
                self.faults += 1
                return [exc] * len(batch)
            log.warning(
                "a batch of %d deliveries failed (%s: %s): committing them one by one",
                len(batch),
                type(exc).__name__,
                exc,
            )
            return [self._commit_alone(a) for a in batch]
        self.commits += 1
        self.rows += sum(1 for _, created in stored if created)
        return list(stored)

    def _store_batch(self, batch: list[Accept]) -> list[Accepted]:
        if self._batches is None:
            self._batches = autocommit_engine(self.engine)
        try:
            return store_together(self._batches, batch)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            # The connection was dead (the server restarted, or ended it): without a
            # pre-ping, this is where that shows.  Once more, on a new connection (the
            # pool dropped that one); safe, a key is stored once whatever happened.
            self.faults += 1
            log.info("storing a batch of %d deliveries again: %s", len(batch), exc)
            return store_together(self._batches, batch)

    def _commit_alone(self, accept: Accept) -> Outcome:
        try:
            stored = store_one(self.engine, accept)
        except Exception as exc:
            if not is_transient(exc):
                log.error("delivery %s refused by the database: %s", accept.delivery_key, exc)
            return exc
        self.commits += 1
        self.rows += stored[1]
        return stored
