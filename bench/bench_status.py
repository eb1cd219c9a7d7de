"""``GET /api/status`` of a real daemon with 500 queued items, under 200 requests/s.

Two daemons are compared: the **baseline** (the code at :data:`BASELINE`, main just
before the status work, checked out in a ``git worktree``) and **this** checkout.
Each gets a world of its own (``gate.demo_world``: real git remotes, rpmbuild,
createrepo_c, SQLite), made and filled by its own code in a process of its own
(``--setup``): the daemon bootstraps the demo's projects, then gets :data:`ITEMS`
approved changes through the API.  Each change adds a file to one project, so
none conflicts with another; the queue's window is 3 and its ``hold`` job runs
until the benchmark ends, so the items in the window stay under test and the
others wait: a steady queue of :data:`ITEMS` items, the shape the issue measured.
(One state for both cannot be: the baseline's schema ends at migration 0004, and
a state migrated past it does not open with its code.)

Then, for each of ``runs`` rounds, each daemon in turn is started on its own
state, left until its queue is quiet, and loaded for :data:`DURATION` seconds by
an open-loop generator: a request every 1/:data:`RATE` s (a fixed schedule that
does not wait for answers, as many clients do not), at most
:data:`MAX_IN_FLIGHT` in flight, each abandoned after :data:`TIMEOUT` s and
counted as failed; ``Accept-Encoding: gzip`` as browsers send it, no
``If-None-Match`` (every request is a full answer: the worst case).  Meanwhile a
probe asks ``/healthz`` every 100 ms.  Latency is from the scheduled send to the
last byte, so queueing in the client counts.  Only loopback addresses are used.

``.venv/bin/python -m bench.bench_status [runs]``
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from gate.demo_world import World, git

#: the baseline daemon: main just before the status work was merged (6fb6f1b, branch
#: web11: page, SSE, metrics, OpenAPI, CLI), the code the issue measured: the status
#: document read (about 3 queries per item) and rendered in the event loop per
#: request, no gzip, no ETag.  (Earlier runs named 2610b9061618 and f21c05796eca,
#: both after that merge: f21c057 already built the document off the loop per state
#: version, so it measured this work against itself.)
BASELINE = "69239549cda54eb01799c371b2a8dd832467a87e"
ITEMS = 500
RATE = 200
DURATION = 10.0
TIMEOUT = 5.0
MAX_IN_FLIGHT = 400
PROJECT = "ceilometer"
#: the queue left alone; the same while items leave and come back, one a second
SCENARIOS = {
    "quiet": "nothing else happens",
    "churn": "every second meanwhile, one of the last items leaves the queue and its "
    "change is enqueued again at the end (`POST .../dequeue`, `POST .../enqueue`): "
    "the document changes, and is made again, one or more times a second",
}
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Daemon:
    """``python -m gate.cli run`` from ``code`` (a checkout), on one config."""

    def __init__(self, code: Path, config: Path, base: str, log: Path) -> None:
        self.code, self.config, self.base, self.log = code, config, base, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(self.code)}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gate.cli", "run", "-c", str(self.config)],
                cwd=self.code,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


async def _get_json(http: aiohttp.ClientSession, url: str, timeout: float = 60) -> Any:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        return await resp.json(content_type=None)


async def _until(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = await probe()
        except (aiohttp.ClientError, TimeoutError):
            value = None
        if value:
            return value
        await asyncio.sleep(0.5)
    raise SystemExit(f"bench_status: timed out waiting for {what}")


async def _quiet(http: aiohttp.ClientSession, base: str, seconds: float = 3.0) -> dict[str, Any]:
    """The status document once it stopped changing for ``seconds`` (every held item
    under test, nothing building), with the number of active items."""

    async def probe() -> dict[str, Any] | None:
        first = await _get_json(http, f"{base}/api/status")
        await asyncio.sleep(seconds)
        second = await _get_json(http, f"{base}/api/status")
        return second if first == second else None

    doc: dict[str, Any] = await _until(probe, 900, "a quiet queue")
    return doc


def _world(root: Path, port: int) -> tuple[World, Path]:
    world = World(root / "world").create()
    hold = root / "hold"
    hold.mkdir()
    for bootstrap in range(1, len(world.projects) + 1):  # post items 1..N: never held
        (hold / str(bootstrap)).touch()
    config = world.config(listen={"host": "127.0.0.1", "port": port})
    queue = config["queues"]["liberty"]
    queue["window"] = {"start": 3, "floor": 3}
    queue["jobs"] = [
        "repoclosure",
        {
            "name": "hold",
            "timeout": 3600,
            "env": {"HOLD_DIR": str(hold)},
            "command": 'until [ -e "$HOLD_DIR/all" ] || [ -e "$HOLD_DIR/$RPMGATE_ITEM" ]; '
            "do sleep 0.2; done",
        },
    ]
    path = root / "rpmgate.yaml"
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    return world, path


def _changes(world: World, count: int) -> list[str]:
    """``count`` review refs of :data:`PROJECT`, each adding a file of its own."""
    work = world.workdir(PROJECT)
    git(work, "fetch", "-q", "origin", "+refs/heads/main:refs/remotes/origin/main")
    refs = []
    for n in range(1, count + 1):
        git(work, "checkout", "-q", "--detach", "origin/main")
        (work / f"note-{n}.txt").write_text(f"change {n}\n")
        git(work, "add", f"note-{n}.txt")
        git(work, "commit", "-q", "-m", f"bench change {n}")
        ref = f"refs/changes/{n % 100:02d}/{n}/1"
        git(work, "update-ref", f"refs/bench/{n}", "HEAD")
        refs.append(ref)
    git(
        work,
        "push",
        "-q",
        "origin",
        *[f"refs/bench/{n}:{ref}" for n, ref in enumerate(refs, start=1)],
    )
    return refs


async def _fill(base: str, refs: list[str]) -> int:
    """Propose and approve every change; wait until each is an active item."""
    async with aiohttp.ClientSession() as http:
        await _until(lambda: _get_json(http, f"{base}/healthz", 5), 120, "the daemon")
        await _until(lambda: _no_active(http, base), 900, "the bootstrap (every project published)")
        sem = asyncio.Semaphore(16)

        async def propose(n: int, ref: str) -> None:
            body = {"project": PROJECT, "ref": ref, "title": f"bench {n}", "approve": True}
            async with sem, http.post(f"{base}/api/changes", json=body) as resp:
                if resp.status != 202:
                    raise SystemExit(f"proposal {n}: {resp.status} {await resp.text()}")

        await asyncio.gather(*(propose(n, ref) for n, ref in enumerate(refs, start=1)))
        await _until(
            lambda: _active_at_least(http, base, len(refs)), 900, f"{len(refs)} queued items"
        )
        doc = await _quiet(http, base)
        return len(doc["queues"][0]["items"])


async def _no_active(http: aiohttp.ClientSession, base: str) -> bool:
    doc = await _get_json(http, f"{base}/api/status")
    return not doc["queues"][0]["items"] and bool(doc["queues"][0]["generation"])


async def _active_at_least(http: aiohttp.ClientSession, base: str, count: int) -> bool:
    doc = await _get_json(http, f"{base}/api/status")
    return len(doc["queues"][0]["items"]) >= count


async def _load(base: str, churn: bool = False) -> dict[str, Any]:
    """One measurement: :data:`RATE` requests/s for :data:`DURATION` s, and the probe;
    with ``churn``, every second one of the last items is dequeued and its change
    enqueued again (the state changes, so the document is made again)."""
    async with aiohttp.ClientSession() as plain:
        doc = await _quiet(plain, base)
        idle = []  # /healthz with no other load, for comparison
        for _ in range(20):
            start = time.perf_counter()
            async with plain.get(f"{base}/healthz") as resp:
                await resp.read()
            idle.append(time.perf_counter() - start)
            await asyncio.sleep(0.1)
    items = len(doc["queues"][0]["items"])
    status_size = len(json.dumps(doc).encode())
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    # the body is read, not decoded: the client's CPU is not what is measured
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as http:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        latencies: list[float] = []
        ok = 0
        gzipped = 0

        async def one(at: float) -> None:
            nonlocal ok, gzipped
            try:
                async with http.get(
                    f"{base}/api/status", timeout=timeout, headers={"Accept-Encoding": "gzip"}
                ) as resp:
                    body = await resp.read()
                    if resp.status == 200 and body:
                        ok += 1
                        gzipped = len(body)
            except (aiohttp.ClientError, TimeoutError):
                pass
            latencies.append(time.perf_counter() - at)

        health: list[float] = []
        health_ok = 0
        done = asyncio.Event()

        async def probe() -> None:
            nonlocal health_ok
            while not done.is_set():
                start = time.perf_counter()
                try:
                    async with http.get(f"{base}/healthz", timeout=timeout) as resp:
                        await resp.read()
                        health_ok += resp.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    pass
                health.append(time.perf_counter() - start)
                await asyncio.sleep(0.1)

        changes = 0

        # the last items of the queue: one a second leaves it and its change comes back
        # at the end (dequeue, enqueue: two deliveries, the queue keeps its length)
        last = [i["change"]["id"] for i in doc["queues"][0]["items"][-int(DURATION) :]]

        async def churner() -> None:
            nonlocal changes
            for change in last:
                if done.is_set():
                    return
                try:
                    async with http.get(f"{base}/api/changes/{change}") as resp:
                        info = json.loads(await resp.read())
                    item = next((i["id"] for i in info["items"] if not i["result"]), None)
                    if item is not None:
                        reason = {"reason": "bench: out and in again"}
                        async with http.post(f"{base}/api/items/{item}/dequeue", json=reason) as r:
                            await r.read()
                        async with http.post(f"{base}/api/changes/{change}/enqueue", json={}) as r:
                            await r.read()
                            changes += r.status == 202
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    pass  # a daemon too busy to answer: not a change (``deliveries`` says)
                await asyncio.sleep(1.0)

        prober = asyncio.ensure_future(probe())
        churning = asyncio.ensure_future(churner()) if churn else None
        tasks = []
        start = time.perf_counter()
        for n in range(int(RATE * DURATION)):
            at = start + n / RATE
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(at)))
        await asyncio.gather(*tasks)
        done.set()
        await prober
        if churning is not None:
            await churning
    sent = len(tasks)
    return {
        "items": items,
        "status_bytes": status_size,
        "gzip_bytes": gzipped,
        "sent": sent,
        "success": ok / sent,
        "p50_ms": _percentile(latencies, 50) * 1000,
        "p99_ms": _percentile(latencies, 99) * 1000,
        "health_idle_p50_ms": _percentile(idle, 50) * 1000,
        "health_p50_ms": _percentile(health, 50) * 1000,
        "health_p99_ms": _percentile(health, 99) * 1000,
        "health_max_ms": max(health) * 1000,
        "health_ok": health_ok / len(health),
        "deliveries": changes,
    }


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def _measure(daemon: Daemon) -> dict[str, dict[str, Any]]:
    """The quiet queue, then the same with a delivery a second, on one daemon."""
    daemon.start()
    try:
        results = asyncio.run(_serve_and_load(daemon.base))
    finally:
        daemon.stop()
    # the machine is shared: say how busy it was (1-minute load average, after the run)
    load = os.getloadavg()[0]
    return {scenario: {**r, "loadavg": load} for scenario, r in results.items()}


async def _serve_and_load(base: str) -> dict[str, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        await _until(lambda: _get_json(http, f"{base}/healthz", 5), 120, "the daemon")
    return {"quiet": await _load(base), "churn": await _load(base, churn=True)}


def _setup(code: Path, root: Path) -> dict[str, Any]:
    """Make and fill a world with the daemon of ``code``, in a process that imports
    ``gate`` from ``code`` (its ``World``, its config): returns what :func:`setup` says."""
    root.mkdir(parents=True)
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--setup", str(code), str(root)],
        env={**os.environ, "PYTHONPATH": str(code)},
        cwd=code,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def setup(code: Path, root: Path) -> dict[str, Any]:
    """``--setup``: in the process of ``code``'s ``gate``, its world filled by its daemon."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    world, config = _world(root, port)
    daemon = Daemon(code, config, base, root / "daemon.log")
    daemon.start()
    try:
        started = time.perf_counter()
        queued = asyncio.run(_fill(base, _changes(world, ITEMS)))
        setup_s = time.perf_counter() - started
    finally:
        daemon.stop()
    return {"config": str(config), "base": base, "queued": queued, "setup_s": setup_s}


