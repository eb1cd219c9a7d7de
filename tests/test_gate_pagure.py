"""The real daemon driven by a fake Pagure: signed web-hooks in, PRs merged through
Pagure's API, flags and comments back, with the invariant checks after each scenario.

The projects' repositories are the test world's bare repositories, adopted by the
fake Pagure as ``rpms/<name>``; a PR's commits are made by the world (real specs,
real lookaside) and pushed to the contributor's fork, as a packager would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlmodel import col, select

from gate.daemon import Gate
from gate.demo_world import World, git
from repo_state.db import session
from repo_state.models import ChangeRow, Delivery, ItemRow
from tests.conftest import CEILO_801, NOVA_1201
from tests.fakepagure import FakePagure, PullRequest
from tests.invariants import check_invariants, results
from tests.served import ClientFactory, served
from tests.test_web_api import eventually

pytestmark = pytest.mark.slow

BOT_ACLS = ("pull_request_merge", "pull_request_flag", "pull_request_comment")


@dataclass
class Scene:
    world: World
    gate: Gate
    client: TestClient
    pagure: FakePagure
    hold: Path
    #: the second Pagure instance (connection ``centos``)
    other: FakePagure

    def url(self, connection: str = "fedora") -> str:
        return str(self.client.make_url(f"/api/sources/{connection}/webhook"))

    async def open_pr(
        self,
        project: str,
        spec: Any,
        title: str,
        user: str = "contributor",
        message: str | None = None,
        on: FakePagure | None = None,
    ) -> PullRequest:
        ref = self.world.propose(project, spec, message or title)
        remote = self.world.remote(project)
        commit = git(remote, "rev-parse", ref)
        git(remote, "update-ref", "-d", ref)  # the world's scratch ref is not Pagure's
        return await (on or self.pagure).open_pr_from(f"rpms/{project}", user, commit, title)

    async def new_commit(self, project: str, pr: PullRequest, spec: Any, message: str) -> str:
        ref = self.world.propose(project, spec, message, on=f"refs/pull/{pr.id}/head")
        remote = self.world.remote(project)
        commit = git(remote, "rev-parse", ref)
        git(remote, "update-ref", "-d", ref)
        await self.pagure.update_pr_from(f"rpms/{project}", pr.id, commit, message)
        return commit

    def deliveries(self) -> list[Delivery]:
        with session(self.gate.engine) as s:
            return list(
                s.exec(select(Delivery).where(Delivery.source != "api").order_by(col(Delivery.id)))
            )

    async def settled(self, timeout: float = 120) -> None:
        """Every delivery processed (the items may still be running)."""
        await until(lambda: all(d.processed_at for d in self.deliveries()), timeout)

    def items(self, pr: PullRequest, source: str = "fedora") -> list[ItemRow]:
        with session(self.gate.engine) as s:
            return list(
                s.exec(
                    select(ItemRow)
                    .join(ChangeRow, col(ChangeRow.id) == col(ItemRow.change_id))
                    .where(ChangeRow.review == str(pr.id), ChangeRow.source == source)
                    .order_by(col(ItemRow.id))
                ).all()
            )

    def comments(self, pr: PullRequest) -> list[str]:
        return [c.comment for c in pr.comments if c.user == "gatebot"]

    def flags(self, pr: PullRequest) -> list[tuple[str, str]]:
        return [(f.commit_hash, f.status) for f in self.pagure.state.flags if f.user == "gatebot"]


def nova_posts(s: Scene) -> int:
    with session(s.gate.engine) as db:
        rows = db.exec(select(ItemRow).where(ItemRow.kind == "post", ItemRow.project == "nova"))
        return len(rows.all())


async def until(check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@asynccontextmanager
async def scene(
    world: World,
    aiohttp_client: ClientFactory,
    tmp_path: Path,
    centos: tuple[str, ...] = (),
    **connection: Any,
) -> AsyncIterator[Scene]:
    """A gate whose projects are on the fake Pagure ``fedora``; those named in
    ``centos`` are on a second Pagure instance, connection ``centos``."""
    pagure = FakePagure(tmp_path / "pagure")
    other = FakePagure(tmp_path / "pagure2")
    await pagure.start()
    await other.start()
    doc = world.config()
    doc["sources"] = {}
    for source, fake, names in (
        ("fedora", pagure, [n for n in world.projects if n not in centos]),
        ("centos", other, list(centos)),
    ):
        if not names:
            continue
        keys = {}
        for name in names:
            project = fake.adopt(f"rpms/{name}", "maintainer", world.remote(name))
            project.access_users["commit"].append(fake.user("gatebot"))
            project.access_groups["commit"].append("packagers")
            keys[project.fullname] = project.hook_token
            doc["projects"][name].update(source=source, name=f"rpms/{name}")
        fake.group("packagers", ["sigmember"])
        # a contributor's fork whose owner pointed its web-hook at the gate too
        fork = fake.fork(f"rpms/{names[0]}", "contributor")
        keys[fork.fullname] = fork.hook_token
        doc["sources"][source] = {
            "type": "pagure",
            "url": fake.url,
            "token": fake.token("gatebot", BOT_ACLS),
            "webhook_keys": keys,
            **connection,
        }
    hold = tmp_path / "go"
    hold.touch()  # the bootstrap goes through
    wait = f"while [ ! -e {hold} ]; do sleep 0.05; done"
    queue = doc["queues"]["liberty"]
    queue["jobs"] = ["repoclosure", {"type": "command", "name": "hold", "command": wait}]
    try:
        async with served(world, aiohttp_client, **doc) as (gate, client):
            here = Scene(world, gate, client, pagure, hold, other)
            for source, fake in (("fedora", pagure), ("centos", other)):
                for project in fake.state.projects.values():
                    project.webhooks.append(here.url(source))
            yield here
    finally:
        await pagure.stop()
        await other.stop()


async def test_a_pr_approved_by_a_committer_is_tested_merged_through_pagure_and_reported(
    world: World, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    async with scene(world, aiohttp_client, tmp_path) as s:
        pr = await s.open_pr("nova", NOVA_1201, "Update to 12.0.1")
        await s.pagure.comment("rpms/nova", pr.id, "drive-by", "/gate")  # no commit access
        await s.settled()
        assert s.items(pr) == []
        assert (s.deliveries()[-1].result or "").endswith(
            "waiting for /gate from someone with commit access"
        )

        await s.pagure.comment("rpms/nova", pr.id, "sigmember", "/gate")  # commit via a group
        sent = s.pagure.sent[-1]
        await s.settled()
        await s.gate.wait_idle(180)
        assert results(s.gate) == {"merged": ["Update to 12.0.1"]}
        assert pr.status == "Merged" and pr.closed_by == "gatebot"
        assert ("POST", f"rpms/nova/pull-request/{pr.id}/merge", {"wait": "true"}) in (
            s.pagure.calls
        )
        assert s.world.branch_head("nova") == pr.commit_stop  # Pagure fast-forwarded
        statuses = [status for commit, status in s.flags(pr) if commit == pr.commit_stop]
        assert statuses == ["success"]  # one flag, updated from pending
        assert len(s.comments(pr)) == 2
        assert "queued" in s.comments(pr)[0].lower() and "merged" in s.comments(pr)[1]

        # a redelivery (same msg_id) is stored once; a forged one is refused, nothing stored
        project = s.pagure.state.projects["rpms/nova"]
        before = len(s.deliveries())
        assert await s.pagure.deliver(project, sent, s.url()) == 200
        forged = await s.pagure.deliver(
            project, sent, s.url(), **{"X-Pagure-Signature-256": "0" * 64}
        )
        unsigned = await s.pagure.deliver(project, sent, s.url(), **{"X-Pagure-Signature-256": ""})
        assert (forged, unsigned) == (403, 401)
        assert len(s.deliveries()) == before
        check_invariants(s.gate)


async def test_a_new_commit_dequeues_and_needs_a_new_approval_and_a_close_dequeues(
    world: World, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    async with scene(world, aiohttp_client, tmp_path) as s:
        s.hold.unlink()
        pr = await s.open_pr("nova", NOVA_1201, "Update to 12.0.1")
        await s.pagure.comment("rpms/nova", pr.id, "maintainer", "/gate")
        await s.settled()
        [first] = s.items(pr)
        assert first.active

        head = await s.new_commit("nova", pr, replace(NOVA_1201, release="2"), "Release 2")
        await s.settled()
        [old] = s.items(pr)
        assert (old.result, old.failure) == (
            "dequeued",
            f"review {pr.id} has a new revision {head[:12]}",
        )
        # Pagure kept nothing of the approval; neither does the gate
        assert len(s.items(pr)) == 1

        await s.pagure.comment("rpms/nova", pr.id, "maintainer", "/gate")
        await s.settled()
        # the new revision carries the first commit under its own: that is the
        # review's earlier revision, not another change it depends on
        await until(lambda: s.items(pr)[-1].merge == "passed" or not s.items(pr)[-1].active)
        assert (s.items(pr)[-1].active, s.items(pr)[-1].failure) == (True, "")
        await s.pagure.close("rpms/nova", pr.id, "maintainer")
        await s.settled()
        last = s.items(pr)[-1]
        assert (last.result, last.failure) == (
            "dequeued",
            f"review {pr.id} was closed outside the gate",
        )
        s.hold.touch()
        await s.gate.wait_idle(180)
        assert results(s.gate) == {"dequeued": ["Update to 12.0.1"] * 2}
        check_invariants(s.gate)


async def test_a_push_is_a_post_item_a_fork_push_is_not_and_a_moved_pr_is_not_merged(
    world: World, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    async with scene(world, aiohttp_client, tmp_path) as s:
        # a direct push to the distgit: a post item, built, tested and published
        old = s.world.branch_head("ceilometer")
        new = s.world.push_direct("ceilometer", CEILO_801, "Direct push of 8.0.1")
        await s.pagure.receive("rpms/ceilometer", "main", old, new, "maintainer")
        await s.settled()
        await s.gate.wait_idle(180)
        with session(s.gate.engine) as db:
            posts = db.exec(select(ItemRow).where(ItemRow.kind == "post")).all()
        assert any(p.result == "merged" for p in posts if p.project == "ceilometer")

        # a push to a contributor's fork, signed with the fork's key: stored, not acted on
        fork = s.pagure.state.projects["forks/contributor/rpms/nova"]
        posts_before = nova_posts(s)
        await s.pagure.push(fork.fullname, "main", {"x": "y"}, "in my fork", "contributor")
        assert s.pagure.sent[-1].answers == [202]
        await s.settled()
        await s.gate.wait_idle(180)
        stored = s.deliveries()[-1]
        assert stored.event_type == "pagure.git.receive" and stored.error is None
        assert nova_posts(s) == posts_before

        # a PR that moves while its item is tested, with the event lost: not merged
        s.hold.unlink()
        pr = await s.open_pr("nova", NOVA_1201, "Update to 12.0.1")
        await s.pagure.comment("rpms/nova", pr.id, "maintainer", "/gate")
        await s.settled()
        # the gate's own report on the PR is an event too: let it come and go first,
        # or it would tell the gate of the new commit below
        await s.gate.plumbing.settle_named("report-")
        await s.settled()
        s.pagure.state.projects["rpms/nova"].webhooks.clear()
        await s.new_commit("nova", pr, replace(NOVA_1201, release="2"), "moved")
        s.hold.touch()
        await s.gate.wait_idle(180)
        [item] = s.items(pr)
        assert item.result == "rejected"
        assert f"review {pr.id} moved to" in (item.failure or "")
        assert pr.status == "Open"
        assert not any(c[1].endswith("/merge") for c in s.pagure.calls)
        check_invariants(s.gate)


async def test_pagure_merging_a_newer_head_than_tested_is_not_published_as_tested(
    world: World, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    """Pagure's merge has no guard on the head: a push between the gate's last read
    and Pagure's merge task is merged too.  The gate's tree check catches it."""
    async with scene(world, aiohttp_client, tmp_path) as s:
        pr = await s.open_pr("nova", NOVA_1201, "Update to 12.0.1")
        pushed: list[str] = []

        async def race(_: PullRequest) -> None:
            if not pushed:  # the contributor pushes while Pagure's merge task is queued
                s.pagure.state.projects["rpms/nova"].webhooks.clear()
                pushed.append(
                    await s.new_commit("nova", pr, replace(NOVA_1201, release="2"), "late")
                )

        s.pagure.during_merge = race
        await s.pagure.comment("rpms/nova", pr.id, "maintainer", "/gate")
        await s.settled()
        await s.gate.wait_idle(180)
        [item] = s.items(pr)
        assert pr.status == "Merged" and s.world.branch_head("nova") == pushed[0]
        assert item.result == "superseded" and "not the tested tree" in (item.failure or "")
        with session(s.gate.engine) as db:
            posts = db.exec(select(ItemRow).where(ItemRow.kind == "post")).all()
        assert [p.result for p in posts if p.project == "nova"][-1] == "merged"
        check_invariants(s.gate)


async def test_a_pr_depending_on_a_pr_of_another_pagure_is_tested_and_merged_behind_it(
    world: World, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    async with scene(world, aiohttp_client, tmp_path, centos=("ceilometer",)) as s:
        s.hold.unlink()
        nova = await s.open_pr("nova", NOVA_1201, "Update to 12.0.1")
        nova_url = f"{s.pagure.url}/rpms/nova/pull-request/{nova.id}"
        ceilo = await s.open_pr(
            "ceilometer",
            CEILO_801,
            "Update to 8.0.1",
            message=f"Update to 8.0.1\n\nDepends-On: {nova_url}\n",
            on=s.other,
        )
        await s.other.comment("rpms/ceilometer", ceilo.id, "maintainer", "/gate")
        await s.settled()
        assert s.items(ceilo, "centos") == []
        refused = s.deliveries()[-1]
        assert f"depends on {nova_url}, which is not approved" in (refused.error or "")

        await s.pagure.comment("rpms/nova", nova.id, "maintainer", "/gate")
        await s.other.comment("rpms/ceilometer", ceilo.id, "maintainer", "/gate")
        await s.settled()
        [n] = s.items(nova)
        [c] = s.items(ceilo, "centos")
        assert n.active and c.active and n.seq < c.seq
        s.hold.touch()
        await s.gate.wait_idle(180)
        assert results(s.gate) == {"merged": ["Update to 12.0.1", "Update to 8.0.1"]}
        assert (nova.status, ceilo.status) == ("Merged", "Merged")
        check_invariants(s.gate)


async def test_a_report_that_fails_is_retried_and_one_refused_never_holds_the_gate(
    world: World,
    aiohttp_client: ClientFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Reports are a courtesy (gate/reporting.py): Pagure answering 5xx to the
    comment of the enqueue report gets the whole report again (the flag, with its
    uid, is updated, not doubled), and the merge report, made while the enqueue
    report still waits to be tried again, is sent after it; Pagure refusing every
    flag of a second PR (403) is logged and the item merges all the same."""
    async with scene(world, aiohttp_client, tmp_path) as s:
        s.pagure.fail_next["comment"] = [500, 502] * 20  # until the item has merged

        async def merged() -> bool:
            return "merged" in results(s.gate)

        pr = await s.open_pr("nova", NOVA_1201, "Update to 12.0.1")
        await s.pagure.comment("rpms/nova", pr.id, "maintainer", "/gate")
        await s.settled()
        await eventually(merged, what="the item merged while its comments fail")
        assert len(s.pagure.fail_next["comment"]) < 40  # the enqueue comment met faults
        s.pagure.fail_next["comment"] = []
        await s.gate.wait_idle(180)
        assert results(s.gate) == {"merged": ["Update to 12.0.1"]}
        comments = s.comments(pr)
        assert len(comments) == 2
        assert "queued in liberty" in comments[0] and "merged" in comments[1]
        assert [st for commit, st in s.flags(pr) if commit == pr.commit_stop] == ["success"]

        s.pagure.fail_next["flag"] = [403] * 50
        other = await s.open_pr("ceilometer", CEILO_801, "Update to 8.0.1")
        await s.pagure.comment("rpms/ceilometer", other.id, "maintainer", "/gate")
        await s.settled()
        await s.gate.wait_idle(180)
        assert results(s.gate)["merged"] == ["Update to 12.0.1", "Update to 8.0.1"]
        assert other.status == "Merged"
        assert s.comments(other) == []  # the flag comes first; refused, the report stops
        assert "reporting item" in caplog.text and "enqueued to fedora failed" in caplog.text
        check_invariants(s.gate)
