"""Pure domain objects: an item's progress, what the planner sees of a queue.

The shell loads these from the database (``gate.queue_view``); the planner
(``gate.planner``) reads them and returns actions; ``gate.transitions`` says
what starting and finishing each action does to an item.  Nothing here does
I/O.

An item's *attempt* is one try at testing it on one *base*.  A base says what
the item is tested on top of: a published generation plus the items ahead of
it that were not failing when the attempt started.  When an item ahead merges
and publishes generation g+1, a base ``(g, (A, B))`` and ``(g+1, (B,))`` name
the same package set; :func:`normalize_base` maps the first to the second so a
merge ahead never resets the items behind (only a failure ahead does).

This module is the one vocabulary of an item's state: the enums stored in the
rows, the predicates the planner, the shell and the API ask (``committed``,
``pushing``, ``failing``) and the one label packagers see (:class:`ItemState`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class ItemKind(StrEnum):
    GATE = "gate"
    #: merged in git already (direct push, or a tip item whose publish failed)
    POST = "post"


class Step(StrEnum):
    """Progress of one piece of work: a merge, a build, a job run, a tip step."""

    NONE = "none"  # not started
    RUNNING = "running"  # intent recorded, outcome not yet known
    PASSED = "passed"
    FAILED = "failed"


class TipStep(StrEnum):
    """Where an item is in the tip protocol (each step durable and idempotent)."""

    NONE = "none"
    FINAL_BUILD = "final_build"
    MERGE = "merge"
    PUBLISH = "publish"
    DONE = "done"


class BuildState(StrEnum):
    """A build row's state (scratch or final)."""

    RUNNING = "running"  # recorded, submitted or about to be; outcome unknown
    PASSED = "passed"
    FAILED = "failed"
    CANCELED = "canceled"  # stopped because no attempt needs it any more
    #: an unpromoted draft no item can use, past its backend's ``draft_retention``:
    #: being deleted (``collecting``), then let go of (``collected``; ``reason``
    #: says whether the backend deleted it or keeps it).  gate/draft_gc.py
    COLLECTING = "collecting"
    COLLECTED = "collected"


class ItemState(StrEnum):
    """Where an active item is, in words a packager understands (the status label)."""

    #: behind the first ``window`` gate items: nothing is started for it (Zuul's window)
    OUTSIDE_WINDOW = "waiting (outside the window)"
    MERGING = "speculative merge"
    BUILDING = "building"
    #: its own scratch build passed; its jobs wait for the builds of items ahead
    BUILT = "built, waiting for the builds ahead"
    TESTING = "testing"
    PASSED = "passed, waiting for the tip"
    #: passed; its final build runs ahead of the tip as a draft (Koji >= 1.34, local)
    DRAFT_BUILD = "passed, final build as a draft"
    #: passed; its draft final build is done and is promoted when it reaches the tip
    DRAFT_BUILT = "passed, draft built, waiting for the tip"
    FAILING = "failing"
    FINAL_BUILD = "final build"
    MERGE = "merging"
    PUBLISHING = "publishing"
    PUBLISH_RETRY = "publish retry (post item)"
    PUBLISHED = "published"
    #: a post item held out of the repository (its checks or bootstrap build failed)
    BLOCKED = "blocked"


@dataclass(frozen=True, order=True)
class Base:
    generation: int
    ahead: tuple[int, ...] = ()


