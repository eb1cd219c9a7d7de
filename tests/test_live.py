"""Live updates: ``/api/events`` (Server-Sent Events, resumed by Last-Event-ID) and the
status document's ETag, against a served gate running a real change."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from typing import Any

import pytest
from aiohttp import ClientResponse

from gate.demo_world import World
from gate.web.app import LIVE, STATUS
from gate.web.live import EventStream, StatusCache
from gate.web.status import status
from repo_state.db import session
from repo_state.models import ChangeRow, Delivery, utcnow
from tests.conftest import NOVA_1201
from tests.served import ClientFactory, served
from tests.test_web_api import propose

Frame = dict[str, Any]


async def next_frame(resp: ClientResponse, timeout: float = 60) -> Frame:
    """The next event of the stream (comments and ``retry:`` skipped)."""
    frame: Frame = {}
    async with asyncio.timeout(timeout):
        while True:
            line = (await resp.content.readline()).decode()
            if line in ("\n", ""):
                if "event" in frame or line == "":
                    return frame
                continue
            field, _, value = line.rstrip("\n").partition(": ")
            if field in ("id", "event"):
                frame[field] = value
            elif field == "data":
                frame["data"] = json.loads(value)


def test_a_reconnect_resumes_after_its_last_event_or_is_told_to_reset() -> None:
    stream = EventStream(keep=3)
    assert stream.resume(None) == (0, False)
    for n in range(5):
        stream.publish({"topic": "item", "n": n})
    assert stream.resume(None) == (5, False)  # from now
    assert stream.resume(f"{stream.epoch}-4") == (4, False)
    assert stream.resume(f"{stream.epoch}-2") == (2, False)  # 3..5 still kept
    assert stream.resume(f"{stream.epoch}-1") == (5, True)  # 2 is gone
    assert stream.resume(f"{stream.epoch}-9") == (5, True)  # not yet: another process
    assert stream.resume("1234-4") == (5, True)  # another process's
    assert stream.resume("garbage\r\nevent: x") == (5, True)
    frames, last = stream.after(4)
    assert last == 5 and len(frames) == 1 and b'"n": 4' in frames[0]
    frames, _ = stream.after(0)  # fell behind what is kept: reset first
    assert frames[0].startswith(b"event: reset")


@pytest.mark.slow
async def test_events_stream_a_change_and_resume_from_the_last_event_id(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with served(world, aiohttp_client) as (gate, client):
        resp = await client.get("/api/events")
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        await propose(client, world, "nova", NOVA_1201, "A")
        seen: list[Frame] = []
        while not any(f["event"] == "generation" for f in seen):
            seen.append(await next_frame(resp))
        resp.close()
        topics = {f["event"] for f in seen}
        assert {"delivery", "change", "item", "build", "job", "generation"} <= topics
        ids = [int(f["id"].rsplit("-", 1)[1]) for f in seen]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        await gate.wait_idle(60)

        # a reconnect gets what came after its last event, at once
        middle = seen[len(seen) // 2]
        again = await client.get("/api/events", headers={"Last-Event-ID": middle["id"]})
        replayed = await next_frame(again, timeout=5)
        assert replayed["id"] == seen[len(seen) // 2 + 1]["id"]
        again.close()

        # an id of another process (a restart) or garbage: read the status again
        stale = await client.get("/api/events", headers={"Last-Event-ID": "17-3"})
        assert (await next_frame(stale, timeout=5))["event"] == "reset"
        stale.close()


@pytest.mark.slow
async def test_status_has_an_etag_and_answers_304_until_the_state_changes(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with served(world, aiohttp_client) as (gate, client):
        first = await client.get("/api/status")  # aiohttp's client accepts gzip
        assert first.headers["Content-Encoding"] == "gzip"
        etag = first.headers["ETag"]
        body = await first.json()
        plain = await client.get("/api/status", headers={"Accept-Encoding": "identity"})
        assert "Content-Encoding" not in plain.headers
        assert plain.headers["ETag"] == etag and await plain.json() == body
        same = await client.get("/api/status", headers={"If-None-Match": etag})
        assert same.status == 304 and same.headers["ETag"] == etag
        assert (await client.get("/api/status", headers={"If-None-Match": '"x", *'})).status == 304

        await propose(client, world, "nova", NOVA_1201, "A")
        await gate.wait_idle(120)
        changed = await client.get("/api/status", headers={"If-None-Match": etag})
        assert changed.status == 200
        assert changed.headers["ETag"] != etag
        assert (await changed.json())["queues"][0]["recent"] != body["queues"][0]["recent"]


async def test_a_status_request_never_gets_a_document_older_than_its_state() -> None:
    """A build under way at version 1 is not the answer to a request made at version 2:
    that request waits for a build of its own; requests at one version share one build."""
    cache = StatusCache()
    release = threading.Event()
    started = threading.Event()
    state = {"items": 1}

    def build() -> dict[str, Any]:
        seen = dict(state)  # what the database said when the build read it
        started.set()
        release.wait(10)
        return seen

    first = asyncio.ensure_future(cache.current(1, build))
    await asyncio.to_thread(started.wait, 10)
    state["items"] = 2  # an event: the state moved on while version 1 was being built
    later = [asyncio.ensure_future(cache.current(2, build)) for _ in range(3)]
    await asyncio.sleep(0.05)
    release.set()
    old = await first
    new = await asyncio.gather(*later)
    assert json.loads(old.body) == {"items": 1}
    assert [json.loads(r.body) for r in new] == [{"items": 2}] * 3
    assert {r.etag for r in new} == {new[0].etag} != {old.etag}
    assert gzip.decompress(new[0].gzipped) == new[0].body
    assert cache.builds == 2  # the three requests at version 2 shared one build
    assert (await cache.current(2, build)) is new[0]  # and it is kept until the next change


@pytest.mark.slow
async def test_status_follows_a_database_write_made_without_an_event(
    world: World, aiohttp_client: ClientFactory
) -> None:
    """The cached document is keyed on commits as well as events: a write that emits
    nothing (a build's task id, a job row) shows at the next request, never later."""
    async with served(world, aiohttp_client) as (gate, client):
        first = await client.get("/api/status")
        etag, body = first.headers["ETag"], await first.json()
        recent = body["queues"][0]["recent"]
        assert recent, "the bootstrap's post items are the queue's recent results"
        change_id = recent[0]["change"]["id"]
        seq = client.app[LIVE].seq
        builds = client.app[STATUS].builds
        # a commit of a table the document does not read leaves it as it is
        with session(gate.engine) as s:
            s.add(
                Delivery(
                    source="api",
                    event_type="bench.unknown",
                    delivery_key="not-in-the-document",
                    payload="{}",
                    processed_at=utcnow(),
                )
            )
            s.commit()
        same = await client.get("/api/status", headers={"If-None-Match": etag})
        assert same.status == 304 and client.app[STATUS].builds == builds
        with session(gate.engine) as s:
            change = s.get(ChangeRow, change_id)
            assert change is not None
            change.title = "retitled without an event"
            s.add(change)
            s.commit()
        assert client.app[LIVE].seq == seq  # no event was emitted
        changed = await client.get("/api/status", headers={"If-None-Match": etag})
        assert changed.status == 200 and changed.headers["ETag"] != etag
        served_doc = await changed.json()
        titles = {i["change"]["title"] for i in served_doc["queues"][0]["recent"]}
        assert "retitled without an event" in titles
        # what the app serves (item documents reused where no row changed) is what a
        # fresh reading of the database makes
        with session(gate.engine) as s:
            assert served_doc == json.loads(json.dumps(status(gate.runtime, s)))
        again = await client.get("/api/status", headers={"If-None-Match": changed.headers["ETag"]})
        assert again.status == 304
