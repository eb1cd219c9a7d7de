"""Ingestion: deliveries accepted per second over HTTP, group commit against the baseline.

A server process serves the real aiohttp app (``gate.web.app.make_app``) of a
real runtime (``Runtime.create``: the configured database, migrated) on a
socket, with the daemon's connection limits (``gate.web.server.serve``); the
gate loop does not run, so stored deliveries stay pending and what is measured
is ingestion alone.  This process is the clients: 1 or 64 concurrent
keep-alive HTTP/1.1 connections (:class:`Connection`) posting ``POST /api/changes`` with an
``Idempotency-Key`` each, as fast as answers come.  Afterwards every answer
202 is looked up in the database: its delivery id must be there, under its
key, and the table must hold exactly the accepted rows.

Three ways of storing, in the same run, on the same database:

* ``group``: what the daemon does (``gate.deliveries.DeliveryWriter``):
  concurrent accepts share one statement, committed in a worker thread;
* ``group-txn``: the same writer storing a batch as it did before
  (:func:`lookup_then_insert`: a transaction with a lookup, then the INSERT),
  swapped in by the server process only;
* ``per-request``: the baseline, what the daemon did before: each request
  commits its own row with ``store_delivery``, synchronously, inside the event
  loop.  It is selectable only here (the server process swaps the runtime's
  writer for :class:`PerRequestCommit`), so both run the same code apart from
  the storing, on the same machine and database.

SQLite always; PostgreSQL when ``RPMGATE_TEST_DATABASE_URL`` names a database
(each run gets a schema of its own, dropped afterwards).  Each configuration
runs ``--runs`` times (fresh database and server each time); min and median.

.venv/bin/python -m bench.bench_ingest [--runs 3] [--requests 3000]
.venv/bin/python -m bench.run ingest      (the same, into docs/benchmarks.md)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.engine import Engine, make_url

import gate.deliveries
from gate.deliveries import DELIVERY, Accept, Accepted, Receipt, select_keys, store_delivery
from gate.faults import retried
from gate.runtime import Runtime
from repo_state.models import utcnow

CLIENTS = (1, 64)
MODES = ("per-request", "group-txn", "group")
#: requests per run: a single client is slow, so it sends fewer
REQUESTS = {1: 500, 64: 5000}
BODY = {"project": "nova", "ref": "refs/heads/topic", "title": "a change"}
BODY_BYTES = json.dumps(BODY).encode()


class PerRequestCommit:
    """The baseline: one transaction per request, committed inside the event loop
    (``store_delivery``, as ``gate.web.app`` called it before group commit)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

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
        fixed = key or str(uuid.uuid4())  # as before: one key for every try
        return await retried(
            lambda: store_delivery(self.runtime, source, event_type, payload, fixed, requested_by),
            f"storing a {event_type} delivery",
            tries=tries,
        )

    async def close(self) -> None:
        return None


def lookup_then_insert(engine: Engine, batch: list[Accept]) -> list[Accepted]:
    """The second baseline, group commit as it stored a batch before: a transaction
    on the shared engine with a lookup of every key, then ``INSERT ... RETURNING``
    (five round trips to PostgreSQL: pre-ping, BEGIN, SELECT, INSERT, COMMIT).  Swapped
    in for ``gate.deliveries.store_together`` by the ``group-txn`` server only."""
    table = DELIVERY
    with engine.begin() as conn:
        lookup = select_keys(table, {a.delivery_key for a in batch})
        found = {key: Receipt(int(id_), key) for key, id_ in conn.execute(lookup)}
        now = utcnow()
        fresh: dict[str, dict[str, Any]] = {}
        for a in batch:
            if a.delivery_key not in found and a.delivery_key not in fresh:
                fresh[a.delivery_key] = {
                    "source": a.source,
                    "event_type": a.event_type,
                    "delivery_key": a.delivery_key,
                    "payload": a.payload,
                    "requested_by": a.requested_by,
                    "received_at": now,
                }
        if fresh:
            returning = insert(table).returning(table.c.id, sort_by_parameter_order=True)
            ids = conn.execute(returning, list(fresh.values())).scalars().all()
            for delivery_id, key in zip(ids, fresh, strict=True):
                found[key] = Receipt(int(delivery_id), key)
    created: set[str] = set()
    results: list[Accepted] = []
    for a in batch:
        results.append(
            (found[a.delivery_key], a.delivery_key in fresh and a.delivery_key not in created)
        )
        created.add(a.delivery_key)
    return results


