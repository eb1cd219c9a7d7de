"""The queue logic: given a queue's state, the next actions.  Pure, no I/O.

Semantics follow Zuul's dependent pipeline:

* Items share one queue; each is tested on a base made of the published
  generation plus every *non-failing* item ahead of it (post items first).
* When an item fails, the items behind re-parent onto the nearest non-failing
  item ahead of it: their desired base no longer contains the failed item, so
  they get a new attempt (a *reset*).  Work whose inputs did not change (a
  scratch build keyed by project, tree, target, backend, named build and
  package: ``gate.builds.scratch_key``) is reused.
* An item is rejected only when it fails while at the head of the queue, so
  with every item ahead of it merged (invariant I5).  A failing item further
  back waits: if an item ahead of it fails too, it is reset and re-tested.
* Only the head item runs the tip protocol (final build, merge, publish), so
  generations are published in queue order (I3).
* The window is Zuul's (``ChangeQueue.isActionable``): only the first
  ``window`` gate items in queue order are worked on (given a base, merged,
  built, tested).  An item behind waits where it is: nothing is started for
  it and its base is not even looked at, so its attempt is not reset while it
  waits.  Work it had begun before the window shrank runs to its end (Zuul
  keeps the running builds of an item the window no longer covers) and its
  scratch builds are kept: they are content-keyed, so when the item enters
  the window and is given a base, the builds whose key did not change are
  reused.  The window's size follows Zuul's dynamic rule
  (``gate.queue_rules``).
* Drafts (``QueueState.drafts``: Koji >= 1.34, the local backend): once a
  gate item's jobs passed, the final build of its tested tree starts as a
  draft, in parallel with the items ahead; at the tip the draft is promoted
  instead of built.  The draft is the attempt's: a tree changes only with a
  new attempt (an item of its project ahead failed, the branch moved), which
  asks for its draft again (the shell keys drafts by tree, so an unchanged
  tree gets the same draft back), and only the current attempt's draft is
  ever promoted.  So a draft may start even with an item of its project
  ahead (its tree then contains that change): if that item fails, the draft
  is wasted, never promoted, and burns no NVR; waiting instead would make the
  items of one project build one after the other at the tip (the tip of a
  busy project is then serial again).  A draft that fails makes the item
  fail (the build of its own tree), rejected at the head only (I5).  With the
  queue's ``draft_start: with-jobs`` (``QueueState.draft_with_jobs``) the draft
  starts when the jobs start: the tree is already the tested one, and the
  draft's time hides under the jobs'; a draft of an item whose jobs then fail
  is never promoted (nor is any draft of a non-head item, nor of a head whose
  jobs have not passed).
* Post items (commits that reached a branch outside the gate, and the first
  commit of each project: its *bootstrap*) go first.  Each is final-built and
  tested like a gate item, on the published generation plus the post items
  ahead.  One whose checks fail is *blocked*: it is not published, items
  behind go on without it, and it moves behind the other post items, once
  (a push that needs a later push is then tested on top of it; moving once
  keeps the order, and so the resets, finite).  It stays until a
  newer commit of its branch supersedes it, a release engineer publishes or
  drops it, or its base changes (then it is tested again).  While nothing is published yet, a
  blocked bootstrap holds the first generation back: it carries every
  project or waits.

The planner is re-run after every event; it names work that is not started
yet (``Step.NONE``).  The shell records each action's intent before doing it,
so the same action is never emitted twice for work that is under way.
"""

from __future__ import annotations

from dataclasses import dataclass

from gate.model import (
    Base,
    ItemKind,
    ItemView,
    QueueState,
    Step,
    TipStep,
    normalize_base,
)


@dataclass(frozen=True)
class StartAttempt:
    """Throw away the item's current attempt (if any) and test it on ``base``."""

    item_id: int
    base: Base


@dataclass(frozen=True)
class Prepare:
    """Speculative merge of the item's change, then start or reuse its scratch build."""

    item_id: int


@dataclass(frozen=True)
class RunJobs:
    """Run the queue's jobs against the item's speculative repository."""

    item_id: int


@dataclass(frozen=True)
class FinalBuild:
    """Tip step 1: the non-scratch build of the tested sources."""

    item_id: int


@dataclass(frozen=True)
class DraftBuild:
    """The final build of a passed item's tree, started ahead of the tip as a draft.

    Only for an item no item of its project is ahead of: its tree (the branch
    plus its change) then changes only if its attempt does, and a new attempt
    asks again (the same tree gets the same draft back).
    """

    item_id: int


