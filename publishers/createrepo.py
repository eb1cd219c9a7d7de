"""Publish repo states as immutable, numbered generations behind one symlink.

On disk, under ``root``::

    generations/<N>/<arch>/...      a tree from :func:`write_repo_tree`
    generations/<N>/manifest.json   what N holds and what produced it
    current -> generations/<N>      what clients are served

A generation is built in ``generations/.tmp-<N>-<random>``, fsynced, and
renamed into place, so a directory named ``<N>`` is always complete.  Then
``current`` is switched by renaming a fresh symlink over it (``rename(2)`` is
atomic): a client resolving ``current`` gets the old generation or the new
one, never a mix (I3).  Generations are never modified after the rename;
rollback and republish make a new, higher-numbered generation, and old ones
stay (``keep``) so clients that resolved ``current`` earlier can finish.

Every step is safe to repeat after a crash (I4): publishing ``N`` again with
the same packages only finishes the switch, debris of an interrupted build is
removed, and a number that is not the next one is refused.  All methods are
blocking; the daemon calls them via :func:`asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict

from publishers.repotree import TreeStatsDict, write_repo_tree
from repo_state.pool import Pool
from repo_state.state import RepoState

MANIFEST = "manifest.json"
CURRENT = "current"
GENERATIONS = "generations"
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
_LINK_PREFIX = ".current-"


class PublishError(Exception):
    """Publishing cannot proceed without someone deciding what to do."""


class GenerationConflict(PublishError):
    """Generation N exists already with a different package set."""


class OutOfOrder(PublishError):
    """The number asked for is not the one after the current generation."""


class GenerationNotFound(PublishError, LookupError):
    """No such generation (never published, or garbage-collected)."""


class Manifest(TypedDict):
    """``manifest.json``: what a generation holds and what produced it."""

    number: int
    created: str
    produced_by: dict[str, object]
    arches: list[str]
    #: sorted binary NEVRAs
    packages: list[str]
    metadata: TreeStatsDict
    #: RepoState.to_json(), decoded
    state: list[dict[str, object]]


@dataclass(frozen=True)
class Generation:
    """One published generation as found on disk."""

    number: int
    path: Path
    manifest: Manifest

    @property
    def state(self) -> RepoState:
        """The repo state this generation serves."""
        return RepoState.from_json(json.dumps(self.manifest["state"]))

    @property
    def packages(self) -> list[str]:
        """Sorted binary NEVRAs, as recorded in the manifest."""
        return list(self.manifest["packages"])


def package_set(state: RepoState) -> frozenset[str]:
    """What makes two generations "the same": their files, by checksum.

    Checksums rather than NEVRAs, because a rebuild of the same NVR is a
    different package for a client that already downloaded the first one.
    """
    return frozenset(a.checksum for a in state.artifacts(include_source=True))


class Publisher:
    """Generations of one repository under ``root``, RPMs linked from ``pool``."""

    def __init__(
        self, root: Path, pool: Pool, arches: Sequence[str] = ("x86_64",), keep: int = 5
    ) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.root = Path(root)
        self.pool = pool
        self.arches = tuple(arches)
        self.keep = keep
        self.generations_dir = self.root / GENERATIONS
        self.generations_dir.mkdir(parents=True, exist_ok=True)

    # -- reading (no lock: everything read here is immutable or atomically replaced)

    def current(self) -> Generation | None:
        """The generation ``current`` points at, or None before the first publish."""
        while True:
            number = self._current_number()
            if number is None:
                return None
            generation = self.generation(number)
            if generation is not None:
                return generation
            # Another thread may have switched current and collected the
            # generation we saw between our two reads; only a link that still
            # names a missing generation is an error.
            if self._current_number() == number:
                raise PublishError(f"{self.root / CURRENT} points at missing generation {number}")

    def generation(self, n: int) -> Generation | None:
        """Generation ``n`` if it exists on disk."""
        path = self.generations_dir / str(n)
        if not path.is_dir():
            return None
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            # Cannot happen through this class: directories get their number
            # only when complete. Someone edited the tree by hand.
            raise PublishError(f"generation {n} at {path} has no {MANIFEST}") from None
        return Generation(number=n, path=path, manifest=manifest)

    def generations(self) -> list[int]:
        """Numbers of the generations on disk, ascending."""
        return sorted(int(p.name) for p in self.generations_dir.iterdir() if p.name.isdigit())

    def state(self, n: int | None = None) -> RepoState:
        """The state of generation ``n`` (default: current; empty if none yet)."""
        generation = self.current() if n is None else self.generation(n)
        if generation is None:
            if n is None:
                return RepoState()
            raise GenerationNotFound(f"generation {n} does not exist under {self.root}")
        return generation.state

    # -- writing (serialised by an flock on root/.lock, across threads and processes)

    def publish(
        self, number: int, state: RepoState, produced_by: Mapping[str, object]
    ) -> Generation:
        """Publish ``state`` as generation ``number`` and point ``current`` at it.

        ``number`` must be current + 1, unless generation ``number`` exists
        already (a retry after a crash): then its package set must equal
        ``state``'s and ``current`` is only moved forward to it, never back.
        ``produced_by`` is recorded in the manifest (item id, change, project,
        ``kind``: ``gate``/``post``/``rollback``/``republish``).
        """
        with self._locked():
            current = self.current()
            reuse = current.path if current is not None else None
            return self._publish_locked(number, state, produced_by, reuse)

    def rollback(
        self, to: int, produced_by: Mapping[str, object], *, number: int | None = None
    ) -> Generation:
        """Publish a new generation (current + 1) with the content of generation ``to``.

        Pass ``number`` to make a retry after a crash idempotent.
        """
        with self._locked():
            target = self.generation(to)
            if target is None:
                raise GenerationNotFound(f"cannot roll back to {to}: no such generation")
            number = self._next_number() if number is None else number
            record = {**produced_by, "kind": "rollback", "rollback_to": to}
            # the target's metadata describes exactly the files we want again
            return self._publish_locked(number, target.state, record, target.path)

    def republish(
        self, produced_by: Mapping[str, object], *, number: int | None = None
    ) -> Generation:
        """Publish the current content again as a new generation, every header re-read.

        The remedy for suspect metadata, so nothing is reused.  Pass ``number``
        to make a retry after a crash idempotent.
        """
        with self._locked():
            current = self.current()
            if current is None:
                raise PublishError("nothing published yet; nothing to republish")
            number = self._next_number() if number is None else number
            record = {**produced_by, "kind": "republish", "republished": current.number}
            return self._publish_locked(number, current.state, record, None)

    def gc(self) -> list[int]:
        """Delete all but the newest ``keep`` generations and the current one.

        Returns the numbers deleted.
        """
        with self._locked():
            self._remove_debris()
            numbers = self.generations()
            keep = set(numbers[-self.keep :])
            current = self._current_number()
            if current is not None:
                keep.add(current)
            removed = [n for n in numbers if n not in keep]
            for n in removed:
                # Rename first: a crash mid-rmtree then leaves debris, not a
                # generation directory that exists but is incomplete.
                trash = self.generations_dir / f"{_TRASH_PREFIX}{n}-{secrets.token_hex(4)}"
                os.rename(self.generations_dir / str(n), trash)
                shutil.rmtree(trash)
            _fsync_dir(self.generations_dir)
            return removed

    # -- internals

    def _publish_locked(
        self, number: int, state: RepoState, produced_by: Mapping[str, object], reuse: Path | None
    ) -> Generation:
        self._remove_debris()
        current = self._current_number()
        existing = self.generation(number)
        if existing is not None:
            if package_set(existing.state) != package_set(state):
                raise GenerationConflict(
                    f"generation {number} exists with a different package set; "
                    "history is never rewritten, publish a new number"
                )
            if current is None or current < number:
                self._switch(number)
            return existing
        if number != self._next_number():
            raise OutOfOrder(f"cannot publish generation {number}: current is {current}")

        tmp = self.generations_dir / f"{_TMP_PREFIX}{number}-{secrets.token_hex(4)}"
        try:
            self._build(tmp, number, state, produced_by, reuse)
        except Exception:
            # A failure we can see (not a kill) leaves nothing behind.
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        os.rename(tmp, self.generations_dir / str(number))
        _fsync_dir(self.generations_dir)
        self._switch(number)
        generation = self.generation(number)
        assert generation is not None
        return generation

    def _build(
        self,
        tmp: Path,
        number: int,
        state: RepoState,
        produced_by: Mapping[str, object],
        reuse: Path | None,
    ) -> None:
        stats = write_repo_tree(state, self.pool, tmp, self.arches, reuse, revision=str(number))
        manifest: Manifest = {
            "number": number,
            "created": datetime.now(UTC).isoformat(),
            "produced_by": dict(produced_by),
            "arches": list(self.arches),
            "packages": sorted(state.nevras()),
            "metadata": stats.to_dict(),
            "state": json.loads(state.to_json()),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _fsync_tree(tmp)

    def _next_number(self) -> int:
        return (self._current_number() or 0) + 1

    def _current_number(self) -> int | None:
        try:
            target = os.readlink(self.root / CURRENT)
        except FileNotFoundError:
            return None
        return int(Path(target).name)

    def _switch(self, number: int) -> None:
        # Relative target, so the root can be moved or served from a bind mount.
        link = self.root / f"{_LINK_PREFIX}{secrets.token_hex(4)}"
        os.symlink(f"{GENERATIONS}/{number}", link)
        os.replace(link, self.root / CURRENT)
        _fsync_dir(self.root)

    def _remove_debris(self) -> None:
        """Remove what interrupted publishes and GCs left (only ever under the lock)."""
        for path in self.generations_dir.iterdir():
            if path.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)):
                shutil.rmtree(path, ignore_errors=True)
        for path in self.root.glob(f"{_LINK_PREFIX}*"):
            path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(top: Path) -> None:
    """Make a new generation durable before it gets its name.

    Metadata and manifest are flushed, and every directory (for the new hard
    links). RPM contents belong to the pool and are not re-flushed here.
    """
    for dirpath, _dirnames, filenames in os.walk(top):
        for name in filenames:
            if not name.endswith(".rpm"):
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _fsync_dir(Path(dirpath))
