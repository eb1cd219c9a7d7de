"""Deliveries become changes and items exactly once, and a bad one never stalls the gate."""

from __future__ import annotations

import pytest
from sqlmodel import select

from gate.config import ConfigError, parse_config
from gate.deliveries import store_delivery
from gate.demo_world import PackageSpec, World
from gate.events import ChangeEnqueue
from gate.ingest import HANDLERS, Ingest
from repo_state.db import session
from repo_state.models import ChangeRow, Delivery, ItemRow
from tests.conftest import NOVA_1201, running_gate
from tests.invariants import results

pytestmark = pytest.mark.slow


async def test_a_delivery_processed_twice_after_a_crash_makes_one_change(world: World) -> None:
    async with running_gate(world) as gate:
        ref = world.propose("nova", NOVA_1201, "A")
        await gate.stop()  # nothing processes it behind our back
        delivery, _ = store_delivery(
            gate,
            "api",
            "change.proposed",
            {"project": "nova", "ref": ref, "title": "A", "approve": True},
            None,
        )
        await gate.ingest.process_deliveries()
        with session(gate.engine) as s:  # as if the daemon died before marking it processed
            row = s.get(Delivery, delivery.id)
            row.processed_at = None
            s.add(row)
            s.commit()
        await gate.ingest.process_deliveries()
        with session(gate.engine) as s:
            changes = s.exec(select(ChangeRow).where(ChangeRow.title == "A")).all()
            items = s.exec(select(ItemRow).where(ItemRow.kind == "gate")).all()
            again = s.get(Delivery, delivery.id)
        assert len(changes) == 1 and len(items) == 1
        assert again.error is None and again.result == f"change {changes[0].id}"


async def test_a_failing_handler_is_reported_as_an_error_and_later_events_still_run(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(ingest: Ingest, event: ChangeEnqueue) -> str:
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(HANDLERS, ChangeEnqueue, broken)
    async with running_gate(world) as gate:
        bad, _ = store_delivery(gate, "api", "change.enqueue", {"change": 1}, None)
        unknown, _ = store_delivery(gate, "api", "no.such.type", {"x": 1}, None)
        ref = world.propose("nova", NOVA_1201, "A")
        store_delivery(
            gate,
            "api",
            "change.proposed",
            {"project": "nova", "ref": ref, "title": "A", "approve": True},
            None,
        )
        gate.wake()
        await gate.wait_idle(120)
        with session(gate.engine) as s:
            bad_row, unknown_row = s.get(Delivery, bad.id), s.get(Delivery, unknown.id)
        # a bug is an error of the gate, not a refusal of the event
        assert bad_row.error == "internal error: RuntimeError: disk on fire"
        assert unknown_row.error == "unknown event type 'no.such.type'"
        assert unknown_row.payload == '{"x": 1}'  # kept, not dropped
        assert results(gate) == {"merged": ["A"]}


async def test_a_direct_push_whose_final_build_failed_can_be_retried(world: World) -> None:
    async with running_gate(world) as gate:
        world.push_direct("horizon", PackageSpec("horizon", "9.0.2", broken_build=True), "bad")
        store_delivery(gate, "api", "ref.updated", {"project": "horizon"}, None)
        gate.wake()
        await gate.wait_idle(120)
        with session(gate.engine) as s:
            post = s.exec(select(ItemRow).where(ItemRow.project == "horizon")).all()[-1]
        assert post.result == "rejected" and "final build failed" in post.failure
        # polling the same head again is a no-op; forcing it makes a new post item
        store_delivery(gate, "api", "ref.updated", {"project": "horizon"}, None)
        gate.wake()
        await gate.wait_idle(120)
        store_delivery(gate, "api", "ref.updated", {"project": "horizon", "force": True}, None)
        gate.wake()
        await gate.wait_idle(120)
        with session(gate.engine) as s:
            posts = s.exec(
                select(ItemRow).where(ItemRow.project == "horizon", ItemRow.kind == "post")
            ).all()
        assert len(posts) == 3  # bootstrap, the failed push, the forced retry


def test_unset_environment_variable_is_an_error_naming_the_key(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RPMGATE_TEST_TOKEN", raising=False)
    doc = world.config(auth={"api_tokens": ["${RPMGATE_TEST_TOKEN}"]})
    with pytest.raises(
        ConfigError,
        match=r"auth\.api_tokens\.0: environment variable "
        r"RPMGATE_TEST_TOKEN is not set",
    ):
        parse_config(doc)
    monkeypatch.setenv("RPMGATE_TEST_TOKEN", "s3cret-token-of-enough-length")
    assert parse_config(doc).auth.api_tokens == ("s3cret-token-of-enough-length",)


def test_only_braced_variables_expand_so_shell_commands_keep_their_dollars(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMOKE_ARGS", "--fast")
    doc = world.config()
    doc["queues"]["liberty"]["jobs"] = [
        {"name": "smoke", "command": "run $HOME ${SMOKE_ARGS} $${LITERAL}"}
    ]
    job = parse_config(doc).queues["liberty"].jobs[0]
    assert job.command == "run $HOME --fast ${LITERAL}"  # type: ignore[union-attr]


def test_short_or_empty_api_tokens_are_refused(world: World) -> None:
    with pytest.raises(ConfigError, match=r"auth\.api_tokens\.0"):
        parse_config(world.config(auth={"api_tokens": [""]}))


def test_koji_values_are_checked_when_the_config_loads(world: World) -> None:
    doc = world.config(
        backends={
            "koji": {
                "type": "koji",
                "server": "https://k/kojihub",
                "topurl": "https://k/kojifiles",
                "scratch_source": "git",
            }
        }
    )
    with pytest.raises(ConfigError, match=r"backends\.koji: scratch_source must be"):
        parse_config(doc)
