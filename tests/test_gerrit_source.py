"""GerritSource's pure parts: captured events to the gate's hints, Depends-On URLs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from gate.config import ProjectConfig
from gate.events import RefUpdated, Refused, ReviewUpdated
from gate.merger import Merger
from gate.sources.base import SourceParts
from gate.sources.gerrit.config import GerritConfig, WebhookConfig
from gate.sources.gerrit.source import GerritSource

DATA = Path(__file__).parent / "data" / "gerrit"
URL = "https://review.example.org/r"


def source(tmp_path: Path, **projects: ProjectConfig) -> GerritSource:
    config = GerritConfig(url=URL, webhook=WebhookConfig(token=SecretStr("t" * 32)))
    parts = SourceParts(projects=projects, merger=Merger(tmp_path))
    return GerritSource.create("rdo", config, parts)


def captured(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line]


def test_captured_webhook_events_become_hints_for_gated_branches(tmp_path: Path) -> None:
    gerrit = source(tmp_path, repo=ProjectConfig(git="/x", name="TestRepo", branch="test_branch"))
    seen = [
        (e["type"], gerrit.parse_event(f"gerrit.{e['type']}", e))
        for e in captured("webhooks-cdevents.jsonl")
    ]
    assert seen == [
        ("project-created", None),
        ("ref-updated", None),  # refs/meta/config
        (
            "ref-updated",
            RefUpdated(
                project="repo", old="0" * 40, new="0c8c548ca93b44dd501c000ebb79ecc8f9aa4bd6"
            ),
        ),
        ("ref-updated", None),  # the branch deleted
        ("patchset-created", None),  # TestRepo1: not gated here
        ("ref-updated", None),  # refs/changes/02/2/1: patchset-created says it
        ("comment-added", ReviewUpdated(source="rdo", project="repo", review="1")),
        ("ref-updated", None),  # refs/changes/01/1/meta
        ("change-merged", ReviewUpdated(source="rdo", project="repo", review="1")),
        ("change-abandoned", ReviewUpdated(source="rdo", project="repo", review="21")),
        ("patchset-created", None),
    ]


def test_captured_stream_events_of_another_branch_are_not_ours(tmp_path: Path) -> None:
    nova = ProjectConfig(git="/x", name="openstack/nova", branch="rpm-master")
    gerrit = source(tmp_path, nova=nova)
    events = captured("stream-events-ferrit.jsonl")
    assert all(gerrit.parse_event(f"gerrit.{e['type']}", e) is None for e in events)
    master = source(tmp_path, nova=ProjectConfig(git="/x", name="openstack/nova", branch="master"))
    hints = [master.parse_event(f"gerrit.{e['type']}", e) for e in events]
    assert [h for h in hints if h is not None] == [
        ReviewUpdated(source="rdo", project="nova", review="3033"),  # patchset-created
        ReviewUpdated(source="rdo", project="nova", review="3033"),  # comment-added
    ]


def test_a_malformed_event_is_refused_and_an_unknown_one_is_none(tmp_path: Path) -> None:
    gerrit = source(tmp_path, nova=ProjectConfig(git="/x", name="openstack/nova", branch="master"))
    with pytest.raises(Refused, match="malformed Gerrit comment-added event"):
        gerrit.parse_event(
            "gerrit.comment-added", {"type": "comment-added", "change": {"number": "x"}}
        )
    assert gerrit.parse_event("gerrit.something-new", {"type": "something-new"}) is None


def test_depends_on_urls(tmp_path: Path) -> None:
    nova = ProjectConfig(git="/x", name="openstack/nova-distgit", branch="rpm-master")
    gerrit = source(tmp_path, nova=nova)
    assert gerrit.review_for_url(f"{URL}/c/openstack/nova-distgit/+/12345") == ("nova", "12345")
    assert gerrit.review_for_url(f"{URL}/c/openstack/nova-distgit/+/12345/3") == ("nova", "12345")
    assert gerrit.review_for_url(f"{URL}/#/c/12345/") == ("nova", "12345")  # one project: it
    assert gerrit.review_for_url(f"{URL}/c/other/+/1") is None
    assert (
        gerrit.review_for_url("https://elsewhere.example.org/r/c/openstack/nova-distgit/+/1")
        is None
    )
    assert gerrit.change_url("nova", 7) == f"{URL}/c/openstack/nova-distgit/+/7"
    assert gerrit.scm_url("nova") == f"git+{URL}/openstack/nova-distgit.git"


async def test_the_webhook_route_refuses_before_storing(
    tmp_path: Path, aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from aiohttp import web

    stored: list[tuple[str, str, str | None]] = []

    async def store(source: str, event_type: str, payload: dict[str, Any], key: str | None) -> bool:
        stored.append((source, event_type, key))
        return True

    token = "k" * 40
    for allow, status in ((("192.0.2.0/24",), 403), (("127.0.0.1",), 202)):
        config = GerritConfig(
            url=URL, webhook=WebhookConfig(token=SecretStr(token), allow_from=allow)
        )
        nova = ProjectConfig(git="/x", name="openstack/nova", branch="master")
        parts = SourceParts(projects={"nova": nova}, merger=Merger(tmp_path), store=store)
        app = web.Application()
        app.add_routes(GerritSource.create("rdo", config, parts).routes())
        client = await aiohttp_client(app)
        event = captured("stream-events-ferrit.jsonl")[-1]
        right = await client.post(f"/api/sources/rdo/events/{token}", json=event)
        assert right.status == status
        wrong = await client.post("/api/sources/rdo/events/" + "w" * 40, json=event)
        assert wrong.status == (403 if status == 403 else 401)
    assert stored == [("rdo", "gerrit.comment-added", stored[0][2])] and stored[0][2]
    assert (
        "rdo: webhook from 127.0.0.1 refused (403): address 127.0.0.1 is not in allow_from"
        in caplog.text
    )
    assert token not in caplog.text
