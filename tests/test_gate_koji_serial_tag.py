"""The gate with a serial tip (``drafts: off``): the final build is made at the tip and
tagged by kojid's BuildTask (a ``tagBuild`` subtask).  When the hub refuses that subtask
the gate's user the tag itself (kojihub check_tag_access: locked, a permission), the
build task fails though the build is COMPLETE: the item waits at the tip instead of
being rejected for the gate's configuration (I5), and a restart after the admin opens
the tag only tags the build and lands the item.  A ``tag`` policy refusal is the
change's verdict, as with drafts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlmodel import select

from gate.config import parse_config
from gate.daemon import Gate
from gate.demo_world import World, git
from repo_state.db import session
from repo_state.models import BuildRow
from tests.conftest import CEILO_801, NOVA_1201, propose
from tests.fakekoji import FakeKoji
from tests.invariants import check_invariants, failure_of, results
from tests.koji_gate import TARGET, koji_config_doc
from tests.test_gate_koji import (  # noqa: F401
    eventually,
    hub,
    hub_builds,
    item_row,
    nvrs,
)

pytestmark = pytest.mark.slow


@asynccontextmanager
async def serial_gate(world: World, fk: FakeKoji) -> AsyncIterator[Gate]:
    """The world gated in Koji with ``drafts: off`` (idle once the bootstrap is in)."""
    doc = koji_config_doc(world, fk)
    doc["backends"]["koji"]["drafts"] = "off"
    gate = Gate(parse_config(doc))
    await gate.start()
    try:
        await gate.wait_idle(120)
        yield gate
    finally:
        await gate.stop()


def _tagged(fk: FakeKoji) -> set[str]:
    return fk.run(
        lambda: {
            b.nvr for b in fk.hub.state.builds.values() if b.id in fk.hub.state.tags[TARGET].builds
        }
    )


def _final_builds_submitted(fk: FakeKoji) -> list[str]:
    """The sources of the non-scratch ``build`` calls the gate made, in order."""
    return [
        str(c.args[0])
        for c in fk.hub.calls
        if c.method == "build" and not (c.args[2] or {}).get("scratch")
    ]


def _stuck(gate: Gate) -> list[BuildRow]:
    with session(gate.engine) as s:
        return list(s.exec(select(BuildRow).where(BuildRow.error != "")).all())


@pytest.mark.parametrize(
    ("how", "why"),
    [("locked", "tag is locked"), ("perm", "tag requires tag permission")],
)
async def test_a_tag_closed_to_the_gate_holds_the_serial_tip_and_a_restart_only_tags(
    how: str,
    why: str,
    world: World,
    hub: FakeKoji,  # noqa: F811
    aiohttp_client: Any,
) -> None:
    """The candidate tag is locked (or needs a permission the gate's user lacks) when
    kojid tags nova's final build: the build task fails, the build is COMPLETE.  A waits
    at the tip (its final build row stopped on a backend error), nothing is merged,
    published or reset, /healthz fails naming the build; once the admin opens the tag, a
    restart tags that build -- no second build -- and A and B merge and publish."""
    from gate.web.app import make_app

    fk = hub

    def set_closed(closed: bool) -> None:
        if how == "locked":
            fk.hub.state.tags[TARGET].locked = closed
        else:
            fk.hub.state.tags[TARGET].perm = "tag" if closed else None

    async with serial_gate(world, fk) as gate:
        assert gate.backends["koji"].status()["drafts"].startswith("off: drafts: off")
        # closed once the bootstrap's final builds are in (kojid tagged those)
        fk.run(lambda: set_closed(True))
        client = await aiohttp_client(make_app(gate.runtime))
        builds_before = hub_builds(fk)
        finals_before = len(_final_builds_submitted(fk))
        propose(gate, world, "nova", NOVA_1201, "A")
        propose(gate, world, "ceilometer", CEILO_801, "B")
        gate.wake()

        [final] = await eventually(lambda: _stuck(gate))
        assert (final.purpose, final.project, final.state) == ("final", "nova", "running")
        assert final.error == (
            f"Koji refuses the gate's user any tag into {TARGET} (nova-12.0.1-1 waits): "
            f"ActionNotAllowed: {why}; once the hub's admin fixes the tag, restart rpmgate"
        )
        a, b = item_row(gate, "A"), item_row(gate, "B")
        assert a.active and b.active and a.result is None and b.result is None
        assert (a.tip, a.tip_state, a.failure) == ("final_build", "running", "")
        assert a.final_build_id == final.id
        assert b.attempt == 1 and json.loads(b.base_ahead) == [a.change_id]
        doc = await (await client.get("/api/status")).json()
        [a_doc] = [i for i in doc["queues"][0]["items"] if i["id"] == a.id]
        assert a_doc["state"] == "stuck: backend error"
        assert a_doc["failure"] == final.error
        health = await client.get("/healthz")
        assert health.status == 503
        body = await health.json()
        assert body["stuck_builds"] == [final.id]
        [check] = [c for c in body["checks"] if c["name"] == "stuck_builds"]
        assert check["detail"] == f"build {final.id} (final, nova): {final.error}"
        # built by kojid, untagged; nothing merged, nothing published
        assert hub_builds(fk)["nova-12.0.1-1"] == "COMPLETE"
        assert "nova-12.0.1-1" not in _tagged(fk)
        assert fk.hub.count("tagBuild") == 1  # the gate's own try, refused at the call
        assert gate.publishers["liberty"].generations() == [1]
        assert nvrs(gate)["nova"] == "nova-12.0.0-1"
        assert "12.0.0" in git(world.remote("nova"), "show", "main:nova.spec")
        assert "8.0.0" in git(world.remote("ceilometer"), "show", "main:ceilometer.spec")

    fk.run(lambda: set_closed(False))
    async with serial_gate(world, fk) as gate:
        assert results(gate) == {"merged": ["A", "B"]}
        assert nvrs(gate)["nova"] == "nova-12.0.1-1"
        assert nvrs(gate)["ceilometer"] == "ceilometer-8.0.1-1"
        # nova built once (before the restart), tagged by the gate after it; ceilometer
        # built and tagged by kojid
        finals = _final_builds_submitted(fk)[finals_before:]
        assert len(finals) == 2, finals
        assert [c.args[1] for c in fk.hub.calls if c.method == "tagBuild"] == [
            "nova-12.0.1-1",
            "nova-12.0.1-1",
        ]
        assert fk.hub.count("promoteBuild") == 0
        assert _tagged(fk) >= {"nova-12.0.1-1", "ceilometer-8.0.1-1"}
        assert hub_builds(fk) == {
            **builds_before,
            "nova-12.0.1-1": "COMPLETE",
            "ceilometer-8.0.1-1": "COMPLETE",
        }
        assert _stuck(gate) == []
        check_invariants(gate)


async def test_a_tag_policy_refusal_at_the_serial_tip_rejects_the_item_only(
    world: World,
    hub: FakeKoji,  # noqa: F811
) -> None:
    """The hub's tag policy refuses nova's final build in the candidate tag: kojid's
    tagBuild subtask fails, the gate's own tag is refused the same way, and A is
    rejected with the hub's words; nothing merged or published, B re-tested without A.
    Once the policy allows it, the change approved again lands on the COMPLETE build:
    no new final build of nova, one more tagBuild."""
    fk = hub
    async with serial_gate(world, fk) as gate:
        frozen = (
            "package nova && tag liberty-candidate :: deny nova is frozen in liberty-candidate\n"
            "all :: allow"
        )
        fk.run(lambda: fk.hub.policies.__setitem__("tag", frozen))
        builds_before = hub_builds(fk)
        finals_before = len(_final_builds_submitted(fk))
        propose(gate, world, "nova", NOVA_1201, "A")
        propose(gate, world, "ceilometer", CEILO_801, "B")
        gate.wake()
        await gate.wait_idle(120)

        assert results(gate) == {"rejected": ["A", "B"]}
        a_failure = failure_of(gate, "A")
        assert a_failure.startswith(
            "final build failed: Koji refused to tag nova-12.0.1-1 into liberty-candidate: "
            "ActionNotAllowed: policy violation (tag): nova is frozen in liberty-candidate "
            "(nova-12.0.1-1 is built, untagged: once the hub allows the tag, a recheck "
            f"takes this build over) (log: {fk.weburl}/taskinfo?taskID="
        ), a_failure
        assert failure_of(gate, "B") == (
            "repoclosure: 1 unresolved dependency: "
            "ceilometer-8.0.1-1.noarch requires nova >= 12.0.1"
        )
        b = item_row(gate, "B")
        assert b.attempt >= 2 and json.loads(b.base_ahead) == []
        assert hub_builds(fk) == {**builds_before, "nova-12.0.1-1": "COMPLETE"}
        assert "nova-12.0.1-1" not in _tagged(fk)
        assert fk.hub.count("tagBuild") == 1  # the hub's answer is not retried
        assert gate.publishers["liberty"].generations() == [1]
        assert nvrs(gate)["nova"] == "nova-12.0.0-1"
        assert "12.0.0" in git(world.remote("nova"), "show", "main:nova.spec")
        assert "8.0.0" in git(world.remote("ceilometer"), "show", "main:ceilometer.spec")
        assert _stuck(gate) == []
        check_invariants(gate)

        fk.run(lambda: fk.hub.policies.reset("tag"))
        propose(gate, world, "nova", NOVA_1201, "A again")
        gate.wake()
        await gate.wait_idle(120)
        assert results(gate)["merged"] == ["A again"]
        assert nvrs(gate)["nova"] == "nova-12.0.1-1"
        assert "nova-12.0.1-1" in _tagged(fk)
        assert len(_final_builds_submitted(fk)) == finals_before + 1  # nova's, once
        assert fk.hub.count("tagBuild") == 2
        check_invariants(gate)


async def test_a_dequeued_item_held_by_kojid_s_refused_tag_lets_its_build_go(
    world: World,
    hub: FakeKoji,  # noqa: F811
) -> None:
    """The administrator dequeues A while its serial-tip final build waits for a locked
    tag: the held build is let go (canceled, /healthz no longer names it), and a restart
    after the tag is opened does not tag a build of a change that was never merged."""
    from gate.deliveries import store_delivery
    from gate.health import Reading, read_facts, stuck_builds_check

    fk = hub
    async with serial_gate(world, fk) as gate:
        fk.run(lambda: setattr(fk.hub.state.tags[TARGET], "locked", True))
        propose(gate, world, "nova", NOVA_1201, "A")
        gate.wake()
        [final] = await eventually(lambda: _stuck(gate))
        assert stuck_builds_check(Reading(read_facts(gate.engine))).builds == [final.id]
        store_delivery(gate, "api", "item.dequeue", {"item": item_row(gate, "A").id}, None)
        gate.wake()
        await gate.wait_idle(120)
        assert results(gate) == {"dequeued": ["A"]}
        assert stuck_builds_check(Reading(read_facts(gate.engine))).ok
        with session(gate.engine) as s:
            row = s.get(BuildRow, final.id)
        assert row is not None and row.state == "canceled"
        assert row.error.startswith("let go when its item left the tip; was: Koji refuses")
        assert gate.publishers["liberty"].generations() == [1]

    fk.run(lambda: setattr(fk.hub.state.tags[TARGET], "locked", False))
    async with serial_gate(world, fk) as gate:
        assert "nova-12.0.1-1" not in _tagged(fk)
        assert fk.hub.count("tagBuild") == 1  # the one refused try, before the dequeue
        assert nvrs(gate)["nova"] == "nova-12.0.0-1"
        check_invariants(gate)
