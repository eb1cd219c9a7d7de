"""Materialise a :class:`RepoState` as a directory of yum/dnf repositories.

Layout of a tree (the same for speculative repos and published generations)::

    <dest>/<arch>/Packages/<first letter>/<name>-<version>-<release>.<arch>.rpm
    <dest>/<arch>/repodata/repomd.xml  (+ <sha256>-primary/filelists/other.xml.gz)
    <dest>/src/...                     (only when the state carries SRPMs)

Each arch tree holds that arch's RPMs plus the ``noarch`` ones; RPM files are
hard links into the content-addressed :class:`~repo_state.pool.Pool`, so a tree
costs inodes, not bytes.

Reading an RPM header means reading and checksumming the whole file, which is
what makes ``createrepo_c`` on a large repository slow.  A new tree is almost
always its predecessor plus or minus a few builds, so when ``reuse`` names the
previous tree, the metadata of every package whose checksum *and* location are
unchanged is streamed from that tree's primary/filelists/other XML instead
(the same idea as ``createrepo_c --update``), and only new RPMs are opened.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from publishers.trees import SOURCE_TREE, RepoTreeError, TreeStats
from repo_state import typed_createrepo_c as cr
from repo_state.pool import Pool
from repo_state.state import Artifact, RepoState

log = logging.getLogger(__name__)

_METADATA_TYPES = ("primary", "filelists", "other")
# gzip rather than createrepo_c's zstd default: every dnf/yum still in use
# reads it, and the files are small next to the RPMs.
_COMPRESSION = cr.GZ_COMPRESSION
_CHECKSUM = cr.SHA256


class _ReuseFailed(Exception):
    """The previous tree's metadata could not be parsed; fall back to headers."""


def package_href(artifact: Artifact) -> str:
    """Location of ``artifact`` inside its arch tree, as written in primary.xml."""
    filename = artifact.filename
    return f"Packages/{filename[0].lower()}/{filename}"


def tree_names(state: RepoState, arches: Sequence[str]) -> list[str]:
    """The trees :func:`write_repo_tree` makes for ``state``: ``arches`` (+ ``src``)."""
    names = list(dict.fromkeys(arches))
    if any(a.is_source for a in state.artifacts(include_source=True)):
        names.append(SOURCE_TREE)
    return names


def tree_artifacts(state: RepoState, tree: str) -> list[Artifact]:
    """Artifacts that belong in ``tree``: SRPMs for ``src``, else arch + noarch."""
    if tree == SOURCE_TREE:
        return [a for a in state.artifacts(include_source=True) if a.is_source]
    return [a for a in state.artifacts() if a.arch in (tree, "noarch")]


def write_repo_tree(
    state: RepoState,
    pool: Pool,
    dest: Path,
    arches: Sequence[str],
    reuse: Path | None = None,
    *,
    revision: str | None = None,
) -> TreeStats:
    """Write ``state`` as a repository tree under ``dest`` and return how.

    Every artifact must be in ``pool``.  ``dest`` may exist but must not yet
    hold any of the trees being written.  ``reuse`` is an earlier tree of the
    same layout (the current generation); a missing or unreadable tree there
    just means headers are read.  ``revision`` goes into ``repomd.xml``
    (publishers pass the generation number).  In each tree, ``repomd.xml`` is
    the last file written and appears by ``rename(2)``, so a reader that finds
    it finds complete metadata.
    """
    dest = Path(dest)
    stats = TreeStats()
    read: set[str] = set()
    reused: set[str] = set()
    # Headers read for one arch tree serve the others: a noarch package has the
    # same location in every tree, so its cr.Package is valid as it is.
    fresh: dict[str, cr.Package] = {}
    for tree in tree_names(state, arches):
        wanted = _link_packages(tree_artifacts(state, tree), pool, dest / tree)
        old_tree = reuse / tree if reuse is not None else None
        try:
            _write_metadata(dest / tree, wanted, old_tree, fresh, read, reused, revision)
        except _ReuseFailed as exc:
            log.warning("cannot reuse metadata from %s (%s); reading all headers", old_tree, exc)
            _write_metadata(dest / tree, wanted, None, fresh, read, reused, revision)
        stats.packages[tree] = len(wanted)
    stats.read = len(read)
    stats.reused = len(reused - read)
    return stats


