"""Repositories loaded into a libsolv pool, cached as ``.solv`` files.

The dependency jobs (:mod:`gate.jobs.dependencies`) ask libsolv, the solver
dnf itself uses, through the ``solv`` wheel.  This module gets repositories
into a :class:`solv.Pool`:

- a *location* is a directory holding ``repodata/`` (or ``<arch>/repodata/``),
  a ``file://`` URL, or an ``http(s)://`` URL; ``$basearch`` and ``{arch}``
  in it are replaced by the arch being checked;
- primary and filelists are read with ``repo.add_rpmmd`` (filelists too, so
  that any path resolves, not only primary's ``*/bin/*`` subset), then the
  repository is written to ``<cache_dir>/<key>.solv``, where ``key`` is a
  digest of the primary and filelists checksums that ``repomd.xml`` records.
  The next run with the same metadata reads that file instead (libsolv's own
  format, what dnf keeps in ``/var/cache/dnf/*.solv``): a base repository is
  parsed once per revision, not once per item.  For an HTTP repository only
  ``repomd.xml`` is downloaded when the cache has its key.

Metadata comes from outside (a base repository may be anybody's), so the
``location href`` of a metadata file must stay inside its repository, and
nothing read from it becomes a command-line option.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import createrepo_c as cr
import solv

#: bumped when what a ``.solv`` file holds changes, so old files are not read
_CACHE_FORMAT = "1"
_SOLV_VERSION = importlib.metadata.version("solv")
#: ``.solv`` files kept in a cache directory (the least recently used go first)
CACHE_KEEP = 64
_DOWNLOAD_TIMEOUT = 120


class MetadataError(Exception):
    """A repository's metadata cannot be found or read."""


class Stopped(Exception):
    """The job was cancelled while its worker thread was still working."""


@dataclass(frozen=True)
class Repodata:
    """Where the metadata files of one repository are, and the key of their content."""

    root: Path
    primary: Path
    filelists: Path | None
    #: digest of the checksums ``repomd.xml`` records for primary and filelists
    key: str


def expand_base_repo(base: str, arch: str) -> str:
    """Substitute ``$basearch`` / ``{arch}`` in a base repository location."""
    return base.replace("$basearch", arch).replace("{arch}", arch)


def arch_subtree(root: Path, arch: str) -> Path:
    """``root/<arch>`` when it holds repodata, else ``root`` itself (a flat repo)."""
    if arch and (root / arch / "repodata" / "repomd.xml").is_file():
        return root / arch
    if (root / "repodata" / "repomd.xml").is_file():
        return root
    where = f"{root}/{arch}/repodata" if arch else f"{root}/repodata"
    raise MetadataError(f"no repository metadata at {where}")


def _inside(root: Path, href: str, what: str) -> Path:
    target = (root / href).resolve()
    if not target.is_relative_to(root.resolve()):
        raise MetadataError(f"{what}: refusing metadata location {href!r}")
    return target


def read_repomd(repo_dir: Path) -> Repodata:
    """The primary and filelists that ``repo_dir/repodata/repomd.xml`` names."""
    repomd = repo_dir / "repodata" / "repomd.xml"
    if not repomd.is_file():
        raise MetadataError(f"no repository metadata at {repomd}")
    records = {r.type: r for r in cr.Repomd(str(repomd)).records}
    if "primary" not in records:
        raise MetadataError(f"{repomd} lists no primary metadata")
    primary = _inside(repo_dir, records["primary"].location_href, str(repomd))
    filelists = records.get("filelists")
    return Repodata(
        root=repo_dir,
        primary=primary,
        filelists=_inside(repo_dir, filelists.location_href, str(repomd)) if filelists else None,
        key=read_repomd_key(repo_dir),
    )


def _download(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (
        urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT) as response,
        open(dest, "wb") as out,
    ):
        while chunk := response.read(1 << 20):
            out.write(chunk)


