"""The gate with drafts on the local backend, end to end (real git, rpmbuild,
createrepo_c, SQLite): final builds start ahead of the tip as drafts and are
promoted at the tip; no final build runs at the tip; the status says so."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from gate.config import parse_config
from gate.daemon import Gate
from gate.deliveries import store_delivery
from gate.demo_world import World
from repo_state.db import session
from repo_state.models import BuildRow, ChangeRow, ItemRow
from tests.conftest import CEILO_801, DJANGO_NO_COMPAT, NOVA_1201, propose
from tests.invariants import check_invariants, results

pytestmark = pytest.mark.slow


async def _run(world: World, drafts: str, *changes: tuple[str, Any, str]) -> Gate:
    config = world.config()
    config["backends"]["local"]["drafts"] = drafts
    gate = Gate(parse_config(config))
    await gate.start()
    await gate.wait_idle(180)
    for project, spec, title in changes:
        propose(gate, world, project, spec, title)
    gate.wake()
    await gate.wait_idle(180)
    return gate


def _finals(gate: Gate) -> dict[str, BuildRow]:
    with session(gate.engine) as s:
        return {b.nvr: b for b in s.exec(select(BuildRow).where(BuildRow.purpose == "final"))}


async def test_final_builds_are_promoted_drafts(world: World) -> None:
    events: list[dict[str, Any]] = []
    config = world.config()
    gate = Gate(parse_config(config))
    gate.listeners.append(events.append)
    await gate.start()
    try:
        await gate.wait_idle(180)
        assert gate.drafts == {"liberty": True}
        backend = gate.backends["local"]
        # the bootstrap (post items: commits already on the branches) is final-built
        bootstrap = backend.rebuild_count("final")  # type: ignore[attr-defined]
        propose(gate, world, "nova", NOVA_1201, "A")
        propose(gate, world, "ceilometer", CEILO_801, "B")
        gate.wake()
        await gate.wait_idle(180)
        assert results(gate) == {"merged": ["A", "B"]}
        finals = _finals(gate)
        for nvr in ("nova-12.0.1-1", "ceilometer-8.0.1-1"):
            assert finals[nvr].task_ref.startswith("promoted:"), finals[nvr]
        # the drafts were the final builds: none was built at the tip
        assert backend.rebuild_count("final") == bootstrap  # type: ignore[attr-defined]
        assert backend.rebuild_count("draft") == 2  # type: ignore[attr-defined]
        assert not list(backend.drafts_dir.glob("*/build.json"))  # type: ignore[attr-defined]
        states = [(e.get("item"), e.get("state")) for e in events if e["topic"] == "item"]
        assert ("draft-build" in {s for _, s in states}) and ("promote" in {s for _, s in states})
        assert gate.backends["local"].status() == {"drafts": "on"}
        check_invariants(gate)
    finally:
        await gate.stop()


async def test_an_item_reset_after_its_draft_promotes_the_draft_of_its_tree(
    world: World,
) -> None:
    """D (python-django) fails its jobs; A (nova) behind it is reset: whether its
    draft was built before the reset or not, it is built once (same tree, same
    key), promoted, and D's change never gets a draft."""
    gate = await _run(
        world, "auto", ("python-django", DJANGO_NO_COMPAT, "D"), ("nova", NOVA_1201, "A")
    )
    try:
        assert results(gate) == {"rejected": ["D"], "merged": ["A"]}
        backend = gate.backends["local"]
        with session(gate.engine) as s:
            drafts = s.exec(select(BuildRow).where(BuildRow.purpose == "draft")).all()
            a = s.exec(
                select(ItemRow)
                .join(ChangeRow, ChangeRow.id == ItemRow.change_id)
                .where(ChangeRow.title == "A")
            ).one()
        assert [d.nvr for d in drafts] == ["nova-12.0.1-1"]
        assert backend.rebuild_count("draft") == 1  # type: ignore[attr-defined]
        assert a.attempt >= 2  # reset when D failed
        assert _finals(gate)["nova-12.0.1-1"].task_ref.startswith("promoted:")
        check_invariants(gate)
    finally:
        await gate.stop()


async def test_drafts_off_keeps_the_serial_tip(world: World) -> None:
    gate = await _run(world, "off", ("nova", NOVA_1201, "A"))
    try:
        assert gate.drafts == {"liberty": False}
        assert results(gate) == {"merged": ["A"]}
        assert not _finals(gate)["nova-12.0.1-1"].task_ref.startswith("promoted:")
        assert gate.backends["local"].rebuild_count("final") == 5  # type: ignore[attr-defined]
        assert gate.backends["local"].rebuild_count("draft") == 0  # type: ignore[attr-defined]
        assert gate.backends["local"].status() == {"drafts": "off (serial tip)"}
        check_invariants(gate)
    finally:
        await gate.stop()


def _item_of(gate: Gate, title: str) -> ItemRow | None:
    with session(gate.engine) as s:
        return s.exec(
            select(ItemRow)
            .join(ChangeRow, col(ChangeRow.id) == ItemRow.change_id)
            .where(ChangeRow.title == title)
        ).first()