# -- the server process --------------------------------------------------------------
def server_config(state_dir: Path, database_url: str) -> dict[str, Any]:
    return {
        "state_dir": str(state_dir),
        "database_url": database_url,
        "listen": {"host": "127.0.0.1", "port": 0},
        "backends": {"local": {"type": "local", "workers": 1}},
        "publishers": {"liberty": {"root": str(state_dir / "repo"), "arches": ["x86_64"]}},
        "projects": {"nova": {"git": str(state_dir / "nova.git"), "branch": "main"}},
        "queues": {"liberty": {"projects": ["nova"], "repo": "liberty", "poll_interval": 0}},
    }


async def serve(state_dir: Path, database_url: str, mode: str) -> None:
    """Serve the app until SIGTERM; print the port first, the writer's counts last."""
    from gate.config import parse_config
    from gate.web.app import make_app
    from gate.web.server import limits_of
    from gate.web.server import serve as serve_app

    config = parse_config(server_config(state_dir, database_url))
    runtime = Runtime.create(config, backends={})  # nothing is built here
    if mode == "per-request":
        runtime.deliveries = PerRequestCommit(runtime)  # type: ignore[assignment]
    elif mode == "group-txn":
        gate.deliveries.store_together = lookup_then_insert
        gate.deliveries.autocommit_engine = lambda engine: engine
    served = await serve_app(make_app(runtime), "127.0.0.1", 0, limits_of(config.listen))
    print(json.dumps({"port": served.port}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await served.close()
    await runtime.deliveries.close()
    runtime.engine.dispose()
    writer = runtime.deliveries
    counts = {"commits": getattr(writer, "commits", None), "rows": getattr(writer, "rows", None)}
    print(json.dumps(counts), flush=True)


# -- the clients ------------------------------------------------------------------------
@dataclass
class Run:
    database: str
    mode: str
    clients: int
    requests: int
    seconds: float
    server_cpu: float
    client_cpu: float
    accepted: int
    #: transactions the server committed and rows in them (group mode; warm-up included)
    commits: int | None
    rows: int | None

    @property
    def per_second(self) -> float:
        return self.accepted / self.seconds

    @property
    def server_cpu_ms(self) -> float:
        """Server CPU milliseconds per accepted delivery."""
        return 1000 * self.server_cpu / self.accepted


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) of process ``pid`` so far (proc(5))."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Timing:
    seconds: float
    #: CPU seconds of the server and of the clients while the clock ran
    server_cpu: float
    client_cpu: float


class Connection:
    """One keep-alive HTTP/1.1 connection posting proposals (RFC 9112: a request with
    ``Content-Length``; the app answers with ``Content-Length``, never chunked).  Written
    out rather than aiohttp's client, which costs the shared CPU twice as much per
    request: the clients should take as little as they can from the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def propose(self, key: str) -> tuple[int, dict[str, Any]]:
        self.writer.write(
            b"POST /api/changes HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nIdempotency-Key: %s\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (key.encode(), len(BODY_BYTES), BODY_BYTES)
        )
        status = int((await self.reader.readline()).split()[1])
        length = None
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"{key}: answered {status} without Content-Length")
        return status, json.loads(await self.reader.readexactly(length))

    def close(self) -> None:
        self.writer.close()


async def drive(
    port: int, clients: int, requests: int, server_pid: int | None = None
) -> tuple[Timing, dict[str, int]]:
    """Post ``requests`` proposals over ``clients`` connections; returns the timing and,
    for each answer 202, its key and delivery id.  Any other answer is an error."""
    keys = iter(f"bench-{i}" for i in range(requests))
    accepted: dict[str, int] = {}

    async def post(conn: Connection, key: str) -> None:
        status, doc = await conn.propose(key)
        if status != 202:
            raise RuntimeError(f"{key}: answered {status}: {doc}")
        accepted[key] = int(doc["delivery"])

    async def client(conn: Connection) -> None:
        for key in keys:
            await post(conn, key)

    # one request on every connection first: connections are open before the clock
    connections = await asyncio.gather(*(Connection.open(port) for _ in range(clients)))
    try:
        await asyncio.gather(*(post(c, f"warm-{i}") for i, c in enumerate(connections)))
        server_cpu = cpu_seconds(server_pid) if server_pid else 0.0
        client_cpu = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in connections))
        seconds = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu
        server_cpu = (cpu_seconds(server_pid) if server_pid else 0.0) - server_cpu
    finally:
        for conn in connections:
            conn.close()
    return Timing(seconds, server_cpu, client_cpu), accepted


def check_stored(database_url: str, accepted: dict[str, int]) -> None:
    """Every answer 202 is in the database under its key, and nothing else is."""
    from repo_state.db import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT delivery_key, id FROM delivery")).all()
    finally:
        engine.dispose()
    stored = {str(key): int(id_) for key, id_ in rows}
    expected = {f"api:change.proposed:{k}": v for k, v in accepted.items()}
    if stored != expected:
        missing = sorted(set(expected) - set(stored))[:5]
        extra = sorted(set(stored) - set(expected))[:5]
        raise AssertionError(
            f"database disagrees with the 202 answers: {len(stored)} rows, {len(expected)} "
            f"accepted; missing {missing}, unexpected {extra}"
        )


class Database:
    """A fresh database per run: a SQLite file, or a PostgreSQL schema (dropped after)."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind, self.root = kind, root
        self.schema = f"rpmgate_bench_{uuid.uuid4().hex[:10]}"

    def __enter__(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.root / 'rpmgate.db'}"
        self._admin("CREATE SCHEMA")
        url = make_url(pg_url()).update_query_dict({"options": f"-csearch_path={self.schema}"})
        return url.render_as_string(hide_password=False)

    def __exit__(self, *exc: object) -> None:
        if self.kind == "postgresql":
            self._admin("DROP SCHEMA", " CASCADE")

    def _admin(self, verb: str, tail: str = "") -> None:
        from repo_state.db import make_engine

        admin = make_engine(pg_url()).execution_options(isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'{verb} "{self.schema}"{tail}'))
        admin.dispose()


