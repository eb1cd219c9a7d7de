"""The gate end to end with ``backend: koji``: the real koji.ClientSession against the fake hub.

Every scratch and final build of these scenarios goes through Koji's XML-RPC
API over HTTP (SRPM upload, ``build``, multicall polling, ``cancelTask``,
downloads from the top URL); git, createrepo_c and repoclosure are real.  The
hub's recorded calls are the evidence for what the gate asked Koji to do.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import createrepo_c as cr
import koji
import pytest
from sqlmodel import select

from gate.builders.base import BuildRequest, Lookaside
from gate.builders.koji import KojiBackend
from gate.builders.koji_config import KojiConfig
from gate.config import parse_config
from gate.daemon import Gate
from gate.deliveries import store_delivery
from gate.demo_world import INITIAL, PackageSpec, World, git
from gate.web.progress import segments
from gate.web.status import status
from repo_state.db import session
from repo_state.models import BuildRow, ChangeRow, ItemRow
from repo_state.pool import Pool, sha256_file
from repo_state.state import RepoState
from tests.conftest import (
    CEILO_801,
    NOVA_1201,
    propose,
    propose_classic,
)
from tests.fakekoji import Failure, FakeKoji
from tests.invariants import check_invariants, failure_of, results
from tests.koji_gate import TARGET, koji_config_doc, koji_settings, start_hub

pytestmark = pytest.mark.slow

#: ``cli-build/rpmgate-<purpose>-<key prefix>-<tree>[-<attempt>]/<name>.src.rpm``
UPLOAD = re.compile(
    r"rpmgate-(scratch|final|draft)-([A-Za-z0-9]+)-([0-9a-f]{40,64})(?:-\d+)?/(.+)$"
)


# -- fixtures --------------------------------------------------------------------


@pytest.fixture
def hub(tmp_path: Path, world: World) -> Iterator[FakeKoji]:
    """A hub whose target accepts the world's packages and (as admins may) final SRPM builds."""
    fk = start_hub(tmp_path / "hub", world)
    yield fk
    fk.stop()


@asynccontextmanager
async def koji_gate(
    world: World, fk: FakeKoji, idle: bool = True, mode: str = "srpm", **overrides: Any
) -> AsyncIterator[Gate]:
    gate = Gate(parse_config(koji_config_doc(world, fk, mode, **overrides)))
    await gate.start()
    try:
        if idle:
            await gate.wait_idle(120)
        yield gate
    finally:
        await gate.stop()


# -- what the hub saw ------------------------------------------------------------


@dataclass(frozen=True)
class BuildCall:
    task_id: int
    scratch: bool
    purpose: str
    key: str
    tree: str
    srpm: str

    @property
    def nvr(self) -> str:
        return self.srpm.removesuffix(".src.rpm")


def build_calls(fk: FakeKoji) -> list[BuildCall]:
    """Every ``build`` task the hub created, parsed from the request the gate sent."""

    def collect() -> list[tuple[int, list[Any]]]:
        return sorted(
            (t.id, list(t.request)) for t in fk.hub.state.tasks.values() if t.method == "build"
        )

    calls = []
    for task_id, (source, target, opts) in fk.run(collect):
        assert target == TARGET
        match = UPLOAD.search(source)
        assert match, source
        purpose, key, tree, srpm = match.groups()
        scratch = bool((opts or {}).get("scratch"))
        assert scratch == (purpose == "scratch"), source
        calls.append(BuildCall(task_id, scratch, purpose, key, tree, srpm))
    return calls


def assert_each_build_submitted_once(fk: FakeKoji, gate: Gate) -> list[BuildCall]:
    """I4's "no Koji task twice for the same purpose", counted on the hub."""
    calls = build_calls(fk)
    assert fk.hub.count("build") == len(calls)  # every call created exactly one task
    scratch = Counter((c.key, c.tree) for c in calls if c.scratch)
    assert [k for k, n in scratch.items() if n > 1] == []
    finals = Counter(c.nvr for c in calls if not c.scratch)
    assert [nvr for nvr, n in finals.items() if n > 1] == []
    hub_builds = fk.run(lambda: Counter(b.nvr for b in fk.hub.state.builds.values()))
    assert [nvr for nvr, n in hub_builds.items() if n > 1] == []
    with session(gate.engine) as s:
        rows = s.exec(select(BuildRow)).all()
    assert {r.backend for r in rows} == {"koji"}
    assert all(r.submissions <= 1 for r in rows), [(r.id, r.submissions) for r in rows]
    return calls


def hub_builds(fk: FakeKoji) -> dict[str, str]:
    """NVR -> Koji build state of every non-scratch build on the hub."""
    return fk.run(lambda: {b.nvr: koji.BUILD_STATES[b.state] for b in fk.hub.state.builds.values()})


def assert_published_rpms_are_kojis(gate: Gate, fk: FakeKoji) -> None:
    """Every published RPM is byte for byte the one under the hub's packages/ directory."""
    for entry in gate.publishers["liberty"].state():
        name, version, release = entry.nvr.rsplit("-", 2)
        for artifact in entry.artifacts:
            on_hub = (
                fk.hub.topdir
                / "packages"
                / name
                / version
                / release
                / ("src" if artifact.is_source else artifact.arch)
                / artifact.filename
            )
            assert sha256_file(on_hub) == artifact.checksum, artifact.filename


