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
from collections.abc import Mapping, Sequence
from pathlib import Path

from publishers.chunked import ChunkIndexDict, SnippetSource, write_tree_metadata
from publishers.repotree import SOURCE_TREE, RepoTreeError, TreeStats
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
    present: frozenset[str] = frozenset(),
    revision: str | None = None,
) -> tuple[TreeStats, dict[str, dict[str, ChunkIndexDict]], list[Path]]:
    """Write the trees of ``state`` under ``dest``.

    Returns the stats, the chunk index of every tree, and the directories
    whose entries changed (for the caller to fsync).  ``previous`` is an
    earlier generation's directory and chunk index; ``present`` the checksums
    known to be under ``packages`` already (the current generation's), which
    are not looked at.
    """
    # no state.artifacts(): it sorts, and order does not matter here
    every = [a for entry in state.builds.values() for a in entry.artifacts]
    new: dict[str, Artifact] = {}
    for artifact in every:
        if artifact.checksum not in present:
            new.setdefault(artifact.checksum, artifact)
    touched = _store_packages(new, pool, packages)
    everything: dict[str, Artifact] = {}

    def artifact_of(checksum: str) -> Artifact:
        # a header to read is almost always a new package's; any other (a tree
        # without a previous index, say) is found in the whole state, once
        if checksum in new:
            return new[checksum]
        if not everything:
            everything.update((a.checksum, a) for a in every)
        return everything[checksum]

    source = SnippetSource(
        rpm_path=lambda c: packages / package_dir(c) / artifact_of(c).filename,
        href=lambda c: pooled_href(artifact_of(c)),
    )
    stats = TreeStats()
    reused: set[str] = set()
    index: dict[str, dict[str, ChunkIndexDict]] = {}
    dest.mkdir(parents=True, exist_ok=True)
    trees = list(dict.fromkeys(arches))
    if any(a.is_source for a in every):
        trees.append(SOURCE_TREE)
    for tree in trees:
        if tree == SOURCE_TREE:
            artifacts = [a for a in every if a.is_source]
        else:
            artifacts = [a for a in every if not a.is_source and a.arch in (tree, "noarch")]
        _refuse_clashes(tree, artifacts)
        tree_dir = dest / tree
        tree_dir.mkdir()
        os.symlink(os.path.relpath(packages, tree_dir), tree_dir / "Packages")
        old = None
        if previous is not None and tree in previous[1]:
            old = (previous[0] / tree / "repodata", previous[1][tree])
        checksums = [a.checksum for a in artifacts]
        index[tree], tree_reused = write_tree_metadata(
            tree_dir / "repodata", checksums, source, old, revision
        )
        reused |= tree_reused
        stats.packages[tree] = len(set(checksums))
        touched += [tree_dir, tree_dir / "repodata"]
    stats.read = len(source.read)
    stats.reused = len(reused - source.read)
    touched.append(dest)
    return stats, index, touched


def _refuse_clashes(tree: str, artifacts: list[Artifact]) -> None:
    """Two different RPMs with one file name would be one NEVRA twice for dnf."""
    # keyed by a hash, not the file name: no 20k new strings for a large repository
    seen: dict[int, Artifact] = {}
    for artifact in artifacts:
        key = hash((artifact.name, artifact.version, artifact.release, artifact.arch))
        other = seen.setdefault(key, artifact)
        if other.checksum != artifact.checksum and other.filename == artifact.filename:
            raise RepoTreeError(
                f"{tree}: two different RPMs named {artifact.filename} "
                f"({other.checksum[:12]}, {artifact.checksum[:12]})"
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
