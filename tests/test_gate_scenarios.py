"""The gate end to end: real git, rpmbuild, createrepo_c, SQLite; every scenario runs three
ways: builds on the gate host (``local``), and in Koji (the fake hub, driven by the real
``koji.ClientSession``) from uploaded SRPMs and from SCM URLs.

Koji runs print what the builds cost on the hub (``-s`` shows it) and check that no
recovery search ran: a build the gate starts itself never needs one.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from gate.builds import final_key
from gate.config import parse_config
from gate.daemon import Gate
from gate.deliveries import store_delivery
from gate.demo_world import PackageSpec, World, git
from repo_state.db import session
from repo_state.models import BuildRow, ChangeRow, ItemRow
from repo_state.state import RepoState
from tests.conftest import (
    CEILO_801,
    DJANGO_NO_COMPAT,
    NOVA_1201,
    propose,
    propose_classic,
)
from tests.fakekoji import FakeKoji
from tests.invariants import check_invariants, failure_of, results
from tests.koji_gate import TARGET, hub_calls, koji_config_doc, request_report, start_hub

pytestmark = pytest.mark.slow


@dataclass
class Flavour:
    """Where a scenario's builds run, and what that changes in what the gate reports."""

    name: str
    hub: FakeKoji | None = None
    mode: str = "srpm"

    @property
    def backend(self) -> str:
        return "local" if self.hub is None else "koji"

    @property
    def target(self) -> str:
        return "liberty-candidate" if self.hub is None else TARGET

    def config(self, world: World) -> dict[str, Any]:
        if self.hub is None:
            return world.config()
        return koji_config_doc(world, self.hub, self.mode)

    def build_failure(self) -> str:
        """What the item of a change whose %build fails is rejected with (a regex)."""
        if self.hub is None:
            return r"rpmbuild failed in %build: "
        return (
            r"Koji buildArch task \d+ \(noarch\) failed: BuildError: error building "
            r"package \(arch noarch\), mock exited with status 1"
        )

    def already_exists(self, nvr: str) -> str:
        if self.hub is None:
            return f"final build failed: build {nvr} already exists"
        return f"final build failed: {nvr} already exists in Koji"

    def scratch_runs(self, gate: Gate, row: BuildRow) -> int:
        """How many times the build system was asked for the scratch build ``row``."""
        if self.hub is None:
            return gate.backends["local"].rebuild_count("scratch", row.key)  # type: ignore
        return sum(
            1
            for c in self.hub.hub.calls
            if c.method == "build"
            and (c.args[2] or {}).get("scratch")
            and (row.tree in c.args[0] or c.args[0].endswith("#" + row.commit))
        )


@pytest.fixture(params=["local", "koji-srpm", "koji-scm"])
def flavour(request: pytest.FixtureRequest, world: World, tmp_path: Path) -> Iterator[Flavour]:
    if request.param == "local":
        yield Flavour("local")
        return
    fk = start_hub(tmp_path / "hub", world)
    try:
        yield Flavour(request.param, fk, request.param.removeprefix("koji-"))
    finally:
        fk.stop()


@asynccontextmanager
async def running_gate(world: World, flavour: Flavour) -> AsyncIterator[Gate]:
    gate = Gate(parse_config(flavour.config(world)))
    await gate.start()
    try:
        await gate.wait_idle(180)
        yield gate
    finally:
        await gate.stop()
    if flavour.hub is not None:
        print(request_report(flavour.name, flavour.hub))
        assert hub_calls(flavour.hub)["listTasks"] == 0, "a recovery search ran"


def _nvrs(gate) -> dict[str, str]:
    return gate.publishers["liberty"].state().nvrs()


async def test_bootstrap_publishes_branch_heads_as_one_tested_generation(
    world: World, flavour: Flavour
) -> None:
    async with running_gate(world, flavour) as gate:
        assert _nvrs(gate) == {
            "nova": "nova-12.0.0-1",
            "ceilometer": "ceilometer-8.0.0-1",
            "horizon": "horizon-9.0.0-1",
            "python-django": "python-django-1.8.0-1",
        }
        assert gate.publishers["liberty"].generations() == [1]
        check_invariants(gate)


