"""A generation's ``state.json``: the repo state it serves, one build per line.

The file is one JSON array (any JSON reader, and
:meth:`RepoState.from_json <repo_state.state.RepoState.from_json>`, reads it),
written one build per line in source-name order, so that a new generation
re-encodes only the builds that changed: the new state is the previous one
with a few builds replaced, every other entry is the very same immutable
object, and its line is copied from the previous generation's file, streamed
side by side (line k of a file is the k-th source name in sorted order).
Nothing is held in memory but the states themselves.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from repo_state.state import BuildEntry, RepoState

_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode
_CHECKSUM = re.compile(r'"checksum":"([0-9a-f]{64})"')
# a JSON string: a quote inside a value is escaped, so this key only matches as a key
_NAME_KEY = '"source_name":"'
_CHECKSUM_KEY = '"checksum":"'
#: how many checksums named_among looks for as text, and in blocks of how many bytes
_FEW = 16
_BLOCK = 1 << 16
_SOURCE_NAME = re.compile(r'"source_name":("(?:[^"\\]|\\.)*")')


def _lines(fh: TextIO) -> Iterator[str]:
    for raw in fh:
        line = raw.rstrip("\n").removesuffix(",")
        if line not in ("[", "]", "[]", ""):
            yield line


def write_state(
    path: Path, state: RepoState, previous: tuple[RepoState, Path] | None = None
) -> None:
    """Write (and fsync) ``state`` to ``path``; ``previous`` is a state and its file."""
    old_lines: Iterator[str] = iter(())
    old_names: Iterator[str] = iter(())
    old_builds: Mapping[str, BuildEntry] = {}
    old_fh = None
    if previous is not None and previous[1].is_file():
        old_fh = open(previous[1], encoding="utf-8")  # noqa: SIM115 - closed below
        old_lines = _lines(old_fh)
        old_builds = previous[0].builds  # immutable: read in place, not copied
        old_names = iter(sorted(old_builds))
    try:
        with open(path, "w", encoding="utf-8") as out:
            out.write("[")
            first = True
            old_name = next(old_names, None)
            old_line = next(old_lines, None)
            for name in sorted(state.builds):
                entry = state.builds[name]
                while old_name is not None and old_name < name:
                    old_name, old_line = next(old_names, None), next(old_lines, None)
                if old_name == name and old_builds[name] is entry and old_line is not None:
                    line = old_line
                else:
                    line = _ENCODE(entry.to_dict())
                out.write("\n" if first else ",\n")
                out.write(line)
                first = False
            out.write("\n]\n" if not first else "]\n")
            out.flush()
            os.fsync(out.fileno())
    finally:
        if old_fh is not None:
            old_fh.close()


def read_state(path: Path) -> RepoState:
    """The state in ``path``, read a line at a time."""
    builds: dict[str, BuildEntry] = {}
    with open(path, encoding="utf-8") as fh:
        for line in _lines(fh):
            entry = BuildEntry.from_dict(json.loads(line))
            builds[entry.source_name] = entry
    return RepoState(builds)


def served_lines(path: Path) -> Iterator[tuple[str, str]]:
    """Each build's source name and its line (its JSON, perhaps with a trailing comma),
    without building the state."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:  # not _lines(): the brackets and separators do no harm here
            # found by rfind, not a regex: twice as fast over 20,000 lines.  The key
            # cannot match inside a value, whose quotes are escaped.
            at = line.rfind(_NAME_KEY)
            if at < 0:
                if line.strip() in ("[", "]", "[]", ""):
                    continue
                raise ValueError(f"{path}: a build without a source name")
            start = at + len(_NAME_KEY)
            name = line[start : line.find('"', start)]
            if "\\" in name:  # escaped (rarely): decode the JSON string
                found = _SOURCE_NAME.search(line, at)
                assert found is not None
                name = json.loads(found.group(1))
            yield name, line


def line_checksums(line: str) -> list[str]:
    """The checksums of the files the build on ``line`` (of :func:`served_lines`) names."""
    return _CHECKSUM.findall(line)


def line_names_exactly(line: str, checksums: Sequence[str]) -> bool:
    """Whether the build on ``line`` names exactly the files ``checksums`` (distinct),
    found by substring searches, which cost a fraction of :func:`line_checksums`."""
    return line.count(_CHECKSUM_KEY) == len(checksums) and all(
        f'{_CHECKSUM_KEY}{checksum}"' in line for checksum in checksums
    )


def named_among(path: Path, checksums: Collection[str]) -> set[str]:
    """Which of ``checksums`` the state file names.

    A few are searched for as text, 64 KiB at a time (a C substring search: a
    fraction of what decoding every line costs, and no more memory than a
    block); more, by :func:`served_checksums`.
    """
    wanted = set(checksums)
    if len(wanted) > _FEW:
        return wanted.intersection(served_checksums(path))
    needles = {c: f'{_CHECKSUM_KEY}{c}"'.encode() for c in wanted}
    overlap = max((len(n) for n in needles.values()), default=1) - 1
    found: set[str] = set()
    tail = b""
    with open(path, "rb") as fh:
        while needles and (block := fh.read(_BLOCK)):
            text = tail + block
            for checksum, needle in list(needles.items()):
                if needle in text:
                    found.add(checksum)
                    del needles[checksum]
            tail = text[-overlap:]  # a name cut in two by the block's end
    return found


def served_checksums(path: Path) -> Iterator[str]:
    """The checksums of every file a state file names, without building the state."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            yield from _CHECKSUM.findall(line)