@dataclass(frozen=True)
class PromoteDraft:
    """Tip step 1 with a draft: promote the item's draft to the real build."""

    item_id: int


@dataclass(frozen=True)
class MergeChange:
    """Tip step 2: merge the tested merge commit into the branch."""

    item_id: int


@dataclass(frozen=True)
class Publish:
    """Tip step 3: publish generation N+1 with these items' final builds.

    A gate item publishes alone.  The post items at the head publish together
    once every one of them is built and tested (or forced by a release
    engineer): each was tested on the ones ahead of it, so the last one's
    repository is the batch's, and one generation replaces many.
    """

    item_ids: tuple[int, ...]


@dataclass(frozen=True)
class Dequeue:
    """Remove the item and report it: merged, or rejected with ``reason``."""

    item_id: int
    merged: bool
    reason: str = ""
    #: not merged, not rejected: a later commit of the branch replaced it (post items)
    superseded: bool = False


@dataclass(frozen=True)
class CancelBuild:
    """A running scratch build no current attempt needs any more."""

    key: str


Action = (
    StartAttempt
    | Prepare
    | RunJobs
    | DraftBuild
    | FinalBuild
    | PromoteDraft
    | MergeChange
    | Publish
    | Dequeue
    | CancelBuild
)


def plan(q: QueueState) -> list[Action]:
    """The next actions for a queue.

    Linear in the queue length: each item is looked at once, and only items
    that may be given work (post items, gate items inside the window) have
    their base compared with the one they should have, whose length is
    bounded by the post items plus the window.
    """
    actions: list[Action] = []
    chain: list[int] = []  # non-failing items ahead, in queue order
    ready: dict[int, bool] = {}  # item id -> its RPMs can be put in a speculative repo
    referenced: set[str] = set()  # build keys current attempts use
    gate_position = 0
    # an item ahead that must be published (or dropped) before a gate item's tip
    in_the_way = False
    # post items ready to publish together, while every one so far is
    batch: list[int] = []
    batching = True
    for item in q.items:
        if item.kind is ItemKind.POST:
            if item.tip is TipStep.DONE:
                actions.append(Dequeue(item.id, merged=True))
                continue  # published: the generation carries it
            if item.blocked and item.superseded_by:
                # the branch moved on past it: the repository will be built from a
                # newer commit, the held-back one has nothing left to publish
                actions.append(
                    Dequeue(item.id, merged=False, reason=item.superseded_by, superseded=True)
                )
                continue
            if item.tip is TipStep.PUBLISH:
                # being published, or retrying with backoff: never reset
                retry = item.tip_state in (Step.NONE, Step.FAILED) and q.now >= item.not_before
                batching = batching and retry
                if batching:
                    batch.append(item.id)
                chain.append(item.id)
                ready[item.id] = in_the_way = True
                continue
            desired = Base(q.generation, tuple(chain))
            if item.base is None or normalize_base(item.base, q.producers) != desired:
                actions.append(StartAttempt(item.id, desired))
                chain.append(item.id)
                ready[item.id], in_the_way, batching = False, True, False
                continue
            built = item.tip is TipStep.FINAL_BUILD and item.tip_state is Step.PASSED
            if item.tip is TipStep.NONE:
                actions.append(FinalBuild(item.id))
            elif not built and item.failing and not item.bootstrap:
                actions.append(Dequeue(item.id, merged=False, reason=item.failure))
                continue
            elif built and item.jobs is Step.NONE and _all_ready(item, ready):
                actions.append(RunJobs(item.id))
            if item.blocked:
                if item.bootstrap and q.generation == 0:
                    # the first generation carries every project or waits
                    in_the_way, batching = True, False
                continue  # items behind go on without it
            chain.append(item.id)
            ready[item.id], in_the_way = built, True
            tested = item.jobs is Step.PASSED or (item.forced and item.jobs is Step.FAILED)
            batching = batching and built and tested
            if batching:
                batch.append(item.id)
            continue

        is_head = not in_the_way
        in_the_way = True
        in_window = gate_position < q.window
        gate_position += 1
        if item.tip is not TipStep.NONE:  # (tested: the only ones that may be landing)
            if item.pushing:
                chain.append(item.id)
                ready[item.id] = True
                continue
            if item.tip is TipStep.DONE:
                # Published: the generation already carries it, so no base names it.
                actions.append(Dequeue(item.id, merged=True))
                continue
            if item.committed:
                # Merged in git: it is published in order, never reset.
                actions.extend(_publish_steps(item, is_head, q.now))
                chain.append(item.id)
                ready[item.id] = True
                continue

        if not in_window:
            # Zuul: ``ChangeQueue.isActionable`` is ``item in queue[:window]`` and
            # ``PipelineManager._processOneItem`` prepares and runs jobs only for an
            # actionable item (zuul/model.py, zuul/manager/__init__.py).  Every gate
            # item behind this one is outside too: none gets work, none is reset.
            if item.base is not None and item.build_key:
                # its scratch build is kept for when it enters the window
                referenced.add(item.build_key)
            continue

        desired = Base(q.generation, tuple(chain))
        current = item.base is not None and normalize_base(item.base, q.producers) == desired
        if not current:
            actions.append(StartAttempt(item.id, desired))
            chain.append(item.id)
            ready[item.id] = False
            continue

        if item.build_key:
            referenced.add(item.build_key)
        if item.failing:
            if is_head:
                actions.append(Dequeue(item.id, merged=False, reason=item.failure))
            continue  # items behind re-parent past it

        chain.append(item.id)
        ready[item.id] = item.build is Step.PASSED
        if item.merge is Step.NONE:
            actions.append(Prepare(item.id))
            continue
        if item.build is not Step.PASSED:
            continue
        if item.jobs is Step.NONE and _all_ready(item, ready):
            actions.append(RunJobs(item.id))
        elif item.jobs is Step.PASSED and is_head:
            actions.extend(_tip_steps(item, q.drafts))
        elif q.drafts and item.draft is Step.NONE and _draft_may_start(item, q):
            # (tip NONE: an item with a tip step is the head's, handled above)
            actions.append(DraftBuild(item.id))

    if batching and batch:
        actions.append(Publish(tuple(batch)))
    actions.extend(_obsolete_builds(q, referenced))
    return actions


