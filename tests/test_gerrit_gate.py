"""The real daemon driven by a fake Gerrit, end to end.

Changes are pushed to refs/for/main of real bare repositories, reviewed with
Code-Review +2 and Workflow +1 (the OpenStack recipe), announced by the
webhooks plugin through the gate's real endpoint, tested on the speculative
repository, submitted through the fake's REST API, and voted and commented
on back.  Every scenario ends with the invariant checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import asyncssh
import pytest
from sqlmodel import col, select

from gate.daemon import Gate
from gate.demo_world import World
from gate.sources.gerrit import hints
from repo_state.db import session
from repo_state.models import ChangeRow, Delivery, ItemRow
from tests.conftest import CEILO_801, HORIZON_BROKEN, NOVA_1201
from tests.fakegerrit.ssh import StreamEventsServer
from tests.fakegerrit.state import git
from tests.gerrit_world import (
    TOKEN,
    ClientFactory,
    ServerFactory,
    gate_served,
    gerrit_name,
    gerrit_source,
    hold_jobs,
    settle,
    start_fake,
    use_gerrit,
)
from tests.invariants import check_invariants, results

pytestmark = pytest.mark.slow

ALL = ["nova", "ceilometer", "horizon", "python-django"]


async def test_approve_test_submit_and_report_back(
    world: World, aiohttp_server: ServerFactory, aiohttp_client: ClientFactory
) -> None:
    g = await start_fake(world, aiohttp_server, ALL)
    doc = world.config()
    doc["sources"] = {"review": gerrit_source(g)}
    use_gerrit(doc, "review", ALL)
    async with gate_served(doc, aiohttp_client, [g], ["review"]) as (gate, _):
        a = g.upload("nova", NOVA_1201, "A")
        b = g.upload("ceilometer", CEILO_801, "B")
        c = g.upload("horizon", HORIZON_BROKEN, "C")
        await settle(gate, g)
        assert results(gate) == {}  # uploaded is not approved
        for number in (a, b, c):
            g.approve(number)
        await settle(gate, g)

        assert results(gate) == {"merged": ["A", "B"], "rejected": ["C"]}
        # the enqueue reports: each item's place as people count it, and the items ahead
        with session(gate.engine) as s:
            rows = s.exec(select(ItemRow, ChangeRow).join(ChangeRow)).all()
            item_of = {c.title: i.id for i, c in rows if i.kind == "gate"}
        assert f"queued in liberty as item {item_of['A']}, at the head." in g.messages(a)[0]
        assert (
            f"queued in liberty as item {item_of['B']}, at position 2 behind item {item_of['A']}."
        ) in g.messages(b)[0]
        assert (
            f"queued in liberty as item {item_of['C']}, at position 3 behind items "
            f"{item_of['A']}, {item_of['B']}."
        ) in g.messages(c)[0]
        for number, project in ((a, "nova"), (b, "ceilometer")):
            change = g.state.changes[number]
            assert change.status == "MERGED"
            assert world.branch_head(project) == change.current.revision  # fast-forwarded
            assert g.verified(number) == {1: 1}
            queued, vote, submitted, merged = g.messages(number)
            assert submitted == "Change has been successfully merged"  # Gerrit's, as the submitter
            assert vote == "Patch Set 1: Verified+1"  # cast just before the submit
            assert queued.startswith("Patch Set 1:\n\nrpmgate: ") and "queued in liberty" in queued
            assert "merged and published in liberty as generation" in merged
            assert "/repos/liberty/" in merged
        assert g.state.changes[c].status == "NEW"
        assert g.verified(c) == {1: -1}
        failed = g.messages(c)[-1]
        assert failed.startswith("Patch Set 1: Verified-1\n\nrpmgate: ")
        assert "rpmbuild failed" in failed and "- Log: http" in failed, failed
        with session(gate.engine) as s:
            row = s.exec(select(ChangeRow).where(ChangeRow.title == "A")).one()
        assert (row.review, row.url) == (str(a), g.change_url(a))
        assert row.ref == f"refs/changes/{a:02d}/{a}/1"
        check_invariants(gate)


async def test_a_bad_token_is_refused_and_a_duplicate_stored_once(
    world: World,
    aiohttp_server: ServerFactory,
    aiohttp_client: ClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    g = await start_fake(world, aiohttp_server, ALL)
    doc = world.config()
    doc["sources"] = {"review": gerrit_source(g)}
    use_gerrit(doc, "review", ALL)
    async with gate_served(doc, aiohttp_client, [g], ["review"]) as (gate, client):
        a = g.upload("nova", NOVA_1201, "A")
        g.approve(a)
        await settle(gate, g)
        assert results(gate) == {"merged": ["A"]}

        approval = next(e for e in g.state.events if e["type"] == "comment-added")
        as_posted = {**approval, "project": {"name": approval["project"]}}
        wrong = await client.post("/api/sources/review/events/" + "x" * 40, json=as_posted)
        assert wrong.status == 401
        assert "review: webhook from 127.0.0.1 refused (401)" in caplog.text
        assert TOKEN not in caplog.text and "x" * 40 not in caplog.text
        again = await client.post(f"/api/sources/review/events/{TOKEN}", json=as_posted)
        assert (again.status, await again.json()) == (200, {"accepted": True, "duplicate": True})
        # the same event from stream-events' shape (a second intake) is the same delivery
        streamed = await client.post(f"/api/sources/review/events/{TOKEN}", json=approval)
        assert streamed.status == 200
        garbage = await client.post(f"/api/sources/review/events/{TOKEN}", data=b"[1]")
        assert garbage.status == 400
        key = hints.delivery_key(approval)
        with session(gate.engine) as s:
            stored = s.exec(select(Delivery).where(col(Delivery.delivery_key).endswith(key))).all()
        assert len(stored) == 1
        # a type the gate does not know is stored and left alone
        odd = await client.post(
            f"/api/sources/review/events/{TOKEN}",
            json={"type": "project-created", "projectName": "x", "eventCreatedOn": 1},
        )
        assert odd.status == 202
        await settle(gate, g)
        assert results(gate) == {"merged": ["A"]}
        check_invariants(gate)


async def test_a_new_patch_set_and_an_abandon_dequeue(
    world: World, tmp_path: Path, aiohttp_server: ServerFactory, aiohttp_client: ClientFactory
) -> None:
    g = await start_fake(world, aiohttp_server, ALL)
    doc = world.config()
    doc["sources"] = {"review": gerrit_source(g)}
    use_gerrit(doc, "review", ALL)
    hold = tmp_path / "go"
    hold_jobs(doc, hold)
    async with gate_served(doc, aiohttp_client, [g], ["review"], hold=hold) as (gate, _):
        a = g.upload("nova", NOVA_1201, "A")
        g.approve(a)
        await settle(gate, g, idle=False)
        [first] = _items(gate, a)
        assert first.active

        # patch set 2 reworks the change: the tested patch set leaves the queue and
        # the new one waits for a new approval (Code-Review is not carried on a rework)
        g.upload(
            "nova",
            replace(NOVA_1201, release="2"),
            "A",
            change_id=g.state.changes[a].change_id,
        )
        await settle(gate, g, idle=False)
        [old] = _items(gate, a)
        new = g.state.changes[a].current.revision
        assert (old.result, old.failure) == (
            "dequeued",
            f"review {a} has a new revision {new[:12]}",
        )
        g.approve(a)
        await settle(gate, g, idle=False)
        assert _items(gate, a)[-1].active

        g.state.abandon(a, g.state.account("packager"), "not needed")
        await settle(gate, g, idle=False)
        last = _items(gate, a)[-1]
        assert (last.result, last.failure) == (
            "dequeued",
            f"review {a} was closed outside the gate",
        )
        hold.touch()
        await settle(gate, g)
        assert results(gate) == {"dequeued": ["A", "A"]}
        assert "dequeued" in g.messages(a)[-1] or "left" in g.messages(a)[-1]
        check_invariants(gate)


async def test_a_trivial_rebase_keeps_the_item(
    world: World, tmp_path: Path, aiohttp_server: ServerFactory, aiohttp_client: ClientFactory
) -> None:
    g = await start_fake(world, aiohttp_server, ALL)
    doc = world.config()
    doc["sources"] = {"review": gerrit_source(g)}
    use_gerrit(doc, "review", ALL)
    hold = tmp_path / "go"
    hold_jobs(doc, hold)
    async with gate_served(doc, aiohttp_client, [g], ["review"], hold=hold) as (gate, _):
        a = g.upload("nova", NOVA_1201, "A")
        g.approve(a)
        await settle(gate, g, idle=False)
        # the same commit message on the same parent with nothing changed: NO_CHANGE
        # is not a new patch set in Gerrit; a new message (NO_CODE_CHANGE) is
        work = world.workdir("nova")
        git(
            work,
            "commit",
            "-q",
            "--amend",
            "-m",
            f"A, reworded\n\nChange-Id: {g.state.changes[a].change_id}\n",
        )
        git(work, "push", "-q", "origin", "HEAD:refs/for/main")
        g.state.receive(gerrit_name("nova"), g.state.account("packager"))
        assert g.state.changes[a].current.kind == "NO_CODE_CHANGE"
        await settle(gate, g, idle=False)
        [item] = _items(gate, a)
        assert item.active  # the tested code is the current code: not reset, not doubled
        hold.touch()
        await settle(gate, g)
        assert results(gate) == {"merged": ["A"]}  # patch set 2 submitted: the same tree
        assert g.state.changes[a].status == "MERGED"
        assert world.branch_head("nova") == g.state.changes[a].current.revision
        check_invariants(gate)


async def test_gerrits_own_merge_commit_with_the_tested_tree_is_published(
    world: World, aiohttp_server: ServerFactory, aiohttp_client: ClientFactory
) -> None:
    """The branch moved under the change: Gerrit (MERGE_IF_NECESSARY) makes its own
    merge commit, whose tree is the one the gate tested (merged onto the same head)."""
    g = await start_fake(world, aiohttp_server, ALL)
    doc = world.config()
    doc["sources"] = {"review": gerrit_source(g)}
    use_gerrit(doc, "review", ALL)
    async with gate_served(doc, aiohttp_client, [g], ["review"]) as (gate, _):
        a = g.upload("nova", NOVA_1201, "A")
        work = world.workdir("nova")
        git(work, "fetch", "-q", "origin", "+refs/heads/main:refs/remotes/origin/main")
        git(work, "checkout", "-q", "--detach", "origin/main")
        (work / "README").write_text("pushed past review\n")
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", "a direct push")
        git(work, "push", "-q", "origin", "HEAD:refs/heads/main")
        g.state.receive(gerrit_name("nova"), g.state.account("core"))
        await settle(gate, g)  # the push is a post item, published
        g.approve(a)
        await settle(gate, g)
        assert results(gate) == {"merged": ["A"]}
        head = world.branch_head("nova")
        assert git(world.remote("nova"), "log", "-1", "--format=%s", head) == 'Merge "A"'
        with session(gate.engine) as s:
            [item] = s.exec(select(ItemRow).where(ItemRow.kind == "gate")).all()
        # Gerrit's commit, not the gate's speculative merge, is recorded: the tested tree
        assert item.merge_commit == head
        assert git(world.remote("nova"), "rev-parse", f"{head}^{{tree}}") == item.merge_tree
        check_invariants(gate)


async def test_a_direct_push_becomes_a_post_item(
    world: World, aiohttp_server: ServerFactory, aiohttp_client: ClientFactory
) -> None:
    g = await start_fake(world, aiohttp_server, ALL)
    doc = world.config()
    doc["sources"] = {"review": gerrit_source(g)}
    use_gerrit(doc, "review", ALL)
    async with gate_served(doc, aiohttp_client, [g], ["review"]) as (gate, _):
        head = world.push_direct("nova", NOVA_1201, "pushed past the gate")
        g.state.receive(gerrit_name("nova"), g.state.account("core"))
        assert g.state.events[-1]["type"] == "ref-updated"
        await settle(gate, g)
        with session(gate.engine) as s:
            posts = s.exec(
                select(ItemRow).where(ItemRow.kind == "post", col(ItemRow.bootstrap).is_(False))
            ).all()
            changes = [s.get(ChangeRow, p.change_id) for p in posts]
        assert [c.sha for c in changes if c is not None] == [head]
        assert [(p.result, p.generation) for p in posts] == [
            ("merged", 2)
        ]  # built, tested, published
        check_invariants(gate)


async def test_a_change_that_moved_is_not_merged(
    world: World, tmp_path: Path, aiohttp_server: ServerFactory, aiohttp_client: ClientFactory
) -> None:
    g = await start_fake(world, aiohttp_server, ALL)
    doc = world.config()
    doc["sources"] = {"review": gerrit_source(g)}
    use_gerrit(doc, "review", ALL)
    hold = tmp_path / "go"
    hold_jobs(doc, hold)
    async with gate_served(doc, aiohttp_client, [g], ["review"], hold=hold) as (gate, _):
        a = g.upload("nova", NOVA_1201, "A")
        g.approve(a)
        await settle(gate, g, idle=False)
        # the gate's own report on the change is an event too: let it come and go
        # first, or it would tell the gate of the new patch set below
        await gate.plumbing.settle_named("report-")
        await settle(gate, g, idle=False)
        tested = g.state.changes[a].current.revision
        # a new patch set whose event never reaches the gate (the webhook is down)
        webhooks, g.fake.webhooks = g.fake.webhooks, []
        g.upload(
            "nova",
            replace(NOVA_1201, release="3"),
            "A",
            change_id=g.state.changes[a].change_id,
        )
        g.approve(a)
        await g.fake.delivered()
        g.fake.webhooks = webhooks
        hold.touch()
        await settle(gate, g)
        [item] = _items(gate, a)
        moved = g.state.changes[a].current.revision
        assert (item.result, item.failure) == (
            "rejected",
            f"merge refused: review {a} moved to {moved[:12]} since {tested[:12]} was tested",
        )
        assert g.state.changes[a].status == "NEW" and world.branch_head("nova") != moved
        assert g.verified(a) == {1: -1}  # the verdict is on the patch set it tested
        check_invariants(gate)


async def test_the_gates_own_failure_report_does_not_enqueue_the_change_again(
    world: World, aiohttp_server: ServerFactory, aiohttp_client: ClientFactory
) -> None:
    """A rejected change stays approved (Code-Review +2, Workflow +1; the gate's
    Verified -1 is no part of the rule): the comment-added of the gate's own report
    is no news about it.  Read as a hint, it enqueued the change again, whose
    rejection's report enqueued it again, without end."""
    g = await start_fake(world, aiohttp_server, ALL)
    doc = world.config()
    doc["sources"] = {"review": gerrit_source(g)}
    use_gerrit(doc, "review", ALL)
    async with gate_served(doc, aiohttp_client, [g], ["review"]) as (gate, _):
        c = g.upload("horizon", HORIZON_BROKEN, "C")
        g.approve(c)
        for _ in range(3):  # every report sent, and the events it makes taken in
            await settle(gate, g)
            await gate.plumbing.settle_named("report-")
        await settle(gate, g)

        assert results(gate) == {"rejected": ["C"]}
        assert [m.split("\n")[0] for m in g.messages(c)] == [
            "Patch Set 1:",
            "Patch Set 1: Verified-1",
        ]
        # someone else's comment is news: the change is read again, and taken in
        # again while it stays approved (what a "recheck" does)
        g.state.review(
            g.state.changes[c],
            g.state.changes[c].current,
            g.state.account("core"),
            {"message": "recheck"},
        )
        await settle(gate, g)
        assert results(gate) == {"rejected": ["C", "C"]}
        check_invariants(gate)