def pg_url() -> str:
    return os.environ.get("RPMGATE_TEST_DATABASE_URL", "")


def one_run(kind: str, mode: str, clients: int, requests: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="rpmgate-bench-ingest-") as tmp:
        root = Path(tmp)
        with Database(kind, root) as url:
            server = subprocess.Popen(
                [sys.executable, "-m", "bench.bench_ingest", "serve", str(root), url, mode],
                stdout=subprocess.PIPE,
                text=True,
                cwd=Path(__file__).resolve().parent.parent,
            )
            try:
                assert server.stdout is not None
                first = server.stdout.readline()
                if not first:
                    raise RuntimeError(f"the {mode} server on {kind} did not start")
                port = json.loads(first)["port"]
                timing, accepted = asyncio.run(drive(port, clients, requests, server.pid))
            finally:
                server.send_signal(signal.SIGTERM)
                out, _ = server.communicate(timeout=60)
            counts = json.loads(out.strip().splitlines()[-1])
            check_stored(url, accepted)
    return Run(
        database=kind,
        mode=mode,
        clients=clients,
        requests=requests,
        seconds=timing.seconds,
        server_cpu=timing.server_cpu,
        client_cpu=timing.client_cpu,
        accepted=requests,
        commits=counts["commits"],
        rows=counts["rows"],
    )


def run(
    runs: int = 3,
    scale: float = 1.0,
    databases: tuple[str, ...] = ("sqlite", "postgresql"),
    clients_counts: tuple[int, ...] = CLIENTS,
    modes: tuple[str, ...] = MODES,
) -> list[Run]:
    """Every database, mode and client count, ``runs`` times, interleaved (so a busy
    moment of the machine does not fall on one configuration only)."""
    kinds = [k for k in databases if k == "sqlite" or pg_url()]
    results: list[Run] = []
    for _ in range(runs):
        for kind in kinds:
            for clients in clients_counts:
                for mode in modes:
                    requests = max(clients, int(REQUESTS[clients] * scale))
                    result = one_run(kind, mode, clients, requests)
                    print(
                        f"{kind:10} {mode:11} {clients:3} clients: "
                        f"{result.per_second:7.0f} deliveries/s ({requests} in "
                        f"{result.seconds:.2f} s, server CPU {result.server_cpu_ms:.2f} ms and "
                        f"client CPU {1000 * result.client_cpu / requests:.2f} ms each"
                        + (f", {result.commits} commits" if result.commits is not None else "")
                        + ")",
                        file=sys.stderr,
                        flush=True,
                    )
                    results.append(result)
    return results


