"""GitHub and Forgejo end to end: the real daemon against the fake forges.

The gate runs in this process with its real web app (behind aiohttp's test
client); the fakes hold the world's real bare repositories, answer the REST
calls, merge for real, and post signed deliveries to the gate's real webhook
endpoint.  Real git, rpmbuild and createrepo_c underneath; the invariant
checks after every scenario.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlmodel import col, select

from gate.config import parse_config
from gate.daemon import Gate
from gate.demo_world import PackageSpec, World, git
from gate.web.app import make_app
from repo_state.db import session
from repo_state.models import ChangeRow, Delivery, ItemRow
from tests.conftest import CEILO_801, NOVA_1201
from tests.fakeforgejo import FakeForgejo
from tests.fakegithub import FakeGitHub
from tests.invariants import check_invariants, results

pytestmark = pytest.mark.slow

SECRET = "webhook-secret-for-tests"
TOKEN = "bot-token"
PEOPLE = {"rpmgate-bot": "admin", "alice": "write", "packager": "read"}


@dataclass(eq=False)
class Forge:
    """One fake forge as a gate source: its type, the fake, where a PR page is."""

    kind: str
    fake: FakeGitHub | FakeForgejo
    source: str

    @property
    def segment(self) -> str:
        return "pull" if self.kind == "github" else "pulls"

    def repo(self, project: str) -> str:
        return f"rpms/{project}"

    def pr_url(self, project: str, number: int) -> str:
        return f"{self.fake.url}/{self.repo(project)}/{self.segment}/{number}"

    def source_config(self) -> dict[str, Any]:
        return {"type": self.kind, "url": self.fake.url, "token": TOKEN, "webhook_secret": SECRET}


async def make_forge(kind: str, world: World, projects: list[str]) -> Forge:
    fake: FakeGitHub | FakeForgejo = (
        FakeGitHub(SECRET, {TOKEN: "rpmgate-bot"})
        if kind == "github"
        else FakeForgejo(SECRET, {TOKEN: "rpmgate-bot"})
    )
    await fake.start()
    forge = Forge(kind, fake, f"{kind}-test")
    for project in projects:
        fake.add_repo(forge.repo(project), world.remote(project), PEOPLE)
    return forge


@asynccontextmanager
async def gate_with(
    world: World,
    aiohttp_client: Callable[..., Any],
    forges: dict[str, Forge],
    hold: Path | None = None,
) -> AsyncIterator[tuple[Gate, TestClient]]:
    """A gate whose ``forges`` projects (project -> forge) are on the fakes."""
    doc = world.config()
    doc["sources"] = {f.source: f.source_config() for f in forges.values()}
    for project, forge in forges.items():
        doc["projects"][project].update(source=forge.source, name=forge.repo(project))
    if hold is not None:
        hold.touch()
        wait = f"while [ ! -e {hold} ]; do sleep 0.05; done"
        doc["queues"]["liberty"]["jobs"] = [
            "repoclosure",
            {"type": "command", "name": "hold", "command": wait},
        ]
    gate = Gate(parse_config(doc))
    client: TestClient = await aiohttp_client(make_app(gate.runtime))
    for forge in set(forges.values()):
        forge.fake.poster = _poster(client, forge.source)
    await gate.start()
    try:
        await gate.wait_idle(120)
        if hold is not None:
            hold.unlink()
        yield gate, client
    finally:
        for forge in set(forges.values()):
            await forge.fake.settle()
        await gate.stop()
        for forge in set(forges.values()):
            await forge.fake.stop()


def _poster(client: TestClient, source: str) -> Any:
    async def post(body: bytes, headers: Any) -> int:
        answer = await client.post(f"/api/sources/{source}/webhook", data=body, headers=headers)
        return answer.status

    return post


async def settle(gate: Gate, *forges: Forge) -> None:
    for forge in forges:
        await forge.fake.settle()
    await gate.wait_idle(180)


async def open_pr(
    forge: Forge, world: World, project: str, spec: PackageSpec, title: str, message: str = ""
) -> int:
    """A pull request of a commit of ``spec`` (``message``: its commit message)."""
    ref = world.propose(project, spec, message or title)
    sha = git(world.remote(project), "rev-parse", ref)
    pr = await forge.fake.open_pull(forge.repo(project), sha, user="packager", title=title)
    return pr.number


def items_of(gate: Gate, review: int) -> list[ItemRow]:
    with session(gate.engine) as s:
        return list(
            s.exec(
                select(ItemRow)
                .join(ChangeRow, col(ChangeRow.id) == col(ItemRow.change_id))
                .where(ChangeRow.review == str(review))
                .order_by(col(ItemRow.id))
            ).all()
        )


def deliveries(gate: Gate, source: str) -> list[Delivery]:
    with session(gate.engine) as s:
        return list(s.exec(select(Delivery).where(Delivery.source == source)).all())


async def until(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


KINDS = ["github", "forgejo"]


@pytest.mark.parametrize("kind", KINDS)
async def test_an_approved_pull_request_is_tested_merged_by_the_forge_and_reported(
    kind: str, world: World, aiohttp_client: Any
) -> None:
    forge = await make_forge(kind, world, ["nova"])
    async with gate_with(world, aiohttp_client, {"nova": forge}) as (gate, _):
        number = await open_pr(forge, world, "nova", NOVA_1201, "A")
        await settle(gate, forge)
        assert items_of(gate, number) == []  # opened, not approved
        head = forge.fake.repos[forge.repo("nova")].pulls[number].head_sha

        # a delivery signed with another secret is refused and not stored
        stored = len(deliveries(gate, forge.source))
        forge.fake.secret = "not-the-secret"
        await forge.fake.review(forge.repo("nova"), number, "packager")
        assert forge.fake.deliveries[-1].answers == [403]
        assert len(deliveries(gate, forge.source)) == stored
        forge.fake.secret = SECRET

        before = world.branch_head("nova")
        await forge.fake.review(forge.repo("nova"), number, "alice")
        approval = forge.fake.deliveries[-1]
        assert approval.answers == [202]
        assert await forge.fake.redeliver(approval) == 200  # stored once
        await settle(gate, forge)

        assert results(gate) == {"merged": ["A"]}
        [item] = items_of(gate, number)
        pr = forge.fake.repos[forge.repo("nova")].pulls[number]
        assert pr.merged and world.branch_head("nova") == pr.merge_commit_sha
        with session(gate.engine) as s:
            change = s.get(ChangeRow, item.change_id)
        assert change is not None and change.owner == "packager"  # who opened it
        parents = git(world.remote("nova"), "rev-list", "--parents", "-n1", "main").split()[1:]
        assert parents == [before, head]  # the forge's own merge commit, the tested tree
        statuses = forge.fake.repos[forge.repo("nova")].statuses[head]
        state = "state" if kind == "github" else "status"
        assert [s[state] for s in statuses] == ["pending", "success"]
        assert {s["context"] for s in statuses} == {"rpmgate"}
        comments = [c["body"] for c in pr.comments]
        assert len(comments) == 2 and "queued" in comments[0]
        assert f"generation {item.generation}" in comments[1]
        keys = [d.delivery_key for d in deliveries(gate, forge.source)]
        assert len(keys) == len(set(keys))
        check_invariants(gate)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_new_head_and_a_close_dequeue(
    kind: str, world: World, aiohttp_client: Any, tmp_path: Path
) -> None:
    forge = await make_forge(kind, world, ["nova"])
    hold = tmp_path / "go"
    async with gate_with(world, aiohttp_client, {"nova": forge}, hold) as (gate, _):
        number = await open_pr(forge, world, "nova", NOVA_1201, "A")
        await forge.fake.review(forge.repo("nova"), number, "alice")
        await until(lambda: len(items_of(gate, number)) == 1)
        [first] = items_of(gate, number)

        second = world.propose("nova", NOVA_1201, "A, second revision")
        sha = git(world.remote("nova"), "rev-parse", second)
        await forge.fake.push_to_pull(forge.repo("nova"), number, sha)
        await until(lambda: items_of(gate, number)[0].result == "dequeued")
        [old] = items_of(gate, number)  # the approval was of the old head
        assert old.id == first.id
        assert old.failure == f"review {number} has a new revision {sha[:12]}"

        await forge.fake.review(forge.repo("nova"), number, "alice")
        await until(lambda: len(items_of(gate, number)) == 2)
        await forge.fake.close(forge.repo("nova"), number, "packager")
        await until(lambda: items_of(gate, number)[-1].result == "dequeued")
        assert items_of(gate, number)[-1].failure == f"review {number} was closed outside the gate"
        hold.touch()
        await settle(gate, forge)
        assert results(gate) == {"dequeued": ["A", "A"]}
        assert world.branch_head("nova") != sha
        check_invariants(gate)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_direct_push_becomes_a_post_item(
    kind: str, world: World, aiohttp_client: Any
) -> None:
    forge = await make_forge(kind, world, ["nova"])
    async with gate_with(world, aiohttp_client, {"nova": forge}) as (gate, _):
        before = world.branch_head("nova")
        after = world.push_direct("nova", PackageSpec("nova", "12.0.2", lookaside=True), "hotfix")
        await forge.fake.push_branch(forge.repo("nova"), "main", before, after, "alice")
        await forge.fake.push_branch(forge.repo("nova"), "v1.0-tag-branch", before, after, "alice")
        await settle(gate, forge)
        with session(gate.engine) as s:
            post = s.exec(
                select(ItemRow).where(ItemRow.kind == "post", col(ItemRow.bootstrap).is_(False))
            ).all()
            shas = [c.sha for p in post if (c := s.get(ChangeRow, p.change_id)) is not None]
        assert shas == [after]
        assert [p.result for p in post] == ["merged"]
        check_invariants(gate)


@pytest.mark.parametrize("kind", KINDS)
async def test_the_forge_refuses_the_merge_when_the_pull_request_moved(
    kind: str, world: World, aiohttp_client: Any
) -> None:
    forge = await make_forge(kind, world, ["nova"])
    async with gate_with(world, aiohttp_client, {"nova": forge}) as (gate, _):
        number = await open_pr(forge, world, "nova", NOVA_1201, "A")
        tested = forge.fake.repos[forge.repo("nova")].pulls[number].head_sha
        moved = git(world.remote("nova"), "rev-parse", world.propose("nova", NOVA_1201, "A2"))

        async def push_while_merging() -> None:
            # after the gate's last read, before the forge's check; its delivery is late
            forge.fake.before_merge = None
            await forge.fake.push_to_pull(forge.repo("nova"), number, moved, deliver=False)

        forge.fake.before_merge = push_while_merging
        await forge.fake.review(forge.repo("nova"), number, "alice")
        await settle(gate, forge)
        [item] = items_of(gate, number)
        assert item.result == "rejected", item.failure
        guard = "Head branch was modified" if kind == "github" else "head out of date"
        assert "merge refused" in item.failure and guard in item.failure, item.failure
        assert world.branch_head("nova") not in (tested, moved)
        assert not forge.fake.repos[forge.repo("nova")].pulls[number].merged
        assert [c[0] for c in forge.fake.calls if c[1].endswith("/merge")] == [
            "PUT" if kind == "github" else "POST"
        ]
        check_invariants(gate)


async def test_a_github_pull_request_depends_on_a_forgejo_pull_request(
    world: World, aiohttp_client: Any
) -> None:
    github = await make_forge("github", world, ["ceilometer"])
    forgejo = await make_forge("forgejo", world, ["nova"])
    on = {"nova": forgejo, "ceilometer": github}
    async with gate_with(world, aiohttp_client, on) as (gate, _):
        nova = await open_pr(forgejo, world, "nova", NOVA_1201, "A")
        url = forgejo.pr_url("nova", nova)
        ceilo = await open_pr(
            github, world, "ceilometer", CEILO_801, "B", f"B\n\nDepends-On: {url}\n"
        )
        await github.fake.review(github.repo("ceilometer"), ceilo, "alice")
        await settle(gate, github, forgejo)
        refused = [d.error for d in deliveries(gate, github.source) if d.error]
        assert refused and all(
            e.startswith(f"depends on {url}, which is not approved: needs 1 approving review")
            for e in refused
        ), refused
        assert items_of(gate, ceilo) == []

        await forgejo.fake.review(forgejo.repo("nova"), nova, "alice")
        await github.fake.review(github.repo("ceilometer"), ceilo, "alice")
        await settle(gate, github, forgejo)
        assert results(gate) == {"merged": ["A", "B"]}  # nova first: ceilometer needs it
        assert forgejo.fake.repos["rpms/nova"].pulls[nova].merged
        assert github.fake.repos["rpms/ceilometer"].pulls[ceilo].merged
        check_invariants(gate)


async def test_a_forgejo_comment_command_approves_the_head_it_was_written_on(
    world: World, aiohttp_client: Any
) -> None:
    forge = await make_forge("forgejo", world, ["nova"])
    config = forge.source_config

    def with_command() -> dict[str, Any]:
        return {**config(), "approval": {"by": "command", "command": "/gate"}}

    forge.source_config = with_command  # type: ignore[method-assign]
    async with gate_with(world, aiohttp_client, {"nova": forge}) as (gate, _):
        number = await open_pr(forge, world, "nova", NOVA_1201, "A")
        await forge.fake.comment(forge.repo("nova"), number, "packager", "/gate")  # read only
        await forge.fake.comment(forge.repo("nova"), number, "alice", "looks good")
        await settle(gate, forge)
        assert items_of(gate, number) == []
        await forge.fake.comment(forge.repo("nova"), number, "alice", "/gate")
        await settle(gate, forge)
        assert results(gate) == {"merged": ["A"]}
        with session(gate.engine) as s:
            [change] = s.exec(select(ChangeRow).where(ChangeRow.review == str(number))).all()
        assert change.approved_by == "alice"
        check_invariants(gate)
