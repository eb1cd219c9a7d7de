"""``/metrics`` moves as a real scenario runs (git, rpmbuild, createrepo_c, the HTTP API)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gate.demo_world import World
from tests.conftest import HORIZON_BROKEN, NOVA_1201
from tests.served import ClientFactory, served
from tests.test_web_api import eventually, propose

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: TestClient) -> Samples:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(
    before: Mapping[tuple[str, frozenset[tuple[str, str]]], float], after: Samples
) -> Samples:
    return {key: v - before.get(key, 0.0) for key, v in after.items()}


async def test_metrics_count_builds_jobs_generations_and_deliveries_of_a_scenario(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with served(world, aiohttp_client) as (gate, client):
        before = await scrape(client)
        # the bootstrap published the branch heads: post items, a generation
        assert value(before, "rpmgate_generations_published_total", repo="liberty", kind="post")
        assert value(before, "rpmgate_queue_depth", queue="liberty") == 0
        assert value(before, "rpmgate_queue_window", queue="liberty") >= 1

        await propose(client, world, "nova", NOVA_1201, "A")
        await propose(client, world, "horizon", HORIZON_BROKEN, "C")
        refused = await client.post("/api/changes", json={"project": "nova", "ref": "-x"})
        assert refused.status == 400

        async def queued() -> bool:
            return value(await scrape(client), "rpmgate_queue_depth", queue="liberty") >= 1

        await eventually(queued, what="an item in the queue depth")
        await gate.wait_idle(180)
        after = await scrape(client)

    d = moved(before, after)
    local = {"backend": "local"}
    assert value(d, "rpmgate_builds_total", **local, purpose="scratch", result="passed") >= 1
    assert value(d, "rpmgate_builds_total", **local, purpose="scratch", result="failed") == 1
    assert value(d, "rpmgate_builds_total", **local, purpose="final", result="passed") == 1
    assert value(d, "rpmgate_build_duration_seconds_count", **local, purpose="final") == 1
    assert value(d, "rpmgate_jobs_total", job="repoclosure", result="passed") >= 1
    assert value(d, "rpmgate_job_duration_seconds_count", job="repoclosure") >= 1
    assert value(d, "rpmgate_generations_published_total", repo="liberty", kind="gate") == 1
    assert value(d, "rpmgate_publish_duration_seconds_count", repo="liberty") == 1
    assert value(d, "rpmgate_approval_to_publish_seconds_count", queue="liberty") == 1
    assert value(d, "rpmgate_approval_to_publish_seconds_sum", queue="liberty") > 0
    finished = {"queue": "liberty", "kind": "gate"}
    assert value(d, "rpmgate_items_finished_total", **finished, result="merged") == 1
    assert value(d, "rpmgate_items_finished_total", **finished, result="rejected") == 1
    assert value(d, "rpmgate_items_enqueued_total", queue="liberty", kind="gate") == 2
    assert value(d, "rpmgate_deliveries_accepted_total", source="api") == 2
    assert value(d, "rpmgate_deliveries_refused_total", source="api", code="400") == 1
    assert value(d, "rpmgate_deliveries_processed_total", source="api", outcome="processed") == 2
    assert value(after, "rpmgate_queue_depth", queue="liberty") == 0
    # the default window (gate.queue_rules.WINDOW_DEFAULT): +1 for A merged, -3 for C
    # rejected without passing its tests, in either order
    assert value(before, "rpmgate_queue_window", queue="liberty") == 20
    assert value(after, "rpmgate_queue_window", queue="liberty") == 18
    assert (
        value(after, "rpmgate_queue_generation", queue="liberty")
        == value(before, "rpmgate_queue_generation", queue="liberty") + 1
    )
    assert value(after, "rpmgate_loop_last_run_timestamp_seconds") > 0
    assert value(after, "rpmgate_event_loop_lag_seconds_count") >= 1


async def test_webhook_paths_of_unknown_sources_share_one_label(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with served(world, aiohttp_client, start=False) as (_, client):
        for name in ("nope", "x" * 200, "other"):
            await client.post(f"/api/sources/{name}/hook", data=b"{}")
        samples = await scrape(client)
    sources = {
        dict(labels)["source"]
        for (name, labels) in samples
        if name == "rpmgate_deliveries_refused_total"
    }
    assert sources == {"unknown"}
