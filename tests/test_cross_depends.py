"""``Depends-On:`` across review systems: a Pagure PR naming a Gerrit change, both
projects in one queue (docs/sources/README.md: "any review system this gate has a
connection to").

nova, horizon and python-django live on a fake Gerrit (tests/gerrit_world.py),
ceilometer on a fake Pagure (tests/fakepagure); the gate reads the Depends-On line
from the PR's commit message (gate/reviews.py ``_depends_on``) and resolves the URL
through every source's ``review_for_url``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlmodel import col, select

from gate.daemon import Gate
from gate.demo_world import PackageSpec, World, git
from repo_state.db import session
from repo_state.models import ChangeRow, Delivery, GenerationRow, ItemRow
from repo_state.state import RepoState
from tests.conftest import CEILO_801, HORIZON_BROKEN, NOVA_1201
from tests.fakepagure import FakePagure, PullRequest
from tests.gerrit_world import (
    ClientFactory,
    GerritWorld,
    ServerFactory,
    gate_served,
    gerrit_source,
    hold_jobs,
    settle,
    start_fake,
    use_gerrit,
)
from tests.invariants import check_invariants, results
from tests.test_gate_pagure import BOT_ACLS

pytestmark = pytest.mark.slow

ON_GERRIT = ["nova", "horizon", "python-django"]


@dataclass
class Scene:
    world: World
    gate: Gate
    client: TestClient[Any, Any]
    gerrit: GerritWorld
    pagure: FakePagure
    hold: Path

    async def open_pr(self, project: str, spec: PackageSpec, message: str) -> PullRequest:
        """A contributor's PR on Pagure, its commit made by the world (as in
        tests/test_gate_pagure.py ``Scene.open_pr``)."""
        ref = self.world.propose(project, spec, message)
        remote = self.world.remote(project)
        commit = git(remote, "rev-parse", ref)
        git(remote, "update-ref", "-d", ref)
        title = message.splitlines()[0]
        return await self.pagure.open_pr_from(f"rpms/{project}", "contributor", commit, title)

    async def settled(self) -> None:
        """Every event posted and processed; the items may still be running."""
        await settle(self.gate, self.gerrit, idle=False)

    def items(self, source: str, review: str) -> list[ItemRow]:
        with session(self.gate.engine) as s:
            return list(
                s.exec(
                    select(ItemRow)
                    .join(ChangeRow, col(ChangeRow.id) == col(ItemRow.change_id))
                    .where(ChangeRow.review == review, ChangeRow.source == source)
                    .order_by(col(ItemRow.id))
                ).all()
            )

    def errors(self) -> list[str]:
        with session(self.gate.engine) as s:
            return [d.error for d in s.exec(select(Delivery).order_by(col(Delivery.id))) if d.error]

    def generations(self) -> list[list[int]]:
        """The items each generation after the bootstrap was made from."""
        with session(self.gate.engine) as s:
            rows = s.exec(select(GenerationRow).order_by(col(GenerationRow.number))).all()
            return [[int(i) for i in json.loads(g.items)] for g in rows]


@asynccontextmanager
async def scene(
    world: World, aiohttp_server: ServerFactory, aiohttp_client: ClientFactory, tmp_path: Path
) -> AsyncIterator[Scene]:
    gerrit = await start_fake(world, aiohttp_server, ON_GERRIT)
    pagure = FakePagure(tmp_path / "pagure")
    await pagure.start()
    doc = world.config()
    doc["sources"] = {"review": gerrit_source(gerrit)}
    use_gerrit(doc, "review", ON_GERRIT)
    # ceilometer on Pagure, set up as tests/test_gate_pagure.py ``scene`` does
    project = pagure.adopt("rpms/ceilometer", "maintainer", world.remote("ceilometer"))
    project.access_users["commit"].append(pagure.user("gatebot"))
    fork = pagure.fork("rpms/ceilometer", "contributor")
    doc["projects"]["ceilometer"].update(source="fedora", name="rpms/ceilometer")
    doc["sources"]["fedora"] = {
        "type": "pagure",
        "url": pagure.url,
        "token": pagure.token("gatebot", BOT_ACLS),
        "webhook_keys": {project.fullname: project.hook_token, fork.fullname: fork.hook_token},
    }
    hold = tmp_path / "go"
    hold_jobs(doc, hold)
    try:
        async with gate_served(doc, aiohttp_client, [gerrit], ["review"], hold) as (gate, client):
            for p in pagure.state.projects.values():
                p.webhooks.append(str(client.make_url("/api/sources/fedora/webhook")))
            yield Scene(world, gate, client, gerrit, pagure, hold)
    finally:
        await pagure.stop()


async def test_a_pagure_pr_depending_on_a_gerrit_change_is_tested_and_merged_behind_it(
    world: World, aiohttp_server: ServerFactory, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    async with scene(world, aiohttp_server, aiohttp_client, tmp_path) as s:
        nova = s.gerrit.upload("nova", NOVA_1201, "A")
        nova_url = s.gerrit.change_url(nova)
        ceilo = await s.open_pr("ceilometer", CEILO_801, f"B\n\nDepends-On: {nova_url}\n")

        # the dependency is not approved on Gerrit: the PR is refused, naming why
        await s.pagure.comment("rpms/ceilometer", ceilo.id, "maintainer", "/gate")
        await s.settled()
        assert s.items("fedora", str(ceilo.id)) == []
        assert s.errors()[-1] == (
            f"depends on {nova_url}, which is not approved: needs Code-Review +2; needs Workflow +1"
        )

        # approved on Gerrit, the /gate on Pagure enqueues both, the Gerrit change ahead
        s.gerrit.approve(nova)
        await s.settled()
        await s.pagure.comment("rpms/ceilometer", ceilo.id, "maintainer", "/gate")
        await s.settled()
        [n] = s.items("review", str(nova))
        [c] = s.items("fedora", str(ceilo.id))
        assert n.active and c.active and n.seq < c.seq
        with session(s.gate.engine) as db:
            change = db.get(ChangeRow, c.change_id)
            assert change is not None and change.depends_on == f"[{n.change_id}]"

        s.hold.touch()
        await s.gate.wait_idle(180)
        assert results(s.gate) == {"merged": ["A", "B"]}
        [n] = s.items("review", str(nova))
        [c] = s.items("fedora", str(ceilo.id))
        # tested together: ceilometer's speculative state held nova's 12.0.1 build
        tested = RepoState.from_json(c.tested_state or "[]").nvrs()
        assert tested["nova"].startswith("nova-12.0.1-"), tested
        # merged on each system, in queue order, one generation each
        assert s.gerrit.state.changes[nova].status == "MERGED"
        assert ceilo.status == "Merged" and ceilo.closed_by == "gatebot"
        assert s.generations()[-2:] == [[n.id], [c.id]]
        assert n.generation is not None and c.generation == n.generation + 1
        check_invariants(s.gate)


async def test_a_pagure_pr_leaves_the_queue_when_its_gerrit_dependency_is_rejected(
    world: World, aiohttp_server: ServerFactory, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    async with scene(world, aiohttp_server, aiohttp_client, tmp_path) as s:
        # the broken build fails whatever the jobs' hold: for both to be queued when it
        # does, the approval's event is lost and the PR's /gate enqueues both at once
        horizon = s.gerrit.upload("horizon", HORIZON_BROKEN, "C")
        await s.settled()
        remotes, s.gerrit.fake.webhooks[:] = list(s.gerrit.fake.webhooks), []
        s.gerrit.approve(horizon)
        await s.settled()
        s.gerrit.fake.webhooks[:] = remotes
        url = s.gerrit.change_url(horizon)
        # ceilometer needs nothing new: only the dependency can fail it
        ceilo = await s.open_pr(
            "ceilometer", PackageSpec("ceilometer", "8.0.1"), f"B\n\nDepends-On: {url}\n"
        )
        await s.pagure.comment("rpms/ceilometer", ceilo.id, "maintainer", "/gate")
        await s.settled()
        generations = s.generations()

        s.hold.touch()
        await s.gate.wait_idle(180)
        [h] = s.items("review", str(horizon))
        [c] = s.items("fedora", str(ceilo.id))
        assert h.seq < c.seq
        assert h.result == "rejected" and "rpmbuild failed" in (h.failure or ""), h.failure
        assert (c.result, c.failure) == (
            "dequeued",
            f"depends on item {h.id} (horizon), which was rejected",
        )
        assert ceilo.status == "Open"
        assert not any(call[1].endswith("/merge") for call in s.pagure.calls)
        assert s.gerrit.state.changes[horizon].status == "NEW"
        assert s.generations() == generations  # nothing published
        check_invariants(s.gate)


async def test_a_gerrit_change_depending_on_a_pagure_pr_waits_for_its_gate_command(
    world: World, aiohttp_server: ServerFactory, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    """The other way round: Pagure approves by a command recorded for the PR's head
    (docs/sources/pagure.md), so an unapproved PR refuses its Gerrit dependent, and
    once ``/gate`` has queued it a recheck on Gerrit queues the change behind it."""
    async with scene(world, aiohttp_server, aiohttp_client, tmp_path) as s:
        ceilo = await s.open_pr("ceilometer", PackageSpec("ceilometer", "8.0.1"), "A")
        url = f"{s.pagure.url}/rpms/ceilometer/pull-request/{ceilo.id}"
        nova = s.gerrit.upload("nova", NOVA_1201, "B", depends=url)
        s.gerrit.approve(nova)
        await s.settled()
        assert s.items("review", str(nova)) == []
        assert s.errors()[-1] == (
            f"depends on {url}, which is not approved: "
            "waiting for /gate from someone with commit access"
        )

        await s.pagure.comment("rpms/ceilometer", ceilo.id, "maintainer", "/gate")
        await s.settled()
        change = s.gerrit.state.changes[nova]
        s.gerrit.state.review(
            change, change.current, s.gerrit.state.account("core"), {"message": "recheck"}
        )
        await s.settled()
        [c] = s.items("fedora", str(ceilo.id))
        [n] = s.items("review", str(nova))
        assert c.active and n.active and c.seq < n.seq

        s.hold.touch()
        await s.gate.wait_idle(180)
        assert results(s.gate) == {"merged": ["A", "B"]}
        assert ceilo.status == "Merged" and s.gerrit.state.changes[nova].status == "MERGED"
        [c] = s.items("fedora", str(ceilo.id))
        [n] = s.items("review", str(nova))
        assert s.generations()[-2:] == [[c.id], [n.id]]
        check_invariants(s.gate)


async def test_an_approved_gerrit_dependency_is_enqueued_first_by_its_pagure_dependent(
    world: World, aiohttp_server: ServerFactory, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    """The Gerrit approval's event is lost (events are hints): the ``/gate`` on the
    Pagure PR reads the Gerrit change, finds it approved and enqueues it first."""
    async with scene(world, aiohttp_server, aiohttp_client, tmp_path) as s:
        nova = s.gerrit.upload("nova", NOVA_1201, "A")
        await s.settled()
        remotes, s.gerrit.fake.webhooks[:] = list(s.gerrit.fake.webhooks), []
        s.gerrit.approve(nova)
        await s.settled()
        s.gerrit.fake.webhooks[:] = remotes
        assert s.items("review", str(nova)) == []

        url = s.gerrit.change_url(nova)
        ceilo = await s.open_pr("ceilometer", CEILO_801, f"B\n\nDepends-On: {url}\n")
        await s.pagure.comment("rpms/ceilometer", ceilo.id, "maintainer", "/gate")
        await s.settled()
        [n] = s.items("review", str(nova))
        [c] = s.items("fedora", str(ceilo.id))
        assert n.active and c.active and n.seq < c.seq

        s.hold.touch()
        await s.gate.wait_idle(180)
        assert results(s.gate) == {"merged": ["A", "B"]}
        assert s.gerrit.state.changes[nova].status == "MERGED" and ceilo.status == "Merged"
        check_invariants(s.gate)


async def test_a_new_patch_set_of_the_gerrit_dependency_takes_its_pagure_dependent_out(
    world: World, aiohttp_server: ServerFactory, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    async with scene(world, aiohttp_server, aiohttp_client, tmp_path) as s:
        nova = s.gerrit.upload("nova", NOVA_1201, "A")
        s.gerrit.approve(nova)
        url = s.gerrit.change_url(nova)
        ceilo = await s.open_pr("ceilometer", CEILO_801, f"B\n\nDepends-On: {url}\n")
        await s.pagure.comment("rpms/ceilometer", ceilo.id, "maintainer", "/gate")
        await s.settled()
        [n] = s.items("review", str(nova))
        assert [c.active for c in s.items("fedora", str(ceilo.id))] == [True]

        s.gerrit.upload(
            "nova",
            replace(NOVA_1201, release="2"),
            "A",
            change_id=s.gerrit.state.changes[nova].change_id,
        )
        await s.settled()
        s.hold.touch()
        await s.gate.wait_idle(180)
        [c] = s.items("fedora", str(ceilo.id))
        assert (c.result, c.failure) == (
            "dequeued",
            f"depends on item {n.id} (nova), which was dequeued",
        )
        assert results(s.gate) == {"dequeued": ["A", "B"]}
        assert ceilo.status == "Open" and s.gerrit.state.changes[nova].status == "NEW"
        check_invariants(s.gate)
