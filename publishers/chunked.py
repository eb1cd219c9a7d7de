"""Repository metadata assembled from cached compressed chunks.

A generation's ``primary``/``filelists``/``other`` XML files are gzip files
made of several gzip *members* (RFC 1952 section 2.2: a gzip file is a series
of members; zlib, createrepo_c, librepo and dnf read them as one stream)::

    member 0        <?xml ...?><metadata ... packages="N">   (rewritten each time)
    member 1..k     the <package> elements of one bucket      (cached)
    member k+1      </metadata>                              (constant)

A package's bucket is the first two hex digits of its sha256, so a bucket's
content depends only on which packages it holds, never on where they sit in
the repository: a new generation that adds one package and drops another
recompresses two buckets of 256 and copies the other members byte for byte
from the previous generation's file.  Each generation records, per tree and
metadata type, the digest of every bucket's member set and where its member
lies in the file (:data:`INDEX`); a bucket whose digest did not change is
copied, one that changed is rebuilt from the previous bucket's package
snippets (split out of its decompressed member) plus the XML of the new RPMs
(``createrepo_c.xml_from_rpm``: the header is read only for new packages).

``repomd.xml`` records each file's checksum and size, computed while the
members are written; the optional ``open-checksum``/``open-size`` (of the
uncompressed stream) are left out, since computing them would mean
decompressing every cached member again.  dnf (librepo) verifies
``checksum``, and createrepo_c's reader needs neither.
"""

from __future__ import annotations

import json
import os
import re
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import BinaryIO, TypedDict

from repo_state import typed_createrepo_c as cr
from repo_state.sha256 import sha256

#: per generation: where each bucket's member lies in each metadata file
INDEX = "chunks.json"
KINDS = ("primary", "filelists", "other")
#: bump when the XML of a package changes shape (href scheme, createrepo_c options)
LAYOUT = "pool-href-1"
_GZIP_WBITS = 31
_LEVEL = 6
_HEADERS = {
    "primary": '<metadata xmlns="http://linux.duke.edu/metadata/common" '
    'xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="{n}">\n',
    "filelists": '<filelists xmlns="http://linux.duke.edu/metadata/filelists" packages="{n}">\n',
    "other": '<otherdata xmlns="http://linux.duke.edu/metadata/other" packages="{n}">\n',
}
_FOOTERS = {"primary": "</metadata>\n", "filelists": "</filelists>\n", "other": "</otherdata>\n"}
_XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'
_END = b"</package>\n"
_PRIMARY_ID = re.compile(rb'<checksum type="sha256" pkgid="YES">([0-9a-f]{64})</checksum>')
_OTHER_ID = re.compile(rb'<package pkgid="([0-9a-f]{64})"')


class ChunkIndexDict(TypedDict):
    #: file name under repodata/
    file: str
    #: bucket -> [digest of its member set, offset, length]
    chunks: dict[str, list[str | int]]


class MetadataError(Exception):
    """A new RPM is not what the state says (checksum mismatch)."""


#: one package's (primary, filelists, other) XML, encoded
Snippets = tuple[bytes, bytes, bytes]


def bucket_of(checksum: str) -> str:
    return checksum[:2]


def bucket_digest(checksums: Iterable[str]) -> str:
    digest = sha256(LAYOUT.encode())
    for checksum in sorted(checksums):
        digest.update(checksum.encode())
    return digest.hexdigest()


class SnippetSource:
    """Where package XML comes from: the previous tree, else the RPM header."""

    def __init__(self, rpm_path: Callable[[str], Path], href: Callable[[str], str]) -> None:
        #: checksum -> path of the RPM (for packages that must be read)
        self.rpm_path = rpm_path
        #: checksum -> href written in primary.xml
        self.href = href
        #: shared between the trees of one generation (noarch packages sit in all)
        self.fresh: dict[str, Snippets] = {}
        #: the packages whose header was read
        self.read: set[str] = set()

    def from_rpm(self, checksum: str) -> Snippets:
        cached = self.fresh.get(checksum)
        if cached is not None:
            return cached
        primary, filelists, other = cr.xml_from_rpm(
            str(self.rpm_path(checksum)), cr.SHA256, self.href(checksum)
        )
        snippets = (primary.encode(), filelists.encode(), other.encode())
        found = _PRIMARY_ID.search(snippets[0])
        if found is None or found.group(1).decode() != checksum:
            raise MetadataError(f"{self.href(checksum)}: file checksum is not {checksum}")
        self.fresh[checksum] = snippets
        self.read.add(checksum)
        return snippets


def _split(member: bytes, kind: str) -> dict[str, bytes]:
    """Package snippets of one decompressed bucket member, by pkgid."""
    pattern = _PRIMARY_ID if kind == "primary" else _OTHER_ID
    out: dict[str, bytes] = {}
    start = 0
    while start < len(member):
        end = member.index(_END, start) + len(_END)
        snippet = member[start:end]
        found = pattern.search(snippet)
        if found is None:
            raise ValueError(f"{kind}: a package without a pkgid in a cached chunk")
        out[found.group(1).decode()] = snippet
        start = end
    return out


def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    return compressor.compress(data) + compressor.flush()