async def test_a_b_merge_in_order_while_c_and_d_are_rejected(
    world: World, flavour: Flavour
) -> None:
    async with running_gate(world, flavour) as gate:
        propose_classic(gate, world)
        await gate.wait_idle(180)

        assert results(gate) == {"merged": ["A", "B"], "rejected": ["C", "D"]}
        assert re.search(flavour.build_failure(), failure_of(gate, "C")), failure_of(gate, "C")
        assert failure_of(gate, "D") == (
            "repoclosure: 1 unresolved dependency: "
            "horizon-9.0.0-1.noarch requires python-django-compat"
        )
        assert _nvrs(gate)["nova"] == "nova-12.0.1-1"
        assert _nvrs(gate)["ceilometer"] == "ceilometer-8.0.1-1"
        assert _nvrs(gate)["python-django"] == "python-django-1.8.0-1"
        publisher = gate.publishers["liberty"]
        assert publisher.generations() == [1, 2, 3]
        assert publisher.generation(2).state.nvrs()["ceilometer"] == "ceilometer-8.0.0-1"
        # B was tested with A's scratch build ahead of it, and A published first
        with session(gate.engine) as s:
            b = s.exec(
                select(ItemRow)
                .join(ChangeRow, ChangeRow.id == ItemRow.change_id)
                .where(ChangeRow.title == "B")
            ).one()
        assert "nova-0:12.0.1-1.noarch" in RepoState.from_json(b.tested_state).nevras()
        assert b.generation == 3
        # git: A and B on their branches, C and D not
        assert "12.0.1" in git(world.remote("nova"), "show", "main:nova.spec")
        assert "9.0.0" in git(world.remote("horizon"), "show", "main:horizon.spec")
        check_invariants(gate)


async def _seed_conflicting_final_build(world: World, gate: Gate, flavour: Flavour) -> None:
    """Someone already built nova-12.0.1-1 in the build system, from other sources."""
    other = world.propose(
        "nova",
        PackageSpec("nova", "12.0.1", lookaside=True, requires=("python-oslo-config",)),
        "someone else's 12.0.1",
    )
    sha = await gate.merger.resolve("nova", str(world.remote("nova")), other)
    tree = git(world.remote("nova"), "rev-parse", f"{sha}^{{tree}}")
    row = gate.builds.ensure(
        purpose="final",
        key=final_key("nova", tree, "outside"),
        project="nova",
        backend=flavour.backend,
        commit=sha,
        tree=tree,
        target=flavour.target,
    )
    await gate.builds.finished(row.id)
    with session(gate.engine) as s:
        assert s.get(BuildRow, row.id).state == "passed"


async def test_final_build_failure_at_tip_merges_nothing_and_retests_b_without_a(
    world: World, flavour: Flavour
) -> None:
    async with running_gate(world, flavour) as gate:
        await _seed_conflicting_final_build(world, gate, flavour)
        propose(gate, world, "nova", NOVA_1201, "A")
        propose(gate, world, "ceilometer", CEILO_801, "B")
        gate.wake()
        await gate.wait_idle(180)

        assert results(gate) == {"rejected": ["A", "B"]}
        assert failure_of(gate, "A").startswith(flavour.already_exists("nova-12.0.1-1"))
        assert failure_of(gate, "B") == (
            "repoclosure: 1 unresolved dependency: "
            "ceilometer-8.0.1-1.noarch requires nova >= 12.0.1"
        )
        assert gate.publishers["liberty"].generations() == [1]  # nothing published
        assert "12.0.0" in git(world.remote("nova"), "show", "main:nova.spec")
        with session(gate.engine) as s:
            b = s.exec(
                select(ItemRow)
                .join(ChangeRow, ChangeRow.id == ItemRow.change_id)
                .where(ChangeRow.title == "B")
            ).one()
        assert b.attempt >= 2 and json.loads(b.base_ahead) == []
        check_invariants(gate)


