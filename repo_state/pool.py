"""The content-addressed RPM pool every repository tree hard-links from.

Builders put what they produce here; publishers and speculative repos link
files out of it.  A file's place depends only on its sha256, so adding the same
RPM twice is a no-op and a crash halfway through an add leaves at most a
temporary file behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import createrepo_c

from repo_state.state import Artifact

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
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

    def path_for(self, checksum: str) -> Path:
        return self.root / checksum[:2] / f"{checksum}.rpm"

    def __contains__(self, checksum: object) -> bool:
        return isinstance(checksum, str) and self.path_for(checksum).exists()

    def add(self, path: Path, expected: str | None = None) -> str:
        """Store ``path`` (hard link when possible) and return its sha256.

        ``expected`` is verified when given (downloads, lookaside files); a
        mismatch raises :class:`ChecksumMismatch` and stores nothing.
        """
        checksum = sha256_file(path)
        if expected is not None and checksum != expected:
            raise ChecksumMismatch(f"{path.name}: sha256 {checksum} != expected {expected}")
        dest = self.path_for(checksum)
        if dest.exists():
            return checksum
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".add-")
        os.close(fd)
        os.unlink(tmp)
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)
        os.chmod(tmp, 0o444)
        os.replace(tmp, dest)
        return checksum

    def add_rpm(self, path: Path, expected: str | None = None) -> Artifact:
        """Store an RPM and describe it from its header."""
        checksum = self.add(path, expected)
        pkg = createrepo_c.package_from_rpm(str(path))
        return Artifact(
            name=pkg.name,
            epoch=int(pkg.epoch or 0),
            version=pkg.version,
            release=pkg.release,
            arch=pkg.arch,
            sourcerpm=pkg.rpm_sourcerpm or "",
            checksum=checksum,
            size=int(pkg.size_package or path.stat().st_size),
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
