"""Queue rules the shell applies: order, window, build reuse, dependencies.  Pure.

The planner decides what to do next from a queue's state; these rules decide
how that state is laid out and updated around it, and live beside it so a
reader finds every rule of the queue in the pure core.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

from gate.model import BuildState, ItemKind, ItemView

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
WindowStep = Literal["linear", "exponential"]


@dataclass(frozen=True)
class WindowRule:
    """A queue's window rule: Zuul's dependent-pipeline options ``window``,
    ``window-floor``, ``window-ceiling``, ``window-increase-type``/``-factor`` and
    ``window-decrease-type``/``-factor`` (zuul/configloader.py ``PipelineParser``;
    ``increase`` is the increase factor).  The defaults here are Zuul's
    (``PipelineParser.fromYaml``: 20, floor 3, no ceiling, linear +1,
    exponential /2); rpmgate's are :data:`WINDOW_DEFAULT`.
    """

    start: int = 20
    floor: int = 3
    increase: int = 1
    decrease_factor: int = 2
    increase_type: WindowStep = "linear"
    decrease_type: WindowStep = "exponential"
    #: the window never grows past this; None: no limit
    ceiling: int | None = None


#: Zuul's window, rule for rule: halved (not below 3) by every item rejected at
#: the head without having passed its tests.
ZUUL_WINDOW = WindowRule()

#: rpmgate's default: Zuul's, except that a rejection takes 3 off the window
#: instead of halving it (Zuul's ``window-decrease-type: linear``, factor 3).
#: With +1 per merge the window then grows while fewer than one item in four
#: is rejected at the head and shrinks to the floor above that, where Zuul's
#: halves it on every rejection whatever the rate.  Zuul pays for every item
#: behind a failure with all its builds again; rpmgate keeps the scratch builds
#: and drafts whose tree did not change, so at ordinary failure rates a wide
#: window costs no more work per merged change and only the halving's waiting
#: is lost (docs/benchmarks.md, "Throughput", measures both rules on the same
#: days at 10, 25 and 50 % failures).
WINDOW_DEFAULT = replace(ZUUL_WINDOW, decrease_type="linear", decrease_factor=3)


def window_after_merge(window: int, rule: WindowRule = WINDOW_DEFAULT) -> int:
    """Zuul's ``ChangeQueue.increaseWindowSize``: ``window + factor`` (linear) or
    ``window * factor`` (exponential), not above the ceiling."""
    if rule.increase_type == "exponential":
        grown = window * rule.increase
    else:
        grown = window + rule.increase
    return grown if rule.ceiling is None else min(rule.ceiling, grown)


def window_after_failure(window: int, rule: WindowRule = WINDOW_DEFAULT) -> int:
    """Zuul's ``ChangeQueue.decreaseWindowSize``: ``window - factor`` (linear) or
    ``int(window / factor)`` (exponential), not below the floor."""
    if rule.decrease_type == "linear":
        return max(rule.floor, window - rule.decrease_factor)
    return max(rule.floor, window // rule.decrease_factor)


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
        return window_after_merge(window, rule)
    if result == "rejected" and not passed_tests:
        return window_after_failure(window, rule)
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