def markdown(results: list[Run]) -> list[str]:
    configurations = {(r.database, r.mode, r.clients) for r in results}
    runs = min(
        sum(1 for r in results if (r.database, r.mode, r.clients) == c) for c in configurations
    )
    lines = [
        "## Ingestion: accepted deliveries per second (bench/bench_ingest.py)",
        "",
        "PostgreSQL is measured when `RPMGATE_TEST_DATABASE_URL` is set "
        "(`RPMGATE_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test`: "
        "PostgreSQL 15 on the same machine); without it only SQLite is.",
        "",
        "A server process serves the real app of a real runtime (`Runtime.create`, the "
        "configured database migrated; the gate loop does not run, so this is ingestion "
        "alone); the benchmark process is the clients, 1 or 64 keep-alive HTTP/1.1 "
        "connections (`bench_ingest.Connection`) posting `POST /api/changes` with an "
        "`Idempotency-Key` each, as fast as answers come.  Afterwards every 202 is looked "
        "up in the database: its delivery id under its key, and no other row.",
        "",
        "*per-request* is the baseline, the path before group commit: each request "
        "commits its own row with `store_delivery` inside the event loop (selectable only "
        "in the benchmark, which swaps the runtime's writer, so both run the same code "
        "apart from storing); *group* is `gate.deliveries.DeliveryWriter`: a batch is one "
        "`INSERT ... ON CONFLICT (delivery_key) DO NOTHING RETURNING`, in autocommit on "
        "PostgreSQL (one round trip to the server per batch, no pre-ping); "
        "*group-txn*, the second baseline, is the same writer storing a batch as it did "
        "before (`bench_ingest.lookup_then_insert`: a transaction with a lookup of every "
        "key, then the INSERT: five round trips).  Deliveries "
        f"per second, min and median of {runs} runs (a fresh database and server each, "
        "configurations interleaved); CPU: the server process's CPU milliseconds per "
        "delivery (median), which the machine's other work does not inflate as it does "
        "wall time.",
        "",
        "| database | clients | per-request min | median | group-txn min | median "
        "| group min | median | group / group-txn (medians) | group / per-request "
        "| CPU ms per-request | CPU ms group-txn | CPU ms group | rows per commit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in dict.fromkeys(r.database for r in results):
        for clients in CLIENTS:
            by_mode = {
                mode: [
                    r for r in results if (r.database, r.clients, r.mode) == (kind, clients, mode)
                ]
                for mode in MODES
            }
            if not all(by_mode.values()):
                continue
            rates = {mode: [r.per_second for r in runs] for mode, runs in by_mode.items()}
            median = {mode: statistics.median(values) for mode, values in rates.items()}
            cpu = {
                mode: statistics.median(r.server_cpu_ms for r in runs)
                for mode, runs in by_mode.items()
            }
            group = by_mode["group"]
            per_commit = statistics.median((r.rows or 0) / r.commits for r in group if r.commits)
            lines.append(
                f"| {kind} | {clients} | "
                + " | ".join(f"{min(rates[m]):.0f} | {median[m]:.0f}" for m in MODES)
                + f" | {median['group'] / median['group-txn']:.2f} | "
                f"{median['group'] / median['per-request']:.2f} | "
                + " | ".join(f"{cpu[m]:.2f}" for m in MODES)
                + f" | {per_commit:.1f} |"
            )
    busiest = [r for r in results if r.mode == "group" and r.clients == max(CLIENTS)]
    group_cpu = statistics.median(r.server_cpu_ms for r in busiest) if busiest else 0.0
    lines += [
        "",
        "Wall time depends on what else the machine runs (the load average above); the "
        f"server's CPU per delivery does not: at {group_cpu:.2f} ms (median of the group "
        f"runs at {max(CLIENTS)} clients), group commit takes {group_cpu:.2f} of one core "
        "for 1,000 deliveries/s.",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "serve":
        _, state_dir, url, mode = args
        asyncio.run(serve(Path(state_dir), url, mode))
        return
    parser = argparse.ArgumentParser(prog="bench.bench_ingest", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="times the requests per run")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], action="append")
    parser.add_argument("--clients", type=int, choices=CLIENTS, action="append")
    parser.add_argument("--mode", choices=MODES, action="append")
    opts = parser.parse_args(args)
    results = run(
        opts.runs,
        opts.scale,
        tuple(opts.database or ("sqlite", "postgresql")),
        tuple(opts.clients or CLIENTS),
        tuple(opts.mode or MODES),
    )
    print("\n".join(markdown(results)))


if __name__ == "__main__":
    main()