def run(runs: int = 3) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="rpmgate-bench-status-"))
    baseline = root / "baseline-code"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(baseline), BASELINE],
        check=True,
    )
    codes = {"baseline": baseline, "this": ROOT}
    try:
        worlds = {name: _setup(code, root / name) for name, code in codes.items()}
        for name, world in worlds.items():
            print(name, "set up:", json.dumps(world), flush=True)
        rows: dict[str, dict[str, list[dict[str, Any]]]] = {
            scenario: {"baseline": [], "this": []} for scenario in SCENARIOS
        }
        for _ in range(runs):
            for name, code in codes.items():
                world = worlds[name]
                daemon = Daemon(
                    code, Path(world["config"]), world["base"], root / f"daemon-{name}.log"
                )
                for scenario, result in _measure(daemon).items():
                    print(name, scenario, json.dumps(result), flush=True)
                    rows[scenario][name].append(result)
        return {
            "queued": {name: w["queued"] for name, w in worlds.items()},
            "setup_s": {name: w["setup_s"] for name, w in worlds.items()},
            "runs": runs,
            "scenarios": rows,
        }
    finally:
        for name in codes:
            (root / name / "hold" / "all").touch()
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)], check=False
        )
        shutil.rmtree(root, ignore_errors=True)


def _summary(rows: list[dict[str, Any]], key: str) -> tuple[float, float]:
    values = [r[key] for r in rows]
    return min(values), statistics.median(values)