def _link_packages(artifacts: list[Artifact], pool: Pool, tree_dir: Path) -> dict[str, Artifact]:
    """Hard-link the tree's RPMs; return ``{location_href: artifact}``."""
    tree_dir.mkdir(parents=True, exist_ok=False)
    wanted: dict[str, Artifact] = {}
    for artifact in artifacts:
        href = package_href(artifact)
        if href in wanted:
            if wanted[href].checksum != artifact.checksum:
                raise RepoTreeError(
                    f"{tree_dir.name}: two different RPMs named {artifact.filename} "
                    f"({wanted[href].checksum[:12]}, {artifact.checksum[:12]})"
                )
            continue
        pool.link_into(artifact.checksum, tree_dir / href)
        wanted[href] = artifact
    return wanted


def _write_metadata(
    tree_dir: Path,
    wanted: dict[str, Artifact],
    old_tree: Path | None,
    fresh: dict[str, cr.Package],
    read: set[str],
    reused: set[str],
    revision: str | None,
) -> None:
    repodata = tree_dir / "repodata"
    if repodata.exists():  # a previous attempt that fell back to reading headers
        for leftover in repodata.iterdir():
            leftover.unlink()
    repodata.mkdir(exist_ok=True)
    paths = {kind: repodata / f"{kind}.xml.gz" for kind in _METADATA_TYPES}
    writers = [
        cr.PrimaryXmlFile(str(paths["primary"]), _COMPRESSION),
        cr.FilelistsXmlFile(str(paths["filelists"]), _COMPRESSION),
        cr.OtherXmlFile(str(paths["other"]), _COMPRESSION),
    ]
    try:
        for writer in writers:
            writer.set_num_of_pkgs(len(wanted))
        remaining = dict(wanted)
        taken: set[str] = set()
        if old_tree is not None:
            # Stream rather than load: memory stays flat however big the repo.
            for old_pkg in _old_packages(old_tree):
                artifact = remaining.get(old_pkg.location_href)
                if artifact is None or not _same_file(old_pkg, artifact):
                    continue
                for writer in writers:
                    writer.add_pkg(old_pkg)
                del remaining[old_pkg.location_href]
                taken.add(artifact.checksum)
        for href in sorted(remaining):
            artifact = remaining[href]
            pkg = fresh.get(artifact.checksum)
            if pkg is None:
                pkg = cr.package_from_rpm(
                    str(tree_dir / href), checksum_type=_CHECKSUM, location_href=href
                )
                if pkg.pkgId != artifact.checksum:
                    raise RepoTreeError(f"{href}: file checksum {pkg.pkgId} != {artifact.checksum}")
                fresh[artifact.checksum] = pkg
                read.add(artifact.checksum)
            for writer in writers:
                writer.add_pkg(pkg)
    finally:
        for writer in writers:
            writer.close()
    reused.update(taken)
    _write_repomd(repodata, paths, revision)


def _same_file(pkg: cr.Package, artifact: Artifact) -> bool:
    # pkgId is the file checksum only when computed with our checksum type; a
    # location_base would point clients elsewhere, so such entries are re-read.
    return (
        pkg.checksum_type == cr.checksum_name_str(_CHECKSUM)
        and pkg.pkgId == artifact.checksum
        and not pkg.location_base
    )


def _old_packages(old_tree: Path) -> Iterator[cr.Package]:
    """Complete packages (primary + filelists + other) of a previous tree."""
    repomd_path = old_tree / "repodata" / "repomd.xml"
    if not repomd_path.is_file():
        return
    try:
        repomd = cr.Repomd(str(repomd_path))
        locations = {rec.type: old_tree / rec.location_href for rec in repomd.records}
        if not all(kind in locations and locations[kind].is_file() for kind in _METADATA_TYPES):
            raise _ReuseFailed(f"{repomd_path} lacks primary, filelists or other")
        warnings: list[str] = []

        def on_warning(_kind: int, message: str) -> bool:
            warnings.append(message)
            return True  # keep parsing; a package that parses badly just won't match

        yield from cr.PackageIterator(
            primary_path=str(locations["primary"]),
            filelists_path=str(locations["filelists"]),
            other_path=str(locations["other"]),
            warningcb=on_warning,
        )
    except (cr.CreaterepoCError, OSError) as exc:
        raise _ReuseFailed(str(exc)) from exc


def _write_repomd(repodata: Path, paths: dict[str, Path], revision: str | None) -> None:
    repomd = cr.Repomd()
    if revision is not None:
        repomd.set_revision(revision)
    for kind, path in paths.items():
        record = cr.RepomdRecord(kind, str(path))
        record.fill(_CHECKSUM)
        # <sha256>-primary.xml.gz: a client or proxy holding an older repomd.xml
        # can never fetch a newer primary under the name it expects.
        record.rename_file()
        repomd.set_record(record)
    repomd.sort_records()
    tmp = repodata / ".repomd.xml.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(repomd.xml_dump())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, repodata / "repomd.xml")