async def test_independent_item_reuses_its_scratch_build_when_the_item_ahead_fails(
    world: World, flavour: Flavour
) -> None:
    async with running_gate(world, flavour) as gate:
        propose(gate, world, "python-django", DJANGO_NO_COMPAT, "D")
        propose(
            gate,
            world,
            "ceilometer",
            PackageSpec("ceilometer", "8.0.1", requires=("nova >= 12.0.0",)),
            "E",
        )
        gate.wake()
        await gate.wait_idle(180)

        assert results(gate) == {"rejected": ["D"], "merged": ["E"]}
        with session(gate.engine) as s:
            e = s.exec(
                select(ItemRow)
                .join(ChangeRow, ChangeRow.id == ItemRow.change_id)
                .where(ChangeRow.title == "E")
            ).one()
            build = s.exec(
                select(BuildRow).where(BuildRow.purpose == "scratch", BuildRow.key == e.build_key)
            ).one()
        assert e.attempt == 2  # tested behind D, then reset when D failed
        assert build.submissions == 1
        assert flavour.scratch_runs(gate, build) == 1
        check_invariants(gate)


async def test_merge_conflict_between_two_changes_to_one_project(
    world: World, flavour: Flavour
) -> None:
    async with running_gate(world, flavour) as gate:
        propose(gate, world, "nova", NOVA_1201, "X")
        propose(gate, world, "nova", PackageSpec("nova", "12.0.2", lookaside=True), "Y")
        gate.wake()
        await gate.wait_idle(180)

        assert results(gate) == {"merged": ["X"], "rejected": ["Y"]}
        assert failure_of(gate, "Y").startswith("merge conflict with ")
        assert "nova.spec" in failure_of(gate, "Y")
        check_invariants(gate)


async def test_stacked_changes_in_one_project_merge_in_order(
    world: World, flavour: Flavour
) -> None:
    async with running_gate(world, flavour) as gate:
        first = world.propose("nova", NOVA_1201, "X")
        store_delivery(
            gate,
            "api",
            "change.proposed",
            {"project": "nova", "ref": first, "title": "X", "approve": True},
            None,
        )
        propose(gate, world, "nova", PackageSpec("nova", "12.0.2", lookaside=True), "Y", on=first)
        gate.wake()
        await gate.wait_idle(180)
        assert results(gate) == {"merged": ["X", "Y"]}
        assert _nvrs(gate)["nova"] == "nova-12.0.2-1"
        check_invariants(gate)


async def test_direct_push_becomes_a_post_item_included_in_items_behind(
    world: World, flavour: Flavour
) -> None:
    async with running_gate(world, flavour) as gate:
        world.push_direct("nova", PackageSpec("nova", "12.0.2", lookaside=True), "hotfix")
        store_delivery(gate, "api", "ref.updated", {"project": "nova"}, None)
        propose(
            gate,
            world,
            "ceilometer",
            PackageSpec("ceilometer", "8.0.2", requires=("nova >= 12.0.2",)),
            "F",
        )
        gate.wake()
        await gate.wait_idle(180)

        assert results(gate) == {"merged": ["F"]}
        with session(gate.engine) as s:
            post = s.exec(
                select(ItemRow).where(ItemRow.kind == "post", ItemRow.project == "nova")
            ).all()[-1]
            f = s.exec(select(ItemRow).where(ItemRow.kind == "gate")).one()
        assert post.result == "merged" and post.generation == 2
        assert "nova-0:12.0.2-1.noarch" in RepoState.from_json(f.tested_state).nevras()
        assert f.generation == 3
        assert _nvrs(gate)["nova"] == "nova-12.0.2-1"
        check_invariants(gate)