class SolvCache:
    """``.solv`` files by metadata key, in one directory (``None``: no cache)."""

    def __init__(self, directory: Path | None, keep: int = CACHE_KEEP) -> None:
        self.directory = directory
        self.keep = keep

    def path(self, key: str) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / f"{key}.solv"

    def read(self, repo: solv.XRepo, key: str) -> bool:
        """Fill ``repo`` from the cached file of ``key``; False when there is none."""
        path = self.path(key)
        if path is None or not path.is_file():
            return False
        fp = solv.xfopen(str(path))
        if fp is None:
            return False
        try:
            ok = bool(repo.add_solv(fp))
        finally:
            fp.close()
        if not ok:  # a truncated or foreign file: read the metadata again
            repo.empty()
            return False
        os.utime(path)  # recently used: pruned last
        return True

    def write(self, repo: solv.XRepo, key: str) -> None:
        """Store ``repo`` under ``key`` (atomically: readers see a whole file or none)."""
        path = self.path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=path.parent)
        try:
            fp = solv.xfopen_fd(None, os.dup(fd))
            try:
                written = repo.write(fp)
            finally:
                fp.close()
            if not written:
                raise MetadataError(f"libsolv could not write {path}")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        self._prune()

    def _prune(self) -> None:
        assert self.directory is not None
        files = sorted(self.directory.glob("*.solv"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[self.keep :]:
            old.unlink(missing_ok=True)


class RepoLoader:
    """Loads locations into pools, through the cache, downloading what HTTP needs.

    ``stop`` is checked between repositories (libsolv cannot be interrupted).
    """

    def __init__(
        self,
        cache: SolvCache,
        downloads: Path,
        stop: threading.Event | None = None,
        say: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.cache = cache
        self.downloads = downloads
        self.stop = stop
        self.say = say
        self._fetched: dict[str, Path] = {}

    def add(self, pool: solv.Pool, name: str, repo_dir: Path) -> solv.XRepo:
        """Add the repository at ``repo_dir`` (which holds ``repodata/``) as ``name``."""
        self._check_stop()
        repodata = read_repomd(repo_dir)
        repo = pool.add_repo(name)
        if self.cache.read(repo, repodata.key):
            return repo
        self._add_rpmmd(repo, repodata)
        self.cache.write(repo, repodata.key)
        return repo

    def add_location(
        self, pool: solv.Pool, name: str, location: str, arch: str
    ) -> tuple[solv.XRepo, Path | None]:
        """Add a base repository given as a path, ``file://`` or ``http(s)://`` URL.

        Returns the repository and, for a local one, the directory its
        packages' locations are relative to.
        """
        self._check_stop()
        parsed = urllib.parse.urlparse(location)
        if parsed.scheme in ("http", "https"):
            return self._add_http(pool, name, location), None
        if parsed.scheme == "file":
            root = arch_subtree(Path(urllib.parse.unquote(parsed.path)), arch)
        elif parsed.scheme:
            raise MetadataError(f"unsupported base repository URL {location!r}")
        else:
            root = arch_subtree(Path(location), arch)
        return self.add(pool, name, root), root

    def _add_http(self, pool: solv.Pool, name: str, url: str) -> solv.XRepo:
        base = url.rstrip("/") + "/"
        dest = self._fetched.get(base)
        if dest is None:
            dest = self.downloads / f"repo{len(self._fetched)}"
            _download(
                urllib.parse.urljoin(base, "repodata/repomd.xml"), dest / "repodata/repomd.xml"
            )
            self._fetched[base] = dest
        repomd = dest / "repodata" / "repomd.xml"
        records = {r.type: r.location_href for r in cr.Repomd(str(repomd)).records}
        key = read_repomd_key(dest)
        repo = pool.add_repo(name)
        if self.cache.read(repo, key):
            return repo
        for kind in ("primary", "filelists"):
            href = records.get(kind)
            if href is not None:
                target = _inside(dest, href, url)
                if not target.is_file():
                    _download(urllib.parse.urljoin(base, href), target)
        repodata = read_repomd(dest)
        self._add_rpmmd(repo, repodata)
        self.cache.write(repo, repodata.key)
        return repo

    def _add_rpmmd(self, repo: solv.XRepo, repodata: Repodata) -> None:
        _add_file(repo, repodata.primary, 0)
        if repodata.filelists is not None:
            self._check_stop()
            _add_file(repo, repodata.filelists, solv.Repo.REPO_EXTEND_SOLVABLES)
        repo.internalize()

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise Stopped


def read_repomd_key(repo_dir: Path) -> str:
    """The cache key of a repository whose metadata files may not be downloaded yet."""
    repomd = repo_dir / "repodata" / "repomd.xml"
    records = {r.type: r for r in cr.Repomd(str(repomd)).records}
    if "primary" not in records:
        raise MetadataError(f"{repomd} lists no primary metadata")
    digest = hashlib.sha256(f"rpmgate-solv {_CACHE_FORMAT} {_SOLV_VERSION}".encode())
    for kind in ("primary", "filelists"):
        record = records.get(kind)
        if record is not None:
            digest.update(f"{kind} {record.checksum_type}:{record.checksum}\n".encode())
    return digest.hexdigest()


def _add_file(repo: solv.XRepo, path: Path, flags: int) -> None:
    fp = solv.xfopen(str(path))
    if fp is None:
        raise MetadataError(f"cannot open {path}")
    try:
        if not repo.add_rpmmd(fp, None, flags):
            raise MetadataError(f"{path}: {repo.pool.errstr}")
    finally:
        fp.close()


def new_pool(arch: str) -> solv.Pool:
    """An rpm pool for ``arch`` (noarch packages are always installable), set up as dnf's.

    Multilib: without ``POOL_FLAG_IMPLICITOBSOLETEUSESCOLORS`` libsolv treats
    an i686 package as an inferior-arch twin of the x86_64 package of the
    same name and refuses it ("has inferior architecture"), so an i686
    ``-devel`` that requires its i686 base could not be installed, where
    dnf installs both arches side by side.  dnf sets the flag on every pool
    ("Allow packages of the same name with different architectures to be
    installed in parallel": libdnf5/solv/pool.hpp in
    rpm-software-management/dnf5; Debian's dnf 4 behaves the same, see
    tests/test_dnf_differential.py).
    """
    pool = solv.Pool()
    pool.setdisttype(solv.Pool.DISTTYPE_RPM)
    pool.setarch(arch or "noarch")
    pool.set_flag(solv.Pool.POOL_FLAG_IMPLICITOBSOLETEUSESCOLORS, 1)
    return pool


def finish_pool(pool: solv.Pool) -> None:
    """Index the pool once every repository is in: file provides, then what provides."""
    pool.addfileprovides()
    pool.createwhatprovides()