class _Out:
    """A metadata file being written, with its running sha256 and size."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in finish()
        self.digest = sha256()
        self.size = 0

    def write(self, data: bytes) -> tuple[int, int]:
        offset = self.size
        self.fh.write(data)
        self.digest.update(data)
        self.size += len(data)
        return offset, len(data)

    def finish(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()


def write_tree_metadata(
    repodata: Path,
    checksums: Iterable[str],
    source: SnippetSource,
    previous: tuple[Path, Mapping[str, ChunkIndexDict]] | None,
    revision: str | None,
) -> tuple[dict[str, ChunkIndexDict], int]:
    """Write ``repodata/`` for the packages ``checksums``; return its index and how many.

    ``previous`` is the previous tree's ``repodata`` directory and index.
    Every file written is fsynced; ``repomd.xml`` is written last, by rename.
    A package's snippets come from ``previous`` or, failing that, from
    ``source`` (whose ``read`` says which).
    """
    repodata.mkdir(parents=True, exist_ok=False)
    # bucketed first, then each bucket sorted: no set or sorted copy of every checksum
    unsorted: dict[str, list[str]] = {}
    for checksum in checksums:
        unsorted.setdefault(bucket_of(checksum), []).append(checksum)
    buckets = {bucket: sorted(set(unsorted.pop(bucket))) for bucket in sorted(unsorted)}
    total = sum(len(members) for members in buckets.values())
    index: dict[str, ChunkIndexDict] = {}
    outs = {kind: _Out(repodata / f".{kind}.xml.gz.tmp") for kind in KINDS}
    old_files: dict[str, BinaryIO] = {}
    try:
        if previous is not None:
            old_dir, old_index = previous
            for kind in KINDS:
                entry = old_index.get(kind)
                if entry is not None:
                    old_files[kind] = open(old_dir / entry["file"], "rb")  # noqa: SIM115
        chunk_maps: dict[str, dict[str, list[str | int]]] = {kind: {} for kind in KINDS}
        for kind, out in outs.items():
            out.write(_gzip((_XML_DECL + _HEADERS[kind].format(n=total)).encode()))
        for bucket, members in buckets.items():
            digest = bucket_digest(members)
            old_chunks = {
                kind: previous[1][kind]["chunks"].get(bucket)
                for kind in old_files
                if previous is not None
            }
            if len(old_chunks) == len(KINDS) and all(
                c is not None and c[0] == digest for c in old_chunks.values()
            ):
                for kind, out in outs.items():
                    _, offset, length = old_chunks[kind]  # type: ignore[misc]
                    data = _read_range(old_files[kind], int(offset), int(length))
                    chunk_maps[kind][bucket] = [digest, *out.write(data)]
                continue
            # rebuild: snippets of members the previous bucket had, the rest from headers
            old_snippets: dict[str, dict[str, bytes]] = {}
            for kind in KINDS:
                chunk = old_chunks.get(kind)
                old_snippets[kind] = {}
                if chunk is not None:
                    _, offset, length = chunk
                    data = _read_range(old_files[kind], int(offset), int(length))
                    old_snippets[kind] = _split(zlib.decompress(data, _GZIP_WBITS), kind)
            parts: dict[str, list[bytes]] = {kind: [] for kind in KINDS}
            for checksum in members:
                if all(checksum in old_snippets[kind] for kind in KINDS):
                    snippets: Snippets = (
                        old_snippets["primary"][checksum],
                        old_snippets["filelists"][checksum],
                        old_snippets["other"][checksum],
                    )
                else:
                    snippets = source.from_rpm(checksum)
                for kind, snippet in zip(KINDS, snippets, strict=True):
                    parts[kind].append(snippet)
            for kind, out in outs.items():
                chunk_maps[kind][bucket] = [digest, *out.write(_gzip(b"".join(parts[kind])))]
        for kind, out in outs.items():
            out.write(_gzip(_FOOTERS[kind].encode()))
            out.finish()
    finally:
        for fh in old_files.values():
            fh.close()
        for out in outs.values():
            if not out.fh.closed:
                out.fh.close()
    repomd = cr.Repomd()
    if revision is not None:
        repomd.set_revision(revision)
    now = int(time.time())
    for kind, out in outs.items():
        checksum = out.digest.hexdigest()
        name = f"{checksum}-{kind}.xml.gz"
        os.rename(out.path, repodata / name)
        record = cr.RepomdRecord(kind)
        record.location_href = f"repodata/{name}"
        record.checksum = checksum
        record.checksum_type = "sha256"
        record.size = out.size
        record.timestamp = now
        repomd.set_record(record)
        index[kind] = {"file": name, "chunks": chunk_maps[kind]}
    repomd.sort_records()
    tmp = repodata / ".repomd.xml.tmp"
    with open(tmp, "w", encoding="utf-8") as text:
        text.write(repomd.xml_dump())
        text.flush()
        os.fsync(text.fileno())
    os.replace(tmp, repodata / "repomd.xml")
    return index, total


def _read_range(fh: BinaryIO, offset: int, length: int) -> bytes:
    fh.seek(offset)
    data = fh.read(length)
    if len(data) != length:
        raise ValueError(f"{fh.name}: cached chunk at {offset} is truncated")
    return data


def load_index(path: Path) -> dict[str, dict[str, ChunkIndexDict]] | None:
    """A generation's chunk index (tree -> kind -> index), or None if it has none."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("layout") != LAYOUT:
        return None
    trees = data.get("trees")
    return trees if isinstance(trees, dict) else None


def dump_index(trees: Mapping[str, Mapping[str, ChunkIndexDict]]) -> str:
    return json.dumps({"layout": LAYOUT, "trees": trees}, separators=(",", ":")) + "\n"
