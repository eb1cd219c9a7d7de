"""A published generation's trees: metadata per generation, RPMs stored once per repository.

Layout under a publisher's root::

    packages/<sha[:2]>/<sha>/<name>-<version>-<release>.<arch>.rpm   every RPM, once
    generations/<N>/<tree>/Packages -> ../../../packages             one symlink per tree
    generations/<N>/<tree>/repodata/...                              see publishers.chunked

``primary.xml`` locates a package at ``Packages/<sha[:2]>/<sha>/<file>``: a
plain relative href under the tree (no ``xml:base``, no ``..``), which every
client resolves against the tree's URL, and the ``Packages`` symlink makes it
the repository-wide file.  A new generation therefore costs one symlink per
tree plus a hard link for each RPM it adds, not a link for each RPM it
serves.  Files under ``packages/`` are named by content, so a file a
generation serves is never rewritten; :meth:`Publisher.gc
<publishers.createrepo.Publisher.gc>` deletes the ones no kept generation
serves.  The file name keeps the RPM's own name, which is what ``dnf
download`` saves it as.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from publishers.chunked import ChunkIndexDict, SnippetSource, write_tree_metadata
from publishers.trees import SOURCE_TREE, RepoTreeError, TreeStats
from repo_state.pool import Pool
from repo_state.state import Artifact, RepoState

#: under the publisher's root
PACKAGES = "packages"


def package_dir(checksum: str) -> str:
    """Directory of a package under ``packages/`` (and under each tree's ``Packages/``)."""
    return f"{checksum[:2]}/{checksum}"


def pooled_href(artifact: Artifact) -> str:
    """Location of ``artifact`` inside a generation's tree, as written in primary.xml."""
    return f"Packages/{package_dir(artifact.checksum)}/{artifact.filename}"


def write_generation(
    state: RepoState,
    pool: Pool,
    packages: Path,
    dest: Path,
    arches: Sequence[str],
    previous: tuple[Path, Mapping[str, Mapping[str, ChunkIndexDict]]] | None,
    *,
    served: RepoState | None = None,
    revision: str | None = None,
) -> tuple[TreeStats, dict[str, dict[str, ChunkIndexDict]], list[Path]]:
    """Write the trees of ``state`` under ``dest``.

    Returns the stats, the chunk index of every tree, and the directories
    whose entries changed (for the caller to fsync).  ``previous`` is an
    earlier generation's directory and chunk index; ``served`` the state of
    the current generation (``previous``'s, when both are given), whose files
    are known to be under ``packages`` already and whose trees were checked
    for clashes when it was published.

    Memory follows the change, not the repository (the process holds two
    states of 20,000 builds already): the packages to link and check are
    those of the builds that are not ``served``'s very same entries, found by
    one lookup per build, with no set or index of every checksum.
    """
    new: dict[str, Artifact] = {}
    old_builds = served.builds if served is not None else {}
    for name, entry in state.builds.items():
        if old_builds.get(name) is not entry:
            for artifact in entry.artifacts:
                new.setdefault(artifact.checksum, artifact)
    touched = _store_packages(new, pool, packages)
    everything: dict[str, Artifact] = {}

    def artifact_of(checksum: str) -> Artifact:
        # a header to read is almost always a new package's; any other (a tree
        # without a previous index, say) is found in the whole state, once
        if checksum in new:
            return new[checksum]
        if not everything:
            everything.update((a.checksum, a) for e in state.builds.values() for a in e.artifacts)
        return everything[checksum]

    source = SnippetSource(
        rpm_path=lambda c: packages / package_dir(c) / artifact_of(c).filename,
        href=lambda c: pooled_href(artifact_of(c)),
    )
    stats = TreeStats()
    index: dict[str, dict[str, ChunkIndexDict]] = {}
    dest.mkdir(parents=True, exist_ok=True)
    trees = list(dict.fromkeys(arches))
    if any(a.is_source for e in state.builds.values() for a in e.artifacts):
        trees.append(SOURCE_TREE)
    for tree in trees:
        if served is not None and previous is not None and tree in previous[1]:
            fresh = [a for a in new.values() if _belongs(a, tree)]
        else:  # a tree the served generation did not have: nothing of it was checked
            fresh = list(_in_tree(state, tree))
        _refuse_clashes(tree, fresh, _in_tree(state, tree))
        del fresh
        tree_dir = dest / tree
        tree_dir.mkdir()
        os.symlink(os.path.relpath(packages, tree_dir), tree_dir / "Packages")
        old = None
        if previous is not None and tree in previous[1]:
            old = (previous[0] / tree / "repodata", previous[1][tree])
        checksums = [a.checksum for a in _in_tree(state, tree)]
        index[tree], stats.packages[tree] = write_tree_metadata(
            tree_dir / "repodata", checksums, source, old, revision
        )
        del checksums
        touched += [tree_dir, tree_dir / "repodata"]
    # every package a tree holds was either reused or read (source.read), so the
    # distinct files reused are the distinct files placed less those read
    stats.read = len(source.read)
    stats.reused = _distinct(state, stats.packages) - stats.read
    touched.append(dest)
    return stats, index, touched


def _distinct(state: RepoState, per_tree: Mapping[str, int]) -> int:
    """Distinct files in the trees, from the distinct files of each (``per_tree``).

    Trees share only noarch files, which every arch tree holds: with ``k`` arch
    trees, each distinct noarch file is counted ``k`` times in the sum.  (A set of
    every checksum would say the same at 2 MiB for 20,000 packages.)
    """
    arch_trees = sum(1 for tree in per_tree if tree != SOURCE_TREE)
    total = sum(per_tree.values())
    if arch_trees <= 1:
        return total
    noarch = {a.checksum for e in state.builds.values() for a in e.artifacts if a.arch == "noarch"}
    return total - (arch_trees - 1) * len(noarch)


def _belongs(artifact: Artifact, tree: str) -> bool:
    """Whether ``artifact`` goes in ``tree``: SRPMs in ``src``, else arch + noarch."""
    if tree == SOURCE_TREE:
        return artifact.is_source
    return not artifact.is_source and artifact.arch in (tree, "noarch")


def _in_tree(state: RepoState, tree: str) -> Iterator[Artifact]:
    # a generator, not a list: 20,000 references less at the peak, for one more pass
    for entry in state.builds.values():
        for artifact in entry.artifacts:
            if _belongs(artifact, tree):
                yield artifact


def _refuse_clashes(tree: str, new: list[Artifact], artifacts: Iterable[Artifact]) -> None:
    """Two different RPMs with one file name would be one NEVRA twice for dnf.

    Only a new package can clash: the served generation's trees had none.  So
    the file names of the new ones are indexed, and every package of the tree
    looked up there (no index of 20,000 file names for a large repository).
    """
    fresh: dict[tuple[str, str, str, str], Artifact] = {}
    for artifact in new:
        key = (artifact.name, artifact.version, artifact.release, artifact.arch)
        _refuse_pair(tree, fresh.setdefault(key, artifact), artifact)
    if not fresh:
        return
    names = {name for name, _, _, _ in fresh}  # a str's hash is cached; a tuple's is not
    for artifact in artifacts:
        if artifact.name in names:
            key = (artifact.name, artifact.version, artifact.release, artifact.arch)
            other = fresh.get(key)
            if other is not None:
                _refuse_pair(tree, other, artifact)


def _refuse_pair(tree: str, one: Artifact, other: Artifact) -> None:
    if one.checksum != other.checksum and one.filename == other.filename:
        raise RepoTreeError(
            f"{tree}: two different RPMs named {other.filename} "
            f"({one.checksum[:12]}, {other.checksum[:12]})"
        )


def _store_packages(new: Mapping[str, Artifact], pool: Pool, packages: Path) -> list[Path]:
    """Link the RPMs not yet under ``packages``; return the directories that changed."""
    touched: set[Path] = set()
    for checksum, artifact in new.items():
        target = packages / package_dir(checksum) / artifact.filename
        if target.exists():
            continue
        for parent in (packages, target.parent.parent, target.parent):
            if not parent.is_dir():
                touched.add(parent.parent)
        pool.link_into(checksum, target)
        touched.add(target.parent)
    return sorted(touched)
