"""The status document made from kept rows (``gate.web.status_rows``) is the one a full
read of the database makes, byte for byte, while items queue, move and finish, and
after writes the gate makes without an event, or in bulk."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import update
from sqlmodel import col, select

from gate.daemon import Gate
from gate.demo_world import World
from gate.model import ItemState
from gate.web.app import COMMITS, LIVE, STATUS_ROWS
from gate.web.status import status
from repo_state.db import session
from repo_state.models import BuildRow, ChangeRow, JobRunRow
from tests.conftest import CLASSIC_CHANGES
from tests.served import ClientFactory, served
from tests.test_web_api import propose


async def served_and_fresh(gate: Gate, client: TestClient) -> tuple[bytes, bytes]:
    """``GET /api/status``'s body and a full read's JSON, at one state: taken again until
    no event and no commit came between the request and the read (the read runs on the
    loop, where the gate commits, so nothing commits during it)."""
    for _ in range(200):
        before = (client.app[LIVE].seq, client.app[COMMITS].count)
        resp = await client.get("/api/status", headers={"Accept-Encoding": "identity"})
        body = await resp.read()
        with session(gate.engine) as s:
            fresh = json.dumps(status(gate.runtime, s)).encode()
        if (client.app[LIVE].seq, client.app[COMMITS].count) == before:
            return body, fresh
        await asyncio.sleep(0.05)
    raise AssertionError("the state never stood still")


def held_queue(world: World, hold: Path) -> dict[str, Any]:
    """The world's queue with a window of 1 and a job that runs until ``hold/all`` exists."""
    queues: dict[str, Any] = world.config()["queues"]
    queues["liberty"]["window"] = {"start": 1, "floor": 1}
    queues["liberty"]["jobs"] = [
        "repoclosure",
        {
            "name": "hold",
            "timeout": 600,
            "env": {"HOLD_DIR": str(hold)},
            "command": 'until [ -e "$HOLD_DIR/all" ]; do sleep 0.1; done',
        },
    ]
    return queues


@pytest.mark.slow
async def test_the_status_of_kept_rows_is_a_full_reads_as_items_queue_move_and_finish(
    world: World, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "all").touch()  # the bootstrap's post items pass
    async with served(world, aiohttp_client, queues=held_queue(world, hold)) as (gate, client):
        body, fresh = await served_and_fresh(gate, client)
        assert body == fresh
        (hold / "all").unlink()
        for label, project, spec, _ in CLASSIC_CHANGES:
            await propose(client, world, project, spec, label)

        async def queued() -> int:
            doc = json.loads((await served_and_fresh(gate, client))[0])
            return len(doc["queues"][0]["items"])

        for _ in range(600):
            if await queued() == len(CLASSIC_CHANGES):
                break
            await asyncio.sleep(0.1)
        body, fresh = await served_and_fresh(gate, client)
        assert body == fresh
        doc = json.loads(body)
        states = [i["state"] for i in doc["queues"][0]["items"]]
        assert states[1:] == [ItemState.OUTSIDE_WINDOW.value] * (len(states) - 1), states
        rows = client.app[STATUS_ROWS]
        full_reads = rows.full_reads

        # one leaves the queue: the others keep their documents, the order moves
        last = doc["queues"][0]["items"][-1]["id"]
        resp = await client.post(f"/api/items/{last}/dequeue", json={"reason": "out"})
        assert resp.status == 202
        for _ in range(600):
            if await queued() == len(CLASSIC_CHANGES) - 1:
                break
            await asyncio.sleep(0.1)
        body, fresh = await served_and_fresh(gate, client)
        assert body == fresh

        # the queue moves to its end: merges, a rejection, resets, generations
        (hold / "all").touch()
        await gate.wait_idle(300)
        body, fresh = await served_and_fresh(gate, client)
        assert body == fresh
        assert not json.loads(body)["queues"][0]["items"]

        # writes with no event, one at a time: a change, a build, a job run of a
        # finished item (each reaches its document by a different key)
        recent = json.loads(body)["queues"][0]["recent"]
        item = next(i for i in recent if i["jobs"] and i["build"])
        with session(gate.engine) as s:
            job = s.exec(
                select(JobRunRow).where(
                    JobRunRow.item_id == item["id"], JobRunRow.attempt == item["attempt"]
                )
            ).first()
            assert job is not None
        writes: list[tuple[type[Any], int | None, str]] = [
            (ChangeRow, item["change"]["id"], "title"),
            (BuildRow, item["build"]["id"], "reason"),
            (JobRunRow, job.id, "summary"),
        ]
        for model, row_id, column in writes:
            with session(gate.engine) as s:
                row = s.get(model, row_id)
                setattr(row, column, f"written: {model.__name__}")
                s.add(row)
                s.commit()
            body, fresh = await served_and_fresh(gate, client)
            assert body == fresh
            assert f'"written: {model.__name__}"'.encode() in body
        assert rows.full_reads == full_reads  # all of it from the rows read again

        # a bulk UPDATE (as gate.draft_gc makes): its rows are not known, all is read
        with session(gate.engine) as s:
            s.execute(
                update(BuildRow)
                .where(col(BuildRow.id) == item["build"]["id"])
                .values(reason="bulk")
            )
            s.commit()
        body, fresh = await served_and_fresh(gate, client)
        assert body == fresh and b'"reason": "bulk"' in body
        assert rows.full_reads == full_reads + 1
