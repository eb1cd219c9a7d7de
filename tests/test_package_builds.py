"""Several packages in one project at run time (docs/pipelines.md, Package order).

Real git, real rpmbuild, real createrepo_c: a project ``foo`` holding
``python-foo`` and ``foo-doc`` (after it), each with its own spec in its own
directory.  Its items build one package after the other; a change touching
``foo-doc`` only reuses ``python-foo``'s build (``LocalBackend`` counts every
``rpmbuild --rebuild``); both packages are published.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from gate.config import ConfigError, parse_config
from gate.daemon import Gate
from gate.deliveries import store_delivery
from gate.demo_world import PackageSpec, World, git
from gate.web.status import item_doc
from repo_state.db import session
from repo_state.models import BuildRow, ChangeRow, ItemBuildRow, ItemRow
from tests.invariants import check_invariants, results

PACKAGES = {
    "python-foo": {"spec": "python-foo/python-foo.spec"},
    "foo-doc": {"spec": "foo-doc/foo-doc.spec", "after": ["python-foo"]},
}


def _foo(world: World) -> Path:
    """The ``foo`` distgit: two specs, each in its own directory; returns its work tree."""
    bare, work = world.remote("foo"), world.root / "work-foo"
    bare.mkdir(parents=True)
    git(bare, "init", "-q", "--bare", "-b", "main")
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    git(work, "remote", "add", "origin", str(bare))
    _write(work, "python-foo", "1.0")
    _write(work, "foo-doc", "1.0")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "Import foo")
    git(work, "push", "-q", "origin", "main")
    return work


def _write(
    work: Path, package: str, version: str, seconds: float = 0, broken: bool = False
) -> None:
    spec = work / package / f"{package}.spec"
    spec.parent.mkdir(exist_ok=True)
    text = PackageSpec(package, version, build_seconds=seconds, broken_build=broken).render()
    spec.write_text(text)


def _propose(
    gate: Gate,
    work: Path,
    versions: dict[str, str],
    title: str,
    n: int,
    slow: frozenset[str] = frozenset(),
    broken: frozenset[str] = frozenset(),
) -> None:
    """A change to ``foo`` bumping the packages named (those in ``slow`` build for a
    few seconds, those in ``broken`` fail to build), proposed and approved."""
    git(work, "fetch", "-q", "origin", "+refs/heads/main:refs/remotes/origin/main")
    git(work, "checkout", "-q", "--detach", "origin/main")
    for package, version in versions.items():
        _write(work, package, version, 3.0 if package in slow else 0, package in broken)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", title)
    ref = f"refs/changes/{n:02d}/{n}/1"
    git(work, "push", "-q", "origin", f"HEAD:{ref}")
    store_delivery(
        gate,
        "api",
        "change.proposed",
        {"project": "foo", "ref": ref, "title": title, "approve": True},
        None,
    )


def _config(world: World) -> dict[str, Any]:
    doc = world.config()
    doc["projects"]["foo"] = {"git": str(world.remote("foo")), "packages": PACKAGES}
    doc["queues"]["liberty"]["projects"].append("foo")
    return doc


def _rebuilds(gate: Gate, package: str) -> int:
    """``rpmbuild --rebuild`` runs of ``package`` so far (every purpose)."""
    backend: Any = gate.backends["local"]
    with session(gate.engine) as s:
        keys = {
            (b.purpose, b.key) for b in s.exec(select(BuildRow).where(BuildRow.package == package))
        }
    return sum(backend.rebuild_count(purpose, key) for purpose, key in keys)


def _item(gate: Gate, title: str) -> ItemRow:
    with session(gate.engine) as s:
        return s.exec(
            select(ItemRow)
            .join(ChangeRow, col(ChangeRow.id) == col(ItemRow.change_id))
            .where(ChangeRow.title == title)
        ).one()


@pytest.mark.slow
async def test_packages_build_in_order_and_an_unchanged_one_reuses_its_build(
    world: World,
) -> None:
    work = _foo(world)
    gate = Gate(parse_config(_config(world)))
    await gate.start()
    try:
        await gate.wait_idle(180)
        nvrs = gate.publishers["liberty"].state().nvrs()
        assert (nvrs["python-foo"], nvrs["foo-doc"]) == ("python-foo-1.0-1", "foo-doc-1.0-1")
        assert _rebuilds(gate, "python-foo") == 1  # the bootstrap's final build

        # a change to foo-doc alone: python-foo's build serves, nobody runs rpmbuild for it
        _propose(gate, work, {"foo-doc": "1.1"}, "doc only", 1)
        gate.wake()
        await gate.wait_idle(180)
        assert results(gate) == {"merged": ["doc only"]}
        assert _rebuilds(gate, "python-foo") == 1
        assert _rebuilds(gate, "foo-doc") >= 2
        nvrs = gate.publishers["liberty"].state().nvrs()
        assert (nvrs["python-foo"], nvrs["foo-doc"]) == ("python-foo-1.0-1", "foo-doc-1.1-1")
        doc_only = _item(gate, "doc only")
        with session(gate.engine) as s:
            entries = s.exec(
                select(ItemBuildRow)
                .where(ItemBuildRow.item_id == doc_only.id)
                .order_by(col(ItemBuildRow.id))
            ).all()
            doc = item_doc(gate.runtime, s, doc_only, None)
        reuses = {(e.purpose, e.package): e.reused for e in entries}
        assert reuses[("scratch", "python-foo")] and reuses[("final", "python-foo")]
        assert not reuses[("scratch", "foo-doc")] and not reuses[("final", "foo-doc")]
        # in build order, each on the item's document with its reuse
        assert [(p["package"], p["reused"], p["final_reused"]) for p in doc["packages"]] == [
            ("python-foo", True, True),
            ("foo-doc", False, False),
        ]

        # a change to python-foo: both are built again, foo-doc after python-foo (its
        # inputs include python-foo's; its version moves too, as an NVR is built once)
        _propose(gate, work, {"python-foo": "1.1", "foo-doc": "1.2"}, "foo 1.1", 2)
        gate.wake()
        await gate.wait_idle(180)
        assert results(gate) == {"merged": ["doc only", "foo 1.1"]}, _item(gate, "foo 1.1").failure
        nvrs = gate.publishers["liberty"].state().nvrs()
        assert (nvrs["python-foo"], nvrs["foo-doc"]) == ("python-foo-1.1-1", "foo-doc-1.2-1")
        bump = _item(gate, "foo 1.1")
        with session(gate.engine) as s:
            scratch = {
                e.package: s.get(BuildRow, e.build_id)
                for e in s.exec(
                    select(ItemBuildRow).where(
                        ItemBuildRow.item_id == bump.id, ItemBuildRow.purpose == "scratch"
                    )
                )
            }
        foo, foo_doc = scratch["python-foo"], scratch["foo-doc"]
        assert foo is not None and foo_doc is not None
        assert foo.package == "python-foo" and foo_doc.package == "foo-doc"
        # foo-doc's inputs include python-foo's: it is built again, after it
        assert json.loads(foo_doc.waits_for) == [foo.id]
        assert foo.submissions == foo_doc.submissions == 1
        assert foo.finished_at is not None and foo_doc.finished_at is not None
        assert foo.finished_at <= foo_doc.finished_at
        assert foo_doc.nvr == "foo-doc-1.2-1"
        check_invariants(gate)
    finally:
        await gate.stop()


@pytest.mark.slow
async def test_a_package_waiting_for_another_waits_again_after_a_restart(world: World) -> None:
    """The daemon stops while foo-doc's build waits for python-foo's (recorded, not
    submitted); after a restart the watch of each is re-attached: python-foo is built,
    then foo-doc, each submitted once more at most, and the change merges."""
    work = _foo(world)
    config = _config(world)
    gate = Gate(parse_config(config))
    await gate.start()
    try:
        await gate.wait_idle(180)
        _propose(
            gate,
            work,
            {"python-foo": "1.1", "foo-doc": "1.2"},
            "both",
            1,
            slow=frozenset({"python-foo"}),
        )
        gate.wake()

        def waiting() -> bool:
            with session(gate.engine) as s:
                rows = {
                    b.package: b
                    for b in s.exec(select(BuildRow).where(BuildRow.purpose == "scratch"))
                }
            doc, foo = rows.get("foo-doc"), rows.get("python-foo")
            return (
                doc is not None
                and foo is not None
                and (doc.state, doc.task_ref, foo.state) == ("running", None, "running")
            )

        async def until_waiting() -> None:
            while not waiting():
                await asyncio.sleep(0.05)

        await asyncio.wait_for(until_waiting(), 120)
    finally:
        await gate.stop()
    gate = Gate(parse_config(config))
    await gate.start()
    try:
        await gate.wait_idle(180)
        assert results(gate) == {"merged": ["both"]}
        with session(gate.engine) as s:
            scratch = {
                b.package: b for b in s.exec(select(BuildRow).where(BuildRow.purpose == "scratch"))
            }
        assert scratch["foo-doc"].state == scratch["python-foo"].state == "passed"
        assert json.loads(scratch["foo-doc"].waits_for) == [scratch["python-foo"].id]
        # foo-doc was never submitted before the restart; python-foo's task died with it
        assert scratch["foo-doc"].submissions == 1
        assert scratch["python-foo"].submissions <= 2
        nvrs = gate.publishers["liberty"].state().nvrs()
        assert (nvrs["python-foo"], nvrs["foo-doc"]) == ("python-foo-1.1-1", "foo-doc-1.2-1")
        check_invariants(gate)
    finally:
        await gate.stop()


@pytest.mark.slow
async def test_packages_times_named_builds_and_a_failed_package_holds_back_the_ones_after(
    world: World,
) -> None:
    """The set is (named build x package): a doc-only change reuses python-foo in both
    builds; a broken python-foo fails the item naming the package and the build, and
    foo-doc, built after it, is not built."""
    work = _foo(world)
    doc = _config(world)
    doc["publishers"]["el10"] = {**doc["publishers"]["liberty"], "root": str(world.root / "el10")}
    doc["queues"]["liberty"]["builds"] = {"el9": {}, "el10": {"repo": "el10"}}
    gate = Gate(parse_config(doc))
    await gate.start()
    try:
        await gate.wait_idle(180)
        _propose(gate, work, {"foo-doc": "1.1"}, "doc only", 1)
        gate.wake()
        await gate.wait_idle(180)
        item = _item(gate, "doc only")
        with session(gate.engine) as s:
            scratch = {
                (e.build_name, e.package): e.reused
                for e in s.exec(
                    select(ItemBuildRow).where(
                        ItemBuildRow.item_id == item.id, ItemBuildRow.purpose == "scratch"
                    )
                )
            }
        assert scratch == {
            ("el9", "python-foo"): True,
            ("el9", "foo-doc"): False,
            ("el10", "python-foo"): True,
            ("el10", "foo-doc"): False,
        }
        for repo in ("liberty", "el10"):
            assert gate.publishers[repo].state().nvrs()["foo-doc"] == "foo-doc-1.1-1", repo

        _propose(
            gate,
            work,
            {"python-foo": "1.1", "foo-doc": "1.2"},
            "broken foo",
            2,
            broken=frozenset({"python-foo"}),
        )
        gate.wake()
        await gate.wait_idle(180)
        assert results(gate) == {"merged": ["doc only"], "rejected": ["broken foo"]}
        broken = _item(gate, "broken foo")
        assert broken.failure.startswith("package python-foo (build el"), broken.failure
        with session(gate.engine) as s:
            held = [
                s.get(BuildRow, e.build_id)
                for e in s.exec(
                    select(ItemBuildRow).where(
                        ItemBuildRow.item_id == broken.id,
                        ItemBuildRow.package == "foo-doc",
                        ItemBuildRow.purpose == "scratch",
                    )
                )
            ]
        # foo-doc's builds never ran: failed with python-foo's, or cancelled with the item
        assert held and all(b is not None and b.submissions == 0 for b in held)
        for b in held:
            assert b is not None and b.state in ("failed", "canceled"), b.state
        for repo in ("liberty", "el10"):
            assert gate.publishers[repo].state().nvrs()["python-foo"] == "python-foo-1.0-1"
        check_invariants(gate)
    finally:
        await gate.stop()


def test_a_build_from_the_scm_url_is_refused_for_a_project_of_several_packages(
    tmp_path: Path,
) -> None:
    doc = {
        "state_dir": str(tmp_path / "state"),
        "backends": {
            "koji": {
                "type": "koji",
                "server": "https://koji.example/kojihub",
                "topurl": "https://koji.example/kojifiles",
                "final_source": "scm",
            }
        },
        "publishers": {"liberty": {"root": str(tmp_path / "repo")}},
        "projects": {"foo": {"git": str(tmp_path / "foo.git"), "packages": PACKAGES}},
        "queues": {
            "liberty": {
                "projects": ["foo"],
                "repo": "liberty",
                "target": "t",
                "backend": "koji",
            }
        },
    }
    with pytest.raises(ConfigError) as exc:
        parse_config(doc, "rpmgate.yaml")
    assert "backends.koji.final_source: scm: project foo of queue liberty has 2 packages" in str(
        exc.value
    )