def item_row(gate: Gate, title: str) -> ItemRow:
    with session(gate.engine) as s:
        return s.exec(
            select(ItemRow)
            .join(ChangeRow, ChangeRow.id == ItemRow.change_id)
            .where(ChangeRow.title == title)
        ).one()


def nvrs(gate: Gate) -> dict[str, str]:
    return gate.publishers["liberty"].state().nvrs()


async def eventually(check: Any, timeout: float = 60.0) -> Any:
    async def poll() -> Any:
        while not (value := check()):
            await asyncio.sleep(0.05)
        return value

    return await asyncio.wait_for(poll(), timeout)


# -- scenarios -------------------------------------------------------------------


async def test_bootstrap_and_a_b_c_d_scenario_with_every_build_in_koji(
    world: World, hub: FakeKoji
) -> None:
    async with koji_gate(world, hub) as gate:
        # bootstrap: the four branch heads, final-built in Koji, one generation
        assert nvrs(gate) == {
            "nova": "nova-12.0.0-1",
            "ceilometer": "ceilometer-8.0.0-1",
            "horizon": "horizon-9.0.0-1",
            "python-django": "python-django-1.8.0-1",
        }
        assert gate.publishers["liberty"].generations() == [1]
        assert hub_builds(hub) == {n: "COMPLETE" for n in nvrs(gate).values()}

        propose_classic(gate, world)
        await gate.wait_idle(120)

        assert results(gate) == {"merged": ["A", "B"], "rejected": ["C", "D"]}
        # C: the buildArch task's fault, with links to its logs on the hub
        c_failure = failure_of(gate, "C")
        assert re.search(
            r"Koji buildArch task \d+ \(noarch\) failed: BuildError: error "
            r"building package \(arch noarch\), mock exited with status 1",
            c_failure,
        ), c_failure
        assert f"{hub.topurl}/work/tasks/" in c_failure and "build.log" in c_failure
        assert failure_of(gate, "D") == (
            "repoclosure: 1 unresolved dependency: "
            "horizon-9.0.0-1.noarch requires python-django-compat"
        )
        assert nvrs(gate)["nova"] == "nova-12.0.1-1"
        assert nvrs(gate)["ceilometer"] == "ceilometer-8.0.1-1"
        assert nvrs(gate)["python-django"] == "python-django-1.8.0-1"
        assert gate.publishers["liberty"].generations() == [1, 2, 3]
        b = item_row(gate, "B")
        assert "nova-0:12.0.1-1.noarch" in RepoState.from_json(b.tested_state or "").nevras()
        assert b.generation == 3
        assert "12.0.1" in git(world.remote("nova"), "show", "main:nova.spec")
        assert "9.0.0" in git(world.remote("horizon"), "show", "main:horizon.spec")
        # Koji holds exactly the final builds of what was published, each in the target's tag
        published = {
            **{n: "COMPLETE" for n in nvrs(gate).values()},
            "nova-12.0.0-1": "COMPLETE",
            "ceilometer-8.0.0-1": "COMPLETE",
        }
        assert hub_builds(hub) == published
        tagged = hub.run(
            lambda: {
                b.nvr
                for b in hub.hub.state.builds.values()
                if b.id in hub.hub.state.tags[TARGET].builds
            }
        )
        assert tagged == set(published)
        calls = assert_each_build_submitted_once(hub, gate)
        # D was reset when C failed ahead of it, and kept its scratch build: one Koji task
        d = item_row(gate, "D")
        assert d.attempt >= 2 and d.build_key
        assert sum(1 for c in calls if c.scratch and d.build_key.startswith(c.key)) == 1
        assert sorted(c.nvr for c in calls if not c.scratch) == sorted(hub_builds(hub))
        assert_published_rpms_are_kojis(gate, hub)
        check_invariants(gate)


async def seed_final_build_from_other_sources(world: World, fk: FakeKoji, tmp_path: Path) -> str:
    """Someone else already built nova-12.0.1-1 in Koji, from a tree that is not A's."""
    ref = world.propose(
        "nova",
        PackageSpec("nova", "12.0.1", lookaside=True, requires=("python-oslo-config",)),
        "someone else's 12.0.1",
    )
    remote = world.remote("nova")
    sha = git(remote, "rev-parse", ref)
    url = world.config()["projects"]["nova"]["lookaside"]["url"]
    request = BuildRequest(
        project="nova",
        package="nova",
        purpose="final",
        key="outsider",
        git_dir=remote,
        commit=sha,
        tree=git(remote, "rev-parse", f"{sha}^{{tree}}"),
        spec_path="nova.spec",
        target=TARGET,
        lookaside=Lookaside(url, tmp_path / "outsider" / "lookaside"),
    )
    outsider = KojiBackend(
        KojiConfig(**koji_settings(fk)), Pool(tmp_path / "outsider-pool"), tmp_path / "outsider"
    )
    try:
        outcome = await outsider.wait(await outsider.submit(request))
    finally:
        await outsider.close()
    assert outcome.ok, outcome.reason
    return request.tree


