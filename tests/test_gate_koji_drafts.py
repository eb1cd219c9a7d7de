"""The gate with Koji drafts (the fake hub is Koji 1.35) end to end: drafts are built
out of the target's destination tag (``skip_tag``) and the gate tags each promoted
build itself at the tip; a hub that refuses that tag for the build rejects the item,
merging and publishing nothing (I1), and only that item (I5); one that refuses the
gate's user the tag itself (locked, a permission) holds the tip instead, visibly,
until a restart (I5: no item rejected for the gate's configuration)."""

from __future__ import annotations

import json
from typing import Any

import koji
import pytest
from sqlmodel import select

from gate.deliveries import store_delivery
from gate.demo_world import World, git
from repo_state.db import session
from repo_state.models import BuildRow
from tests.conftest import CEILO_801, NOVA_1201, propose
from tests.fakekoji import FakeKoji
from tests.invariants import check_invariants, failure_of, results
from tests.koji_gate import TARGET
from tests.test_gate_koji import (  # noqa: F401
    eventually,
    hub,
    hub_builds,
    item_row,
    koji_gate,
    nvrs,
)

pytestmark = pytest.mark.slow

#: Fedora's kind of tag policy: no drafts in the candidate tag (a draft kojid tagged
#: there would fail its build task's tagBuild subtask, and with it the draft)
DRAFTS_NOT_IN_CANDIDATE = (
    "is_draft && tag *-candidate :: deny draft builds are not allowed in candidate tags\n"
    "all :: allow"
)


def _tagged(fk: FakeKoji) -> set[str]:
    return fk.run(
        lambda: {
            b.nvr for b in fk.hub.state.builds.values() if b.id in fk.hub.state.tags[TARGET].builds
        }
    )


async def test_drafts_enter_the_candidate_tag_only_when_promoted_at_the_tip(
    world: World,
    hub: FakeKoji,  # noqa: F811
) -> None:
    fk = hub
    fk.run(lambda: fk.hub.policies.__setitem__("tag", DRAFTS_NOT_IN_CANDIDATE))
    async with koji_gate(world, fk) as gate:
        # whenever an item starts its promotion, no draft of the hub is in the tag
        seen: list[tuple[str, set[str]]] = []

        def at_promotion(event: dict[str, Any]) -> None:
            if event.get("topic") == "item" and event.get("state") == "promote":
                seen.append((str(event.get("project")), _tagged(fk)))

        gate.listeners.append(at_promotion)
        propose(gate, world, "nova", NOVA_1201, "A")
        propose(gate, world, "ceilometer", CEILO_801, "B")
        gate.wake()
        await gate.wait_idle(120)

        assert results(gate) == {"merged": ["A", "B"]}
        assert [p for p, _ in seen] == ["nova", "ceilometer"]
        for _, tagged in seen:
            assert not any(",draft_" in nvr for nvr in tagged), tagged
        assert "nova-12.0.1-1" not in seen[0][1] and "ceilometer-8.0.1-1" not in seen[1][1]
        # the final builds were promoted drafts, then tagged by the gate (tagBuild), not
        # by kojid: no build task of a draft made a tagBuild subtask
        assert fk.hub.count("promoteBuild") == 2
        tag_calls = [c.args[1] for c in fk.hub.calls if c.method == "tagBuild"]
        assert tag_calls == ["nova-12.0.1-1", "ceilometer-8.0.1-1"]

        def draft_subtags() -> list[int]:
            tasks = fk.hub.state.tasks
            return [
                t.id
                for t in tasks.values()
                if t.method == "tagBuild"
                and t.parent is not None
                and (tasks[t.parent].request[2] or {}).get("draft")
            ]

        assert fk.run(draft_subtags) == []
        assert set(nvrs(gate).values()) <= _tagged(fk)
        check_invariants(gate)