@dataclass(frozen=True)
class ItemView:
    """An item as the planner sees it: identity and the progress of its current attempt."""

    id: int
    kind: ItemKind
    project: str
    base: Base | None = None
    #: speculative merge of the current attempt (gate items)
    merge: Step = Step.NONE
    #: scratch build (gate items) or final build (post items) of the current attempt
    build_key: str | None = None
    build: Step = Step.NONE
    jobs: Step = Step.NONE
    tip: TipStep = TipStep.NONE
    #: state of the step named by ``tip``
    tip_state: Step = Step.NONE
    #: the planner may not retry the current tip step before this time (backoff)
    not_before: float = 0.0
    failure: str = ""
    #: attempts started so far (0: never tested)
    attempt: int = 0
    #: a post item for a project the repository has no package of yet
    bootstrap: bool = False
    #: a post item a release engineer published although its checks failed
    forced: bool = False
    #: a post item whose branch moved on past its commit (a newer push, a merge on
    #: top of it): why it has nothing left to publish, once blocked
    superseded_by: str = ""
    #: the draft final build of the attempt's tree, started ahead of the tip (gate
    #: items, backends with drafts): promoted at the tip instead of building there
    draft: Step = Step.NONE

    @property
    def failing(self) -> bool:
        """Failing on its current attempt (its own fault only if everything ahead passes)."""
        if self.kind is ItemKind.POST and (self.tip is TipStep.NONE or self.forced):
            return False
        if self.tip is TipStep.FINAL_BUILD and self.tip_state is Step.FAILED:
            return True
        if self.tip is TipStep.MERGE and self.tip_state is Step.FAILED:
            return True
        if self.tip is TipStep.NONE and self.draft is Step.FAILED:
            # the final build of its own tree failed (no item of its project is
            # ahead, so the tree is its alone): its fault, rejected at the head
            return True
        return Step.FAILED in (self.merge, self.build, self.jobs)

    @property
    def blocked(self) -> bool:
        """A post item held out of the repository until a newer commit, a retry or a
        release engineer decides: its checks failed on the repository it would
        make, or (bootstrap) its first build failed.  Items behind go on without it.
        """
        if self.kind is not ItemKind.POST or self.forced or self.tip is TipStep.DONE:
            return False
        if self.jobs is Step.FAILED:
            return True
        final_failed = self.tip is TipStep.FINAL_BUILD and self.tip_state is Step.FAILED
        return self.bootstrap and final_failed

    @property
    def pushing(self) -> bool:
        """Its merge is being pushed: the outcome decides, nothing may reset it now."""
        return self.tip is TipStep.MERGE and self.tip_state is Step.RUNNING

    @property
    def committed(self) -> bool:
        """Merged in git: it can no longer be rejected, only published (or, a post
        item, held back or superseded)."""
        if self.kind is ItemKind.POST or self.tip in (TipStep.PUBLISH, TipStep.DONE):
            return True
        return self.tip is TipStep.MERGE and self.tip_state is Step.PASSED

    @property
    def at_tip(self) -> bool:
        """Its merge or publication has begun (admin commands wait for it to end)."""
        return self.tip in (TipStep.MERGE, TipStep.PUBLISH, TipStep.DONE)

    @property
    def state(self) -> ItemState:
        """The one label of where the item is (status API, CLI, page)."""
        if self.tip is TipStep.DONE:
            return ItemState.PUBLISHED
        if self.blocked:
            return ItemState.BLOCKED
        if self.tip is TipStep.PUBLISH:
            failed = self.tip_state is Step.FAILED
            return ItemState.PUBLISH_RETRY if failed else ItemState.PUBLISHING
        if self.tip is TipStep.MERGE:
            return ItemState.MERGE
        if self.tip is TipStep.FINAL_BUILD:
            if self.tip_state is Step.FAILED:
                return ItemState.FAILING
            if self.kind is ItemKind.POST and self.tip_state is Step.PASSED:
                # a post item is tested after its final build
                return ItemState.PASSED if self.jobs is Step.PASSED else ItemState.TESTING
            return ItemState.FINAL_BUILD
        if self.kind is ItemKind.POST and self.tip is TipStep.NONE:
            return ItemState.FINAL_BUILD
        if self.failing:
            return ItemState.FAILING
        if self.base is None:
            return ItemState.OUTSIDE_WINDOW
        if self.merge in (Step.NONE, Step.RUNNING):
            return ItemState.MERGING
        if self.jobs is Step.RUNNING:
            return ItemState.TESTING
        if self.jobs is Step.PASSED:
            if self.draft is Step.RUNNING:
                return ItemState.DRAFT_BUILD
            if self.draft is Step.PASSED:
                return ItemState.DRAFT_BUILT
            return ItemState.PASSED
        if self.build is Step.PASSED:
            return ItemState.BUILT
        return ItemState.BUILDING


@dataclass(frozen=True)
class RunningBuild:
    project: str
    #: items whose changes the build's speculative merge contains (its own included)
    includes: frozenset[int]


@dataclass(frozen=True)
class QueueState:
    name: str
    #: in queue order (see ``gate.queue_rules.queue_order``)
    items: tuple[ItemView, ...]
    generation: int
    #: items that produced each generation after the oldest base still in use
    #: (empty for a rollback or republish)
    producers: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    window: int = 20
    #: scratch builds the backend is running, by key
    running_builds: Mapping[str, RunningBuild] = field(default_factory=dict)
    now: float = 0.0
    #: the queue's backend builds drafts (Koji >= 1.34 allowing them, local): final
    #: builds start ahead of the tip and are promoted there
    drafts: bool = False
    #: the queue's ``draft_start: with-jobs``: a draft starts when the item's jobs
    #: start, not when they passed (issue 13's latency, at the price of drafts of
    #: items whose jobs then fail)
    draft_with_jobs: bool = False


def normalize_base(base: Base, producers: Mapping[int, tuple[int, ...]]) -> Base:
    """Fold items ahead that have since been published into the generation number."""
    generation, ahead, start = base.generation, base.ahead, 0
    while start < len(ahead):
        made = producers.get(generation + 1)
        if not made or ahead[start : start + len(made)] != made:
            break
        generation, start = generation + 1, start + len(made)
    return base if start == 0 else Base(generation, ahead[start:])


def outside_window(items: Iterable[ItemView], window: int) -> frozenset[int]:
    """The gate items the window leaves waiting, given the items in queue order.

    Zuul's rule (``ChangeQueue.isActionable`` in zuul/model.py: ``item in
    self.queue[:self.window]``): only the first ``window`` gate items are worked
    on; failing items count, as they stay in Zuul's queue until they reach its
    head.  Post items are not counted: they are always worked on.  An item
    whose merge is being pushed or published is never left waiting (it is at
    the head anyway).  The planner applies this rule; the status labels use it.
    """
    outside = []
    position = 0
    for item in items:
        if item.kind is not ItemKind.GATE:
            continue
        if position >= window and not (item.pushing or item.committed):
            outside.append(item.id)
        position += 1
    return frozenset(outside)


def item_states(items: Sequence[ItemView], window: int) -> dict[int, ItemState]:
    """Each active item's label, the window taken into account (items in queue order)."""
    waiting = outside_window(items, window)
    return {i.id: ItemState.OUTSIDE_WINDOW if i.id in waiting else i.state for i in items}
