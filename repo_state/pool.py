"""The content-addressed RPM pool every repository tree hard-links from.

Builders put what they produce here; publishers and speculative repos link
files out of it.  A file's place depends only on its sha256, so adding the same
RPM twice is a no-op and a crash halfway through an add leaves at most a
temporary file behind.  Adding a file refreshes its mtime, under a lock that
:meth:`Pool.remove_if_unused_since` takes too: the pool's collection
(gate/pool_gc.py) deletes only files nobody pooled lately.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path

from repo_state import typed_createrepo_c as cr
from repo_state.state import Artifact

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    import hashlib  # here: a publishing process never hashes a whole RPM (repo_state.sha256)

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ChecksumMismatch(Exception):
    """A file's content is not what its recorded checksum says."""


class Pool:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # an add's "already there" and a removal never interleave (one daemon per pool)
        self._lock = threading.Lock()

    def path_for(self, checksum: str) -> Path:
        return self.root / checksum[:2] / f"{checksum}.rpm"

    def __contains__(self, checksum: object) -> bool:
        return isinstance(checksum, str) and self.path_for(checksum).exists()

    def add(self, path: Path, expected: str | None = None, *, copy: bool = False) -> str:
        """Store ``path`` (hard link when possible) and return its sha256.

        ``expected`` is verified when given (downloads, lookaside files); a
        mismatch raises :class:`ChecksumMismatch` and stores nothing.  With
        ``copy`` (a file someone else owns, e.g. a sandboxed build's output),
        the bytes are copied and hashed in one pass from a descriptor that
        refuses symlinks, so what is stored is exactly what was hashed and
        belongs to the daemon.
        """
        if copy:
            return self._add_copy(path, expected)
        checksum = sha256_file(path)
        self._check(path, checksum, expected)
        dest = self.path_for(checksum)
        if self._refresh(dest):
            return checksum
        tmp = self._temporary(dest)
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)
        os.chmod(tmp, 0o444)
        with self._lock:
            os.replace(tmp, dest)
            os.utime(dest)  # a hard link shares the inode, and its (older) mtime
        return checksum

    def _refresh(self, dest: Path) -> bool:
        """Whether ``dest`` is pooled already; if so its mtime is now."""
        with self._lock:
            try:
                os.utime(dest)
            except FileNotFoundError:
                return False
            except PermissionError:  # not the daemon's file (another user pooled it)
                return dest.exists()
            return True

    def remove_if_unused_since(self, checksum: str, before: float) -> int | None:
        """Delete the pooled file of ``checksum`` unless it was pooled (again) at or
        after ``before`` (seconds since the epoch); its size, or None if kept or absent."""
        path = self.path_for(checksum)
        with self._lock:
            try:
                st = path.stat()
            except FileNotFoundError:
                return None
            if st.st_mtime >= before:
                return None
            path.unlink()
        return st.st_size

    def _add_copy(self, path: Path, expected: str | None) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".add-")
        try:
            import hashlib  # see sha256_file

            digest = hashlib.sha256()
            with (
                open(fd, "wb") as out,
                open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as fh,
            ):
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    raise OSError(f"{path} is not a regular file")
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            checksum = digest.hexdigest()
            self._check(path, checksum, expected)
            dest = self.path_for(checksum)
            if not self._refresh(dest):
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp, 0o444)
                with self._lock:
                    os.replace(tmp, dest)
            return checksum
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    @staticmethod
    def _check(path: Path, checksum: str, expected: str | None) -> None:
        if expected is not None and checksum != expected:
            raise ChecksumMismatch(f"{path.name}: sha256 {checksum} != expected {expected}")

    @staticmethod
    def _temporary(dest: Path) -> str:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".add-")
        os.close(fd)
        os.unlink(tmp)
        return tmp

    def add_rpm(self, path: Path, expected: str | None = None, *, copy: bool = False) -> Artifact:
        """Store an RPM and describe it from its header (read from the stored copy)."""
        checksum = self.add(path, expected, copy=copy)
        pkg = cr.package_from_rpm(str(self.path_for(checksum)))
        return Artifact(
            name=pkg.name,
            epoch=int(pkg.epoch or 0),
            version=pkg.version,
            release=pkg.release,
            arch=pkg.arch,
            sourcerpm=pkg.rpm_sourcerpm or "",
            checksum=checksum,
            size=int(pkg.size_package or self.path_for(checksum).stat().st_size),
        )

    def link_into(self, checksum: str, dest: Path) -> None:
        """Hard-link a pooled file to ``dest`` (copy across filesystems)."""
        src = self.path_for(checksum)
        if not src.exists():
            raise FileNotFoundError(f"{checksum} is not in the pool at {self.root}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dest)
        except FileExistsError:
            if sha256_file(dest) != checksum:
                raise
        except OSError:
            shutil.copyfile(src, dest)