async def _until(check: Callable[[], Any], timeout: float = 180.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {check}"
        await asyncio.sleep(0.05)
    return value


async def test_the_draft_of_a_dequeued_item_is_deleted_by_the_daemon(
    world: World, tmp_path: Path
) -> None:
    """B's draft is built while A, ahead, is still tested; while B waits for the tip
    its draft is kept whatever the retention; B is dequeued: the daemon's sweep
    deletes the draft (``draft_retention: 0``), A's promoted draft stays."""
    hold, go = tmp_path / "hold", tmp_path / "go"
    config = world.config()
    config["backends"]["local"]["draft_retention"] = 0
    wait = f"[ ! -e {hold} ] || while [ ! -e {go}-$RPMGATE_ITEM ]; do sleep 0.05; done"
    config["queues"]["liberty"]["jobs"] = [
        "repoclosure",
        {"type": "command", "name": "hold", "command": wait},
    ]
    events: list[dict[str, Any]] = []
    gate = Gate(parse_config(config))
    gate.listeners.append(events.append)
    await gate.start()
    try:
        await gate.wait_idle(180)
        hold.touch()
        propose(gate, world, "nova", NOVA_1201, "A")
        propose(gate, world, "ceilometer", CEILO_801, "B")
        gate.wake()
        a = await _until(lambda: _item_of(gate, "A"))
        b = await _until(lambda: _item_of(gate, "B"))
        Path(f"{go}-{b.id}").touch()
        b = await _until(lambda: (i := _item_of(gate, "B")) and i.draft == "passed" and i)
        draft_id = b.draft_build_id
        backend = gate.backends["local"]
        with session(gate.engine) as s:
            draft = s.get(BuildRow, draft_id)
            assert draft is not None and draft.state == "passed"
        assert backend.draft_dir(draft.key).is_dir()  # type: ignore[attr-defined]

        # waiting for the tip: kept, whatever the retention
        gate.draft_sweep._last = float("-inf")
        assert await gate.draft_sweep.sweep_if_due() == 0

        store_delivery(gate, "api", "item.dequeue", {"item": b.id, "reason": "test"}, None)
        gate.wake()
        await _until(lambda: not _item_of(gate, "B").active)  # type: ignore[union-attr]
        Path(f"{go}-{a.id}").touch()
        await gate.wait_idle(180)
        assert results(gate) == {"merged": ["A"], "dequeued": ["B"]}

        # the loop sweeps (a sweep is due every minute; made due now)
        gate.draft_sweep._last = float("-inf")
        gate.wake()

        def collected() -> bool:
            with session(gate.engine) as s:
                row = s.get(BuildRow, draft_id)
                return row is not None and row.state == "collected"

        await _until(collected)
        with session(gate.engine) as s:
            row = s.get(BuildRow, draft_id)
            assert row is not None
            assert row.reason == "unpromoted draft deleted (draft_retention)"
            a_draft = s.exec(
                select(BuildRow).where(BuildRow.purpose == "draft", BuildRow.project == "nova")
            ).one()
        assert not backend.draft_dir(draft.key).exists()  # type: ignore[attr-defined]
        assert a_draft.state == "passed"  # promoted: never collected
        assert _finals(gate)["nova-12.0.1-1"].task_ref == f"promoted:{a_draft.task_ref}"
        removals = [e for e in events if e["topic"] == "draft-removal"]
        assert [(e["build"], e["result"]) for e in removals] == [(draft_id, "deleted")]
        check_invariants(gate)
    finally:
        await gate.stop()


async def test_with_jobs_drafts_start_while_the_jobs_run_and_only_passed_items_promote(
    world: World, tmp_path: Path
) -> None:
    """``draft_start: with-jobs``: each item's jobs hold until its draft has started
    (a job that would wait forever with the default, jobs-passed); D fails its jobs
    and is rejected with their reason, its draft built for nothing and never
    promoted; A's draft is promoted."""
    hold, started = tmp_path / "hold", tmp_path / "draft-started"
    config = world.config()
    config["queues"]["liberty"]["draft_start"] = "with-jobs"
    wait = f"[ ! -e {hold} ] || while [ ! -e {started}-$RPMGATE_ITEM ]; do sleep 0.05; done"
    config["queues"]["liberty"]["jobs"] = [
        "repoclosure",
        {"type": "command", "name": "after-draft", "command": wait, "timeout": 120},
    ]
    gate = Gate(parse_config(config))

    def on_event(event: dict[str, Any]) -> None:
        if event["topic"] == "item" and event.get("state") == "draft-build":
            Path(f"{started}-{event['item']}").touch()

    gate.listeners.append(on_event)
    await gate.start()
    try:
        await gate.wait_idle(180)
        hold.touch()  # (the bootstrap's post items have no drafts: not held)
        propose(gate, world, "python-django", DJANGO_NO_COMPAT, "D")
        propose(gate, world, "nova", NOVA_1201, "A")
        gate.wake()
        await gate.wait_idle(180)

        assert results(gate) == {"rejected": ["D"], "merged": ["A"]}
        d_failure = _item_of(gate, "D").failure  # type: ignore[union-attr]
        assert d_failure.startswith("repoclosure: "), d_failure
        with session(gate.engine) as s:
            drafts = {
                d.project: d for d in s.exec(select(BuildRow).where(BuildRow.purpose == "draft"))
            }
        # D's draft is the option's cost: built, never promoted, no final build of it
        assert set(drafts) == {"python-django", "nova"}
        finals = _finals(gate)
        assert not any(nvr.startswith("python-django-1.9") for nvr in finals), finals
        assert finals["nova-12.0.1-1"].task_ref == f"promoted:{drafts['nova'].task_ref}"
        check_invariants(gate)
    finally:
        await gate.stop()
