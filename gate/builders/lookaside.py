"""Fetch the tarballs a distgit's ``sources`` file names from a lookaside cache.

A distgit does not carry upstream tarballs; its ``sources`` file lists them by
checksum and the build fetches them from the *lookaside cache*.  Two formats
exist (both still found in Fedora/CentOS distgits, see
https://github.com/fedora-infra/pyrpkg ``sources.py``)::

    SHA512 (foo-1.0.tar.gz) = 3f1c...          # "BSD-style", any hashlib algorithm
    d41d8cd98f00b204e9800998ecf8427e  foo-1.0.tar.gz   # old md5sum(1) style

Each file is downloaded once into :attr:`Lookaside.cache_dir`, keyed by its
hash, verified, and hard-linked into a build's source directory.  All blocking
I/O runs in worker threads so the daemon's event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from gate.builders.base import Lookaside, TransientBackendError

_CHUNK = 1 << 20
_HTTP_TIMEOUT = 60.0

_BSD_LINE = re.compile(
    r"^(?P<hashtype>[A-Za-z0-9_-]+) \((?P<filename>.+)\) = (?P<hash>[0-9a-fA-F]+)$"
)
# md5sum(1) output; a "*" marks binary mode and is not part of the name.
_MD5_LINE = re.compile(r"^(?P<hash>[0-9a-fA-F]{32})\s+\*?(?P<filename>\S.*)$")


class LookasideError(Exception):
    """A ``sources`` file is malformed or one of its files cannot be provided."""


class ChecksumError(LookasideError):
    """A fetched file does not have the checksum the ``sources`` file records."""


class LookasideUnavailable(LookasideError, TransientBackendError):
    """The lookaside server could not be reached or failed (5xx); retry later."""


@dataclass(frozen=True)
class SourceFile:
    """One line of a ``sources`` file."""

    filename: str
    #: a :mod:`hashlib` algorithm name, lower case ("sha512", "md5", ...)
    hashtype: str
    hash: str


def parse_sources(text: str) -> list[SourceFile]:
    """Parse a ``sources`` file in either format; blank lines are ignored.

    Raises :class:`LookasideError` naming the line for anything else, including
    file names that would escape the source directory.
    """
    entries: list[SourceFile] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if m := _BSD_LINE.match(line):
            hashtype = m["hashtype"].lower()
        elif m := _MD5_LINE.match(line):
            hashtype = "md5"
        else:
            raise LookasideError(f"sources line {lineno}: cannot parse {line!r}")
        filename, digest = m["filename"], m["hash"].lower()
        _check_hash(lineno, hashtype, digest)
        # The name becomes a path under the build's source dir (and part of a
        # URL): a "../x" or "a/b" would write outside it.
        if (
            "/" in filename
            or "\0" in filename
            or filename in (".", "..")
            or filename != filename.strip()
        ):
            raise LookasideError(f"sources line {lineno}: unsafe file name {filename!r}")
        entry = SourceFile(filename=filename, hashtype=hashtype, hash=digest)
        if any(e.filename == filename and e != entry for e in entries):
            raise LookasideError(f"sources line {lineno}: {filename} is listed with two checksums")
        entries.append(entry)
    return entries


def _check_hash(lineno: int, hashtype: str, digest: str) -> None:
    try:
        expected_len = hashlib.new(hashtype).digest_size * 2
    except ValueError:
        expected_len = 0
    if not expected_len:  # unknown, or variable-length (shake_*)
        raise LookasideError(f"sources line {lineno}: unsupported hash type {hashtype!r}")
    if len(digest) != expected_len:
        raise LookasideError(
            f"sources line {lineno}: {hashtype} hash must have {expected_len} hex digits, "
            f"got {len(digest)}"
        )


def cache_path(lookaside: Lookaside, entry: SourceFile) -> Path:
    """Where ``entry`` lives in the cache once fetched (content-addressed)."""
    return Path(lookaside.cache_dir) / entry.hashtype / entry.hash[:2] / entry.hash


def source_url(lookaside: Lookaside, name: str, entry: SourceFile) -> str:
    """Expand the lookaside URL template for one file of package ``name``."""
    template = lookaside.url
    is_http = template.startswith(("http://", "https://"))
    values = {
        "name": name,
        "filename": entry.filename,
        "hashtype": entry.hashtype,
        "hash": entry.hash,
    }
    if is_http:
        values = {k: urllib.parse.quote(v, safe="") for k, v in values.items()}
    try:
        return template.format_map(values)
    except (KeyError, IndexError, ValueError) as exc:
        raise LookasideError(f"bad lookaside url template {template!r}: {exc}") from None


async def fetch(lookaside: Lookaside, name: str, entry: SourceFile) -> Path:
    """Return the cached, verified copy of ``entry``, fetching it if needed."""
    cached = cache_path(lookaside, entry)
    if cached.exists():
        return cached
    url = source_url(lookaside, name, entry)
    await asyncio.to_thread(_fetch_into_cache, url, entry, cached)
    return cached


async def fetch_sources(
    lookaside: Lookaside, name: str, sources_file: Path, dest_dir: Path
) -> list[Path]:
    """Provide every file ``sources_file`` lists in ``dest_dir``; return their paths."""
    text = await asyncio.to_thread(Path(sources_file).read_text, encoding="utf-8")
    return await provide(lookaside, name, parse_sources(text), dest_dir)


async def provide(
    lookaside: Lookaside, name: str, entries: list[SourceFile], dest_dir: Path
) -> list[Path]:
    """Fetch (or reuse from the cache) each entry and link it into ``dest_dir``.

    A file the tree already carries under the same name is replaced: the
    ``sources`` entry is the one with a verified checksum.
    """
    placed: list[Path] = []
    for entry in dict.fromkeys(entries):  # a file listed twice is fetched once
        cached = await fetch(lookaside, name, entry)
        dest = Path(dest_dir) / entry.filename
        await asyncio.to_thread(_place, cached, dest)
        placed.append(dest)
    return placed


def _fetch_into_cache(url: str, entry: SourceFile, cached: Path) -> None:
    """Download to a temporary file beside the cache entry, verify, then rename.

    Concurrent fetches of the same file each write their own temporary file and
    the last rename wins with identical content, so no lock is needed; a
    mismatch or error removes the temporary file, leaving the cache untouched.
    """
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=cached.parent, prefix=".fetch-")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.new(entry.hashtype)
        with os.fdopen(fd, "wb") as out, _open_url(url, entry) as src:
            try:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
                # The server went away mid-transfer: nothing wrong with the change.
                raise LookasideUnavailable(f"{entry.filename}: {url}: {exc!r}") from None
        got = digest.hexdigest()
        if got != entry.hash:
            raise ChecksumError(
                f"{entry.filename}: {entry.hashtype} checksum mismatch: "
                f"sources file says {entry.hash}, {url} has {got}"
            )
        # Read-only: the cache is hard-linked into build trees, and a build
        # that scribbles on its tarball must not corrupt the next build's.
        os.chmod(tmp, 0o444)
        os.replace(tmp, cached)
    finally:
        tmp.unlink(missing_ok=True)


def _open_url(url: str, entry: SourceFile) -> IO[bytes]:
    if url.startswith(("http://", "https://")):
        try:
            return cast(IO[bytes], urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT))
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the error response's socket
            if exc.code >= 500:
                raise LookasideUnavailable(f"{entry.filename}: {url}: HTTP {exc.code}") from None
            raise LookasideError(
                f"{entry.filename}: not in the lookaside cache ({url}: HTTP {exc.code})"
            ) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise LookasideUnavailable(f"{entry.filename}: {url}: {exc}") from None
    path = url
    if url.startswith("file://"):
        path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise LookasideError(f"{entry.filename}: not in the lookaside cache ({path})") from None


def _place(cached: Path, dest: Path) -> None:
    dest.unlink(missing_ok=True)
    try:
        os.link(cached, dest)
    except OSError:  # another filesystem, or links not allowed
        shutil.copyfile(cached, dest)
