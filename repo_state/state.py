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
from sys import intern
from typing import Any, ClassVar, NoReturn, SupportsIndex, SupportsInt


class FrozenError(AttributeError):
    """An attempt to change an immutable repo-state object."""


class _Frozen:
    """Immutable slotted objects.

    The classes below are what ``@dataclass(frozen=True, slots=True)`` (and
    ``order=True`` for :class:`Artifact`) would generate, written out: the
    publishing process imports this module, and ``dataclasses`` imports
    ``inspect`` (with ``ast``, ``dis``, ``tokenize``), about 1 MiB of a process
    that publishes into 20,000 packages in about 45 (docs/publishing.md).
    """

    __slots__ = ()
    #: the fields, in the constructor's order (``_values()``'s)
    _fields: ClassVar[tuple[str, ...]] = ()

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise FrozenError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise FrozenError(f"cannot delete field {name!r}")

    def _values(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, _Frozen)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __reduce__(self) -> tuple[type[_Frozen], tuple[Any, ...]]:
        # pickle and copy through the constructor (__setattr__ refuses)
        return self.__class__, self._values()

    def __repr__(self) -> str:
        pairs = zip(self._fields, self._values(), strict=True)
        shown = [f"{name}={value!r}" for name, value in pairs]
        return f"{self.__class__.__name__}({', '.join(shown)})"


class Artifact(_Frozen):
    """One RPM file, identified by its content (``checksum`` is its sha256).

    Ordered by its fields in turn (name first), as a dataclass with ``order=True``.
    """

    _fields = ("name", "epoch", "version", "release", "arch", "sourcerpm", "checksum", "size")
    __slots__ = _fields
    name: str
    epoch: int
    version: str
    release: str
    arch: str
    sourcerpm: str
    checksum: str
    size: int

    def __init__(
        self,
        name: str,
        epoch: int,
        version: str,
        release: str,
        arch: str,
        sourcerpm: str,
        checksum: str,
        size: int = 0,
    ) -> None:
        put = object.__setattr__
        put(self, "name", name)
        put(self, "epoch", epoch)
        put(self, "version", version)
        put(self, "release", release)
        put(self, "arch", arch)
        put(self, "sourcerpm", sourcerpm)
        put(self, "checksum", checksum)
        put(self, "size", size)

    def _values(self) -> tuple[str, int, str, str, str, str, str, int]:
        return (
            self.name,
            self.epoch,
            self.version,
            self.release,
            self.arch,
            self.sourcerpm,
            self.checksum,
            self.size,
        )

    def __lt__(self, other: Artifact) -> bool:
        if other.__class__ is not Artifact:
            return NotImplemented
        # name first, and the tuples only when the names tie: sorting 20,000 is
        # as fast as with the dataclass's generated method
        if self.name != other.name:
            return self.name < other.name
        return self._values() < other._values()

    def __le__(self, other: Artifact) -> bool:
        if other.__class__ is not Artifact:
            return NotImplemented
        # name first, and the tuples only when the names tie: sorting 20,000 is
        # as fast as with the dataclass's generated method
        if self.name != other.name:
            return self.name <= other.name
        return self._values() <= other._values()

    def __gt__(self, other: Artifact) -> bool:
        if other.__class__ is not Artifact:
            return NotImplemented
        # name first, and the tuples only when the names tie: sorting 20,000 is
        # as fast as with the dataclass's generated method
        if self.name != other.name:
            return self.name > other.name
        return self._values() > other._values()

    def __ge__(self, other: Artifact) -> bool:
        if other.__class__ is not Artifact:
            return NotImplemented
        # name first, and the tuples only when the names tie: sorting 20,000 is
        # as fast as with the dataclass's generated method
        if self.name != other.name:
            return self.name >= other.name
        return self._values() >= other._values()

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


class BuildEntry(_Frozen):
    """One build of one source package as a repository carries it."""

    _fields = ("source_name", "nvr", "artifacts", "origin", "project", "commit")
    __slots__ = _fields
    source_name: str
    nvr: str
    artifacts: tuple[Artifact, ...]
    #: where the build came from: ``"final:<backend ref>"`` or ``"scratch:<key>"``
    origin: str
    #: the project (distgit) and commit it was built from: the source stamp
    #: (empty for builds recorded before rpmgate kept it)
    project: str
    commit: str

    def __init__(
        self,
        source_name: str,
        nvr: str,
        artifacts: tuple[Artifact, ...],
        origin: str = "",
        project: str = "",
        commit: str = "",
    ) -> None:
        put = object.__setattr__
        put(self, "source_name", source_name)
        put(self, "nvr", nvr)
        put(self, "artifacts", artifacts)
        put(self, "origin", origin)
        put(self, "project", project)
        put(self, "commit", commit)

    def _values(self) -> tuple[str, str, tuple[Artifact, ...], str, str, str]:
        return (self.source_name, self.nvr, self.artifacts, self.origin, self.project, self.commit)

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


class RepoState(_Frozen):
    """An immutable mapping of source package name -> :class:`BuildEntry`."""

    _fields = ("builds",)
    __slots__ = _fields
    builds: Mapping[str, BuildEntry]

    def __init__(self, builds: Mapping[str, BuildEntry] | None = None) -> None:
        object.__setattr__(self, "builds", {} if builds is None else builds)

    def _values(self) -> tuple[Mapping[str, BuildEntry]]:
        return (self.builds,)

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