def fail_next_final_build_of(gate: Gate, fk: FakeKoji, project: str, message: str) -> None:
    """Arm a buildArch failure on the hub the moment ``project``'s item starts its final build
    (at the tip, or ahead of it as a draft)."""

    def arm(event: dict[str, Any]) -> None:
        starts = event.get("state") in ("final-build", "draft-build")
        if starts and event.get("project") == project:
            fk.hub.builder.failures.append(Failure("buildArch", message, package=project))

    gate.listeners.append(arm)


@pytest.mark.parametrize("how", ["nvr-from-other-sources", "task-failure"])
async def test_final_build_failing_at_the_tip_merges_and_publishes_nothing(
    how: str, world: World, hub: FakeKoji, tmp_path: Path
) -> None:
    if how == "nvr-from-other-sources":
        other_tree = await seed_final_build_from_other_sources(world, hub, tmp_path)
    async with koji_gate(world, hub) as gate:
        if how == "task-failure":
            fail_next_final_build_of(gate, hub, "nova", "builder ran out of disk space")
        builds_before = hub_builds(hub)
        propose(gate, world, "nova", NOVA_1201, "A")
        propose(gate, world, "ceilometer", CEILO_801, "B")
        gate.wake()
        await gate.wait_idle(120)

        assert results(gate) == {"rejected": ["A", "B"]}
        a_failure = failure_of(gate, "A")
        assert a_failure.startswith("final build failed: "), a_failure
        if how == "nvr-from-other-sources":
            assert a_failure.startswith(
                "final build failed: nova-12.0.1-1 already exists in Koji"
            ), a_failure
            assert other_tree in a_failure and item_row(gate, "A").merge_tree in a_failure
            assert "bump the Release" in a_failure
        # B's final build may have started ahead of the tip as a draft (the hub is Koji
        # 1.35) before A failed: it is left a draft, never promoted, claiming no NVR
        builds = hub_builds(hub)
        drafts = {nvr: state for nvr, state in builds.items() if ",draft_" in nvr}
        finals = {nvr: state for nvr, state in builds.items() if ",draft_" not in nvr}
        assert hub.hub.count("promoteBuild") == 0
        if how == "nvr-from-other-sources":
            assert finals == builds_before  # Koji was not asked to build it again
            assert all(nvr.startswith("ceilometer-8.0.1-1,") for nvr in drafts), drafts
        else:
            assert re.search(
                r"Koji buildArch task \d+ \(noarch\) failed: BuildError: "
                r"builder ran out of disk space",
                a_failure,
            ), a_failure
            # A's final build was its draft, failed (a draft of a failed build keeps
            # its draft release)
            assert finals == builds_before
            assert [s for n, s in drafts.items() if n.startswith("nova-12.0.1-1,")] == ["FAILED"]
        # B was reset and re-tested without A: ceilometer 8.0.1 needs the nova A did not ship
        assert failure_of(gate, "B") == (
            "repoclosure: 1 unresolved dependency: "
            "ceilometer-8.0.1-1.noarch requires nova >= 12.0.1"
        )
        b = item_row(gate, "B")
        assert b.attempt >= 2 and json.loads(b.base_ahead) == []
        # nothing merged, nothing published, nothing tagged for A or B
        assert gate.publishers["liberty"].generations() == [1]
        assert nvrs(gate)["nova"] == "nova-12.0.0-1"
        assert "12.0.0" in git(world.remote("nova"), "show", "main:nova.spec")
        assert "8.0.0" in git(world.remote("ceilometer"), "show", "main:ceilometer.spec")
        calls = assert_each_build_submitted_once(hub, gate)
        assert [c.nvr for c in calls if c.purpose == "final"].count("ceilometer-8.0.1-1") == 0
        check_invariants(gate)


@dataclass(frozen=True)
class HeldSpec(PackageSpec):
    """A spec whose %install waits while ``hold`` exists: its buildArch task keeps running."""

    hold: str = ""

    def render(self) -> str:
        wait = f"while [ -e {self.hold} ]; do sleep 0.1; done\n"
        return super().render().replace("%install\n", "%install\n" + wait, 1)


def propose_spec_edit(gate: Gate, world: World, project: str, edit: Any, title: str) -> None:
    """A change that edits the spec text alone (World.propose also renews the lookaside
    tarball, so two of its changes to one project always conflict in ``sources``)."""
    work = world.workdir(project)
    git(work, "fetch", "-q", "origin", "+refs/heads/main:refs/remotes/origin/main")
    git(work, "checkout", "-q", "--detach", "origin/main")
    spec = work / f"{project}.spec"
    spec.write_text(edit(spec.read_text()))
    git(work, "commit", "-q", "-am", title)
    ref = f"refs/changes/edits/{title}/1"
    git(work, "push", "-q", "origin", f"HEAD:{ref}")
    store_delivery(
        gate,
        "api",
        "change.proposed",
        {"project": project, "ref": ref, "title": title, "approve": True},
        None,
    )


