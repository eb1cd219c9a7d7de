"""How long the speculative repositories of finished items are kept.

An item's jobs run against ``<state_dir>/speculative/<item>-<attempt>/`` (and
its ``-baseline`` sibling), served under ``/speculative/``.  While the item is
active only its current attempt's trees are kept (a new attempt drops the
older ones: nothing tests on them).  When it finishes, its last trees stay for
``speculative_retention`` seconds after ``finished_at``, so whoever reads why
it was rejected (or what it was merged on) can install from them; ``0``
removes them at once (``gate.items.Items.dequeue``).

:class:`SpeculativeSweep` removes what is due, from the database's
``finished_at`` and what is on disk, never from timers kept in memory: a
restart, a crash or a long stop loses nothing and removes late trees at its
first sweep.  Trees of items the database does not know, and of an active
item's older attempts (a crash between a new attempt and its clean-up), go too.
Directories whose names are not ``<item>-<attempt>[-<suffix>]`` are left alone.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from gate.plumbing import Plumbing
from repo_state.db import session
from repo_state.models import ItemRow, epoch

log = logging.getLogger(__name__)

#: seconds between sweeps (the loop runs at least every 30 s)
SWEEP_INTERVAL = 60.0

_TREE = re.compile(r"(\d{1,18})-(\d{1,18})(?:-[A-Za-z0-9_.-]+)?")


@dataclass(frozen=True)
class Tree:
    path: Path
    item: int
    attempt: int


def trees(speculative_dir: Path) -> list[Tree]:
    """The item trees under ``speculative_dir`` (anything else is not the gate's)."""
    found = []
    try:
        entries = list(speculative_dir.iterdir())
    except FileNotFoundError:
        return []
    for path in entries:
        match = _TREE.fullmatch(path.name)
        if match and path.is_dir() and not path.is_symlink():
            found.append(Tree(path, int(match[1]), int(match[2])))
    return found


def expired(
    found: list[Tree], rows: dict[int, ItemRow], retention: float, now: float
) -> list[Tree]:
    """The trees no one may use any more, at ``now`` (seconds since the epoch)."""
    out = []
    for tree in found:
        row = rows.get(tree.item)
        if row is None:
            out.append(tree)  # an item the database does not know
        elif row.active:
            if tree.attempt != row.attempt:
                out.append(tree)  # an older attempt: nothing tests on it
        elif row.finished_at is None or epoch(row.finished_at) + retention <= now:
            out.append(tree)
    return out


class SpeculativeSweep:
    def __init__(
        self,
        engine: Engine,
        plumbing: Plumbing,
        speculative_dir: Path,
        retention: Callable[[], float],
    ) -> None:
        """``retention``: reads ``speculative_retention`` of the config in force."""
        self.engine, self.plumbing = engine, plumbing
        self.speculative_dir, self.retention = speculative_dir, retention
        self._last = float("-inf")

    async def sweep_if_due(self) -> int:
        """Sweep when :data:`SWEEP_INTERVAL` passed since the last sweep (the first: now)."""
        if time.monotonic() - self._last < SWEEP_INTERVAL:
            return 0
        self._last = time.monotonic()
        return await self.sweep()

    async def sweep(self, now: float | None = None) -> int:
        """Remove every expired tree; returns how many went.  ``now``: seconds since the
        epoch (default: the clock)."""
        found = await asyncio.to_thread(trees, self.speculative_dir)
        if not found:
            return 0
        ids = sorted({t.item for t in found})
        with session(self.engine) as s:
            rows = {
                r.id: r
                for r in s.exec(select(ItemRow).where(col(ItemRow.id).in_(ids)))
                if r.id is not None
            }
        gone = expired(found, rows, self.retention(), time.time() if now is None else now)
        for tree in gone:
            await asyncio.to_thread(shutil.rmtree, tree.path, True)
        if gone:
            log.info("removed %d speculative trees past their retention", len(gone))
            # the status document names the trees it serves: tell it they went
            self.plumbing.emit("speculative.removed", trees=sorted(t.path.name for t in gone))
        return len(gone)
