"""Publishing generations: real rpmbuild RPMs, real createrepo_c metadata."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import createrepo_c as cr
import pytest

from publishers import createrepo as createrepo_module
from publishers import pooled as pooled_module
from publishers import statefile
from publishers.createrepo import (
    GenerationConflict,
    OutOfOrder,
    Publisher,
)
from publishers.pooled import pooled_href
from publishers.repotree import RepoTreeError, write_repo_tree
from publishers.statefile import line_checksums, line_names_exactly, served_lines, write_state
from repo_state.pool import Pool
from repo_state.state import Artifact, BuildEntry, RepoState
from tests.rpmfactory import Subpackage, build_entry, build_rpms

GATE = {"item": "item-1", "change": "gerrit:1234,1", "project": "rpms/foo", "kind": "gate"}


@pytest.fixture(scope="module")
def rpm_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, ...]]:
    """A handful of real builds, made once per module (rpmbuild is the slow part)."""
    out = tmp_path_factory.mktemp("rpms")
    built = {
        "foo-1": build_rpms(
            out / "foo-1",
            "foo",
            "1.0",
            provides=["foo-api = 1"],
            subpackages=[Subpackage("foo-extra", requires=["foo"])],
            srpm=True,
        ),
        "foo-2": build_rpms(out / "foo-2", "foo", "2.0", provides=["foo-api = 2"], srpm=True),
        "bar-1": build_rpms(out / "bar-1", "bar", "1.0", requires=["foo-api"], arch="x86_64"),
        "baz-1": build_rpms(out / "baz-1", "baz", "1.0", epoch=2),
        "qux-1": build_rpms(out / "qux-1", "qux", "1.0"),
        # same file name as foo-1's main package, different bytes
        "foo-1-again": build_rpms(out / "foo-1-again", "foo", "1.0"),
    }
    return {key: b.all for key, b in built.items()}


@pytest.fixture
def pool(tmp_path: Path) -> Pool:
    return Pool(tmp_path / "pool")


@pytest.fixture
def builds(rpm_dir: dict[str, tuple[Path, ...]], pool: Pool) -> dict[str, BuildEntry]:
    return {key: build_entry(paths, pool) for key, paths in rpm_dir.items()}


@pytest.fixture
def publisher(tmp_path: Path, pool: Pool) -> Publisher:
    return Publisher(tmp_path / "repo", pool, arches=("x86_64",), keep=5)


def state_of(builds: dict[str, BuildEntry], *keys: str) -> RepoState:
    state = RepoState()
    for key in keys:
        state = state.with_build(builds[key])
    return state


def primary_packages(tree: Path) -> dict[str, cr.Package]:
    """Packages of one arch tree as a client sees them, keyed by location."""
    reader = cr.RepositoryReader.from_path(str(tree))
    return {pkg.location_href: pkg for pkg in reader.iter_packages()}


def listed(tree: Path) -> set[tuple[str, str, str, str, str, str]]:
    return {
        (p.name, p.epoch, p.version, p.release, p.arch, p.pkgId)
        for p in primary_packages(tree).values()
    }


def expected(state: RepoState, arch: str) -> set[tuple[str, str, str, str, str, str]]:
    return {
        (a.name, str(a.epoch), a.version, a.release, a.arch, a.checksum)
        for a in state.artifacts(include_source=True)
        if (a.is_source if arch == "src" else a.arch in (arch, "noarch"))
    }


def test_publish_moves_current_to_each_new_generation(publisher, builds):
    assert publisher.current() is None
    assert publisher.state() == RepoState()

    first = publisher.publish(1, state_of(builds, "foo-1"), GATE)
    assert os.readlink(publisher.root / "current") == "generations/1"
    assert publisher.current() == first

    second = publisher.publish(2, state_of(builds, "foo-1", "baz-1"), GATE)
    assert os.readlink(publisher.root / "current") == "generations/2"
    assert publisher.current() == second
    assert publisher.generations() == [1, 2]
    assert publisher.state().nevras() == state_of(builds, "foo-1", "baz-1").nevras()
    assert publisher.state(1).nevras() == state_of(builds, "foo-1").nevras()


def test_repodata_lists_exactly_the_state_packages(tmp_path, pool, builds):
    publisher = Publisher(tmp_path / "repo", pool, arches=("x86_64", "aarch64"))
    state = state_of(builds, "foo-1", "bar-1", "baz-1")
    generation = publisher.publish(1, state, GATE)

    for tree in ("x86_64", "aarch64", "src"):
        assert listed(generation.path / tree) == expected(state, tree), tree
    # the x86_64-only package stays out of the aarch64 tree
    assert "bar" not in {p[0] for p in listed(generation.path / "aarch64")}
    # header content made it through: provides, requires, files, changelog
    pkgs = {p.name: p for p in primary_packages(generation.path / "x86_64").values()}
    assert ("foo-api", "EQ", "0", "1", None, False) in pkgs["foo"].provides
    assert any(r[0] == "foo-api" for r in pkgs["bar"].requires)
    assert pkgs["baz"].epoch == "2"
    assert (None, "/usr/share/foo/", "foo.txt") in pkgs["foo"].files
    assert pkgs["foo"].changelogs


def test_packages_are_stored_once_by_checksum_and_hard_linked_from_the_pool(
    publisher, pool, builds
):
    state = state_of(builds, "foo-1", "baz-1")
    generation = publisher.publish(1, state, GATE)
    second = publisher.publish(2, state_of(builds, "foo-2", "baz-1"), GATE)

    for gen in (generation, second):
        for tree in ("x86_64", "src"):
            link = gen.path / tree / "Packages"
            assert link.is_symlink() and link.resolve() == publisher.packages_dir.resolve()
    for artifact in state.artifacts(include_source=True):
        tree = "src" if artifact.is_source else "x86_64"
        path = generation.path / tree / pooled_href(artifact)
        assert path.name == artifact.filename
        assert path.parent.name == artifact.checksum
        assert path.stat().st_ino == pool.path_for(artifact.checksum).stat().st_ino
    # every location primary.xml names is the file with that checksum
    for tree in ("x86_64", "src"):
        for href, pkg in primary_packages(second.path / tree).items():
            assert pool.path_for(pkg.pkgId).samefile(second.path / tree / href)


def test_client_holding_an_older_generation_keeps_working_after_the_switch(publisher, builds):
    publisher.publish(1, state_of(builds, "foo-1"), GATE)
    held = Path(os.path.realpath(publisher.root / "current" / "x86_64"))

    publisher.publish(2, state_of(builds, "foo-2", "qux-1"), GATE)

    # the client finishes with the repomd.xml it read before the switch
    packages = primary_packages(held)
    assert {p.name for p in packages.values()} == {"foo", "foo-extra"}
    for href in packages:
        assert (held / href).is_file()
    now = primary_packages(publisher.root / "current" / "x86_64")
    assert {p.name for p in now.values()} == {"foo", "qux"}


def served_files(generation_dir: Path) -> dict[str, tuple[str, int, int]]:
    """Every file a generation serves (its own and the packages its metadata names)."""
    files: dict[str, tuple[str, int, int]] = {}
    paths = [p for p in generation_dir.rglob("*") if p.is_file() and "Packages" not in p.parts]
    for tree in ("x86_64", "src"):
        if (generation_dir / tree).is_dir():
            paths += [
                generation_dir / tree / href for href in primary_packages(generation_dir / tree)
            ]
    for path in paths:
        info = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        files[str(path.relative_to(generation_dir))] = (digest, info.st_ino, info.st_mtime_ns)
    return files


def test_a_generation_is_served_unchanged_while_the_next_ones_are_written(
    publisher, builds, monkeypatch
):
    first = publisher.publish(1, state_of(builds, "foo-1", "bar-1", "baz-1"), GATE)
    before = served_files(first.path)
    assert any("Packages" in name for name in before)
    during: list[dict[str, tuple[str, int, int]]] = []
    real = pooled_module.write_tree_metadata

    def write_and_look(*args, **kwargs):
        # the new generation's packages are linked, its metadata half written
        during.append(served_files(first.path))
        return real(*args, **kwargs)

    monkeypatch.setattr(pooled_module, "write_tree_metadata", write_and_look)
    publisher.publish(2, state_of(builds, "foo-2", "bar-1", "qux-1"), GATE)
    publisher.publish(3, state_of(builds, "foo-2", "qux-1"), GATE)
    publisher.rollback(1, GATE)
    publisher.gc()

    assert during and all(snapshot == before for snapshot in during)
    assert served_files(first.path) == before


def test_publish_after_a_crash_before_the_switch_only_switches(publisher, builds, monkeypatch):
    publisher.publish(1, state_of(builds, "foo-1"), GATE)
    state = state_of(builds, "foo-1", "baz-1")

    def crash(self, number):
        raise KeyboardInterrupt("kill -9 between rename and symlink swap")

    monkeypatch.setattr(Publisher, "_switch", crash)
    with pytest.raises(KeyboardInterrupt):
        publisher.publish(2, state, GATE)
    monkeypatch.undo()
    assert publisher.current().number == 1
    written = publisher.generation(2)
    assert written is not None

    restarted = Publisher(publisher.root, publisher.pool)
    again = restarted.publish(2, state, GATE)

    assert restarted.current().number == 2
    # the existing generation was adopted, not rebuilt
    assert again.manifest == written.manifest


def test_publish_after_a_crash_mid_build_removes_the_debris(publisher, builds, monkeypatch):
    publisher.publish(1, state_of(builds, "foo-1"), GATE)
    state = state_of(builds, "foo-1", "baz-1")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("kill -9 while writing metadata")

    monkeypatch.setattr(createrepo_module, "_write_synced", crash)
    with pytest.raises(KeyboardInterrupt):
        publisher.publish(2, state, GATE)
    monkeypatch.undo()
    gens = publisher.root / "generations"
    assert [p.name for p in gens.iterdir() if p.name.startswith(".tmp-2-")]
    (publisher.root / ".current-stale").symlink_to("generations/1")

    generation = publisher.publish(2, state, GATE)

    assert sorted(p.name for p in gens.iterdir()) == ["1", "2"]
    assert not list(publisher.root.glob(".current-*"))
    assert listed(generation.path / "x86_64") == expected(state, "x86_64")


def test_publish_of_an_existing_number_never_moves_current_back(publisher, builds):
    one = state_of(builds, "foo-1")
    publisher.publish(1, one, GATE)
    publisher.publish(2, state_of(builds, "foo-2"), GATE)

    assert publisher.publish(1, one, GATE).number == 1
    assert publisher.current().number == 2


def test_publish_refuses_an_existing_number_with_different_packages(publisher, builds):
    publisher.publish(1, state_of(builds, "foo-1"), GATE)
    with pytest.raises(GenerationConflict):
        publisher.publish(1, state_of(builds, "foo-2"), GATE)
    assert publisher.state().nevras() == state_of(builds, "foo-1").nevras()


def test_publish_refuses_numbers_out_of_order(publisher, builds):
    with pytest.raises(OutOfOrder):
        publisher.publish(2, state_of(builds, "foo-1"), GATE)
    publisher.publish(1, state_of(builds, "foo-1"), GATE)
    with pytest.raises(OutOfOrder):
        publisher.publish(3, state_of(builds, "foo-2"), GATE)
    assert publisher.generations() == [1]
    assert not [p for p in (publisher.root / "generations").iterdir() if p.name.startswith(".")]


def test_rollback_publishes_a_new_generation_equal_to_the_old_one(publisher, builds):
    old = publisher.publish(1, state_of(builds, "foo-1", "baz-1"), GATE)
    publisher.publish(2, state_of(builds, "foo-2", "baz-1"), GATE)

    rolled = publisher.rollback(1, {"item": None, "change": None, "project": None, "kind": "x"})

    assert rolled.number == 3
    assert publisher.current().number == 3
    assert rolled.manifest["produced_by"]["kind"] == "rollback"
    assert rolled.manifest["produced_by"]["rollback_to"] == 1
    assert rolled.state == old.state
    assert listed(rolled.path / "x86_64") == listed(old.path / "x86_64")
    assert publisher.generations() == [1, 2, 3]  # history is kept, not rewritten
    # every package came back, so nothing needed its header read
    assert rolled.manifest["metadata"]["read"] == 0


def test_republish_makes_a_new_generation_rereading_every_header(publisher, builds):
    state = state_of(builds, "foo-1", "baz-1")
    first = publisher.publish(1, state, GATE)

    again = publisher.republish({"item": None, "kind": "republish", "by": "admin"})

    assert again.number == 2
    assert again.state == first.state
    assert again.manifest["produced_by"]["kind"] == "republish"
    assert again.manifest["metadata"]["reused"] == 0
    assert again.manifest["metadata"]["read"] == len(state.artifacts(include_source=True))
    assert listed(again.path / "x86_64") == listed(first.path / "x86_64")


def test_gc_keeps_the_newest_generations(tmp_path, pool, builds):
    publisher = Publisher(tmp_path / "repo", pool, keep=2)
    for n, key in enumerate(["foo-1", "foo-2", "baz-1", "qux-1"], start=1):
        publisher.publish(n, state_of(builds, key), GATE)

    assert publisher.gc() == [1, 2]
    assert publisher.generations() == [3, 4]
    assert publisher.current().number == 4
    assert publisher.gc() == []
    # packages/ holds what generations 3 and 4 serve, and nothing else
    stored = {p.parent.name for p in publisher.packages_dir.glob("*/*/*.rpm")}
    served = {a.checksum for n in (3, 4) for a in publisher.state(n).artifacts(True)}
    assert stored == served


@pytest.mark.parametrize("cold", [False, True], ids=["warm", "cold"])
def test_gc_keeps_a_file_that_moved_to_another_build(tmp_path, pool, builds, cold):
    publisher = Publisher(tmp_path / "repo", pool, keep=1)
    publisher.publish(1, state_of(builds, "foo-1", "bar-1"), GATE)
    # the same RPM files, now carried by a build of another source package
    moved = BuildEntry("foo-renamed", "foo-renamed-1-1", builds["foo-1"].artifacts)
    publisher.publish(2, state_of(builds, "bar-1").with_build(moved), GATE)
    if cold:  # generation 1 is then read from its state file, not from memory
        publisher = Publisher(tmp_path / "repo", pool, keep=1)

    assert publisher.gc() == [1]
    stored = {p.parent.name for p in publisher.packages_dir.glob("*/*/*.rpm")}
    assert stored == {a.checksum for a in publisher.state(2).artifacts(True)}


def test_served_lines_read_names_and_checksums_as_written(tmp_path, builds):
    odd = BuildEntry('we"ird\\name', "n-1-1", builds["foo-1"].artifacts)
    state = state_of(builds, "bar-1").with_build(odd)
    write_state(tmp_path / "state.json", state)

    read = {name: line_checksums(line) for name, line in served_lines(tmp_path / "state.json")}
    assert read == {e.source_name: [a.checksum for a in e.artifacts] for e in state}
    for name, line in served_lines(tmp_path / "state.json"):
        checksums = [a.checksum for a in state.builds[name].artifacts]
        assert line_names_exactly(line, checksums)
        assert not line_names_exactly(line, checksums[:-1])


@pytest.mark.parametrize("block", [7, 64, 1 << 16])
def test_named_among_finds_a_checksum_cut_by_a_block_and_no_other(
    tmp_path, builds, monkeypatch, block
):
    monkeypatch.setattr(statefile, "_BLOCK", block)
    state = state_of(builds, "foo-1", "bar-1")
    write_state(tmp_path / "state.json", state)
    served = {a.checksum for a in state.artifacts(True)}
    absent = {a.checksum for a in builds["foo-2"].artifacts} - served

    for wanted in ({next(iter(served))}, served, absent, served | absent):
        assert statefile.named_among(tmp_path / "state.json", wanted) == wanted & served
    many = {f"{i:064x}" for i in range(20)} | served  # more than a few: decoded lines
    assert statefile.named_among(tmp_path / "state.json", many) == served


def test_generations_of_the_hard_linked_layout_are_read_rolled_back_to_and_collected(
    tmp_path, pool, builds
):
    """A repository published before packages/ existed keeps working after the upgrade."""
    root = tmp_path / "repo"
    old = root / "generations" / "1"
    state = state_of(builds, "foo-1", "baz-1")
    write_repo_tree(state, pool, old, ["x86_64"], revision="1")
    manifest = {
        "number": 1,
        "created": "2026-01-01T00:00:00+00:00",
        "produced_by": GATE,
        "arches": ["x86_64"],
        "packages": sorted(state.nevras()),
        "metadata": {"read": 3, "reused": 0, "packages": {"x86_64": 3}},
        "state": json.loads(state.to_json()),
    }
    (old / "manifest.json").write_text(json.dumps(manifest))
    (root / "current").symlink_to("generations/1")
    publisher = Publisher(root, pool, arches=("x86_64",), keep=1)

    assert publisher.state() == state
    second = publisher.publish(2, state.with_build(builds["qux-1"]), GATE)
    assert listed(second.path / "x86_64") == expected(second.state, "x86_64")
    rolled = publisher.rollback(1, GATE)
    assert listed(rolled.path / "x86_64") == expected(state, "x86_64")
    assert publisher.gc() == [1, 2]
    assert listed(publisher.root / "current" / "x86_64") == expected(state, "x86_64")


def test_gc_never_deletes_the_generation_current_points_at(tmp_path, pool, builds, monkeypatch):
    publisher = Publisher(tmp_path / "repo", pool, keep=1)
    publisher.publish(1, state_of(builds, "foo-1"), GATE)
    publisher.publish(2, state_of(builds, "foo-2"), GATE)
    monkeypatch.setattr(Publisher, "_switch", lambda self, n: None)  # crash before the swap
    publisher.publish(3, state_of(builds, "baz-1"), GATE)
    monkeypatch.undo()

    assert publisher.gc() == [1]
    assert publisher.generations() == [2, 3]
    assert publisher.current().number == 2
    assert (publisher.root / "current" / "x86_64" / "repodata" / "repomd.xml").is_file()


def test_metadata_of_unchanged_packages_is_reused(publisher, builds):
    publisher.publish(1, state_of(builds, "foo-1", "baz-1"), GATE)

    second = publisher.publish(2, state_of(builds, "foo-1", "baz-1", "qux-1"), GATE)

    # foo, foo-extra, baz (+ foo's SRPM) came from generation 1; only qux was opened
    assert second.manifest["metadata"]["read"] == 1
    assert second.manifest["metadata"]["reused"] == 4
    # and what was reused is what reading the headers would have produced
    fresh = publisher.republish({"kind": "republish"})
    for tree in ("x86_64", "src"):
        reused = primary_packages(second.path / tree)
        reread = primary_packages(fresh.path / tree)
        assert reused.keys() == reread.keys()
        for href, pkg in reused.items():
            assert cr.xml_dump(pkg) == cr.xml_dump(reread[href]), href


def test_a_rebuild_with_the_same_file_name_is_read_not_reused(tmp_path, pool, builds):
    write_repo_tree(state_of(builds, "foo-1"), pool, tmp_path / "one", ["x86_64"])
    rebuilt = BuildEntry(
        "foo", "foo-1.0-1", builds["foo-1-again"].artifacts, origin="final:rebuild"
    )
    state = RepoState().with_build(rebuilt)

    stats = write_repo_tree(state, pool, tmp_path / "two", ["x86_64"], reuse=tmp_path / "one")

    assert (stats.read, stats.reused) == (1, 0)
    assert listed(tmp_path / "two" / "x86_64") == expected(state, "x86_64")


def test_unreadable_previous_metadata_falls_back_to_reading_headers(tmp_path, pool, builds):
    state = state_of(builds, "foo-1", "baz-1")
    write_repo_tree(state, pool, tmp_path / "one", ["x86_64"])
    for path in (tmp_path / "one" / "x86_64" / "repodata").glob("*-filelists.xml.gz"):
        path.write_bytes(b"not gzip, not xml")

    stats = write_repo_tree(state, pool, tmp_path / "two", ["x86_64"], reuse=tmp_path / "one")

    # the x86_64 tree is rebuilt from headers; the intact src tree is still reused
    assert (stats.read, stats.reused) == (3, 1)
    assert listed(tmp_path / "two" / "x86_64") == expected(state, "x86_64")


def test_repo_tree_refuses_two_different_rpms_with_one_file_name(tmp_path, pool, builds):
    clash = BuildEntry("foo-fork", "foo-1.0-1", builds["foo-1-again"].artifacts)
    state = state_of(builds, "foo-1").with_build(clash)
    with pytest.raises(RepoTreeError, match=r"foo-1\.0-1\.noarch\.rpm"):
        write_repo_tree(state, pool, tmp_path / "tree", ["x86_64"])


@pytest.mark.parametrize("cold", [False, True], ids=["warm", "cold"])
def test_publish_refuses_a_new_rpm_named_like_one_already_served(publisher, builds, pool, cold):
    publisher.publish(1, state_of(builds, "foo-1", "bar-1"), GATE)
    if cold:  # the served state read back from disk: no entry is the caller's object
        publisher = Publisher(publisher.root, pool, arches=publisher.arches)
    # only the new build is looked at closely; the clash is with a build served already
    clash = BuildEntry("foo-fork", "foo-1.0-1", builds["foo-1-again"].artifacts)
    with pytest.raises(RepoTreeError, match=r"foo-1\.0-1\.noarch\.rpm"):
        publisher.publish(2, publisher.state().with_build(clash), GATE)
    assert publisher.current().number == 1


def test_manifest_names_what_produced_the_generation(publisher, builds):
    state = state_of(builds, "foo-1", "bar-1")
    generation = publisher.publish(1, state, GATE)

    manifest = json.loads((generation.path / "manifest.json").read_text())
    assert manifest["number"] == 1
    assert manifest["produced_by"] == GATE
    assert manifest["package_count"] == len(state.nevras())
    assert manifest["created"].endswith("+00:00")
    # the state sits beside it, one build per line, and reads back equal
    text = (generation.path / "state.json").read_text()
    assert len(text.splitlines()) == len(state) + 2
    assert RepoState.from_json(text) == state
    assert generation.packages == sorted(state.nevras())
    assert "foo-0:1.0-1.noarch" in generation.packages
    # a fresh publisher (no cache) reads the same state
    fresh = Publisher(publisher.root, publisher.pool, arches=publisher.arches)
    assert fresh.state(1) == state


def test_readers_see_a_complete_generation_at_every_instant(tmp_path, pool, builds):
    publisher = Publisher(tmp_path / "repo", pool, keep=100)
    states = [
        state_of(builds, "foo-1", "baz-1"),
        state_of(builds, "foo-2", "qux-1"),
        state_of(builds, "foo-1", "bar-1", "qux-1"),
    ]
    allowed = {frozenset(a.checksum for a in s.artifacts()) for s in states}
    publisher.publish(1, states[0], GATE)
    stop = threading.Event()
    seen: list[frozenset[str]] = []
    errors: list[BaseException] = []

    def reader() -> None:
        current = publisher.root / "current"
        while not stop.is_set():
            try:
                # what a plain HTTP client does: fetch through the symlink
                assert (current / "x86_64" / "repodata" / "repomd.xml").is_file()
                # what a careful client does: pin one generation, then read it whole
                tree = Path(os.path.realpath(current)) / "x86_64"
                pkgs = primary_packages(tree)
                assert all((tree / href).is_file() for href in pkgs)
                seen.append(frozenset(p.pkgId for p in pkgs.values()))
            except BaseException as exc:  # reported below
                errors.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(2, 26):
            publisher.publish(n, states[(n - 1) % len(states)], GATE)
    finally:
        stop.set()
        thread.join()

    assert not errors, errors
    assert len(seen) > 10
    assert set(seen) <= allowed
    assert publisher.current().number == 25


def test_a_failed_publish_leaves_the_current_generation_and_no_debris(publisher, builds):
    publisher.publish(1, state_of(builds, "foo-1"), GATE)
    baz = builds["baz-1"].artifacts[0]
    missing = Artifact(baz.name, baz.epoch, baz.version, baz.release, baz.arch, "", "0" * 64)
    broken = BuildEntry("baz", "baz-1.0-1", (missing,))

    with pytest.raises(FileNotFoundError):
        publisher.publish(2, state_of(builds, "foo-1").with_build(broken), GATE)

    assert publisher.current().number == 1
    assert sorted(p.name for p in (publisher.root / "generations").iterdir()) == ["1"]


def test_state_file_lines_copied_from_the_previous_generation_are_the_right_ones(
    publisher, builds, tmp_path
):
    publisher.publish(1, state_of(builds, "foo-1", "bar-1", "baz-1"), GATE)
    # foo replaced, bar removed, qux added, baz carried over
    state = publisher.state().with_build(builds["foo-2"]).with_build(builds["qux-1"])
    state = RepoState({k: v for k, v in state.builds.items() if k != "bar"})
    second = publisher.publish(2, state, GATE)

    write_state(tmp_path / "from-scratch.json", state)
    text = (second.path / "state.json").read_text()
    assert text == (tmp_path / "from-scratch.json").read_text()
    assert Publisher(publisher.root, publisher.pool).state(2) == state


def test_a_new_arch_tree_reads_the_headers_of_packages_the_repository_had(tmp_path, pool, builds):
    one = Publisher(tmp_path / "repo", pool, arches=("x86_64",))
    one.publish(1, state_of(builds, "foo-1", "baz-1"), GATE)
    # the same repository, configured with a second arch: its tree has no previous index
    two = Publisher(tmp_path / "repo", pool, arches=("x86_64", "aarch64"))
    state = state_of(builds, "foo-1", "baz-1", "qux-1")
    generation = two.publish(2, state, GATE)
    for arch in ("x86_64", "aarch64"):
        assert listed(generation.path / arch) == expected(state, arch)


def test_a_damaged_previous_generation_costs_header_reads_not_a_stuck_publish(publisher, builds):
    first = publisher.publish(1, state_of(builds, "foo-1", "baz-1"), GATE)
    for primary in (first.path / "x86_64" / "repodata").glob("*-primary.xml.gz"):
        primary.write_bytes(primary.read_bytes()[:40])  # truncated under our feet

    state = state_of(builds, "foo-1", "baz-1", "qux-1")
    second = publisher.publish(2, state, GATE)

    assert listed(second.path / "x86_64") == expected(state, "x86_64")
    assert second.manifest["metadata"]["read"] >= 3