async def test_a_promoted_build_the_hub_refuses_to_tag_rejects_its_item_only(
    world: World,
    hub: FakeKoji,  # noqa: F811
) -> None:
    """The hub's tag policy refuses nova's final build in the candidate tag.  The tip
    step fails with the hub's words; A is rejected (the hub's answer is about A's build
    alone, the one a serial-tip build task of A would get from its tagBuild subtask),
    nothing is merged or published, and B behind is reset and re-tested without A."""
    fk = hub
    async with koji_gate(world, fk) as gate:
        frozen = (
            "package nova && tag liberty-candidate :: deny nova is frozen in liberty-candidate\n"
            "all :: allow"
        )
        fk.run(lambda: fk.hub.policies.__setitem__("tag", frozen))
        builds_before = hub_builds(fk)
        propose(gate, world, "nova", NOVA_1201, "A")
        propose(gate, world, "ceilometer", CEILO_801, "B")
        gate.wake()
        await gate.wait_idle(120)

        assert results(gate) == {"rejected": ["A", "B"]}
        a_failure = failure_of(gate, "A")
        assert a_failure.startswith(
            "final build failed: Koji refused to tag nova-12.0.1-1 into liberty-candidate: "
            "ActionNotAllowed: policy violation (tag): nova is frozen in liberty-candidate "
            "(the draft was promoted to nova-12.0.1-1, untagged: once the hub allows the "
            "tag, a recheck takes this build over) (log: "
        ), a_failure
        assert failure_of(gate, "B") == (
            "repoclosure: 1 unresolved dependency: "
            "ceilometer-8.0.1-1.noarch requires nova >= 12.0.1"
        )
        b = item_row(gate, "B")
        assert b.attempt >= 2 and json.loads(b.base_ahead) == []
        # the promoted build exists, untagged; nothing merged, nothing published
        builds = hub_builds(fk)
        assert builds["nova-12.0.1-1"] == "COMPLETE"
        assert "nova-12.0.1-1" not in _tagged(fk)
        assert {n: s for n, s in builds.items() if ",draft_" not in n} == {
            **builds_before,
            "nova-12.0.1-1": "COMPLETE",
        }
        assert fk.hub.count("tagBuild") == 1  # the hub's answer is not retried
        assert gate.publishers["liberty"].generations() == [1]
        assert nvrs(gate)["nova"] == "nova-12.0.0-1"
        assert "12.0.0" in git(world.remote("nova"), "show", "main:nova.spec")
        assert "8.0.0" in git(world.remote("ceilometer"), "show", "main:ceilometer.spec")
        check_invariants(gate)

        # the admin lifts the freeze; the change approved again lands on the build
        # promoted already: no new build, no new promotion, one more tagBuild
        fk.run(lambda: fk.hub.policies.reset("tag"))
        builds_calls = fk.hub.count("build")
        propose(gate, world, "nova", NOVA_1201, "A again")
        gate.wake()
        await gate.wait_idle(120)
        assert results(gate)["merged"] == ["A again"]
        assert nvrs(gate)["nova"] == "nova-12.0.1-1"
        assert "nova-12.0.1-1" in _tagged(fk)
        assert fk.hub.count("promoteBuild") == 1 and fk.hub.count("tagBuild") == 2
        new_builds = [c.args[2] for c in fk.hub.calls if c.method == "build"][builds_calls:]
        assert all(opts.get("scratch") for opts in new_builds), new_builds
        check_invariants(gate)


async def test_a_draft_deleted_on_the_hub_before_the_tip_is_built_again_not_rejected(
    world: World,
    hub: FakeKoji,  # noqa: F811
) -> None:
    """An admin deletes nova's draft while it waits for the tip: the tip makes the
    final build instead of promoting (kojihub would answer "state (DELETED) is not
    COMPLETE"), and A merges."""
    fk = hub
    admin = koji.ClientSession(fk.url, {"user": "kojiadmin", "password": "admin"})
    admin.login()
    deleted: list[int] = []
    async with koji_gate(world, fk) as gate:

        def delete_the_draft(event: dict[str, Any]) -> None:
            built = event.get("topic") == "item" and event.get("state") == "draft-built"
            if built and event.get("project") == "nova" and not deleted:
                draft_id = int(str(event["nvr"]).rsplit(",draft_", 1)[1])
                admin.deleteBuild(draft_id)
                deleted.append(draft_id)

        gate.listeners.append(delete_the_draft)
        propose(gate, world, "nova", NOVA_1201, "A")
        gate.wake()
        await gate.wait_idle(120)

        assert len(deleted) == 1
        assert results(gate) == {"merged": ["A"]}
        assert nvrs(gate)["nova"] == "nova-12.0.1-1"
        assert fk.hub.count("promoteBuild") == 0
        builds = hub_builds(fk)
        assert builds[f"nova-12.0.1-1,draft_{deleted[0]}"] == "DELETED"
        assert builds["nova-12.0.1-1"] == "COMPLETE"
        assert "nova-12.0.1-1" in _tagged(fk)  # by kojid's BuildTask
        # the final row names the task that made it, not the deleted draft's
        final_task = fk.run(
            lambda: next(
                b.task_id for b in fk.hub.state.builds.values() if b.nvr == "nova-12.0.1-1"
            )
        )
        with session(gate.engine) as s:
            final = s.get(BuildRow, item_row(gate, "A").final_build_id)
        assert final is not None and final.purpose == "final"
        assert final.task_ref == str(final_task)
        assert final.log == f"{fk.weburl}/taskinfo?taskID={final_task}"
        check_invariants(gate)


