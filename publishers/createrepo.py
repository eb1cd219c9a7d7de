"""Publish repo states as immutable, numbered generations behind one symlink.

On disk, under ``root``::

    packages/...                    every RPM any kept generation serves, once
                                    (:mod:`publishers.pooled`)
    generations/<N>/<arch>/...      Packages -> ../../../packages, repodata/
    generations/<N>/manifest.json   what produced N (small; see :class:`Manifest`)
    generations/<N>/state.json      the repo state N serves, one build per line
    generations/<N>/chunks.json     where N's metadata chunks lie (:mod:`publishers.chunked`)
    current -> generations/<N>      what clients are served

A generation is built in ``generations/.tmp-<N>-<random>``, the files and
directories it wrote are fsynced, and it is renamed into place, so a directory
named ``<N>`` is always complete.  Then ``current`` is switched by renaming a
fresh symlink over it (``rename(2)`` is atomic): a client resolving
``current`` gets the old generation or the new one, never a mix (I3).
Generations are never modified after the rename, and files under
``packages/`` are named by their content and never rewritten; rollback and
republish make a new, higher-numbered generation, and old ones stay
(``keep``) so clients that resolved ``current`` earlier can finish.

The cost of a generation follows the change, not the repository: only new
RPMs are linked and read, only the metadata chunks that hold a changed
package are recompressed, and the state of the generations this process
wrote or read stays in memory (it is immutable), so the next publish does not
parse it back.  Generations written before this layout (RPMs hard-linked into
``<arch>/Packages/<letter>/``, state inside ``manifest.json``) are still read,
rolled back to and collected.

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
import shutil
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, Required, TypedDict

from publishers.chunked import INDEX, dump_index, load_index
from publishers.pooled import PACKAGES, package_dir, write_generation
from publishers.statefile import (
    line_checksums,
    line_names_exactly,
    named_among,
    read_state,
    served_lines,
    write_state,
)
from publishers.trees import TreeStatsDict
from repo_state.pool import Pool
from repo_state.state import RepoState

MANIFEST = "manifest.json"
STATE = "state.json"
LAYOUT_POOL = "pool"
#: states kept in memory (current and the one before cover publish, rollback, retry)
_STATE_CACHE = 3
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


class Manifest(TypedDict, total=False):
    """``manifest.json``: what a generation holds and what produced it.

    New optional keys may be added; readers ignore the ones they do not know.
    """

    number: Required[int]
    created: Required[str]
    produced_by: Required[dict[str, object]]
    arches: Required[list[str]]
    metadata: Required[TreeStatsDict]
    #: "pool" (packages/ + chunked metadata); absent for the older hard-linked layout
    layout: str
    #: number of binary packages
    package_count: int
    #: older layout only: sorted binary NEVRAs and RepoState.to_json(), decoded
    packages: list[str]
    state: list[dict[str, object]]


class Generation(NamedTuple):
    """One published generation as found on disk."""

    number: int
    path: Path
    manifest: Manifest

    @property
    def state(self) -> RepoState:
        """The repo state this generation serves (read from disk; Publisher.state caches)."""
        if "state" in self.manifest:
            return RepoState.from_json(json.dumps(self.manifest["state"]))
        return read_state(self.path / STATE)

    @property
    def packages(self) -> list[str]:
        """Sorted binary NEVRAs."""
        return sorted(self.state.nevras())

    @property
    def pooled(self) -> bool:
        return self.manifest.get("layout") == LAYOUT_POOL


def package_set(state: RepoState) -> frozenset[str]:
    """What makes two generations "the same": their files, by checksum.

    Checksums rather than NEVRAs, because a rebuild of the same NVR is a
    different package for a client that already downloaded the first one.
    """
    return frozenset(a.checksum for e in state.builds.values() for a in e.artifacts)


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
        self.packages_dir = self.root / PACKAGES
        # number -> state: generations are immutable, so an entry never goes stale
        self._states: OrderedDict[int, RepoState] = OrderedDict()
        self._states_lock = threading.Lock()

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
        number = self._current_number() if n is None else n
        if number is None:
            return RepoState()
        with self._states_lock:
            cached = self._states.get(number)
        if cached is not None and (self.generations_dir / str(number)).is_dir():
            return cached
        generation = self.current() if n is None else self.generation(n)
        if generation is None:
            if n is None:
                return RepoState()
            raise GenerationNotFound(f"generation {n} does not exist under {self.root}")
        state = generation.state
        self._remember(generation.number, state)
        return state

    def _remember(self, number: int, state: RepoState) -> None:
        with self._states_lock:
            self._states[number] = state
            self._states.move_to_end(number)
            while len(self._states) > _STATE_CACHE:
                self._states.popitem(last=False)

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
            return self._publish_locked(number, self.state(to), record, target.path)

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
            return self._publish_locked(number, self.state(current.number), record, None)

    def served_checksums(self) -> set[str]:
        """The checksums of every RPM a generation on disk serves (the pool keeps them)."""
        served: set[str] = set()
        for n in self.generations():
            served.update(_checksums(self.state(n)))
        return served

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
            if removed:
                # Packages first: a crash after this leaves a generation that is
                # collected next time, never a package file nobody collects.
                self._remove_packages(removed, sorted(keep & set(numbers)))
            for n in removed:
                # Rename first: a crash mid-rmtree then leaves debris, not a
                # generation directory that exists but is incomplete.
                trash = self.generations_dir / f"{_TRASH_PREFIX}{n}-{_token()}"
                os.rename(self.generations_dir / str(n), trash)
                shutil.rmtree(trash)
                with self._states_lock:
                    self._states.pop(n, None)
            _fsync_dir(self.generations_dir)
            return removed

    def _remove_packages(self, removed: Sequence[int], kept: Sequence[int]) -> None:
        """Delete the files under ``packages/`` that only ``removed`` generations serve."""
        current = self._current_number()
        # the current state is in memory: what it serves needs no reading
        base = self.state(current) if current is not None else RepoState()
        doomed: set[str] = set()
        for n in removed:
            generation = self.generation(n)
            if generation is not None and generation.pooled:
                doomed.update(self._served_beyond(n, base))
        if doomed:  # a file that moved to another build is still served
            doomed.difference_update(_checksums(base))
        for n in kept:
            if not doomed:
                break
            if n != current:
                doomed.difference_update(self._served_among(n, doomed))
        for checksum in doomed:
            shutil.rmtree(self.packages_dir / package_dir(checksum), ignore_errors=True)

    # -- internals

    def _served_beyond(self, n: int, base: RepoState) -> Iterator[str]:
        """Checksums of generation ``n``'s builds that ``base`` does not carry the same.

        Compared build by build (by source name), so that collecting an old
        generation of a large repository holds no set of every file either
        serves: only the few builds that differ are looked at further.
        """
        with self._states_lock:
            cached = self._states.get(n)
        path = self.generations_dir / str(n) / STATE
        if cached is not None:
            for name, entry in cached.builds.items():
                same = base.builds.get(name)
                if same is not entry and (same is None or same.artifacts != entry.artifacts):
                    yield from (a.checksum for a in entry.artifacts)
        elif path.is_file():
            for name, line in served_lines(path):
                same = base.builds.get(name)
                if same is None or not line_names_exactly(
                    line, [a.checksum for a in same.artifacts]
                ):
                    yield from line_checksums(line)
        else:
            yield from _checksums(self.state(n))

    def _served_among(self, n: int, checksums: set[str]) -> set[str]:
        """Which of ``checksums`` generation ``n`` serves, without parsing it if need be."""
        with self._states_lock:
            cached = self._states.get(n)
        path = self.generations_dir / str(n) / STATE
        if cached is None and path.is_file():
            return named_among(path, checksums)
        state = cached if cached is not None else self.state(n)
        return {c for c in _checksums(state) if c in checksums}

    def _publish_locked(
        self, number: int, state: RepoState, produced_by: Mapping[str, object], reuse: Path | None
    ) -> Generation:
        self._remove_debris()
        current = self._current_number()
        existing = self.generation(number)
        if existing is not None:
            if package_set(self.state(number)) != package_set(state):
                raise GenerationConflict(
                    f"generation {number} exists with a different package set; "
                    "history is never rewritten, publish a new number"
                )
            if current is None or current < number:
                self._switch(number)
            return existing
        if number != self._next_number():
            raise OutOfOrder(f"cannot publish generation {number}: current is {current}")

        tmp = self.generations_dir / f"{_TMP_PREFIX}{number}-{_token()}"
        try:
            self._build(tmp, number, state, produced_by, reuse)
        except Exception:
            # A failure we can see (not a kill) leaves nothing behind.
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        os.rename(tmp, self.generations_dir / str(number))
        _fsync_dir(self.generations_dir)
        self._remember(number, state)
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
        previous = None
        served = None
        if reuse is not None:
            index = load_index(reuse / INDEX)
            if index is not None:
                previous = (reuse, index)
            if index is not None and int(reuse.name) == self._current_number():
                # what the current generation serves is under packages/ (gc keeps it)
                served = self.state(int(reuse.name))
        try:
            stats, chunks, touched = write_generation(
                state,
                self.pool,
                self.packages_dir,
                tmp,
                self.arches,
                previous,
                served=served,
                revision=str(number),
            )
        except (ValueError, OSError, zlib.error) as exc:
            if previous is None:
                raise
            # a damaged previous generation costs header reads, not a stuck publish
            _warn("cannot reuse metadata of %s (%s); reading every header", reuse, exc)
            shutil.rmtree(tmp)
            stats, chunks, touched = write_generation(
                state,
                self.pool,
                self.packages_dir,
                tmp,
                self.arches,
                None,
                served=served,
                revision=str(number),
            )
        manifest: Manifest = {
            "number": number,
            "created": _now(),
            "produced_by": dict(produced_by),
            "arches": list(self.arches),
            "layout": LAYOUT_POOL,
            "package_count": sum(
                1 for entry in state.builds.values() for a in entry.artifacts if not a.is_source
            ),
            "metadata": stats.to_dict(),
        }
        old = None
        if reuse is not None and (reuse / STATE).is_file():
            old = (self.state(int(reuse.name)), reuse / STATE)
        write_state(tmp / STATE, state, old)
        _write_synced(tmp / INDEX, dump_index(chunks))
        _write_synced(tmp / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        for directory in touched:
            _fsync_dir(directory)

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
        link = self.root / f"{_LINK_PREFIX}{_token()}"
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


def _warn(message: str, *args: object) -> None:
    # logging is imported here, on this rare path: the publishing process has no other
    # use for it (0.6 MiB of its 45, docs/publishing.md); handlers are the daemon's
    import logging

    logging.getLogger(__name__).warning(message, *args)


def _now() -> str:
    """Now, as ``datetime.now(UTC).isoformat()`` writes it, without importing datetime
    (0.4 MiB of the publishing process, for one time stamp)."""
    now = time.time()
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    return f"{seconds}.{int(now % 1 * 1_000_000):06d}+00:00"


def _checksums(state: RepoState) -> Iterator[str]:
    for entry in state.builds.values():
        for artifact in entry.artifacts:
            yield artifact.checksum


def _token() -> str:
    """A random suffix for a temporary name (not ``secrets``: it loads OpenSSL, see
    :mod:`repo_state.sha256`; a name needs uniqueness, not secrecy)."""
    return os.urandom(4).hex()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