async def test_reset_cancels_the_koji_task_of_a_scratch_build_containing_the_failed_item(
    world: World, hub: FakeKoji, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    async with koji_gate(world, hub) as gate:
        # X and Y both change nova (different hunks): Y is tested on the merge of X and Y,
        # whose buildArch is kept running until X has failed its jobs and left the queue.
        propose_spec_edit(
            gate,
            world,
            "nova",
            lambda spec: spec.replace(
                "BuildArch: noarch\n", "BuildArch: noarch\nRequires: python-novaclient-ng\n"
            ),
            "X",
        )
        propose(
            gate, world, "nova", HeldSpec("nova", "12.0.1", lookaside=True, hold=str(hold)), "Y"
        )
        gate.wake()
        await eventually(lambda: hub.hub.count("cancelTask"))
        canceled = next(c.args[0] for c in hub.hub.calls if c.method == "cancelTask")
        # what the hub says right after the cancel (the fake's orphaned rpmbuild of a
        # canceled buildArch would mark it CLOSED once it ends; kojid kills it instead)
        states = hub.run(
            lambda: {
                t.method: koji.TASK_STATES[t.state]
                for t in [hub.hub.state.tasks[canceled], *hub.hub.state.children(canceled)]
            }
        )
        hold.unlink()
        await gate.wait_idle(120)

        assert results(gate) == {"rejected": ["X"], "merged": ["Y"]}
        # libsolv's repoclosure: nova's own missing requirement, and ceilometer
        # (which requires nova) no longer installable because of it
        assert failure_of(gate, "X") == (
            "repoclosure: 2 unresolved dependencies: ceilometer-8.0.0-1.noarch cannot be "
            "installed: nothing provides python-novaclient-ng needed by nova-12.0.0-1.noarch; "
            "nova-12.0.0-1.noarch requires python-novaclient-ng"
        )
        x, y = item_row(gate, "X"), item_row(gate, "Y")
        with session(gate.engine) as s:
            both = s.exec(
                select(BuildRow).where(
                    BuildRow.purpose == "scratch", BuildRow.includes == json.dumps([x.id, y.id])
                )
            ).one()
        assert both.state == "canceled" and both.task_ref
        assert canceled == int(both.task_ref)
        assert [c.args[0] for c in hub.hub.calls if c.method == "cancelTask"] == [canceled]
        # canceled in flight, not after it finished; its children with it
        assert states["build"] == "CANCELED", states
        assert states.get("buildArch", "CANCELED") == "CANCELED", states
        # Y was re-tested alone: another tree, another key, built once
        assert y.attempt == 2 and json.loads(y.base_ahead) == [] and y.build_key != both.key
        assert nvrs(gate)["nova"] == "nova-12.0.1-1"
        assert "python-novaclient-ng" not in git(world.remote("nova"), "show", "main:nova.spec")
        assert_each_build_submitted_once(hub, gate)
        check_invariants(gate)


@pytest.mark.parametrize("tasks_end", ["after-the-restart", "while-the-gate-is-down"])
async def test_restart_with_koji_tasks_in_flight_reattaches_without_new_build_calls(
    tasks_end: str, world: World, hub: FakeKoji
) -> None:
    hub.hold()  # no host takes a task: everything submitted stays in flight
    gate = Gate(parse_config(koji_config_doc(world, hub)))
    await gate.start()
    try:
        propose(gate, world, "nova", NOVA_1201, "A")
        propose(gate, world, "ceilometer", CEILO_801, "B")
        gate.wake()

        def all_submitted() -> bool:
            with session(gate.engine) as s:
                rows = s.exec(select(BuildRow)).all()
            return len(rows) == 6 and all(r.task_ref for r in rows)

        # four bootstrap finals and the scratch builds of A and B, all on the hub
        await eventually(all_submitted)
    finally:
        await gate.stop()  # not finished: the Koji tasks keep going on the hub
    assert hub.hub.count("build") == 6
    assert set(hub.task_states().values()) == {"FREE"}
    if tasks_end == "while-the-gate-is-down":
        hub.release()
        await eventually(lambda: set(hub.task_states().values()) == {"CLOSED"})

    async with koji_gate(world, hub, idle=False) as gate:
        backend = gate.backends["koji"]
        assert isinstance(backend, KojiBackend)
        if tasks_end == "after-the-restart":
            # the restarted gate watches the six tasks again while the hub still holds them
            await eventually(lambda: len(backend.watcher) == 6)
            assert hub.hub.count("build") == 6 and not backend.submitted
            hub.release()
        await gate.wait_idle(120)

        assert results(gate) == {"merged": ["A", "B"]}
        assert gate.publishers["liberty"].generations() == [1, 2, 3]
        calls = assert_each_build_submitted_once(hub, gate)
        # only A's and B's final builds were submitted after the restart (as drafts:
        # the fake hub is Koji 1.35), and promoted
        assert len(calls) == 8
        assert sorted(c.nvr for c in calls[6:]) == ["ceilometer-8.0.1-1", "nova-12.0.1-1"]
        assert backend.submitted == Counter(draft=2)
        assert hub.hub.count("promoteBuild") == 2
        assert_published_rpms_are_kojis(gate, hub)
        check_invariants(gate)


async def test_hub_outage_mid_run_is_ridden_out_by_the_gate(world: World, hub: FakeKoji) -> None:
    """The hub answers 503 while scratch builds are in flight; the gate waits it out,
    shows it in the status document, and ends as if nothing happened."""
    async with koji_gate(world, hub) as gate:
        building = asyncio.Event()
        gate.listeners.append(lambda e: building.set() if e.get("state") == "building" else None)
        propose(gate, world, "nova", NOVA_1201, "A")
        propose(gate, world, "ceilometer", CEILO_801, "B")
        gate.wake()
        await asyncio.wait_for(building.wait(), 60)
        hub.hub.outage = "503"
        seen_retrying = False
        for _ in range(60):
            await asyncio.sleep(0.1)
            health = gate.backends["koji"].status()  # type: ignore[attr-defined]
            if health.get("consecutive_failures", 0) > 0:
                seen_retrying = True
                break
        await asyncio.sleep(1.0)
        hub.hub.outage = None
        await gate.wait_idle(180)

        assert seen_retrying, "the status document never showed the outage"
        assert results(gate) == {"merged": ["A", "B"]}
        assert_each_build_submitted_once(hub, gate)
        check_invariants(gate)


# -- SCM builds of commits only the gate has ---------------------------------------


@dataclass(frozen=True)
class TwoKnobSpec(PackageSpec):
    """A spec whose Release is set by two %globals far apart: two changes, each turning
    one knob, merge without a conflict and the merge has an NVR of its own."""

    def render(self) -> str:
        text = super().render().replace(f"Release: {self.release}\n", "")
        return f"%global rel {self.release}\n" + text.replace(
            "License: ASL 2.0\n",
            "License: ASL 2.0\n%global relsuffix %{nil}\nRelease: %{rel}%{relsuffix}\n",
        )


@pytest.fixture
def knob_world(tmp_path: Path) -> World:
    base = TwoKnobSpec("ceilometer", "8.0.0", requires=("nova >= 12.0.0",))
    return World(tmp_path / "world", projects={**INITIAL, "ceilometer": base}).create()


def two_edits_of_ceilometer(gate: Gate, world: World) -> None:
    """X and Y both change ceilometer.spec, in different hunks, both made on the branch
    head: Y's tested merge (on top of X) is a merge commit no one pushed anywhere."""
    propose_spec_edit(
        gate, world, "ceilometer", lambda s: s.replace("%global rel 1\n", "%global rel 2\n"), "X"
    )
    propose_spec_edit(
        gate,
        world,
        "ceilometer",
        lambda s: s.replace("%global relsuffix %{nil}", "%global relsuffix .1"),
        "Y",
    )
    gate.wake()


def scm_final_builds(fk: FakeKoji) -> dict[str, str]:
    """The commit of every non-scratch build submitted from SCM, by the NVR Koji made."""

    def collect() -> dict[str, str]:
        found = {}
        for build in fk.hub.state.builds.values():
            task = fk.hub.state.tasks[build.task_id]
            source = task.request[0]
            if "://" in source:
                found[build.nvr] = source.rsplit("#", 1)[1]
        return found

    return fk.run(collect)


async def test_scm_final_build_of_a_non_fast_forward_merge_builds_from_a_gate_owned_branch(
    knob_world: World, tmp_path: Path
) -> None:
    world = knob_world
    hub = start_hub(tmp_path / "hub", world)
    async with koji_gate(world, hub, mode="scm") as gate:
        two_edits_of_ceilometer(gate, world)
        await gate.wait_idle(120)

        assert results(gate) == {"merged": ["X", "Y"]}
        y = item_row(gate, "Y")
        with session(gate.engine) as s:
            change = s.get(ChangeRow, y.change_id)
        assert change is not None and y.merge_commit != change.sha  # a real merge commit
        # kojid built exactly the tested merge (SCM.checkout fetched it from the remote)
        assert scm_final_builds(hub)["ceilometer-8.0.0-2.1"] == y.merge_commit
        remote = world.remote("ceilometer")
        heads = git(remote, "for-each-ref", "--format=%(refname)", "refs/heads/")
        assert heads.split() == ["refs/heads/main"]  # the gate's branches are gone again
        assert nvrs(gate)["ceilometer"] == "ceilometer-8.0.0-2.1"
        assert git(remote, "rev-parse", "main") == y.merge_commit
        check_invariants(gate)
    hub.stop()


def gate_branches(world: World, project: str) -> list[str]:
    """The gate-owned build branches on the project's remote (``scm_branch_namespace``)."""
    refs = git(world.remote(project), "for-each-ref", "--format=%(refname)", "refs/heads/rpmgate/")
    return refs.split()


def running_scratch_build(gate: Gate, project: str) -> BuildRow | None:
    with session(gate.engine) as s:
        return s.exec(
            select(BuildRow).where(
                BuildRow.purpose == "scratch",
                BuildRow.project == project,
                BuildRow.state == "running",
                BuildRow.task_ref != None,  # noqa: E711 - SQL IS NOT NULL
            )
        ).first()


async def test_dequeuing_an_item_deletes_its_scm_build_branch_from_the_remote(
    world: World, hub: FakeKoji, tmp_path: Path
) -> None:
    """Builds.cancel: the running scratch build's task is cancelled and the branch the
    gate pushed for kojid (``rpmgate/builds/scratch-<key>``) is deleted again."""
    hold = tmp_path / "hold"
    hold.touch()
    async with koji_gate(world, hub, mode="scm") as gate:
        propose(
            gate, world, "nova", HeldSpec("nova", "12.0.1", lookaside=True, hold=str(hold)), "A"
        )
        gate.wake()
        row = await eventually(lambda: running_scratch_build(gate, "nova"))
        assert gate_branches(world, "nova") == [f"refs/heads/rpmgate/builds/scratch-{row.key[:16]}"]

        store_delivery(gate, "api", "item.dequeue", {"item": item_row(gate, "A").id}, None)
        gate.wake()
        await gate.wait_idle(120)

        assert results(gate) == {"dequeued": ["A"]}
        assert gate_branches(world, "nova") == []
        task = hub.run(lambda: hub.hub.state.tasks[int(row.task_ref or 0)])
        assert koji.TASK_STATES[task.state] == "CANCELED"
        # what the branch held is still where the review system keeps it: only the
        # gate's own branch went
        heads = git(world.remote("nova"), "for-each-ref", "--format=%(refname)", "refs/heads/")
        assert heads.split() == ["refs/heads/main"]
    hold.unlink()


async def test_a_restart_deletes_leftover_build_branches_but_keeps_a_running_builds(
    world: World, hub: FakeKoji, tmp_path: Path
) -> None:
    """Builds.sweep_branches at start: branches under the gate's namespace that no
    running build needs (left by a crash between a build's end and the branch's
    deletion) are deleted; the branch of a build still running is kept (kojid may
    not have cloned it yet), and branches outside the namespace are not the gate's."""
    hold = tmp_path / "hold"
    hold.touch()
    remote = world.remote("nova")
    async with koji_gate(world, hub, mode="scm") as gate:
        propose(
            gate, world, "nova", HeldSpec("nova", "12.0.1", lookaside=True, hold=str(hold)), "A"
        )
        gate.wake()
        row = await eventually(lambda: running_scratch_build(gate, "nova"))
    # the daemon is gone with A's scratch build running on the hub; earlier builds'
    # branches were left behind, and someone has a branch of their own
    [running] = gate_branches(world, "nova")
    main = git(remote, "rev-parse", "main")
    leftovers = [
        "refs/heads/rpmgate/builds/final-0123456789abcdef",
        "refs/heads/rpmgate/builds/scratch-fedcba9876543210",
    ]
    for ref in [*leftovers, "refs/heads/feature/rpmgate"]:
        git(remote, "update-ref", ref, main)
    assert sorted(gate_branches(world, "nova")) == sorted([running, *leftovers])

    async with koji_gate(world, hub, mode="scm", idle=False) as gate:
        # start() swept before it returned
        assert gate_branches(world, "nova") == [running]
        assert running == f"refs/heads/rpmgate/builds/scratch-{row.key[:16]}"
        hold.unlink()
        await gate.wait_idle(120)
        assert results(gate) == {"merged": ["A"]}
        assert gate_branches(world, "nova") == []
        heads = git(remote, "for-each-ref", "--format=%(refname)", "refs/heads/")
        assert sorted(heads.split()) == ["refs/heads/feature/rpmgate", "refs/heads/main"]
        assert hub.hub.count("build") == 4 + 2  # bootstrap; A's scratch build (once) and final
        check_invariants(gate)


def refuse_gate_branches(world: World, project: str) -> None:
    """A server-side hook, as a forge may have, that refuses the gate's branches."""
    hook = world.remote(project) / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\nwhile read old new ref; do\n"
        '  case "$ref" in refs/heads/rpmgate/*) echo "branches are for humans";'
        " exit 1;; esac\ndone\n"
    )
    hook.chmod(0o755)


