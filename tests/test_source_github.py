"""The GitHub source: captured payloads, webhook verification, the client against the fake.

The end-to-end scenarios with the real daemon are in tests/test_gate_forges.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gate.demo_world import World, git
from gate.events import RefUpdated, Refused, ReviewUpdated
from gate.merger import Merger
from gate.sources.base import Report, Review, SourceParts
from gate.sources.github.config import GitHubConfig
from gate.sources.github.source import GitHubSource
from gate.sources.pulls.source import PullRequestSource
from tests.fakegithub import FakeGitHub

DATA = Path(__file__).parent / "data" / "github"
SECRET = "s3cret-webhook-key"
TOKEN = "ghp_faketoken"


@dataclass(frozen=True)
class Project:
    git: str
    branch: str
    name: str | None = None


def payload(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / name).read_text())
    return doc


def source_for(
    projects: Mapping[str, Project], tmp_path: Path, url: str = "https://github.com", **cfg: Any
) -> GitHubSource:
    stored: list[tuple[str, str, dict[str, Any], str | None]] = []

    async def store(source: str, event_type: str, doc: dict[str, Any], key: str | None) -> bool:
        if any(k == key for *_, k in stored if key is not None):
            return False
        stored.append((source, event_type, doc, key))
        return True

    config = GitHubConfig(url=url, token=TOKEN, webhook_secret=SECRET, **cfg)
    parts = SourceParts(projects=projects, merger=Merger(tmp_path / "merger"), store=store)
    source = GitHubSource.create("gh", config, parts)
    source.stored = stored  # type: ignore[attr-defined]
    return source


HELLO = {"hello": Project("/nonexistent", "master", "Codertocat/Hello-World")}


# -- parsing captured payloads ------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "pull_request.opened.json",
        "pull_request.synchronize.json",
        "pull_request.closed.json",
        "pull_request.reopened.json",
        "pull_request.labeled.json",
        "pull_request_review.submitted.json",
        "pull_request_review.dismissed.json",
    ],
)
def test_pull_request_deliveries_are_hints_to_read_the_pull_request_again(
    name: str, tmp_path: Path
) -> None:
    source = source_for(HELLO, tmp_path)
    event = source.parse_event("github." + name.split(".")[0], payload(name))
    assert event == ReviewUpdated(source="gh", project="hello", review="2")


def test_a_pull_request_to_another_branch_is_nothing(tmp_path: Path) -> None:
    source = source_for({"hello": Project("/x", "stable", "Codertocat/Hello-World")}, tmp_path)
    assert source.parse_event("github.pull_request", payload("pull_request.opened.json")) is None


def test_repository_names_compare_case_insensitively(tmp_path: Path) -> None:
    source = source_for({"hello": Project("/x", "master", "codertocat/hello-world")}, tmp_path)
    event = source.parse_event("github.pull_request", payload("pull_request.opened.json"))
    assert isinstance(event, ReviewUpdated)


def test_a_push_to_the_branch_is_a_direct_push(tmp_path: Path) -> None:
    source = source_for(HELLO, tmp_path)
    doc = payload("push.with-new-branch.json")
    event = source.parse_event("github.push", doc)
    assert event == RefUpdated(project="hello", old=doc["before"], new=doc["after"])


def test_a_tag_push_and_a_ping_and_a_comment_are_nothing(tmp_path: Path) -> None:
    source = source_for(HELLO, tmp_path)
    assert source.parse_event("github.push", payload("push.tag.json")) is None
    assert source.parse_event("github.ping", payload("ping.json")) is None
    assert source.parse_event("github.issue_comment", payload("issue_comment.pr.json")) is None
    assert source.parse_event("github.star", {"action": "created"}) is None


@pytest.mark.parametrize(
    "doc",
    [
        {"action": "opened"},
        {"action": "opened", "pull_request": []},
        {"action": "opened", "pull_request": {"number": "2"}},
        {"action": "opened", "pull_request": {"number": True, "base": {"ref": "master"}}},
        {"action": "opened", "pull_request": {"number": 2, "base": {}}, "repository": {}},
        {"action": 7},
    ],
)
def test_malformed_payloads_are_refused_not_crashed_on(doc: dict[str, Any], tmp_path: Path) -> None:
    source = source_for(HELLO, tmp_path)
    with pytest.raises(Refused):
        source.parse_event("github.pull_request", doc)


def test_command_approval_is_refused_for_github() -> None:
    with pytest.raises(ValueError, match="not available on GitHub"):
        GitHubConfig(token="t", webhook_secret="s", approval={"by": "command"})


def test_api_root_follows_the_web_root() -> None:
    assert GitHubConfig(token="t", webhook_secret="s").api_url == "https://api.github.com"
    ghes = GitHubConfig(url="https://git.example.com/", token="tok3n", webhook_secret="s")
    assert ghes.api_url == "https://git.example.com/api/v3"
    assert ghes.git_url("rpms/nova") == "https://git.example.com/rpms/nova.git"
    assert "tok3n" not in repr(ghes) and "tok3n" not in str(ghes.model_dump())


def test_depends_on_urls_name_a_project_and_a_pull_request(tmp_path: Path) -> None:
    source = source_for(HELLO, tmp_path)
    assert source.review_for_url("https://github.com/Codertocat/Hello-World/pull/7") == (
        "hello",
        "7",
    )
    assert source.review_for_url("https://github.com/Codertocat/Hello-World/pull/7/") is not None
    assert source.review_for_url("https://github.com/Codertocat/Other/pull/7") is None
    assert source.review_for_url("https://github.com/Codertocat/Hello-World/issues/7") is None
    assert source.review_for_url("https://evil.example/Codertocat/Hello-World/pull/7") is None


# -- webhook verification ----------------------------------------------------------------
@pytest.fixture
async def endpoint(
    tmp_path: Path, aiohttp_client: Any
) -> AsyncIterator[tuple[PullRequestSource, TestClient]]:
    source = source_for(HELLO, tmp_path)
    app = web.Application()
    app.add_routes(source.routes())
    yield source, await aiohttp_client(app)
    await source.close()


async def post(client: TestClient, body: bytes, headers: Mapping[str, str]) -> int:
    answer = await client.post("/api/sources/gh/webhook", data=body, headers=dict(headers))
    return answer.status


async def test_a_signed_delivery_is_stored_once_under_its_delivery_id(
    endpoint: tuple[PullRequestSource, TestClient],
) -> None:
    source, client = endpoint
    fake = FakeGitHub(SECRET, {})
    fake.poster = lambda body, headers: post(client, body, headers)
    await fake.ping("Codertocat/Hello-World")
    assert fake.deliveries[-1].answers == [202]
    assert await fake.redeliver(fake.deliveries[-1]) == 200
    stored = source.stored  # type: ignore[attr-defined]
    assert [(s, t, k) for s, t, _, k in stored] == [("gh", "github.ping", fake.deliveries[-1].id)]


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"X-Hub-Signature-256": None}, 401),
        ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, 403),
        ({"X-Hub-Signature-256": "sha1=abc"}, 403),
        ({"X-Hub-Signature-256": "garbage"}, 403),
    ],
)
async def test_a_missing_or_wrong_signature_is_refused_logged_and_not_stored(
    endpoint: tuple[PullRequestSource, TestClient],
    change: dict[str, str | None],
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, client = endpoint
    body = json.dumps(payload("pull_request.opened.json")).encode()
    headers = {
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": "d-1",
        "X-Hub-Signature-256": FakeGitHub(SECRET, {}).sign(body),
    }
    for key, value in change.items():
        if value is None:
            headers.pop(key)
        else:
            headers[key] = value
    with caplog.at_level(logging.WARNING):
        assert await post(client, body, headers) == status
    assert source.stored == []  # type: ignore[attr-defined]
    assert "gh: webhook from 127.0.0.1 refused" in caplog.text
    assert SECRET not in caplog.text
    assert "0" * 64 not in caplog.text


async def test_a_body_signed_with_another_secret_is_refused(
    endpoint: tuple[PullRequestSource, TestClient],
) -> None:
    _source, client = endpoint
    body = b'{"zen": "hi"}'
    headers = {
        "X-GitHub-Event": "ping",
        "X-GitHub-Delivery": "d-2",
        "X-Hub-Signature-256": FakeGitHub("other", {}).sign(body),
    }
    assert await post(client, body, headers) == 403
    # a signed body with a changed byte is another body
    headers["X-Hub-Signature-256"] = FakeGitHub(SECRET, {}).sign(body)
    assert await post(client, body + b" ", headers) == 403
    assert await post(client, body, headers) == 202


# -- the client against the fake ---------------------------------------------------------
@pytest.fixture
async def github(world: World, tmp_path: Path) -> AsyncIterator[FakeGitHub]:
    fake = FakeGitHub(SECRET, {TOKEN: "rpmgate-bot"})
    await fake.start()
    fake.add_repo(
        "rdo/nova",
        world.remote("nova"),
        {"rpmgate-bot": "write", "alice": "write", "mallory": "read", "boss": "maintain"},
    )
    yield fake
    await fake.stop()


def nova_source(fake: FakeGitHub, world: World, tmp_path: Path, **cfg: Any) -> GitHubSource:
    projects = {"nova": Project(str(world.remote("nova")), "main", "rdo/nova")}
    return source_for(projects, tmp_path, url=fake.url, **cfg)


async def open_nova(fake: FakeGitHub, world: World, body: str = "") -> int:
    from tests.conftest import NOVA_1201  # the classic change set

    ref = world.propose("nova", NOVA_1201, "Update to 12.0.1")
    sha = git(world.remote("nova"), "rev-parse", ref)
    pr = await fake.open_pull("rdo/nova", sha, user="packager", title="nova 12.0.1", body=body)
    return pr.number


async def test_reviews_approve_only_from_users_with_write_permission_on_the_head(
    github: FakeGitHub, world: World, tmp_path: Path
) -> None:
    source = nova_source(github, world, tmp_path)
    number = await open_nova(github, world)
    review = await source.read_review("nova", str(number))
    assert review.approved is False and review.open and review.mergeable
    assert review.fetch_ref == f"refs/pull/{number}/head"
    assert review.url == f"{github.url}/rdo/nova/pull/{number}"
    await github.review("rdo/nova", number, "mallory")  # read permission: does not count
    assert (await source.read_review("nova", str(number))).approved is False
    await github.review("rdo/nova", number, "boss")  # maintain counts as write
    review = await source.read_review("nova", str(number))
    assert review.approved is True, review.why_not
    await github.review("rdo/nova", number, "alice", "CHANGES_REQUESTED")
    review = await source.read_review("nova", str(number))
    assert review.approved is False and "changes requested by alice" in review.why_not
    await source.close()


async def test_an_approval_of_an_older_head_does_not_approve_the_new_one(
    github: FakeGitHub, world: World, tmp_path: Path
) -> None:
    source = nova_source(github, world, tmp_path)
    number = await open_nova(github, world)
    await github.review("rdo/nova", number, "alice")
    assert (await source.read_review("nova", str(number))).approved is True
    await github.push_to_pull("rdo/nova", number, world.branch_head("nova"))
    review = await source.read_review("nova", str(number))
    assert review.approved is False and "has none" in review.why_not
    await source.close()


async def test_a_label_approves_when_configured(
    github: FakeGitHub, world: World, tmp_path: Path
) -> None:
    source = nova_source(github, world, tmp_path, approval={"by": "label", "label": "gate"})
    number = await open_nova(github, world)
    assert (await source.read_review("nova", str(number))).approved is False
    await github.label("rdo/nova", number, "gate", "alice")
    assert (await source.read_review("nova", str(number))).approved is True
    await source.close()


async def test_merge_guards_the_head_and_is_safe_to_repeat(
    github: FakeGitHub, world: World, tmp_path: Path
) -> None:
    source = nova_source(github, world, tmp_path)
    number = await open_nova(github, world)
    await github.review("rdo/nova", number, "alice")
    review = await source.read_review("nova", str(number))
    before = world.branch_head("nova")
    outcome = await source.merge("nova", "0" * 40, review)
    assert outcome.ok and outcome.head == world.branch_head("nova") != before
    parents = git(world.remote("nova"), "rev-list", "--parents", "-n1", "main").split()[1:]
    assert parents == [before, review.revision]
    again = await source.merge("nova", "0" * 40, review)  # a lost answer, tried again
    assert again.ok and again.head == outcome.head
    await github.settle()
    assert [d.event for d in github.deliveries][-2:] == ["pull_request", "push"]
    await source.close()


async def test_merge_is_refused_when_the_pull_request_moved(
    github: FakeGitHub, world: World, tmp_path: Path
) -> None:
    from gate.sources.github import connection

    source = nova_source(github, world, tmp_path)
    number = await open_nova(github, world)
    await github.review("rdo/nova", number, "alice")
    review = await source.read_review("nova", str(number))
    pr = await source.pull("rdo/nova", number)
    await github.push_to_pull("rdo/nova", number, world.branch_head("nova"))
    outcome = await source.merge("nova", "0" * 40, review)
    assert not outcome.ok and "moved" in outcome.reason
    # the same race inside GitHub: the sha guard answers 409
    refused = await connection.merge(source.api, "rdo/nova", pr, "merge")
    assert isinstance(refused, str) and "Head branch was modified" in refused
    await source.close()


async def test_report_posts_a_status_on_the_tested_head_and_a_comment(
    github: FakeGitHub, world: World, tmp_path: Path
) -> None:
    source = nova_source(github, world, tmp_path)
    number = await open_nova(github, world)
    review = await source.read_review("nova", str(number))
    report = Report(
        phase="failed",
        project="nova",
        review=str(number),
        revision=review.revision,
        ref=review.fetch_ref,
        message="build failed: nova.spec: error: line 3",
        links={"log": "https://gate.example/logs/9", "status": "https://gate.example/items/9"},
    )
    await source.report("nova", report)
    (status,) = github.repos["rdo/nova"].statuses[review.revision]
    assert status["state"] == "failure" and status["context"] == "rpmgate"
    assert status["target_url"] == "https://gate.example/logs/9"
    (comment,) = github.repos["rdo/nova"].pulls[number].comments
    assert (
        "build failed" in comment["body"]
        and "[log](https://gate.example/logs/9)" in comment["body"]
    )
    await source.report("nova", report.model_copy(update={"phase": "dequeued"}))
    assert len(github.repos["rdo/nova"].pulls[number].comments) == 1  # not a comment phase
    await source.close()


async def test_a_bad_token_is_refused_with_github_s_words_not_guessed_around(
    github: FakeGitHub, world: World, tmp_path: Path
) -> None:
    source = nova_source(github, world, tmp_path)
    number = await open_nova(github, world)
    github.tokens.clear()
    with pytest.raises(Refused, match="401 Bad credentials"):
        await source.read_review("nova", str(number))
    review = Review(
        id=str(number),
        project="nova",
        revision="a" * 40,
        fetch_ref=f"refs/pull/{number}/head",
        branch="main",
    )
    outcome = await source.merge("nova", "0" * 40, review)
    assert not outcome.ok and "401 Bad credentials" in outcome.reason
    await source.close()


async def test_a_draft_is_not_approved_whatever_its_reviews(
    github: FakeGitHub, world: World, tmp_path: Path
) -> None:
    source = nova_source(github, world, tmp_path)
    number = await open_nova(github, world)
    await github.review("rdo/nova", number, "alice")
    github.repos["rdo/nova"].pulls[number].draft = True
    review = await source.read_review("nova", str(number))
    assert (review.approved, review.mergeable, review.why_not) == (False, False, "a draft")
    await source.close()


async def test_a_spent_rate_limit_is_a_transient_fault(
    github: FakeGitHub, world: World, tmp_path: Path
) -> None:
    from gate.faults import is_transient
    from gate.sources.pulls.rest import ApiError

    source = nova_source(github, world, tmp_path)
    number = await open_nova(github, world)
    github.rate_limited = True
    with pytest.raises(ApiError) as raised:
        await source.read_review("nova", str(number))
    assert is_transient(raised.value) and "rate limited" in str(raised.value)
    await source.close()


async def test_an_answer_without_the_documented_shape_is_refused(
    github: FakeGitHub, world: World, tmp_path: Path
) -> None:
    source = nova_source(github, world, tmp_path)
    number = await open_nova(github, world)
    github.repos["rdo/nova"].pulls[number].head_sha = "--upload-pack=touch /tmp/x"
    with pytest.raises(Refused, match=r"not a pull request: head\.sha"):
        await source.read_review("nova", str(number))
    await source.close()
