"""A generation's ``state.json``: the repo state it serves, one build per line.

The file is one JSON array (any JSON reader, and
:meth:`RepoState.from_json <repo_state.state.RepoState.from_json>`, reads it),
written one build per line in source-name order so that a new generation
re-encodes only the builds that changed: the line of every other build is
reused from the previous generation, whose entries are the very same
immutable objects.  The cache maps ``id(entry)`` to the entry (which keeps it
alive, so the id stays valid) and its line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from repo_state.state import BuildEntry, RepoState

#: id(entry) -> (entry, its line)
Lines = dict[int, tuple[BuildEntry, str]]

_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode
_CHECKSUM = re.compile(r'"checksum":"([0-9a-f]{64})"')


def encode_state(state: RepoState, known: Lines) -> tuple[str, Lines]:
    """The file's text, and the line cache of ``state``'s entries."""
    lines: Lines = {}
    for name in sorted(state.builds):
        entry = state.builds[name]
        cached = known.get(id(entry))
        if cached is not None and cached[0] is entry:
            lines[id(entry)] = cached
        else:
            lines[id(entry)] = (entry, _ENCODE(entry.to_dict()))
    body = ",\n".join(line for _, line in lines.values())
    return f"[\n{body}\n]\n" if lines else "[]\n", lines


def read_state(path: Path) -> tuple[RepoState, Lines]:
    """The state in ``path`` and its line cache."""
    builds: dict[str, BuildEntry] = {}
    lines: Lines = {}
    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            line = raw.rstrip("\n").removesuffix(",")
            if line in ("[", "]", "[]", ""):
                continue
            entry = BuildEntry.from_dict(json.loads(line))
            builds[entry.source_name] = entry
            lines[id(entry)] = (entry, line)
    return RepoState(builds), lines


def served_checksums(path: Path) -> set[str]:
    """The checksums of every file a state file names, without building the state."""
    return set(_CHECKSUM.findall(path.read_text(encoding="utf-8")))