async def test_a_remote_refusing_gate_branches_fails_only_the_merge_kojid_cannot_fetch(
    knob_world: World, tmp_path: Path
) -> None:
    world = knob_world
    hub = start_hub(tmp_path / "hub", world)
    refuse_gate_branches(world, "ceilometer")
    async with koji_gate(world, hub, mode="scm") as gate:
        two_edits_of_ceilometer(gate, world)
        await gate.wait_idle(120)

        # X is its own commit (its review ref makes it fetchable): it still builds.  Y's
        # merge is refused already for its scratch build (scratch builds come from SCM too)
        assert results(gate) == {"merged": ["X"], "rejected": ["Y"]}
        y_failure = failure_of(gate, "Y")
        y = item_row(gate, "Y")
        assert y_failure == (
            f"the tested merge {(y.merge_commit or '')[:12]} is on no branch the builders can "
            "fetch: the repository refused the gate's branch "
            f"rpmgate/builds/scratch-{(y.build_key or '')[:16]} (branches are for humans); "
            "rebase the change so that it merges as a fast-forward, or let the gate push "
            "branches under that namespace"
        ), y_failure
        assert hub.hub.count("build") == 4 + 2  # bootstrap, X's scratch and final build
        check_invariants(gate)
    hub.stop()


# -- errors that retrying cannot fix --------------------------------------------------