async def test_branch_polling_sees_a_direct_push(world: World, flavour: Flavour) -> None:
    async with running_gate(world, flavour) as gate:
        sha = world.push_direct(
            "horizon", PackageSpec("horizon", "9.0.2", requires=("python-django-compat",)), "x"
        )
        await gate.polling.poll_queue("liberty")
        await gate.wait_idle(120)
        assert _nvrs(gate)["horizon"] == "horizon-9.0.2-1"
        with session(gate.engine) as s:
            change = s.exec(select(ChangeRow).where(ChangeRow.sha == sha)).one()
        assert change.state == "merged"
        check_invariants(gate)


async def test_every_published_generation_passes_repoclosure(
    world: World, flavour: Flavour, tmp_path: Path
) -> None:
    async with running_gate(world, flavour) as gate:
        propose(gate, world, "nova", NOVA_1201, "A")
        propose(gate, world, "ceilometer", CEILO_801, "B")
        propose(gate, world, "python-django", DJANGO_NO_COMPAT, "D")
        gate.wake()
        await gate.wait_idle(180)
        publisher = gate.publishers["liberty"]
        for number in publisher.generations():
            path = publisher.generation(number).path / "x86_64"
            out = subprocess.run(["createrepo_c", "--version"], capture_output=True)
            assert out.returncode == 0
            assert (path / "repodata" / "repomd.xml").exists()
        from gate.demo import _check_generations

        assert await _check_generations(gate, tmp_path) == []


async def test_change_stacked_on_a_rejected_change_is_rejected_not_merged(
    world: World, flavour: Flavour
) -> None:
    """Merging Y would carry X's commit onto the branch although X was rejected (I1)."""
    async with running_gate(world, flavour) as gate:
        broken = PackageSpec(
            "horizon", "9.0.1", requires=("python-django-compat",), broken_build=True
        )
        x_ref = world.propose("horizon", broken, "X")
        store_delivery(
            gate,
            "api",
            "change.proposed",
            {"project": "horizon", "ref": x_ref, "title": "X", "approve": True},
            None,
        )
        fixed = PackageSpec("horizon", "9.0.2", requires=("python-django-compat",))
        propose(gate, world, "horizon", fixed, "Y", on=x_ref)
        gate.wake()
        await gate.wait_idle(180)

        assert results(gate) == {"rejected": ["X", "Y"]}
        assert failure_of(gate, "Y").startswith("depends on change ")
        assert "(X), which is rejected and not ahead of it in the queue" in failure_of(gate, "Y")
        assert "9.0.0" in git(world.remote("horizon"), "show", "main:horizon.spec")
        check_invariants(gate)


async def test_publish_failure_after_merge_is_retried_as_a_post_item(
    world: World, flavour: Flavour
) -> None:
    """Git has the change, the repository not yet: the item stays at the head,
    is shown as a publish retry, and is published once the fault is gone."""
    async with running_gate(world, flavour) as gate:
        root = gate.publishers["liberty"].root
        lock = root / ".lock"
        lock.unlink()
        lock.mkdir()  # the publisher cannot take its lock: every publish fails
        failed = asyncio.Event()
        gate.listeners.append(
            lambda e: failed.set() if e.get("state") == "publish-failed" else None
        )
        propose(gate, world, "nova", NOVA_1201, "A")
        gate.wake()
        await asyncio.wait_for(failed.wait(), 120)

        assert "12.0.1" in git(world.remote("nova"), "show", "main:nova.spec")  # merged
        assert gate.publishers["liberty"].generations() == [1]  # not published
        from gate.web.status import status

        with session(gate.engine) as s:
            doc = status(gate.runtime, s)
        [item] = doc["queues"][0]["items"]
        assert item["state"] == "publish retry (post item)"
        assert item["failure"].startswith("publish failed, retrying")

        lock.rmdir()
        await gate.wait_idle(120)
        assert results(gate) == {"merged": ["A"]}
        assert _nvrs(gate)["nova"] == "nova-12.0.1-1"
        check_invariants(gate)
