"""The gate end to end with GitLab: the real daemon, its real webhook endpoint, real
git, rpmbuild and createrepo_c, and the fake GitLab (tests/fakegitlab) hosting the
world's bare repositories and posting its webhooks as GitLab does.

Each scenario ends with the invariant checks of every gate scenario.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlmodel import col, select

from gate.daemon import Gate
from gate.demo_world import PackageSpec, World, git
from repo_state.db import session
from repo_state.models import ChangeRow, Delivery, ItemRow
from tests.conftest import CEILO_801, NOVA_1201
from tests.fakegitlab import FakeGitLab, MergeRequest, User
from tests.invariants import check_invariants
from tests.served import ClientFactory, served

pytestmark = pytest.mark.slow

TOKEN = "webhook-secret"
SOURCE = "centos-gitlab"
HOOK = f"/api/sources/{SOURCE}/webhook"


def path_of(project: str) -> str:
    return f"redhat/centos-stream/rpms/{project}"


def connection(fake: FakeGitLab, **rules: Any) -> dict[str, Any]:
    return {
        "type": "gitlab",
        "url": fake.web,
        "token": fake.bot_token,
        "webhook_token": TOKEN,
        **rules,
    }


def config(
    world: World, sources: dict[str, dict[str, Any]], owner: dict[str, str]
) -> dict[str, Any]:
    """The world's config with each project on the connection ``owner`` names."""
    doc = world.config()
    doc["sources"] = sources
    for project, cfg in doc["projects"].items():
        cfg["source"] = owner.get(project, SOURCE)
        cfg["name"] = path_of(project)
    return doc


@asynccontextmanager
async def gitlab_gate(
    world: World,
    aiohttp_client: ClientFactory,
    fakes: dict[str, FakeGitLab] | None = None,
    owner: dict[str, str] | None = None,
    **rules: Any,
) -> AsyncIterator[tuple[Gate, FakeGitLab, Any]]:
    """A gate whose projects live on the fake GitLab (or on the fakes ``owner`` names)."""
    main = await FakeGitLab().start()
    fakes = {SOURCE: main, **(fakes or {})}
    sources = {name: connection(f, **(rules if f is main else {})) for name, f in fakes.items()}
    try:
        for project in world.projects:
            fake = fakes[(owner or {}).get(project, SOURCE)]
            fake.add_project(path_of(project), world.remote(project), approvals_required=1)
        doc = config(world, sources, owner or {})
        async with served(world, aiohttp_client, **doc) as (gate, client):
            for project in world.projects:
                name = (owner or {}).get(project, SOURCE)
                url = str(client.make_url(f"/api/sources/{name}/webhook"))
                fakes[name].add_hook(path_of(project), url, TOKEN)
            yield gate, main, client
    finally:
        for fake in fakes.values():
            await fake.stop()


def branch(world: World, project: str, spec: PackageSpec, message: str, name: str) -> str:
    """A packager's commit of ``spec`` on branch ``name`` of the distgit; its sha."""
    ref = world.propose(project, spec, message)
    sha = git(world.remote(project), "rev-parse", ref)
    git(world.remote(project), "update-ref", f"refs/heads/{name}", sha)
    return sha