def _loadavg(row: dict[str, Any]) -> str:
    return f" (load {row['loadavg']:.1f})" if "loadavg" in row else ""


def _table(rows: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = [
        "| figure | baseline min / median | this min / median | baseline / this (median) |",
        "|---|---:|---:|---:|",
    ]
    for key, label, fmt in (
        ("p50_ms", "status p50 ms", "{:.1f}"),
        ("p99_ms", "status p99 ms", "{:.1f}"),
        ("success", "status success rate", "{:.3f}"),
        ("health_idle_p50_ms", "`/healthz` p50 ms, no load", "{:.1f}"),
        ("health_p50_ms", "`/healthz` p50 ms", "{:.1f}"),
        ("health_p99_ms", "`/healthz` p99 ms", "{:.1f}"),
        ("health_max_ms", "`/healthz` max ms", "{:.1f}"),
    ):
        b_min, b_med = _summary(rows["baseline"], key)
        t_min, t_med = _summary(rows["this"], key)
        ratio = f"{b_med / t_med:.1f}x" if t_med else "-"
        if key == "success":  # more is better: how many times more answered
            ratio = f"{t_med / b_med:.0f}x more" if b_med else "-"
        lines.append(
            f"| {label} | {fmt.format(b_min)} / {fmt.format(b_med)} | "
            f"{fmt.format(t_min)} / {fmt.format(t_med)} | {ratio} |"
        )
    lines += [
        "",
        "Every run, in order (status p50 / p99 ms, `/healthz` p99 ms, the machine's "
        "1-minute load average after the run where recorded):",
        "",
    ]
    for n, (old, new) in enumerate(zip(rows["baseline"], rows["this"], strict=True), start=1):
        lines.append(
            f"- run {n}: baseline {old['p50_ms']:.1f} / {old['p99_ms']:.1f}, "
            f"{old['health_p99_ms']:.1f}{_loadavg(old)}; this {new['p50_ms']:.1f} / "
            f"{new['p99_ms']:.1f}, {new['health_p99_ms']:.1f}{_loadavg(new)}"
        )
    return [*lines, ""]


def markdown(result: dict[str, Any]) -> list[str]:
    scenarios = result["scenarios"]
    doc = scenarios["quiet"]["this"][0]
    lines = [
        "## `GET /api/status` under load (bench/bench_status.py)",
        "",
        f"A real daemon (`rpmgate run`, SQLite) with {result['queued']['this']} queued "
        f"items (window 3, held under test; set up in {result['setup_s']['this']:.0f} s; "
        f"the baseline's {result['queued']['baseline']} in "
        f"{result['setup_s']['baseline']:.0f} s), {RATE} requests/s for {DURATION:.0f} s "
        f"(open loop, gzip, no `If-None-Match`, {TIMEOUT:.0f} s timeout counted as a "
        "failure), `/healthz` probed every 100 ms meanwhile. Baseline: the daemon at main "
        f"`{BASELINE[:12]}`, just before the status work (document read, about 3 queries "
        "per item, and rendered in the event loop per request; no gzip), on a state of its "
        "own made by its own code; the two daemons alternate, each started once per run "
        f"for both scenarios. Min / median of {result['runs']} runs. The document: "
        f"{doc['status_bytes'] / 1024:.0f} KiB of JSON, {doc['gzip_bytes'] / 1024:.0f} KiB "
        "gzipped.",
        "",
    ]
    for scenario, text in SCENARIOS.items():
        lines += [f"**{scenario}**: {text}.", "", *_table(scenarios[scenario])]
    lines += [
        "Why a worktree of the old commit rather than the old code kept callable: the "
        "cost was the daemon's (rendering in the event loop, about 3 queries per item, per "
        "request), so the baseline is that daemon whole, on the same interpreter and the "
        "same machine minutes apart. Each has its own state, made by its own code the "
        "same way (the baseline cannot open a state migrated past its 0004). "
        "`/healthz` with no load is the probe's own cost. "
        "`.venv/bin/python -m bench.bench_status [runs]` runs only this benchmark.",
        "",
    ]
    return lines


def main() -> None:
    if sys.argv[1:2] == ["--setup"]:
        print(json.dumps(setup(Path(sys.argv[2]), Path(sys.argv[3]))), flush=True)
        return
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    result = run(runs)
    print(json.dumps(result, indent=1))
    print("\n".join(markdown(result)))


if __name__ == "__main__":
    main()
