"""The Forgejo source: captured payloads, webhook verification, the client against the fake.

The end-to-end scenarios with the real daemon are in tests/test_gate_forges.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict, CIMultiDictProxy

from gate.demo_world import World, git
from gate.events import RefUpdated, Refused, ReviewUpdated
from gate.merger import Merger
from gate.sources.base import SourceParts
from gate.sources.forgejo import connection
from gate.sources.forgejo.config import ForgejoConfig
from gate.sources.forgejo.source import ForgejoSource
from tests.conftest import NOVA_1201
from tests.fakeforgejo import FakeForgejo
from tests.test_source_github import Project

DATA = Path(__file__).parent / "data" / "forgejo"
SECRET = "forgejo-webhook-secret"
TOKEN = "fj-token"


def payload(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return doc


def headers_of(name: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(json.loads((DATA / f"{name}.headers.json").read_text())))


def source_for(
    projects: Mapping[str, Project],
    tmp_path: Path,
    url: str = "https://forge.fedoraproject.org",
    **cfg: Any,
) -> ForgejoSource:
    stored: list[tuple[str, str, dict[str, Any], str | None]] = []

    async def store(source: str, event_type: str, doc: dict[str, Any], key: str | None) -> bool:
        if key is not None and any(k == key for *_, k in stored):
            return False
        stored.append((source, event_type, doc, key))
        return True

    config = ForgejoConfig(url=url, token=TOKEN, webhook_secret=SECRET, **cfg)
    parts = SourceParts(projects=projects, merger=Merger(tmp_path / "merger"), store=store)
    source = ForgejoSource.create("fj", config, parts)
    source.stored = stored  # type: ignore[attr-defined]
    return source


ANSIBLE = {"ansible": Project("/x", "main", "infra/ansible")}


# -- captured payloads -------------------------------------------------------------------
def test_the_captured_headers_name_the_fine_grained_event_and_the_delivery() -> None:
    intake = connection.intake(headers_of("pr"))
    assert intake is not None
    assert intake.event == "pull_request_sync"
    assert intake.delivery == "f4b1fbff-9f0c-49ba-aac6-f27ee2c0e905"
    assert connection.intake(headers_of("pr_comment")).event == "pull_request_comment"  # type: ignore[union-attr]


def test_a_synchronized_pull_request_is_a_hint(tmp_path: Path) -> None:
    source = source_for(ANSIBLE, tmp_path)
    event = source.parse_event("forgejo.pull_request_sync", payload("pr"))
    assert event == ReviewUpdated(
        source="fj", project="ansible", review=str(payload("pr")["number"])
    )


def test_a_comment_from_someone_without_push_is_not_an_approval(tmp_path: Path) -> None:
    source = source_for(ANSIBLE, tmp_path, approval={"by": "command", "command": "/gate"})
    doc = payload("pr_comment")
    assert doc["repository"]["permissions"]["push"] is False  # the commenter's rights
    doc["comment"]["body"] = "/gate\n"
    assert source.parse_event("forgejo.pull_request_comment", doc) is None
    doc["repository"]["permissions"]["push"] = True
    event = source.parse_event("forgejo.pull_request_comment", doc)
    assert isinstance(event, ReviewUpdated)
    assert event.approved_revision == doc["pull_request"]["head"]["sha"]
    assert event.approved_by == doc["comment"]["user"]["login"]


def test_a_comment_that_is_not_the_command_is_nothing(tmp_path: Path) -> None:
    source = source_for(ANSIBLE, tmp_path, approval={"by": "command"})
    doc = payload("pr_comment")
    doc["repository"]["permissions"]["push"] = True
    assert source.parse_event("forgejo.pull_request_comment", doc) is None  # prose
    doc["comment"]["body"] = "/gate please"
    assert source.parse_event("forgejo.pull_request_comment", doc) is None
    reviews_only = source_for(ANSIBLE, tmp_path)
    doc["comment"]["body"] = "/gate"
    assert reviews_only.parse_event("forgejo.pull_request_comment", doc) is None


def test_a_push_to_the_branch_is_a_direct_push(tmp_path: Path) -> None:
    source = source_for({"docs": Project("/x", "main", "infra/docs")}, tmp_path)
    doc = payload("push")
    assert source.parse_event("forgejo.push", doc) == RefUpdated(
        project="docs", old=doc["before"], new=doc["after"]
    )
    doc["ref"] = "refs/tags/v1"
    assert source.parse_event("forgejo.push", doc) is None
    doc["ref"], doc["after"] = "refs/heads/main", "0" * 40
    assert source.parse_event("forgejo.push", doc) is None


def test_malformed_payloads_are_refused(tmp_path: Path) -> None:
    source = source_for(ANSIBLE, tmp_path)
    for doc in ({}, {"action": "synchronized"}, {"action": "synchronized", "pull_request": 3}):
        with pytest.raises(Refused):
            source.parse_event("forgejo.pull_request_sync", doc)


def test_config_defaults_and_depends_on_urls(tmp_path: Path) -> None:
    cfg = ForgejoConfig(url="https://forge.example/", token="t", webhook_secret="s")
    assert cfg.api_url == "https://forge.example/api/v1"
    with pytest.raises(ValueError, match="maintain"):
        ForgejoConfig(
            url="https://f.example",
            token="t",
            webhook_secret="s",
            approval={"permission": "maintain"},
        )
    source = source_for(ANSIBLE, tmp_path)
    assert source.review_for_url("https://forge.fedoraproject.org/infra/ansible/pulls/12") == (
        "ansible",
        "12",
    )
    assert source.review_for_url("https://forge.fedoraproject.org/infra/ansible/pull/12") is None


# -- webhook verification ----------------------------------------------------------------
@pytest.fixture
async def endpoint(
    tmp_path: Path, aiohttp_client: Any
) -> AsyncIterator[tuple[ForgejoSource, TestClient]]:
    source = source_for(ANSIBLE, tmp_path)
    app = web.Application()
    app.add_routes(source.routes())
    yield source, await aiohttp_client(app)
    await source.close()


async def post(client: TestClient, body: bytes, headers: Mapping[str, str]) -> int:
    answer = await client.post("/api/sources/fj/webhook", data=body, headers=dict(headers))
    return answer.status


async def test_forgejo_and_gitea_signatures_are_accepted_and_a_redelivery_stored_once(
    endpoint: tuple[ForgejoSource, TestClient],
) -> None:
    source, client = endpoint
    fake = FakeForgejo(SECRET, {})
    body = json.dumps(payload("pr")).encode()
    headers = dict(headers_of("pr"))
    headers["x-forgejo-signature"] = fake.sign(body)
    headers["x-gitea-signature"] = fake.sign(body)
    assert await post(client, body, headers) == 202
    assert await post(client, body, headers) == 200
    gitea = {k: v for k, v in headers.items() if not k.startswith("x-forgejo")}
    gitea["x-gitea-delivery"] = "another"
    assert await post(client, body, gitea) == 202
    stored = source.stored  # type: ignore[attr-defined]
    assert [(t, k) for _, t, _, k in stored] == [
        ("forgejo.pull_request_sync", "f4b1fbff-9f0c-49ba-aac6-f27ee2c0e905"),
        ("forgejo.pull_request_sync", "another"),
    ]


async def test_the_captured_signature_made_with_another_secret_is_refused(
    endpoint: tuple[ForgejoSource, TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    source, client = endpoint
    body = json.dumps(payload("pr"), indent=2).encode()
    headers = headers_of("pr")
    with caplog.at_level(logging.WARNING):
        assert await post(client, body, headers) == 403
        assert (
            await post(
                client, body, {k: v for k, v in headers.items() if "signature" not in k.lower()}
            )
            == 401
        )
        prefixed = dict(
            headers, **{"x-forgejo-signature": "sha256=" + FakeForgejo(SECRET, {}).sign(body)}
        )
        assert await post(client, body, prefixed) == 403  # Forgejo's header has no prefix
    assert source.stored == []  # type: ignore[attr-defined]
    assert "fj: webhook from 127.0.0.1 refused" in caplog.text
    assert SECRET not in caplog.text and headers["x-forgejo-signature"] not in caplog.text


# -- the client against the fake ---------------------------------------------------------
@pytest.fixture
async def forgejo(world: World) -> AsyncIterator[FakeForgejo]:
    fake = FakeForgejo(SECRET, {TOKEN: "rpmgate-bot"})
    await fake.start()
    fake.add_repo(
        "rpms/nova",
        world.remote("nova"),
        {"rpmgate-bot": "admin", "alice": "write", "mallory": "read"},
    )
    yield fake
    await fake.stop()


def nova_source(fake: FakeForgejo, world: World, tmp_path: Path, **cfg: Any) -> ForgejoSource:
    projects = {"nova": Project(str(world.remote("nova")), "main", "rpms/nova")}
    return source_for(projects, tmp_path, url=fake.url, **cfg)


async def open_nova(fake: FakeForgejo, world: World) -> int:
    ref = world.propose("nova", NOVA_1201, "Update to 12.0.1")
    sha = git(world.remote("nova"), "rev-parse", ref)
    return (await fake.open_pull("rpms/nova", sha, user="packager", title="nova 12.0.1")).number


async def test_reviews_approve_and_a_dismissal_withdraws(
    forgejo: FakeForgejo, world: World, tmp_path: Path
) -> None:
    source = nova_source(forgejo, world, tmp_path)
    number = await open_nova(forgejo, world)
    review = await source.read_review("nova", str(number))
    assert review.approved is False and review.url == f"{forgejo.url}/rpms/nova/pulls/{number}"
    await forgejo.review("rpms/nova", number, "mallory")
    assert (await source.read_review("nova", str(number))).approved is False
    await forgejo.review("rpms/nova", number, "alice")
    assert (await source.read_review("nova", str(number))).approved is True
    await forgejo.dismiss("rpms/nova", number, "alice")
    assert (await source.read_review("nova", str(number))).approved is False
    await forgejo.review("rpms/nova", number, "alice", "REQUEST_CHANGES")
    assert "changes requested by alice" in (await source.read_review("nova", str(number))).why_not
    await source.close()


async def test_without_repository_admin_the_permission_call_is_refused(
    forgejo: FakeForgejo, world: World, tmp_path: Path
) -> None:
    forgejo.repos["rpms/nova"].modes["rpmgate-bot"] = "write"
    source = nova_source(forgejo, world, tmp_path)
    number = await open_nova(forgejo, world)
    await forgejo.review("rpms/nova", number, "alice")
    with pytest.raises(Refused, match="403 Only admins can query"):  # the delivery says so
        await source.read_review("nova", str(number))
    await source.close()


async def test_merge_reads_the_merge_commit_back_and_is_safe_to_repeat(
    forgejo: FakeForgejo, world: World, tmp_path: Path
) -> None:
    source = nova_source(forgejo, world, tmp_path)
    number = await open_nova(forgejo, world)
    await forgejo.review("rpms/nova", number, "alice")
    review = await source.read_review("nova", str(number))
    before = world.branch_head("nova")
    outcome = await source.merge("nova", "0" * 40, review)
    assert outcome.ok and outcome.head == world.branch_head("nova") != before
    assert (await source.merge("nova", "0" * 40, review)).head == outcome.head
    (call,) = [c for c in forgejo.calls if c[0] == "POST" and c[1].endswith("/merge")]
    assert call[2] == {"Do": "merge", "head_commit_id": review.revision}
    await source.close()


async def test_merge_is_refused_when_the_head_moved(
    forgejo: FakeForgejo, world: World, tmp_path: Path
) -> None:
    source = nova_source(forgejo, world, tmp_path)
    number = await open_nova(forgejo, world)
    pr = await source.pull("rpms/nova", number)
    await forgejo.push_to_pull("rpms/nova", number, world.branch_head("nova"))
    refused = await connection.merge(source.api, "rpms/nova", pr, "merge")
    assert refused is not None and "head out of date" in refused
    await source.close()
