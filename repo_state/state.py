"""Repo-state algebra: what an RPM repository contains, and how states compose.

A repo state maps a *source package name* to the one build of it that the
repository carries, and each build to its binary artifacts. Composing states is
an overlay: a later layer's build of a source package replaces the earlier one
whole (its subpackages included), so dropping a subpackage in a new build drops
it from the repository too.

The speculative state an item is tested on is::

    published  <-  post items (final builds)  <-  items ahead (scratch builds)  <-  item

and the generation published at the tip is the same composition with the
item's final build standing in for its scratch build.  Both are built with
:func:`compose`, so I2 ("every published generation was tested as a whole")
reduces to comparing :meth:`RepoState.nevras` of the two.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from sys import intern
from typing import SupportsIndex, SupportsInt


@dataclass(frozen=True, order=True, slots=True)
class Artifact:
    """One RPM file, identified by its content (``checksum`` is its sha256)."""

    name: str
    epoch: int
    version: str
    release: str
    arch: str
    sourcerpm: str
    checksum: str
    size: int = 0

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.release}.{self.arch}.rpm"

    @property
    def nevra(self) -> str:
        return f"{self.name}-{self.epoch}:{self.version}-{self.release}.{self.arch}"

    @property
    def is_source(self) -> bool:
        return self.arch in ("src", "nosrc")

    def to_dict(self) -> dict[str, object]:
        # by hand rather than dataclasses.asdict (which deep-copies): 20k of
        # these are written per generation of a large repository
        return {
            "name": self.name,
            "epoch": self.epoch,
            "version": self.version,
            "release": self.release,
            "arch": self.arch,
            "sourcerpm": self.sourcerpm,
            "checksum": self.checksum,
            "size": self.size,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object], source_name: str = "") -> Artifact:
        # interned: a large repository repeats these (noarch, 1.0, el9, a
        # source RPM per subpackage), and states of 20k builds stay in memory
        name = str(data["name"])
        return cls(
            name=source_name if name == source_name else intern(name),
            epoch=_int(data.get("epoch")),
            version=intern(str(data["version"])),
            release=intern(str(data["release"])),
            arch=intern(str(data["arch"])),
            sourcerpm=intern(str(data.get("sourcerpm") or "")),
            checksum=str(data["checksum"]),
            size=_int(data.get("size")),
        )


@dataclass(frozen=True, slots=True)
class BuildEntry:
    """One build of one source package as a repository carries it."""

    source_name: str
    nvr: str
    artifacts: tuple[Artifact, ...]
    #: where the build came from: ``"final:<backend ref>"`` or ``"scratch:<key>"``
    origin: str = ""
    #: the project (distgit) and commit it was built from: the source stamp
    #: (empty for builds recorded before rpmgate kept it)
    project: str = ""
    commit: str = ""

    def binary_artifacts(self) -> tuple[Artifact, ...]:
        return tuple(a for a in self.artifacts if not a.is_source)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "source_name": self.source_name,
            "nvr": self.nvr,
            "origin": self.origin,
            "artifacts": [a.to_dict() for a in self.artifacts],
        }
        if self.project:
            out["project"] = self.project
        if self.commit:
            out["commit"] = self.commit
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> BuildEntry:
        source_name = str(data["source_name"])
        return cls(
            source_name=source_name,
            nvr=str(data["nvr"]),
            origin=str(data.get("origin") or ""),
            project=intern(str(data.get("project") or "")),
            commit=str(data.get("commit") or ""),
            artifacts=tuple(
                Artifact.from_dict(a, source_name) for a in _mappings(data.get("artifacts"))
            ),
        )


@dataclass(frozen=True)
class RepoState:
    """An immutable mapping of source package name -> :class:`BuildEntry`."""

    builds: Mapping[str, BuildEntry] = field(default_factory=dict)

    def __iter__(self) -> Iterator[BuildEntry]:
        return iter(self.builds[k] for k in sorted(self.builds))

    def __len__(self) -> int:
        return len(self.builds)

    def __contains__(self, source_name: object) -> bool:
        return source_name in self.builds

    def get(self, source_name: str) -> BuildEntry | None:
        return self.builds.get(source_name)

    def with_build(self, entry: BuildEntry) -> RepoState:
        merged = dict(self.builds)
        merged[entry.source_name] = entry
        return RepoState(merged)

    def overlay(self, other: RepoState) -> RepoState:
        merged = dict(self.builds)
        merged.update(other.builds)
        return RepoState(merged)

    def artifacts(self, include_source: bool = False) -> list[Artifact]:
        out: list[Artifact] = []
        for entry in self:
            out.extend(entry.artifacts if include_source else entry.binary_artifacts())
        return sorted(out)

    def nevras(self) -> frozenset[str]:
        """The binary package set, by NEVRA: what a client of the repo can install."""
        return frozenset(a.nevra for a in self.artifacts())

    def nvrs(self) -> dict[str, str]:
        return {name: entry.nvr for name, entry in self.builds.items()}

    def to_json(self) -> str:
        return json.dumps([e.to_dict() for e in self], sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> RepoState:
        if not text:
            return cls()
        return cls({e.source_name: e for e in map(BuildEntry.from_dict, json.loads(text))})


def _int(value: object) -> int:
    """``int(value or 0)`` for a value decoded from JSON."""
    if not value:
        return 0
    if isinstance(value, (str, bytes, bytearray, SupportsInt, SupportsIndex)):
        return int(value)
    raise TypeError(f"not an integer: {value!r}")


def _mappings(value: object) -> Iterator[Mapping[str, object]]:
    """The objects in a list decoded from JSON (none for a missing or empty list)."""
    if not value:
        return
    if not isinstance(value, Iterable):
        raise TypeError(f"not a list: {value!r}")
    for item in value:
        if not isinstance(item, Mapping):
            raise TypeError(f"not an object: {item!r}")
        yield item


def compose(layers: Iterable[RepoState | BuildEntry]) -> RepoState:
    """Overlay ``layers`` in order (later wins) into one state."""
    state = RepoState()
    for layer in layers:
        state = state.with_build(layer) if isinstance(layer, BuildEntry) else state.overlay(layer)
    return state
