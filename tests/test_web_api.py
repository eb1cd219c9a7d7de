"""The HTTP API against a real gate on a real demo world (git, rpmbuild, createrepo_c, SQLite)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlmodel import select
from yarl import URL

from gate.daemon import Gate
from gate.deliveries import store_delivery
from gate.demo_world import PackageSpec, World
from repo_state.db import make_engine, session
from repo_state.models import ChangeRow, Delivery, ItemRow
from tests.conftest import CEILO_801, NOVA_1201
from tests.invariants import check_invariants
from tests.served import ClientFactory, served

pytestmark = pytest.mark.slow

TOKEN = "s3cret-token-0123456789"
HORIZON_902 = PackageSpec("horizon", "9.0.2", requires=("python-django-compat",))
DJANGO_182 = PackageSpec("python-django", "1.8.2", provides=("python-django-compat",))


def held_queue(world: World, hold: Path) -> dict[str, Any]:
    """The demo queue plus a job that runs until ``hold/all`` or ``hold/<item id>`` exists.

    It keeps items under test for as long as a test needs to look at them.
    """
    hold.mkdir(parents=True, exist_ok=True)
    for bootstrap in range(1, len(world.projects) + 1):  # post items 1..N: never held
        release(hold, bootstrap)
    queues = world.config()["queues"]
    queues["liberty"]["jobs"] = [
        "repoclosure",
        {
            "name": "hold",
            "timeout": 300,
            "env": {"HOLD_DIR": str(hold)},
            "command": 'until [ -e "$HOLD_DIR/all" ] || [ -e "$HOLD_DIR/$RPMGATE_ITEM" ]; '
            "do sleep 0.05; done",
        },
    ]
    return queues


def release(hold: Path, what: int | str = "all") -> None:
    (hold / str(what)).touch()


async def eventually(
    probe: Callable[[], Awaitable[Any]], timeout: float = 120, what: str = "condition"
) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def json_of(client: TestClient, path: str, status: int = 200) -> Any:
    resp = await client.get(path)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def propose(
    client: TestClient,
    world: World,
    project: str,
    spec: PackageSpec,
    title: str,
    approve: bool = True,
    **headers: str,
) -> dict[str, Any]:
    ref = world.propose(project, spec, title)
    resp = await client.post(
        "/api/changes",
        json={"project": project, "ref": ref, "title": title, "approve": approve},
        headers=headers,
    )
    assert resp.status == 202, await resp.text()
    return await resp.json()


async def processed(client: TestClient, delivery: int) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        doc = await json_of(client, f"/api/deliveries/{delivery}")
        return doc if doc["state"] != "pending" else None

    return await eventually(probe, what=f"delivery {delivery}")


async def items(client: TestClient) -> list[dict[str, Any]]:
    return (await json_of(client, "/api/status"))["queues"][0]["items"]


async def item_titled(client: TestClient, title: str, state: str | None = None) -> dict[str, Any]:
    """Wait for the queued item of change ``title`` (in ``state``, if given)."""

    async def probe() -> dict[str, Any] | None:
        for item in await items(client):
            if item["change"]["title"] == title and state in (None, item["state"]):
                return item
        return None

    return await eventually(probe, what=f"item {title} in state {state}")


def path_of(url: str) -> str:
    """Status URLs carry the configured public address; the test server is elsewhere."""
    return URL(url).path


def delivery_count(gate: Gate) -> int:
    with session(gate.engine) as s:
        return len(s.exec(select(Delivery.id)).all())


# -- the change API ------------------------------------------------------------------------
async def test_proposal_is_committed_before_202_and_the_loop_creates_the_change(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with served(world, aiohttp_client) as (gate, client):
        ref = world.propose("nova", NOVA_1201, "A")
        resp = await client.post("/api/changes", json={"project": "nova", "ref": ref, "title": "A"})
        assert resp.status == 202
        body = await resp.json()
        delivery_id = body["delivery"]
        assert body["status_url"] == f"http://127.0.0.1:0/api/deliveries/{delivery_id}"

        # Another connection sees the row the moment the answer arrives: it was committed.
        other = make_engine(gate.config.db_url)
        try:
            with session(other) as s:
                row = s.get(Delivery, delivery_id)
        finally:
            other.dispose()
        assert row is not None
        assert (row.source, row.event_type) == ("api", "change.proposed")
        assert '"ref": "' + ref + '"' in row.payload

        done = await processed(client, delivery_id)
        assert done["state"] == "processed" and done["error"] is None
        change_id = int(done["result"].removeprefix("change "))
        change = await json_of(client, f"/api/changes/{change_id}")
        assert (change["project"], change["ref"], change["title"]) == ("nova", ref, "A")
        assert change["state"] == "proposed" and change["items"] == []

        resp = await client.post(f"/api/changes/{change_id}/approve", json={})
        assert resp.status == 202
        await gate.wait_idle(120)
        change = await json_of(client, f"/api/changes/{change_id}")
        assert change["state"] == "merged"
        assert [i["result"] for i in change["items"]] == ["merged"]
        check_invariants(gate)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body is not valid JSON"),
        (b"[1, 2]", "body must be a JSON object"),
        (b'"nova"', "body must be a JSON object"),
        (b'{"project": "nova"}', "ref: Field required"),
        (b'{"project": "nova", "ref": ""}', "ref: String should have at least 1 character"),
        (b'{"project": "nova", "ref": 12}', "ref: Input should be a valid string"),
        (b'{"ref": "refs/heads/main"}', "project: Field required"),
    ],
)
async def test_malformed_proposals_are_refused_with_400_and_not_stored(
    world: World, aiohttp_client: ClientFactory, body: bytes, message: str
) -> None:
    async with served(world, aiohttp_client, start=False) as (gate, client):
        resp = await client.post(
            "/api/changes", data=body, headers={"Content-Type": "application/json"}
        )
        assert resp.status == 400
        assert message in (await resp.json())["error"]
        assert delivery_count(gate) == 0


async def test_unknown_project_is_404_and_not_stored(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with served(world, aiohttp_client, start=False) as (gate, client):
        resp = await client.post("/api/changes", json={"project": "glance", "ref": "refs/heads/x"})
        assert resp.status == 404
        assert (await resp.json())["error"] == "unknown project 'glance'"
        resp = await client.post("/api/changes/999/approve", json={})
        assert resp.status == 404
        resp = await client.post("/api/items/999/dequeue", json={})
        assert resp.status == 404
        resp = await client.post("/api/repos/mitaka/rollback", json={"to": 1})
        assert resp.status == 404
        assert delivery_count(gate) == 0


async def test_repeated_idempotency_key_answers_with_the_stored_delivery(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with served(world, aiohttp_client, start=False) as (gate, client):
        ref = world.propose("nova", NOVA_1201, "A")
        body = {"project": "nova", "ref": ref, "title": "A"}
        headers = {"Idempotency-Key": "review-42-ps-1"}

        first = await client.post("/api/changes", json=body, headers=headers)
        again = await client.post("/api/changes", json=body, headers=headers)
        other = await client.post(
            "/api/changes", json=body, headers={"Idempotency-Key": "review-42-ps-2"}
        )

        assert first.status == 202
        assert again.status == 200
        assert other.status == 202
        first_id = (await first.json())["delivery"]
        assert (await again.json())["delivery"] == first_id
        assert (await other.json())["delivery"] != first_id
        with session(gate.engine) as s:
            rows = s.exec(
                select(Delivery).where(
                    Delivery.delivery_key == "api:change.proposed:review-42-ps-1"
                )
            ).all()
        assert [r.id for r in rows] == [first_id]
        assert delivery_count(gate) == 2


# -- authentication ------------------------------------------------------------------------
async def test_tokens_guard_writes_and_leave_reads_open(
    world: World, aiohttp_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = {"api_tokens": ["another-token-abcdefgh", TOKEN]}
    async with served(world, aiohttp_client, auth=tokens) as (gate, client):
        ref = world.propose("nova", NOVA_1201, "A")
        body = {"project": "nova", "ref": ref, "title": "A", "approve": False}
        caplog.set_level(logging.WARNING, logger="gate.web.app")

        for headers in (
            {},
            {"Authorization": "Bearer wrong-token"},
            {"Authorization": TOKEN},
            {"Authorization": f"Token {TOKEN}"},
            {"Authorization": "Bearer "},
        ):
            resp = await client.post("/api/changes", json=body, headers=headers)
            assert resp.status == 401, headers
            assert (await resp.json())["error"] == "a valid bearer token is required"
        refusals = [r for r in caplog.records if "refused POST /api/changes" in r.getMessage()]
        assert len(refusals) == 5
        assert all("missing or bad token" in r.getMessage() for r in refusals)
        assert "wrong-token" not in caplog.text and TOKEN not in caplog.text
        resp = await client.post("/api/items/1/dequeue", json={})
        assert resp.status == 401  # refused before it is even looked up
        assert delivery_count(gate) == 0

        resp = await client.post(
            "/api/changes", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert resp.status == 202
        assert delivery_count(gate) == 1

        for path in (
            "/api/status",
            "/api/repos/liberty",
            "/healthz",
            f"/api/deliveries/{(await resp.json())['delivery']}",
        ):
            assert (await client.get(path)).status == 200, path


# -- deliveries and health -------------------------------------------------------------------
async def test_deliveries_go_pending_to_processed_and_unknown_types_are_kept_as_errors(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with served(world, aiohttp_client, start=False) as (gate, client):
        health = await client.get("/healthz")
        assert health.status == 503  # the loop has not run yet
        assert (await health.json())["database"] is True

        proposal = await propose(client, world, "nova", NOVA_1201, "A", approve=False)
        unknown, created = store_delivery(
            gate, "api", "frobnicate.happened", {"what": "something new"}, None
        )
        assert created
        # a pushed commit is merged already: dequeuing its post item is refused
        post_item = await gate.polling.poll_project("nova")
        assert post_item is not None
        resp = await client.post(f"/api/items/{post_item}/dequeue", json={"reason": "oops"})
        assert resp.status == 202
        refused = (await resp.json())["delivery"]

        for delivery in (proposal["delivery"], unknown.id, refused):
            doc = await json_of(client, f"/api/deliveries/{delivery}")
            assert doc["state"] == "pending", doc
            assert doc["result"] is None and doc["error"] is None

        await gate.start()
        await gate.wait_idle(120)

        doc = await json_of(client, f"/api/deliveries/{proposal['delivery']}")
        assert doc["state"] == "processed"
        assert doc["event_type"] == "change.proposed"
        assert doc["result"].startswith("change ")
        doc = await json_of(client, f"/api/deliveries/{unknown.id}")
        assert doc == {
            "id": unknown.id,
            "event_type": "frobnicate.happened",
            "state": "error",
            "result": None,
            "error": "unknown event type 'frobnicate.happened'",
            "requested_by": None,
        }
        doc = await json_of(client, f"/api/deliveries/{refused}")
        assert doc["state"] == "error"
        assert doc["error"] == f"item {post_item} is merged already; it can only be published"
        with session(gate.engine) as s:
            kept = s.get(Delivery, unknown.id)
            assert kept is not None and kept.payload == '{"what": "something new"}'
            assert s.get(ItemRow, post_item).result == "merged"

        health = await client.get("/healthz")
        assert health.status == 200
        doc = await health.json()
        assert doc["ok"] is True and doc["database"] is True
        assert 0 <= doc["loop_age_seconds"] < 120
        assert (await client.get("/api/deliveries/424242")).status == 404
        assert (await client.get("/api/deliveries/nope")).status == 404


# -- status, speculative repos, admin --------------------------------------------------------
async def test_status_document_and_served_speculative_repo_while_waiting_for_the_tip(
    world: World, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    async with served(world, aiohttp_client, queues=held_queue(world, hold)) as (gate, client):
        await propose(client, world, "nova", NOVA_1201, "A")
        await propose(client, world, "ceilometer", CEILO_801, "B")
        a = await item_titled(client, "A", "testing")
        b = await item_titled(client, "B", "testing")
        release(hold, b["id"])
        # (its final build is made ahead of the tip, as a draft, by the local backend)
        b = await item_titled(client, "B", "passed, draft built, waiting for the tip")

        doc = await json_of(client, "/api/status")
        (queue,) = doc["queues"]
        assert queue["name"] == "liberty" and queue["repo"] == "liberty"
        assert queue["projects"] == ["nova", "ceilometer", "horizon", "python-django"]
        assert queue["generation"] == 1 and queue["window"] == 20
        assert [r["kind"] for r in queue["recent"]] == ["post"] * 4  # the bootstrap
        a, b = queue["items"]
        assert (a["position"], b["position"]) == (0, 1)
        assert (a["change"]["title"], b["change"]["title"]) == ("A", "B")
        assert (a["change"]["project"], a["change"]["state"]) == ("nova", "queued")
        assert a["state"] == "testing"
        assert a["base"] == {"generation": 1, "ahead": []}
        assert b["base"] == {"generation": 1, "ahead": [a["id"]]}
        assert a["failure"] is None and b["failure"] is None
        assert a["tip"] == {"step": "none", "state": "none"}
        for item, nvr in ((a, "nova-12.0.1-1"), (b, "ceilometer-8.0.1-1")):
            build = item["build"]
            assert (build["purpose"], build["state"], build["nvr"]) == ("scratch", "passed", nvr)
            log = await client.get(path_of(build["log_url"]))
            assert log.status == 200, build["log_url"]
        # each job's row is finished when that job ends: A's repoclosure is done
        # while its hold job still runs
        for _ in range(300):
            a = next(
                i
                for i in (await json_of(client, "/api/status"))["queues"][0]["items"]
                if i["id"] == a["id"]
            )
            if {j["name"]: j["state"] for j in a["jobs"]}["repoclosure"] != "running":
                break
            await asyncio.sleep(0.1)
        assert {j["name"]: j["state"] for j in a["jobs"]} == {
            "repoclosure": "passed",
            "hold": "running",
        }
        assert {j["name"]: j["state"] for j in b["jobs"]} == {
            "repoclosure": "passed",
            "hold": "passed",
        }
        for job in b["jobs"]:
            assert job["summary"]
            assert (await client.get(path_of(job["log_url"]))).status == 200, job["log_url"]

        # B's speculative repo: published generation + A's scratch build + B's own
        spec_url = b["speculative_repo"]
        assert spec_url == f"http://127.0.0.1:0/speculative/{b['id']}-{b['attempt']}/"
        repomd = await client.get(path_of(spec_url) + "x86_64/repodata/repomd.xml")
        assert repomd.status == 200
        assert "<repomd" in await repomd.text()
        listing = await (await client.get(path_of(spec_url) + "x86_64/Packages/c/")).text()
        assert "ceilometer-8.0.1-1.noarch.rpm" in listing
        listing = await (await client.get(path_of(spec_url) + "x86_64/Packages/n/")).text()
        assert "nova-12.0.1-1.noarch.rpm" in listing
        for method in ("PUT", "POST", "DELETE"):
            resp = await client.request(
                method, path_of(spec_url) + "x86_64/repodata/repomd.xml", data=b"x"
            )
            assert resp.status == 405, method

        release(hold)
        await gate.wait_idle(180)
        check_invariants(gate)


async def test_admin_dequeues_a_queued_item_and_refuses_a_merged_one(
    world: World, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    async with served(world, aiohttp_client, queues=held_queue(world, hold)) as (gate, client):
        await propose(client, world, "nova", NOVA_1201, "A")
        await propose(client, world, "horizon", HORIZON_902, "H")
        a = await item_titled(client, "A", "testing")
        h = await item_titled(client, "H", "testing")

        resp = await client.post(f"/api/items/{h['id']}/dequeue", json={"reason": "wrong branch"})
        assert resp.status == 202
        doc = await processed(client, (await resp.json())["delivery"])
        assert (doc["state"], doc["result"]) == ("processed", f"item {h['id']} dequeued")
        assert [i["id"] for i in await items(client)] == [a["id"]]
        change = await json_of(client, f"/api/changes/{h['change']['id']}")
        assert change["state"] == "dequeued" and change["reason"] == "wrong branch"
        assert change["items"][0]["result"] == "dequeued"

        release(hold)
        await gate.wait_idle(180)
        resp = await client.post(f"/api/items/{a['id']}/dequeue", json={})
        assert resp.status == 404
        assert (await resp.json())["error"] == f"item {a['id']} is not in a queue"
        change = await json_of(client, f"/api/changes/{a['change']['id']}")
        assert change["state"] == "merged"
        repo = await json_of(client, "/api/repos/liberty")
        assert repo["current"]["builds"]["horizon"] == "horizon-9.0.0-1"
        check_invariants(gate)


async def test_rollback_publishes_old_content_as_a_new_generation_and_resets_items_under_test(
    world: World, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    async with served(world, aiohttp_client, queues=held_queue(world, hold)) as (gate, client):
        release(hold)
        proposal = await propose(client, world, "nova", NOVA_1201, "A")
        await gate.wait_idle(180)
        a_change = (await processed(client, proposal["delivery"]))["result"].split()[1]
        (a,) = (await json_of(client, f"/api/changes/{a_change}"))["items"]
        (hold / "all").unlink()
        repo = await json_of(client, "/api/repos/liberty")
        assert repo["current"]["number"] == 2
        assert repo["current"]["builds"]["nova"] == "nova-12.0.1-1"

        await propose(client, world, "ceilometer", CEILO_801, "B")
        b = await item_titled(client, "B", "testing")
        assert (b["attempt"], b["base"]) == (1, {"generation": 2, "ahead": []})

        resp = await client.post("/api/repos/liberty/rollback", json={"reason": "bad nova"})
        assert resp.status == 400  # 'to' is required
        resp = await client.post(
            "/api/repos/liberty/rollback", json={"to": 1, "reason": "bad nova"}
        )
        assert resp.status == 202
        doc = await processed(client, (await resp.json())["delivery"])
        assert (doc["state"], doc["result"]) == ("processed", "liberty generation 3 (rollback)")

        repo = await json_of(client, "/api/repos/liberty")
        assert repo["name"] == "liberty"
        assert repo["current"]["number"] == 3
        assert repo["current"]["builds"] == {
            "nova": "nova-12.0.0-1",
            "ceilometer": "ceilometer-8.0.0-1",
            "horizon": "horizon-9.0.0-1",
            "python-django": "python-django-1.8.0-1",
        }
        assert repo["current"]["produced_by"]["kind"] == "rollback"
        assert repo["current"]["produced_by"]["reason"] == "bad nova"
        assert repo["current"]["packages"] == [
            "ceilometer-0:8.0.0-1.noarch",
            "horizon-0:9.0.0-1.noarch",
            "nova-0:12.0.0-1.noarch",
            "python-django-0:1.8.0-1.noarch",
        ]
        assert repo["kept"] == [1, 2, 3]
        assert [(g["number"], g["kind"], g["package_count"]) for g in repo["history"]] == [
            (3, "rollback", 4),
            (2, "gate", 4),
            (1, "post", 4),
        ]
        assert repo["history"][0]["items"] == []
        assert repo["history"][1]["items"] == [a["id"]]

        # B was tested on generation 2; it is reset onto generation 3
        b = await item_titled(client, "B")
        await eventually(lambda: _attempt_on(client, b["id"], 3), what="B reset onto gen 3")
        release(hold)
        await gate.wait_idle(180)
        change = await json_of(client, f"/api/changes/{b['change']['id']}")
        assert change["state"] == "rejected"
        assert change["items"][0]["attempt"] >= 2
        assert change["reason"] == (
            "repoclosure: 1 unresolved dependency: "
            "ceilometer-8.0.1-1.noarch requires nova >= 12.0.1"
        )
        check_invariants(gate)


async def _attempt_on(client: TestClient, item_id: int, generation: int) -> bool:
    for item in await items(client):
        if item["id"] == item_id:
            return item["attempt"] >= 2 and (item["base"] or {}).get("generation") == generation
    return False


async def test_promote_moves_an_item_to_the_head_and_it_publishes_first(
    world: World, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    async with served(world, aiohttp_client, queues=held_queue(world, hold)) as (gate, client):
        await propose(client, world, "horizon", HORIZON_902, "H")
        await propose(client, world, "python-django", DJANGO_182, "D")
        h = await item_titled(client, "H", "testing")
        d = await item_titled(client, "D", "testing")
        assert [i["id"] for i in await items(client)] == [h["id"], d["id"]]

        resp = await client.post(f"/api/items/{d['id']}/promote", json={"reason": "security"})
        assert resp.status == 202
        doc = await processed(client, (await resp.json())["delivery"])
        assert doc["result"] == f"item {d['id']} promoted"

        queue = await items(client)
        assert [(i["id"], i["position"]) for i in queue] == [(d["id"], 0), (h["id"], 1)]
        d = await item_titled(client, "D", "testing")
        assert d["base"] == {"generation": 1, "ahead": []}
        h = await item_titled(client, "H", "testing")
        assert h["base"] == {"generation": 1, "ahead": [d["id"]]}

        release(hold)
        await gate.wait_idle(180)
        with session(gate.engine) as s:
            generation = {
                s.get(ChangeRow, i.change_id).title: i.generation
                for i in s.exec(select(ItemRow).where(ItemRow.kind == "gate"))
            }
        assert generation == {"D": 2, "H": 3}
        check_invariants(gate)