def _draft_may_start(item: ItemView, q: QueueState) -> bool:
    """Its jobs passed (``draft_start: jobs-passed``), or started (``with-jobs``: the
    tree is the tested one already; the draft's time is spent under the jobs')."""
    if q.draft_with_jobs:
        return item.jobs is not Step.NONE
    return item.jobs is Step.PASSED


def _all_ready(item: ItemView, ready: dict[int, bool]) -> bool:
    """Every item in the item's base has RPMs to put in its speculative repo."""
    assert item.base is not None
    return all(ready.get(a, True) for a in item.base.ahead)


def _obsolete_builds(q: QueueState, referenced: set[str]) -> list[Action]:
    """Running scratch builds that no attempt can ever use again.

    A build nobody references *now* may still be wanted: one made on top of a
    failing item comes back into use if that item is reset and passes (I5).
    Only a build that contains a change which left the queue rejected is dead.
    """
    alive = {item.id for item in q.items} | {i for made in q.producers.values() for i in made}
    return [
        CancelBuild(key)
        for key, build in sorted(q.running_builds.items())
        if key not in referenced and not build.includes <= alive
    ]


def _tip_steps(item: ItemView, drafts: bool) -> list[Action]:
    """The head item's next tip step, before it is committed (merged).

    With drafts, the head asks for its draft too: a new attempt on an unchanged
    tree gets its draft back at once, so only a new tree is built at the tip.
    """
    if item.tip is TipStep.NONE:
        if item.draft is Step.PASSED:
            return [PromoteDraft(item.id)]
        if item.draft is Step.RUNNING:
            return []  # promoted when it is built
        return [DraftBuild(item.id) if drafts else FinalBuild(item.id)]
    if item.tip is TipStep.FINAL_BUILD and item.tip_state is Step.PASSED:
        return [MergeChange(item.id)]
    return []


def _publish_steps(item: ItemView, is_head: bool, now: float) -> list[Action]:
    """A committed item: publish at the head (retrying with backoff), then report."""
    if item.tip is TipStep.DONE:
        return [Dequeue(item.id, merged=True)]
    if not is_head or now < item.not_before:
        return []
    if item.tip is TipStep.MERGE and item.tip_state is Step.PASSED:
        return [Publish((item.id,))]
    if item.tip is TipStep.PUBLISH and item.tip_state in (Step.NONE, Step.FAILED):
        return [Publish((item.id,))]
    return []
