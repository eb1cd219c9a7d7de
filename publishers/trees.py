"""What every repository tree layout shares: tree names, how a tree's metadata was
obtained, and the one refusal.

Apart from :mod:`publishers.repotree` (speculative trees, hard links) so that the
publishing path (:mod:`publishers.pooled`) does not import that module, nor,
through it, ``logging``.  Plain classes rather than dataclasses for the same
reason: ``dataclasses`` imports ``inspect`` (with ``ast``, ``dis`` and
``tokenize``), about 1 MiB of the publishing process (docs/publishing.md).
"""

from __future__ import annotations

from typing import TypedDict

#: the tree SRPMs go to
SOURCE_TREE = "src"


class TreeStatsDict(TypedDict):
    read: int
    reused: int
    packages: dict[str, int]


class TreeStats:
    """How a tree's metadata was obtained; counts are of distinct RPM files.

    A ``noarch`` package sits in every arch tree but is counted once.
    """

    __slots__ = ("packages", "read", "reused")

    def __init__(
        self, read: int = 0, reused: int = 0, packages: dict[str, int] | None = None
    ) -> None:
        #: RPMs whose header was read with ``createrepo_c``
        self.read = read
        #: RPMs whose metadata was copied from the previous tree
        self.reused = reused
        #: package entries per tree (``{"x86_64": 12, "src": 5}``)
        self.packages: dict[str, int] = {} if packages is None else packages

    def to_dict(self) -> TreeStatsDict:
        return {"read": self.read, "reused": self.reused, "packages": dict(self.packages)}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TreeStats):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass would be

    def __repr__(self) -> str:
        return f"TreeStats(read={self.read}, reused={self.reused}, packages={self.packages})"


class RepoTreeError(Exception):
    """The state cannot be laid out as a repository (e.g. two files, one name)."""
