"""Post items are tested before they are published; bootstrap is all or nothing (issue 8).

End to end with real git, rpmbuild, createrepo_c and SQLite: a direct push
that breaks the repository is held back while unrelated changes merge, a
newer push supersedes it, a release engineer drops one; a bootstrap whose
lookaside URL is wrong publishes nothing until the configuration is fixed;
the same commit is never merged twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlmodel import col, select

from gate.config import load_config, parse_config
from gate.daemon import Gate
from gate.deliveries import store_delivery
from gate.demo_world import PackageSpec, World
from gate.health import Health
from gate.web.status import status
from repo_state.db import session
from repo_state.models import ChangeRow, Delivery, ItemRow
from tests.conftest import NOVA_1201, propose, running_gate
from tests.invariants import check_invariants, failure_of, results

pytestmark = pytest.mark.slow

HORIZON_NEEDS_MISSING = PackageSpec(
    "horizon", "9.0.2", requires=("python-django-compat", "does-not-exist")
)
HORIZON_FIXED = PackageSpec("horizon", "9.0.3", requires=("python-django-compat",))


def post_items(gate: Gate, **where: Any) -> list[ItemRow]:
    with session(gate.engine) as s:
        query = select(ItemRow).where(ItemRow.kind == "post").order_by(col(ItemRow.id))
        for name, value in where.items():
            query = query.where(getattr(ItemRow, name) == value)
        return list(s.exec(query).all())


def outcome(gate: Gate, delivery_id: int | None) -> tuple[str | None, str | None]:
    with session(gate.engine) as s:
        row = s.get(Delivery, delivery_id)
        assert row is not None and row.processed_at is not None
        return row.result, row.error


async def push(gate: Gate, world: World, spec: PackageSpec, message: str) -> None:
    world.push_direct(spec.name, spec, message)
    store_delivery(gate, "api", "ref.updated", {"project": spec.name}, None)
    gate.wake()
    await gate.wait_idle(120)


async def test_a_push_that_breaks_the_repository_is_held_back_and_nothing_else_is(
    world: World,
) -> None:
    """Issue 8, 4: the push is not published; an unrelated change merges without it;
    status and /healthz say git and the repository disagree; a newer push supersedes it."""
    async with running_gate(world) as gate:
        await push(gate, world, HORIZON_NEEDS_MISSING, "needs does-not-exist")
        [held] = post_items(gate, active=True)
        assert held.failure == (
            "blocked: untested push to horizon breaks the repository: repoclosure: "
            "1 unresolved dependency: horizon-9.0.2-1.noarch requires does-not-exist"
        )
        assert gate.publishers["liberty"].state().nvrs()["horizon"] == "horizon-9.0.0-1"

        propose(gate, world, "nova", NOVA_1201, "A")  # unrelated: not held up, not blamed
        gate.wake()
        await gate.wait_idle(120)
        assert results(gate) == {"merged": ["A"]}
        nvrs = gate.publishers["liberty"].state().nvrs()
        assert (nvrs["nova"], nvrs["horizon"]) == ("nova-12.0.1-1", "horizon-9.0.0-1")

        with session(gate.engine) as s:
            doc = status(gate.runtime, s)
        [queue] = doc["queues"]
        [shown] = queue["held_back"]
        assert shown["item"] == held.id and shown["project"] == "horizon"
        assert shown["git_and_repository"] == (
            "the branch has commits the repository was not built from"
        )
        assert [i["state"] for i in queue["items"]] == ["blocked"]
        report = await Health(gate.runtime).report()
        [check] = [c for c in report.checks if c.name == "held_back:liberty"]
        assert check.ok and check.detail == (
            "git ahead of the repository, pushes held back: horizon"
        )

        await push(gate, world, HORIZON_FIXED, "drop the bad dependency")
        [old, new] = post_items(gate, bootstrap=False)
        with session(gate.engine) as s:
            shas = [s.get(ChangeRow, i.change_id).sha[:12] for i in (old, new)]  # type: ignore[union-attr]
        assert (old.result, old.failure) == (
            "superseded",
            f"superseded: horizon's branch moved on from {shas[0]} to {shas[1]}",
        )
        assert new.result == "merged"
        assert gate.publishers["liberty"].state().nvrs()["horizon"] == "horizon-9.0.3-1"
        with session(gate.engine) as s:
            assert status(gate.runtime, s)["queues"][0]["held_back"] == []
        check_invariants(gate)


async def test_a_release_engineer_drops_a_held_back_push_and_it_is_recorded(
    world: World,
) -> None:
    async with running_gate(world) as gate:
        await push(gate, world, HORIZON_NEEDS_MISSING, "needs does-not-exist")
        [held] = post_items(gate, active=True)
        # a gate item that is merged cannot be dequeued; a held-back push can
        delivery, _ = store_delivery(
            gate,
            "api",
            "item.dequeue",
            {"item": held.id, "reason": "reverted upstream"},
            None,
            requested_by="releng",
        )
        gate.wake()
        await gate.wait_idle(60)
        assert outcome(gate, delivery.id) == (f"item {held.id} dequeued", None)
        [dropped] = post_items(gate, bootstrap=False)
        assert dropped.result == "dequeued"
        assert dropped.failure == "reverted upstream (by releng)"
        # and publishing or retrying anything else is refused, with the reason
        delivery, _ = store_delivery(
            gate, "api", "item.publish", {"item": held.id}, None, requested_by="releng"
        )
        gate.wake()
        await gate.wait_idle(60)
        assert outcome(gate, delivery.id) == (None, f"item {held.id} is not in a queue")


async def test_a_failed_bootstrap_publishes_nothing_until_the_config_is_fixed(
    world: World,
) -> None:
    """Issue 8, 5: a typo'd lookaside URL fails nova's bootstrap; no generation is
    published without nova; fixing the config and restarting builds it and publishes
    every project together."""
    broken = world.config()
    broken["projects"]["nova"]["lookaside"] = {"url": "file:///no/such/lookaside/{filename}"}
    gate = Gate(parse_config(broken))
    await gate.start()
    try:
        await gate.wait_idle(120)
        assert gate.publishers["liberty"].current() is None
        [nova] = post_items(gate, active=True, project="nova")
        assert nova.bootstrap
        assert nova.failure.startswith("blocked: bootstrap of nova failed: final build failed")
        assert nova.failure.endswith(f"or with `rpmgate retry {nova.id}`")
        report = await Health(gate.runtime).report()
        assert "held_back:liberty" in report.failing
        # the others are built and tested, and wait
        assert {i.project for i in post_items(gate, active=True)} == {
            "nova",
            "ceilometer",
            "horizon",
            "python-django",
        }
        # a change behind waits too: the first generation carries every project
        propose(gate, world, "horizon", HORIZON_FIXED, "H")
        gate.wake()
        await gate.wait_idle(120)
        assert gate.publishers["liberty"].current() is None
    finally:
        await gate.stop()

    async with running_gate(world) as gate:  # the fixed config, same state
        await gate.wait_idle(180)
        assert 1 in gate.publishers["liberty"].generations()
        first = gate.publishers["liberty"].generation(1)
        assert first is not None
        assert set(first.state.nvrs()) == {"nova", "ceilometer", "horizon", "python-django"}
        assert results(gate) == {"merged": ["H"]}, failure_of(gate, "H")
        assert gate.publishers["liberty"].state().nvrs()["horizon"] == "horizon-9.0.3-1"
        check_invariants(gate)


async def test_a_retry_request_builds_a_failed_bootstrap_again(world: World) -> None:
    broken = world.config()
    moved = world.lookaside.with_name("lookaside-moved")
    world.lookaside.rename(moved)  # the cache is down: nova's sources cannot be fetched
    gate = Gate(parse_config(broken))
    await gate.start()
    try:
        await gate.wait_idle(120)
        [nova] = post_items(gate, active=True, project="nova")
        assert nova.failure.startswith("blocked: bootstrap of nova failed")
        assert gate.publishers["liberty"].current() is None
        moved.rename(world.lookaside)  # back; nothing in the config changed
        delivery, _ = store_delivery(
            gate, "api", "item.retry", {"item": nova.id}, None, requested_by="releng"
        )
        gate.wake()
        await gate.wait_idle(180)
        assert outcome(gate, delivery.id) == (
            f"item {nova.id} will be built and tested again (by releng)",
            None,
        )
        assert gate.publishers["liberty"].state().nvrs()["nova"] == "nova-12.0.0-1"
    finally:
        await gate.stop()


async def test_the_same_commit_is_never_merged_twice(world: World) -> None:
    """Issue 8, 6: a commit already on the branch, or already proposed, is refused."""
    async with running_gate(world) as gate:
        ref = world.propose("nova", NOVA_1201, "A")
        first, _ = store_delivery(
            gate,
            "api",
            "change.proposed",
            {"project": "nova", "ref": ref, "title": "A"},
            None,
        )
        again, _ = store_delivery(
            gate,
            "api",
            "change.proposed",
            {"project": "nova", "ref": ref, "title": "A again", "approve": True},
            None,
        )
        gate.wake()
        await gate.wait_idle(60)
        with session(gate.engine) as s:
            change = s.exec(select(ChangeRow).where(ChangeRow.title == "A")).one()
        result, error = outcome(gate, again.id)
        assert result is None
        assert error == f"commit {change.sha[:12]} of nova is change {change.id} already (proposed)"

        approve, _ = store_delivery(gate, "api", "change.approved", {"change": change.id}, None)
        gate.wake()
        await gate.wait_idle(120)
        assert results(gate) == {"merged": ["A"]}
        assert outcome(gate, first.id)[1] is None

        # now on the branch: proposing it again, under any ref, is refused
        merged, _ = store_delivery(
            gate,
            "api",
            "change.proposed",
            {"project": "nova", "ref": change.sha, "title": "A merged", "approve": True},
            None,
        )
        gate.wake()
        await gate.wait_idle(60)
        assert outcome(gate, merged.id) == (
            None,
            f"commit {change.sha[:12]} is on nova's branch main already: nothing to merge",
        )
        assert len(gate.publishers["liberty"].generations()) == 2  # bootstrap, A
        assert outcome(gate, approve.id)[1] is None
        check_invariants(gate)


async def test_a_live_reload_that_fixes_a_failed_bootstrap_builds_it_again(
    world: World, tmp_path: Path
) -> None:
    """Issue 8, 5, without a restart: the lookaside URL fixed in the file and the
    configuration reloaded (as SIGHUP or ``rpmgate reload`` do): the blocked bootstrap,
    whose build settings changed, is built again and every project is published."""
    path = tmp_path / "rpmgate.yaml"
    broken = world.config()
    broken["projects"]["nova"]["lookaside"] = {"url": "file:///no/such/lookaside/{filename}"}
    path.write_text(yaml.safe_dump(broken))
    gate = Gate(load_config(path))
    await gate.start()
    try:
        await gate.wait_idle(120)
        [nova] = post_items(gate, active=True, project="nova")
        assert nova.failure.startswith("blocked: bootstrap of nova failed")
        assert gate.publishers["liberty"].current() is None

        path.write_text(yaml.safe_dump(world.config()))
        assert gate.reloader is not None
        status, answer = await gate.reloader.reload("test")
        assert status == 200 and answer.applied, answer
        gate.wake()
        await gate.wait_idle(180)
        first = gate.publishers["liberty"].generation(1)
        assert first is not None
        assert set(first.state.nvrs()) == {"nova", "ceilometer", "horizon", "python-django"}
        [again] = post_items(gate, project="nova")
        assert (again.id, again.result) == (nova.id, "merged")  # the same item, retried
        check_invariants(gate)
    finally:
        await gate.stop()