def _items(gate: Gate, review: int) -> list[ItemRow]:
    with session(gate.engine) as s:
        return list(
            s.exec(
                select(ItemRow)
                .join(ChangeRow, col(ChangeRow.id) == col(ItemRow.change_id))
                .where(ChangeRow.review == str(review))
                .order_by(col(ItemRow.id))
            ).all()
        )


async def test_depends_on_a_change_on_another_gerrit(
    world: World, aiohttp_server: ServerFactory, aiohttp_client: ClientFactory
) -> None:
    """nova lives on one Gerrit, ceilometer on another; B needs A's nova."""
    g1 = await start_fake(world, aiohttp_server, ["nova", "horizon", "python-django"])
    g2 = await start_fake(world, aiohttp_server, ["ceilometer"])
    doc = world.config()
    doc["sources"] = {"review": gerrit_source(g1), "other": gerrit_source(g2)}
    use_gerrit(doc, "review", ["nova", "horizon", "python-django"])
    use_gerrit(doc, "other", ["ceilometer"])
    async with gate_served(doc, aiohttp_client, [g1, g2], ["review", "other"]) as (gate, _):
        a = g1.upload("nova", NOVA_1201, "A")
        b = g2.upload("ceilometer", CEILO_801, "B", depends=g1.change_url(a))
        g2.approve(b)
        await settle(gate, g1, g2)
        assert results(gate) == {}
        with session(gate.engine) as s:
            errors = {d.error for d in s.exec(select(Delivery)) if d.error}
        assert errors == {
            f"depends on {g1.change_url(a)}, which is not approved: "
            "needs Code-Review +2; needs Workflow +1"
        }

        g1.approve(a)  # A goes in on its own; B is not asked about again...
        change_b = g2.state.changes[b]
        g2.state.review(
            change_b, change_b.current, g2.state.account("core"), {"message": "recheck"}
        )
        await settle(gate, g1, g2)  # ... until a comment on B
        assert results(gate) == {"merged": ["A", "B"]}
        assert g1.state.changes[a].status == g2.state.changes[b].status == "MERGED"
        check_invariants(gate)


