"""Speculative repositories of finished items: kept (and served) for
``speculative_retention``, then swept; ``0`` removes them when the item finishes."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gate.demo_world import World
from gate.retention import Tree, expired, trees
from repo_state.models import ItemRow
from tests.conftest import NOVA_1201
from tests.served import ClientFactory, served
from tests.test_web_api import path_of, propose

DAY = 86400.0


def test_trees_are_kept_for_their_retention_and_only_the_current_attempt_of_an_active_item(
    tmp_path: Path,
) -> None:
    for name in ("1-1", "1-1-baseline", "2-1", "2-2", "3-4", "4-1", "not-an-item", "5"):
        (tmp_path / name).mkdir()
    finished = datetime(2026, 1, 1, tzinfo=UTC)
    rows = {
        1: ItemRow(
            id=1,
            queue="q",
            project="p",
            change_id=1,
            active=False,
            attempt=1,
            finished_at=finished.replace(tzinfo=None),
        ),  # as SQLite gives it back
        2: ItemRow(id=2, queue="q", project="p", change_id=2, active=True, attempt=2),
        3: ItemRow(
            id=3, queue="q", project="p", change_id=3, active=False, attempt=4, finished_at=finished
        ),
    }  # item 4: unknown to the database
    found = trees(tmp_path)
    assert sorted(t.path.name for t in found) == ["1-1", "1-1-baseline", "2-1", "2-2", "3-4", "4-1"]

    def gone(now: float) -> list[str]:
        return sorted(t.path.name for t in expired(found, rows, DAY, now))

    at = finished.timestamp()
    assert gone(at + DAY - 1) == ["2-1", "4-1"]
    assert gone(at + DAY) == ["1-1", "1-1-baseline", "2-1", "3-4", "4-1"]
    assert [t.path.name for t in expired([Tree(tmp_path / "3-4", 3, 4)], rows, 0, at)] == ["3-4"]


async def _finished_item(client: TestClient, title: str) -> dict[str, Any]:
    doc = await (await client.get("/api/status")).json()
    return next(i for i in doc["queues"][0]["recent"] if i["change"]["title"] == title)


@pytest.mark.slow
async def test_a_merged_items_repository_is_served_until_its_retention_ends(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with served(world, aiohttp_client) as (gate, client):
        await propose(client, world, "nova", NOVA_1201, "A")
        await gate.wait_idle(120)
        item = await _finished_item(client, "A")
        assert item["result"] == "merged"
        tree = f"{item['id']}-{item['attempt']}"
        assert item["speculative_repo"] and item["speculative_repo"].endswith(
            f"/speculative/{tree}/"
        )
        assert (gate.state_dir / "speculative" / tree / "x86_64" / "repodata").is_dir()
        listing = await client.get(path_of(item["speculative_repo"]))
        assert listing.status == 200
        repodata = await client.get(f"/speculative/{tree}/x86_64/repodata/repomd.xml")
        assert repodata.status == 200 and b"<repomd" in await repodata.read()
        dot_repo = await client.get(f"/speculative/{tree}/rpmgate-{item['id']}.repo")
        assert dot_repo.status == 200

        assert await gate.retention.sweep(now=time.time() + DAY - 120) == 0  # within it
        assert (await client.get(path_of(item["speculative_repo"]))).status == 200

        assert await gate.retention.sweep(now=time.time() + DAY + 1) >= 1
        assert not (gate.state_dir / "speculative" / tree).exists()
        assert (await client.get(f"/speculative/{tree}/x86_64/repodata/repomd.xml")).status == 404
        assert (await client.get(f"/speculative/{tree}/rpmgate-{item['id']}.repo")).status == 404
        assert (await _finished_item(client, "A"))["speculative_repo"] is None


@pytest.mark.slow
async def test_retention_zero_removes_the_repository_when_the_item_finishes(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with served(world, aiohttp_client, speculative_retention=0) as (gate, client):
        await propose(client, world, "nova", NOVA_1201, "A")
        await gate.wait_idle(120)
        item = await _finished_item(client, "A")
        assert item["result"] == "merged" and item["speculative_repo"] is None
        assert not list((gate.state_dir / "speculative").glob(f"{item['id']}-*"))