async def test_a_backend_error_holds_the_item_visibly_and_a_restart_resumes_it(
    world: World, hub: FakeKoji, aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gate.builders import koji_watch
    from gate.web.app import make_app

    def unreadable(info: dict[str, Any], found: dict[Any, Any]) -> Any:
        raise KeyError("label")

    async with koji_gate(world, hub) as gate:
        client = await aiohttp_client(make_app(gate.runtime))
        monkeypatch.setattr(koji_watch, "_child", unreadable)
        propose(gate, world, "nova", NOVA_1201, "A")
        gate.wake()

        def stuck() -> list[BuildRow]:
            with session(gate.engine) as s:
                return list(s.exec(select(BuildRow).where(BuildRow.error != "")).all())

        [row] = await eventually(stuck)
        assert row.state == "running" and row.error.startswith("Koji backend error: KeyError")
        doc = await (await client.get("/api/status")).json()
        [item] = doc["queues"][0]["items"]
        assert item["state"] == "stuck: backend error"
        assert item["failure"].startswith("Koji backend error: KeyError: 'label' (at ")
        assert doc["backends"]["koji"]["error"].startswith("KeyError: 'label'")
        health = await client.get("/healthz")
        assert health.status == 503
        body = await health.json()
        assert body["stuck_builds"] == [row.id]
        assert body["backends"]["koji"].startswith("Koji backend error: KeyError")
        # no silent retry: the watch stopped, nothing is polled or submitted again
        polls, builds = hub.hub.count("getTaskInfo"), hub.hub.count("build")
        await asyncio.sleep(1.0)
        assert (hub.hub.count("getTaskInfo"), hub.hub.count("build")) == (polls, builds)
        assert item_row(gate, "A").active

    monkeypatch.undo()  # the fixed gate is started again
    async with koji_gate(world, hub) as gate:
        await gate.wait_idle(120)
        assert results(gate) == {"merged": ["A"]}
        assert hub.hub.count("build") == builds + 1  # only A's final build is new
        check_invariants(gate)


async def test_a_task_the_hub_lost_is_named_in_status_and_healthz_then_fails_its_build(
    world: World, hub: FakeKoji, aiohttp_client: Any, tmp_path: Path
) -> None:
    """A hub that answers kojihub's GenericError("No such task") about one task for good:
    not a silent retry loop (issue 7, finding 2) but the task and the hub's fault in
    ``backends.koji`` and ``/healthz`` while the watcher keeps asking, then a failed
    build with that reason on the item."""
    from gate.web.app import make_app

    hold = tmp_path / "hold"
    hold.touch()
    async with koji_gate(world, hub) as gate:
        client = await aiohttp_client(make_app(gate.runtime))
        propose(
            gate, world, "nova", HeldSpec("nova", "12.0.1", lookaside=True, hold=str(hold)), "A"
        )
        gate.wake()

        def scratch_task() -> str | None:
            with session(gate.engine) as s:
                row = s.exec(
                    select(BuildRow).where(
                        BuildRow.purpose == "scratch", BuildRow.project == "nova"
                    )
                ).first()
            return row.task_ref if row is not None else None

        task = int(await eventually(scratch_task))

        def child_of_task() -> list[int]:
            return hub.run(
                lambda: [
                    t.id
                    for t in hub.hub.state.tasks.values()
                    if t.method == "buildArch" and t.parent == task
                ]
            )

        [child] = await eventually(child_of_task)
        hub.run(lambda: hub.hub.fault_task("getTaskResult", child, 1000, "No such task"))
        hold.unlink()

        async def shown() -> Any:
            doc = await (await client.get("/api/status")).json()
            return doc["backends"]["koji"]["task_faults"]

        faults: dict[str, Any] = {}
        async with asyncio.timeout(60):
            while not faults:
                faults = await shown()
                await asyncio.sleep(0.05)
        fault = f"getTaskResult of task {child}: GenericError: No such task"
        assert faults[str(task)]["fault"] == fault
        # /healthz fails once the fault repeats (UNHEALTHY_AFTER polls), before it gives up
        async with asyncio.timeout(60):
            while (health := await client.get("/healthz")).status != 503:
                await asyncio.sleep(0.05)
        assert (
            f"Koji answers faults about task {task} " in (await health.json())["backends"]["koji"]
        )
        assert "rejected" not in results(gate)  # still watched while /healthz says so

        await gate.wait_idle(120)
        assert results(gate) == {"rejected": ["A"]}
        assert failure_of(gate, "A").startswith(
            f"Koji can no longer report task {task}: {fault} (10 polls in a row): the hub lost"
        ), failure_of(gate, "A")
        doc = await (await client.get("/api/status")).json()
        assert doc["backends"]["koji"]["task_faults"] == {}
        assert doc["backends"]["koji"]["last_error"] == f"task {task}: {fault}"
        check_invariants(gate)


# -- several arches -------------------------------------------------------------------------


async def served_repo(client: Any, url: str, into: Path) -> list[str]:
    """The packages a yum repository served at ``url`` lists, read as dnf would: its
    ``repodata/repomd.xml``, the metadata files that names, then every package's
    ``location_href`` fetched (each must be served); file names, sorted."""

    async def fetch(path: str) -> bytes:
        response = await client.get(f"{url}{path}")
        assert response.status == 200, f"{url}{path}: {response.status}"
        return bytes(await response.read())

    (into / "repodata").mkdir(parents=True)
    (into / "repodata" / "repomd.xml").write_bytes(await fetch("repodata/repomd.xml"))
    for record in cr.Repomd(str(into / "repodata" / "repomd.xml")).records:
        (into / record.location_href).write_bytes(await fetch(record.location_href))
    reader = cr.RepositoryReader.from_path(str(into))
    names = []
    for package in reader.iter_packages():
        assert await fetch(package.location_href)
        names.append(Path(package.location_href).name)
    return sorted(names)


async def test_a_two_arch_target_builds_and_publishes_every_arch(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    from gate.web.app import make_app

    world = World(
        tmp_path / "world",
        projects={
            "nova": PackageSpec("nova", "12.0.0", noarch=False),
            "ceilometer": PackageSpec("ceilometer", "8.0.0", requires=("nova >= 12.0.0",)),
        },
    ).create()
    fk = start_hub(tmp_path / "hub", world)
    try:
        for tag in ("liberty-build", "liberty-candidate"):
            fk.run(lambda tag=tag: fk.hub.set_arches(tag, "x86_64 aarch64"))
        publishers = {
            "liberty": {
                "root": str(world.root / "repos" / "liberty"),
                "arches": ["x86_64", "aarch64"],
                "keep": 10,
            }
        }
        async with koji_gate(world, fk, publishers=publishers) as gate:
            client = await aiohttp_client(make_app(gate.runtime))
            propose(gate, world, "nova", PackageSpec("nova", "12.0.1", noarch=False), "A")
            gate.wake()
            await gate.wait_idle(120)

            assert results(gate) == {"merged": ["A"]}
            a = item_row(gate, "A")
            tested = RepoState.from_json(a.tested_state or "").nevras()
            assert {"nova-0:12.0.1-1.x86_64", "nova-0:12.0.1-1.aarch64"} <= tested
            # the speculative repository A's jobs ran against, as the daemon serves it
            # (the .repo file's baseurl ends in $basearch/): one repository per arch,
            # each with that arch's build of nova and the noarch ceilometer, nothing else
            repo_file = await client.get(f"/speculative/{a.id}-{a.attempt}/rpmgate-{a.id}.repo")
            assert repo_file.status == 200
            assert f"/speculative/{a.id}-{a.attempt}/$basearch/" in await repo_file.text()
            for arch in ("x86_64", "aarch64"):
                listed = await served_repo(
                    client, f"/speculative/{a.id}-{a.attempt}/{arch}/", tmp_path / "seen" / arch
                )
                assert listed == ["ceilometer-8.0.0-1.noarch.rpm", f"nova-12.0.1-1.{arch}.rpm"]
            current = gate.publishers["liberty"].current()
            assert current is not None
            for arch in ("x86_64", "aarch64"):
                # what the tree's metadata serves (Packages/ is the repository-wide store)
                reader = cr.RepositoryReader.from_path(str(current.path / arch))
                listed = sorted(Path(p.location_href).name for p in reader.iter_packages())
                assert all(
                    (current.path / arch / p.location_href).is_file()
                    for p in reader.iter_packages()
                )
                assert listed == ["ceilometer-8.0.0-1.noarch.rpm", f"nova-12.0.1-1.{arch}.rpm"]
            assert_published_rpms_are_kojis(gate, fk)
            check_invariants(gate)
    finally:
        fk.stop()


async def test_the_progress_bar_shows_the_koji_build_per_arch_from_its_children(
    world: World, hub: FakeKoji, tmp_path: Path
) -> None:
    """While the scratch build runs, its step is its task's ``buildArch`` children as the
    watcher's multicall saw them (``getTaskChildren``, keyed by the child's label, the
    arch it builds for); once it passed, the arches its RPMs are for."""
    hold = tmp_path / "hold"
    hold.touch()
    async with koji_gate(world, hub) as gate:
        propose(
            gate, world, "nova", HeldSpec("nova", "12.0.1", lookaside=True, hold=str(hold)), "Y"
        )
        gate.wake()

        def bar() -> list[tuple[str, str]]:
            with session(gate.engine) as s:
                doc = status(gate.runtime, s)
            items = [*doc["queues"][0]["items"], *doc["queues"][0]["recent"]]
            shown = [
                (s.label, s.state)
                for i in items
                if i["change"]["title"] == "Y"
                for s in segments(i, [], doc["backends"])
            ]
            return [(label, state) for label, state in shown if label.startswith("scratch build")]

        # one step while no child is known (queued, merging, the SRPM being built)
        running = await eventually(lambda: [s for s in bar() if s[0] != "scratch build"])
        assert running == [("scratch build noarch", "running")]
        hold.unlink()
        await gate.wait_idle(120)
        assert results(gate) == {"merged": ["Y"]}
        assert bar() == [("scratch build noarch", "passed")]