async def test_dependencies_enqueue_together_across_gerrits(
    world: World, tmp_path: Path, aiohttp_server: ServerFactory, aiohttp_client: ClientFactory
) -> None:
    g1 = await start_fake(world, aiohttp_server, ["nova", "horizon", "python-django"])
    g2 = await start_fake(world, aiohttp_server, ["ceilometer"])
    doc = world.config()
    doc["sources"] = {"review": gerrit_source(g1), "other": gerrit_source(g2)}
    use_gerrit(doc, "review", ["nova", "horizon", "python-django"])
    use_gerrit(doc, "other", ["ceilometer"])
    async with gate_served(doc, aiohttp_client, [g1, g2], ["review", "other"]) as (gate, _):
        a = g1.upload("nova", NOVA_1201, "A")
        g1.approve(a)
        b = g2.upload("ceilometer", CEILO_801, "B", depends=g1.change_url(a))
        g2.approve(b)
        await settle(gate, g1, g2)
        assert results(gate) == {"merged": ["A", "B"]}
        check_invariants(gate)


async def test_stream_events_resume_without_loss(
    world: World, tmp_path: Path, aiohttp_server: ServerFactory, aiohttp_client: ClientFactory
) -> None:
    """Events over SSH; what happens while the connection is down is found by the catch-up."""
    g = await start_fake(world, aiohttp_server, ALL)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    key_file = tmp_path / "id_ed25519"
    client_key.write_private_key(str(key_file))
    ssh = StreamEventsServer(g.state, host_key, client_key.export_public_key().decode())
    await ssh.start()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{ssh.port} {host_key.export_public_key().decode()}")
    doc = world.config()
    stream = {
        "host": "127.0.0.1",
        "port": ssh.port,
        "user": "rpmgate",
        "key": str(key_file),
        "known_hosts": str(known),
        "max_backoff": 0.5,
    }
    doc["sources"] = {
        "review": {k: v for k, v in gerrit_source(g, stream=stream).items() if k != "webhook"}
    }
    use_gerrit(doc, "review", ALL)
    try:
        async with gate_served(doc, aiohttp_client, [], []) as (gate, _):
            source = gate.sources["review"]
            await _until(lambda: source.stream is not None and source.stream.live.is_set())  # type: ignore[attr-defined]
            a = g.upload("nova", NOVA_1201, "A")
            g.approve(a)
            await _until(lambda: g.state.changes[a].status == "MERGED")
            await gate.wait_idle(120)

            ssh.drop()  # Gerrit restarts: what happens now is not streamed to anyone
            await _until(lambda: not source.stream.live.is_set())  # type: ignore[attr-defined]
            b = g.upload("ceilometer", CEILO_801, "B")
            g.approve(b)
            await _until(lambda: source.stream.live.is_set())  # type: ignore[attr-defined]
            await _until(lambda: g.state.changes[b].status == "MERGED")
            await gate.wait_idle(120)
            assert results(gate) == {"merged": ["A", "B"]}
            assert source.stream.connections == 2  # type: ignore[attr-defined]
            with session(gate.engine) as s:
                types = {d.event_type for d in s.exec(select(Delivery))}
            assert "gerrit.rpmgate-catch-up" in types and "gerrit.rpmgate-branch-head" in types
            check_invariants(gate)
    finally:
        await ssh.stop()


async def _until(check: Callable[[], bool], timeout: float = 120) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


async def test_the_demo_through_gerrit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gate.demo import run_demo

    assert await run_demo(tmp_path / "demo", source="gerrit") == 0
    out = capsys.readouterr().out
    assert "outcome: as expected" in out
    assert "A gerrit change 1: MERGED, Verified+1 on patch set 1" in out
    assert "C gerrit change 3: NEW, Verified-1 on patch set 1" in out
    assert "rpmgate says: Patch Set 1: Verified+1" in out