@pytest.mark.parametrize(
    ("how", "why"),
    [("locked", "tag is locked"), ("perm", "tag requires tag permission")],
)
async def test_a_tag_closed_to_the_gate_holds_the_tip_and_a_restart_merges(
    how: str,
    why: str,
    world: World,
    hub: FakeKoji,  # noqa: F811
    aiohttp_client: Any,
) -> None:
    """The candidate tag is locked (or needs a permission the gate's user lacks) when
    nova's draft is promoted: kojihub check_tag_access refuses every change alike, so
    no item is rejected for it (I5).  A waits at the tip, nothing is merged or
    published, the draft's error says why and /healthz fails naming it; once the
    admin opens the tag, a restart tags the build promoted already and A and B merge."""
    from gate.web.app import make_app

    fk = hub

    def set_closed(closed: bool) -> None:
        if how == "locked":
            fk.hub.state.tags[TARGET].locked = closed
        else:
            fk.hub.state.tags[TARGET].perm = "tag" if closed else None

    async with koji_gate(world, fk) as gate:
        # closed once the bootstrap's final builds are in (kojid tags those itself)
        fk.run(lambda: set_closed(True))
        client = await aiohttp_client(make_app(gate.runtime))
        builds_before = hub_builds(fk)
        propose(gate, world, "nova", NOVA_1201, "A")
        propose(gate, world, "ceilometer", CEILO_801, "B")
        gate.wake()

        def stuck() -> list[BuildRow]:
            with session(gate.engine) as s:
                return list(s.exec(select(BuildRow).where(BuildRow.error != "")).all())

        [draft] = await eventually(stuck)
        assert (draft.purpose, draft.project, draft.state) == ("draft", "nova", "passed")
        assert draft.error == (
            f"Koji refuses the gate's user any tag into {TARGET} (nova-12.0.1-1 waits): "
            f"ActionNotAllowed: {why}; once the hub's admin fixes the tag, restart rpmgate"
        )
        a, b = item_row(gate, "A"), item_row(gate, "B")
        assert a.active and b.active and a.result is None and b.result is None
        assert (a.tip, a.tip_state, a.failure) == ("final_build", "running", "")
        doc = await (await client.get("/api/status")).json()
        [a_doc] = [i for i in doc["queues"][0]["items"] if i["id"] == a.id]
        assert a_doc["state"] == "stuck: backend error"
        assert a_doc["failure"] == draft.error
        health = await client.get("/healthz")
        assert health.status == 503
        body = await health.json()
        assert body["stuck_builds"] == [draft.id]
        [check] = [c for c in body["checks"] if c["name"] == "stuck_builds"]
        assert check["detail"] == f"build {draft.id} (draft, nova): {draft.error}"
        # promoted, untagged; nothing merged, nothing published
        assert hub_builds(fk)["nova-12.0.1-1"] == "COMPLETE"
        assert "nova-12.0.1-1" not in _tagged(fk)
        assert fk.hub.count("tagBuild") == 1
        assert gate.publishers["liberty"].generations() == [1]
        assert nvrs(gate)["nova"] == "nova-12.0.0-1"
        assert "12.0.0" in git(world.remote("nova"), "show", "main:nova.spec")
        assert "8.0.0" in git(world.remote("ceilometer"), "show", "main:ceilometer.spec")

    fk.run(lambda: set_closed(False))
    async with koji_gate(world, fk) as gate:
        await gate.wait_idle(120)
        assert results(gate) == {"merged": ["A", "B"]}
        assert nvrs(gate)["nova"] == "nova-12.0.1-1"
        # the build promoted before the restart, tagged once; no new final build
        assert fk.hub.count("promoteBuild") == 2  # nova's once, ceilometer's
        nova_tags = [
            c for c in fk.hub.calls if c.method == "tagBuild" and c.args[1] == "nova-12.0.1-1"
        ]
        assert len(nova_tags) == 2  # the refused call, then the one that tagged
        assert _tagged(fk) >= {"nova-12.0.1-1", "ceilometer-8.0.1-1"}
        assert {n: st for n, st in hub_builds(fk).items() if ",draft_" not in n} == {
            **builds_before,
            "nova-12.0.1-1": "COMPLETE",
            "ceilometer-8.0.1-1": "COMPLETE",
        }
        with session(gate.engine) as s:
            assert list(s.exec(select(BuildRow).where(BuildRow.error != "")).all()) == []
        check_invariants(gate)


async def test_a_dequeued_item_held_by_a_closed_tag_no_longer_fails_healthz(
    world: World,
    hub: FakeKoji,  # noqa: F811
) -> None:
    """The administrator dequeues the item that waits at the tip for a locked tag:
    its promotion's error goes with it (/healthz would otherwise fail for a draft no
    one promotes any more), and nothing was merged or published."""
    from gate.health import Reading, read_facts, stuck_builds_check

    fk = hub
    async with koji_gate(world, fk) as gate:
        fk.run(lambda: setattr(fk.hub.state.tags[TARGET], "locked", True))
        propose(gate, world, "nova", NOVA_1201, "A")
        gate.wake()

        def stuck() -> list[BuildRow]:
            with session(gate.engine) as s:
                return list(s.exec(select(BuildRow).where(BuildRow.error != "")).all())

        [draft] = await eventually(stuck)
        assert stuck_builds_check(Reading(read_facts(gate.engine))).builds == [draft.id]
        store_delivery(gate, "api", "item.dequeue", {"item": item_row(gate, "A").id}, None)
        gate.wake()
        await gate.wait_idle(120)
        assert results(gate) == {"dequeued": ["A"]}
        assert stuck() == []
        assert stuck_builds_check(Reading(read_facts(gate.engine))).ok
        assert gate.publishers["liberty"].generations() == [1]
        assert "12.0.0" in git(world.remote("nova"), "show", "main:nova.spec")
        check_invariants(gate)
