"""Queue rules the shell applies: order, window, build reuse, dependencies.  Pure.

The planner decides what to do next from a queue's state; these rules decide
how that state is laid out and updated around it, and live beside it so a
reader finds every rule of the queue in the pure core.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from gate.model import BuildState, ItemKind, ItemView

# Zuul's defaults for a dependent pipeline's window (zuul/configloader.py,
# ``PipelineParser.fromYaml``: window 20, window-floor 3, window-increase-type linear
# with factor 1, window-decrease-type exponential with factor 2).
WINDOW_START = 20
WINDOW_FLOOR = 3
WINDOW_INCREASE = 1
WINDOW_DECREASE_FACTOR = 2

V = TypeVar("V", bound=ItemView)


# -- order ---------------------------------------------------------------------------------
def order_rank(item: ItemView) -> int:
    """Merged (or merging) gate items, then post items, then the gate items under test.

    A gate item whose merge is being pushed or published was tested without
    the post items seen since; publishing it first keeps what it publishes
    equal to what it was tested on.
    """
    if item.kind is ItemKind.GATE and item.at_tip:
        return 0
    return 1 if item.kind is ItemKind.POST else 2


def queue_order(items: Iterable[tuple[V, float]]) -> list[V]:
    """Items in queue order; each comes with its sequence number (enqueue order)."""
    return [item for item, _ in sorted(items, key=lambda p: (order_rank(p[0]), p[1], p[0].id))]


# -- the window ------------------------------------------------------------------------------
@dataclass(frozen=True)
class WindowRule:
    start: int = WINDOW_START
    floor: int = WINDOW_FLOOR
    increase: int = WINDOW_INCREASE
    decrease_factor: int = WINDOW_DECREASE_FACTOR


def window_after_merge(window: int, increase: int = WINDOW_INCREASE) -> int:
    """Zuul's linear increase (``ChangeQueue.increaseWindowSize``: ``window + factor``)."""
    return window + increase


def window_after_failure(
    window: int, floor: int = WINDOW_FLOOR, factor: int = WINDOW_DECREASE_FACTOR
) -> int:
    """Zuul's exponential decrease (``ChangeQueue.decreaseWindowSize``:
    ``max(floor, int(window / factor))``)."""
    return max(floor, window // factor)


def window_after_dequeue(
    window: int, kind: ItemKind, result: str, rule: WindowRule, passed_tests: bool = False
) -> int:
    """Zuul's dynamic window, adjusted when an item leaves the queue.

    As ``PipelineManager.reportItem`` (zuul/manager/__init__.py) does: a gate
    item that merged widens it (``increaseWindowSize``); an item rejected at
    the head without having passed its tests (a merge conflict, a failed
    scratch build, failed jobs) narrows it (``decreaseWindowSize``, called when
    ``not succeeded``); an item that passed its tests and then could not land
    (its final build or its push failed: Zuul's "merge-failure") leaves it
    alone, and so does an item dequeued or superseded (Zuul's ``dequeueItem``
    without a report).
    """
    if kind is ItemKind.GATE and result == "merged":
        return window_after_merge(window, rule.increase)
    if result == "rejected" and not passed_tests:
        return window_after_failure(window, rule.floor, rule.decrease_factor)
    return window


# -- build reuse ------------------------------------------------------------------------------
def build_reusable(purpose: str, state: str) -> bool:
    """Whether an existing build of the same key serves instead of a new one.

    Same inputs, same output: a running, passed or failed scratch build is
    reused (a failed one fails the same way again).  A canceled build was
    stopped, not finished; a failed final build may be retried, as Koji lets
    a failed NVR be built again; so may a failed draft.  A draft the gate let go
    of (``collecting``, ``collected``: gate/draft_gc.py) is built again.
    """
    if state in (BuildState.CANCELED, BuildState.COLLECTING, BuildState.COLLECTED):
        return False
    return not (purpose in ("final", "draft") and state == BuildState.FAILED)


# -- dependencies -------------------------------------------------------------------------------
@dataclass(frozen=True)
class OtherChange:
    id: int
    title: str
    sha: str
    state: str


def unmet_dependency(
    carried: Sequence[str], own: Sequence[str], proposed: Mapping[str, OtherChange]
) -> str | None:
    """Why a change cannot be merged on its base because of a change it carries.

    ``carried`` are the commits the merge would bring onto the branch,
    ``own`` the commits of the item and of the same-project items ahead of
    it, ``proposed`` the other changes of the project by commit.  A change
    whose commit sits on top of another proposed change carries that change
    with it; merging it while the other one is not ahead of it in the queue
    (rejected, dequeued, not approved, or behind it) would land a change that
    was never accepted, so the item fails, as Zuul fails an item whose
    dependency failed.
    """
    for sha in carried:
        if sha in own:
            continue
        other = proposed.get(sha)
        if other is not None:
            return (
                f"depends on change {other.id} ({other.title or other.sha[:12]}), which is "
                f"{other.state} and not ahead of it in the queue"
            )
    return None