async def until(gate: Gate, what: Callable[[], bool], timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not what():
            await asyncio.sleep(0.05)


def items(gate: Gate) -> list[ItemRow]:
    with session(gate.engine) as s:
        return list(s.exec(select(ItemRow).order_by(col(ItemRow.id))))


def item_of(gate: Gate, sha: str) -> ItemRow | None:
    with session(gate.engine) as s:
        change = s.exec(select(ChangeRow).where(ChangeRow.sha == sha)).first()
        if change is None:
            return None
        return s.exec(select(ItemRow).where(ItemRow.change_id == change.id)).first()


async def open_and_approve(
    fake: FakeGitLab, world: World, project: str, spec: PackageSpec, title: str, who: User
) -> MergeRequest:
    author = fake.add_user(f"packager-{project}")
    branch(world, project, spec, title, f"update-{project}")
    mr = await fake.open_mr(path_of(project), f"update-{project}", title, author)
    await fake.approve(mr, who)
    return mr


async def test_approved_merge_requests_are_tested_merged_through_gitlab_and_reported(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with gitlab_gate(world, aiohttp_client) as (gate, fake, client):
        bootstrap = [i.kind for i in items(gate)].count("post")  # the branch heads at start
        reviewer = fake.add_user("reviewer")
        a = await open_and_approve(fake, world, "nova", NOVA_1201, "Update to 12.0.1", reviewer)
        b = await open_and_approve(
            fake, world, "ceilometer", CEILO_801, "Update to 8.0.1", reviewer
        )
        # a bad token: refused, nothing stored
        refused = await client.post(
            HOOK,
            data=b"{}",
            headers={"X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Token": "nope"},
        )
        assert refused.status == 403
        # GitLab resends the "approved" delivery (same Idempotency-Key): processed once
        approved = next(d for d in fake.deliveries if b'"approved"' in d.body)
        assert await fake.deliver(approved) == 200
        await gate.wait_idle(180)

        assert (a.state, b.state) == ("merged", "merged")
        for mr in (a, b):
            head = git(mr.project.repo, "rev-parse", "refs/heads/main")
            assert git(mr.project.repo, "merge-base", "--is-ancestor", mr.sha, head) == ""
            statuses = [s.status for s in fake.statuses if s.sha == mr.sha and s.name == "rpmgate"]
            assert statuses[-1] == "success", statuses
            notes = [n.body for n in mr.notes if n.author is fake.bot]
            assert any("queued" in n for n in notes) and any("generation" in n for n in notes), (
                notes
            )
        with session(gate.engine) as s:
            keys = [
                d.delivery_key for d in s.exec(select(Delivery).where(Delivery.source == SOURCE))
            ]
        assert (
            len(keys)
            == len(set(keys))
            == len({d.headers["Idempotency-Key"] for d in fake.deliveries})
        )
        # GitLab's own merge commits come back as pushes: known heads, no post items
        assert [i.kind for i in items(gate)].count("post") == bootstrap
        check_invariants(gate)


async def test_a_new_revision_dequeues_the_old_and_a_closed_merge_request_leaves(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with gitlab_gate(world, aiohttp_client) as (gate, fake, _):
        reviewer = fake.add_user("reviewer")
        mr = await open_and_approve(fake, world, "nova", NOVA_1201, "Update to 12.0.1", reviewer)
        old = mr.sha
        await until(gate, lambda: item_of(gate, old) is not None)
        newer = PackageSpec("nova", "12.0.2", lookaside=True)
        branch(world, "nova", newer, "Update to 12.0.2", "update-nova")
        await fake.push_mr(mr, mr.author)  # update with oldrev; approvals are reset
        await gate.wait_idle(180)
        first = item_of(gate, old)
        assert first is not None and first.result == "dequeued"
        assert item_of(gate, mr.sha) is None  # not approved at the new revision
        await fake.approve(mr, reviewer)
        await gate.wait_idle(180)
        second = item_of(gate, mr.sha)
        assert second is not None and second.result == "merged" and mr.state == "merged"

        closing = await open_and_approve(
            fake, world, "ceilometer", CEILO_801, "Update to 8.0.1", reviewer
        )
        await until(gate, lambda: item_of(gate, closing.sha) is not None)
        await fake.close(closing, closing.author)
        await gate.wait_idle(180)
        gone = item_of(gate, closing.sha)
        assert gone is not None and gone.result == "dequeued" and "closed" in gone.failure
        assert closing.state == "closed"
        check_invariants(gate)


async def test_a_direct_push_becomes_a_post_item(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with gitlab_gate(world, aiohttp_client) as (gate, fake, _):
        before = world.branch_head("nova")
        after = world.push_direct("nova", NOVA_1201, "Update to 12.0.1 (pushed)")
        await fake.pushed(path_of("nova"), before, after, fake.add_user("releng"))
        await gate.wait_idle(180)
        with session(gate.engine) as s:
            posts = [
                (s.get(ChangeRow, i.change_id).sha, i.result)  # type: ignore[union-attr]
                for i in s.exec(select(ItemRow).where(ItemRow.kind == "post"))
                if i.project == "nova"
            ]
        assert (after, "merged") in posts
        check_invariants(gate)


async def test_a_merge_request_that_moves_before_gitlab_merges_it_is_not_merged(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with gitlab_gate(world, aiohttp_client) as (gate, fake, _):
        reviewer = fake.add_user("reviewer")

        async def race(mr: MergeRequest) -> None:
            # the author pushes while the gate is asking GitLab to merge
            branch(world, "nova", PackageSpec("nova", "12.0.9"), "Oops", "update-nova")
            await fake.push_mr(mr, mr.author)

        fake.on_merge = race
        mr = await open_and_approve(fake, world, "nova", NOVA_1201, "Update to 12.0.1", reviewer)
        tested = mr.sha
        await gate.wait_idle(180)
        assert mr.state == "opened" and mr.sha != tested
        item = item_of(gate, tested)
        assert item is not None and item.result != "merged"
        # GitLab refused the merge (409, or 405 when the push reset the approvals first):
        # the review had moved after the gate read it
        merges = [c for c in fake.calls if c[0] == "PUT" and c[1].endswith("/merge")]
        assert len(merges) == 1
        # whichever the gate learnt first: GitLab's 409, or the push's webhook
        assert re.search(
            r"SHA does not match HEAD|has a new revision|moved since [0-9a-f]{12} was tested",
            item.failure,
        ), item.failure
        assert {s.status for s in fake.statuses if s.sha == tested} & {"failed", "canceled"}
        check_invariants(gate)


async def test_depends_on_a_merge_request_of_another_gitlab(
    world: World, aiohttp_client: ClientFactory
) -> None:
    other = await FakeGitLab().start()
    owners = {"nova": "other-gitlab"}
    async with gitlab_gate(world, aiohttp_client, fakes={"other-gitlab": other}, owner=owners) as (
        gate,
        fake,
        _,
    ):
        nova_author, reviewer = other.add_user("n"), other.add_user("r")
        branch(world, "nova", NOVA_1201, "Update to 12.0.1", "update-nova")
        nova = await other.open_mr(path_of("nova"), "update-nova", "nova 12.0.1", nova_author)
        url = f"{other.web}/{path_of('nova')}/-/merge_requests/{nova.iid}"
        message = f"Update to 8.0.1\n\nDepends-On: {url}\n"
        branch(world, "ceilometer", CEILO_801, message, "update-ceilometer")
        ceilometer = await fake.open_mr(
            path_of("ceilometer"), "update-ceilometer", "ceilometer 8.0.1", fake.add_user("c")
        )
        await other.approve(nova, reviewer)
        await fake.approve(ceilometer, fake.add_user("reviewer"))
        await gate.wait_idle(180)
        assert (nova.state, ceilometer.state) == ("merged", "merged")
        first, second = item_of(gate, nova.sha), item_of(gate, ceilometer.sha)
        assert first is not None and second is not None and first.seq < second.seq
        check_invariants(gate)
