"""``/metrics``: what the gate did, in Prometheus' text format (docs/metrics.md).

Two kinds of numbers:

* **counters and histograms fed by the gate's own events**: every transition
  the stages :meth:`~gate.plumbing.Plumbing.emit` (a build recorded, a job
  finished, a generation published, a delivery processed) reaches
  :meth:`GateMetrics.observe`, a listener; nothing is read back from the
  database to count it.  They start at zero with the process, as Prometheus
  expects of a counter (``rate()`` handles the restart);
* **gauges computed when scraped** (:class:`_QueueGauges`): queue depth,
  window, generation and items by state, from one read of the active items,
  so they are never stale and cost nothing between scrapes.

Every label value comes from the configuration (queue, repository, backend,
job and source names) or from a closed set of words (a build's purpose and
result, an item's state): nothing a client sends becomes a label, so a
hostile client cannot grow the series without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlmodel import col, select

from gate.items import view_of
from gate.model import ItemView, item_states
from gate.queue_rules import queue_order
from gate.runtime import Runtime
from repo_state.db import session
from repo_state.models import ItemRow, QueueRow

log = logging.getLogger(__name__)

#: what ``/metrics`` answers with (text format 0.0.4)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: seconds between two samples of the event loop's lag
LAG_INTERVAL = 1.0

#: builds take seconds (a noarch spec) to hours (a Koji build of a large package)
BUILD_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
#: from approval to publication: minutes to a day
WAIT_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400)
#: a job or a publication: under a second to tens of minutes
STEP_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
#: the event loop: anything above a few milliseconds is a stall
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

#: the outcomes a build is recorded with
_BUILD_RESULTS = frozenset({"passed", "failed", "canceled"})


class GateMetrics:
    """The gate's metrics in a registry of their own (one per gate: tests run many)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.builds = Counter(
            "rpmgate_builds",
            "Builds that ended, by backend, purpose (scratch, final) and result",
            ["backend", "purpose", "result"],
            registry=r,
        )
        self.build_seconds = Histogram(
            "rpmgate_build_duration_seconds",
            "From a build's creation to its outcome (passed or failed)",
            ["backend", "purpose"],
            buckets=BUILD_BUCKETS,
            registry=r,
        )
        self.backend_faults = Counter(
            "rpmgate_backend_faults",
            "Faults of a build backend: retried (task-lost, unavailable, transient) "
            "or stopping a build's watch (error)",
            ["backend", "fault"],
            registry=r,
        )
        self.drafts_removed = Counter(
            "rpmgate_drafts_removed",
            "Unpromoted drafts past their backend's draft_retention, by backend and "
            "result (deleted; left: the backend keeps it; refused: the backend refuses "
            "every deletion, counted once)",
            ["backend", "result"],
            registry=r,
        )
        self.jobs = Counter(
            "rpmgate_jobs",
            "Job runs (each try of a retried job) that ended, by job and result",
            ["job", "result"],
            registry=r,
        )
        self.flaky_passes = Counter(
            "rpmgate_job_flaky_passes",
            "Job runs that passed only on a retry (flaky: passed on try 2 of 3), by job, "
            "named build (empty in a queue of one build) and arch",
            ["job", "build", "arch"],
            registry=r,
        )
        self.job_seconds = Histogram(
            "rpmgate_job_duration_seconds",
            "How long a job ran",
            ["job"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.resets = Counter(
            "rpmgate_resets",
            "New attempts of an item already tested once (a reset behind a failure, "
            "a promote, a retry)",
            ["queue"],
            registry=r,
        )
        self.enqueued = Counter(
            "rpmgate_items_enqueued", "Items that entered a queue", ["queue", "kind"], registry=r
        )
        self.finished = Counter(
            "rpmgate_items_finished",
            "Items that left a queue, by how (merged, rejected, dequeued, superseded, ...)",
            ["queue", "kind", "result"],
            registry=r,
        )
        self.approval_to_publish = Histogram(
            "rpmgate_approval_to_publish_seconds",
            "From a gate item's approval (its enqueue) to its generation being published",
            ["queue"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.generations = Counter(
            "rpmgate_generations_published",
            "Generations published, by repository and kind (gate, post, republish, rollback)",
            ["repo", "kind"],
            registry=r,
        )
        self.publish_seconds = Histogram(
            "rpmgate_publish_duration_seconds",
            "Writing a generation and switching current to it",
            ["repo"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.publish_failures = Counter(
            "rpmgate_publish_failures",
            "Publications that failed (retried with backoff)",
            registry=r,
        )
        self.accepted = Counter(
            "rpmgate_deliveries_accepted",
            "Requests stored as deliveries (answered 202), by source (api or a review system)",
            ["source"],
            registry=r,
        )
        self.refused = Counter(
            "rpmgate_deliveries_refused",
            "Write requests refused at the door, by source and HTTP status "
            "(401 token, 400 body, 404 unknown target, 413 too large, 503 unavailable)",
            ["source", "code"],
            registry=r,
        )
        self.processed = Counter(
            "rpmgate_deliveries_processed",
            "Stored deliveries the loop processed, by source and outcome "
            "(processed, refused, error)",
            ["source", "outcome"],
            registry=r,
        )
        self.loop_lag = Histogram(
            "rpmgate_event_loop_lag_seconds",
            f"How late a {LAG_INTERVAL:g} s timer of the event loop fires",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        r.register(_QueueGauges(rt))
        self._sampler: asyncio.Task[None] | None = None

    # -- feeding --------------------------------------------------------------------------------
    def observe(self, event: dict[str, Any]) -> None:
        """A :data:`~gate.plumbing.Listener`: count what the event says happened."""
        handler = self._by_topic.get(str(event.get("topic")))
        if handler is not None:
            handler(self, event)

    def _build(self, event: dict[str, Any]) -> None:
        state = str(event.get("state"))
        if state not in _BUILD_RESULTS or "backend" not in event:
            return  # started, retried, or an after-publish hook: not an outcome
        backend, purpose = str(event["backend"]), str(event.get("purpose"))
        self.builds.labels(backend, purpose, state).inc()
        seconds = event.get("seconds")
        if isinstance(seconds, int | float) and state != "canceled":
            self.build_seconds.labels(backend, purpose).observe(seconds)

    def _backend(self, event: dict[str, Any]) -> None:
        self.backend_faults.labels(str(event["backend"]), str(event["fault"])).inc()

    def _draft_removal(self, event: dict[str, Any]) -> None:
        self.drafts_removed.labels(str(event["backend"]), str(event["result"])).inc()

    def _job(self, event: dict[str, Any]) -> None:
        name = str(event["name"])
        self.jobs.labels(name, "passed" if event["passed"] else "failed").inc()
        if event.get("flaky"):
            build, arch = str(event.get("build", "")), str(event.get("arch", ""))
            self.flaky_passes.labels(name, build, arch).inc()
        self.job_seconds.labels(name).observe(float(event["seconds"]))

    def _item(self, event: dict[str, Any]) -> None:
        state, queue = event.get("state"), event.get("queue")
        if queue is None:
            return
        queue = str(queue)
        if state == "enqueued":
            self.enqueued.labels(queue, str(event.get("kind", "gate"))).inc()
        elif state == "testing" and int(event.get("attempt", 1)) > 1:
            self.resets.labels(queue).inc()
        elif state == "published" and event.get("kind") == "gate" and "waited" in event:
            self.approval_to_publish.labels(queue).observe(float(event["waited"]))
        elif event.get("finished"):
            self.finished.labels(queue, str(event.get("kind")), str(state)).inc()

    def _generation(self, event: dict[str, Any]) -> None:
        repo = str(event["repo"])
        self.generations.labels(repo, str(event["kind"])).inc()
        self.publish_seconds.labels(repo).observe(float(event["seconds"]))

    def _publish_failed(self, event: dict[str, Any]) -> None:
        self.publish_failures.inc()

    def _delivery(self, event: dict[str, Any]) -> None:
        error = event.get("error")
        outcome = (
            "processed"
            if not error
            else ("error" if str(error).startswith("internal error") else "refused")
        )
        self.processed.labels(str(event.get("source", "api")), outcome).inc()

    _by_topic = {
        "build": _build,
        "backend": _backend,
        "draft-removal": _draft_removal,
        "job": _job,
        "item": _item,
        "generation": _generation,
        "publish-failed": _publish_failed,
        "delivery": _delivery,
    }

    def request_answered(self, source: str, status: int) -> None:
        """A write request was answered ``status`` (the web app's middleware tells)."""
        if status == 202:
            self.accepted.labels(source).inc()
        elif status >= 400:
            self.refused.labels(source, str(status)).inc()

    # -- the event loop's lag ---------------------------------------------------------------------
    def start(self) -> None:
        """Start sampling the event loop's lag (in the running loop)."""
        if self._sampler is None:
            self._sampler = asyncio.get_running_loop().create_task(
                self._sample_lag(), name="metrics-loop-lag"
            )

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None

    async def _sample_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LAG_INTERVAL)
            self.loop_lag.observe(max(0.0, loop.time() - before - LAG_INTERVAL))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _QueueGauges(Collector):
    """Gauges read when scraped: one query for the active items, one for the queues."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def describe(self) -> Iterator[Metric]:
        return iter(())  # computed at collection; nothing to describe ahead

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "rpmgate_queue_depth", "Active items in a queue", labels=["queue"]
        )
        window = GaugeMetricFamily(
            "rpmgate_queue_window", "A queue's window: items tested at once", labels=["queue"]
        )
        generation = GaugeMetricFamily(
            "rpmgate_queue_generation",
            "The generation a queue's repository is at",
            labels=["queue"],
        )
        states = GaugeMetricFamily(
            "rpmgate_items",
            "Active items by queue, kind (gate, post) and state",
            labels=["queue", "kind", "state"],
        )
        last_loop = GaugeMetricFamily(
            "rpmgate_loop_last_run_timestamp_seconds",
            "When the gate's loop last began an iteration (Unix time; 0: never)",
            value=self.rt.plumbing.loop_seen_at,
        )
        yield last_loop
        try:
            with session(self.rt.engine) as s:
                rows = s.exec(select(ItemRow).where(col(ItemRow.active))).all()
                queues = {q.name: q for q in s.exec(select(QueueRow)).all()}
        except Exception as exc:  # the database is away: counters still answer
            log.warning("metrics: cannot read the queues: %s", exc)
            return
        counts: dict[tuple[str, str, str], int] = {}
        per_queue: dict[str, int] = dict.fromkeys(self.rt.config.queues, 0)
        by_queue: dict[str, list[tuple[ItemView, float]]] = {}
        for row in rows:
            per_queue[row.queue] = per_queue.get(row.queue, 0) + 1
            by_queue.setdefault(row.queue, []).append((view_of(row), row.seq))
        for name, viewed in by_queue.items():
            qrow = queues.get(name)
            labels = item_states(queue_order(viewed), qrow.window if qrow else 0)
            for view, _ in viewed:
                key = (name, view.kind.value, labels[view.id].name.lower())
                counts[key] = counts.get(key, 0) + 1
        for name, count in per_queue.items():
            depth.add_metric([name], count)
            qrow = queues.get(name)
            if qrow is not None:
                window.add_metric([name], qrow.window)
                generation.add_metric([name], qrow.generation)
        for key, count in sorted(counts.items()):
            states.add_metric(list(key), count)
        yield from (depth, window, generation, states)
