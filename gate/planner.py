"""The queue logic: given a queue's state, the next actions.  Pure, no I/O.

Semantics follow Zuul's dependent pipeline:

* Items share one queue; each is tested on a base made of the published
  generation plus every *non-failing* item ahead of it (post items first).
* When an item fails, the items behind re-parent onto the nearest non-failing
  item ahead of it: their desired base no longer contains the failed item, so
  they get a new attempt (a *reset*).  Work whose inputs did not change (a
  scratch build keyed by project, tree, target and overlay) is reused.
* An item is rejected only when it fails while at the head of the queue, so
  with every item ahead of it merged (invariant I5).  A failing item further
  back waits: if an item ahead of it fails too, it is reset and re-tested.
* Only the head item runs the tip protocol (final build, merge, publish), so
  generations are published in queue order (I3).
* A dynamic window bounds how many gate items are being worked on.

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
class MergeChange:
    """Tip step 2: merge the tested merge commit into the branch."""

    item_id: int


@dataclass(frozen=True)
class Publish:
    """Tip step 3: publish generation N+1 with these items' final builds.

    A gate item publishes alone.  The post items at the head publish together
    once all their final builds are done: they were merged outside the gate
    and never tested, so publishing them one by one could expose a state in
    between (a package without the new dependency it needs).
    """

    item_ids: tuple[int, ...]


@dataclass(frozen=True)
class Dequeue:
    """Remove the item and report it: merged, or rejected with ``reason``."""

    item_id: int
    merged: bool
    reason: str = ""


@dataclass(frozen=True)
class CancelBuild:
    """A running scratch build no current attempt needs any more."""

    key: str


Action = (
    StartAttempt | Prepare | RunJobs | FinalBuild | MergeChange | Publish | Dequeue | CancelBuild
)


def plan(q: QueueState) -> list[Action]:
    actions: list[Action] = []
    chain: list[int] = []  # non-failing items ahead, in queue order
    ready: dict[int, bool] = {}  # item id -> its RPMs can be put in a speculative repo
    referenced: set[str] = set()  # build keys current attempts use
    gate_position = 0
    post_batch = _post_batch(q)
    for index, item in enumerate(q.items):
        is_head = index == 0
        if item.kind is ItemKind.POST:
            actions.extend(_post_item(item, post_batch))
            if item.tip is TipStep.DONE:
                continue  # published: the generation carries it
            if not item.failing:
                chain.append(item.id)
            ready[item.id] = item.tip is not TipStep.NONE and not (
                item.tip is TipStep.FINAL_BUILD and item.tip_state is not Step.PASSED
            )
            continue

        in_window = gate_position < q.window
        gate_position += 1
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

        desired = Base(q.generation, tuple(chain))
        current = item.base is not None and normalize_base(item.base, q.producers) == desired
        if not current:
            if item.base is not None or in_window:
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
        assert item.base is not None
        if item.jobs is Step.NONE and all(ready.get(a, True) for a in item.base.ahead):
            actions.append(RunJobs(item.id))
        elif item.jobs is Step.PASSED and is_head:
            actions.extend(_tip_steps(item))

    actions.extend(_obsolete_builds(q, referenced))
    return actions


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


def _tip_steps(item: ItemView) -> list[Action]:
    """The head item's next tip step, before it is committed (merged)."""
    if item.tip is TipStep.NONE:
        return [FinalBuild(item.id)]
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


def _post_batch(q: QueueState) -> tuple[int, ...] | None:
    """The post items at the head, if they are all ready to publish together."""
    batch: list[int] = []
    for item in q.items:
        if item.kind is not ItemKind.POST:
            break
        if item.failing or item.tip is TipStep.DONE:
            continue
        built = item.tip is TipStep.FINAL_BUILD and item.tip_state is Step.PASSED
        retry = item.tip is TipStep.PUBLISH and item.tip_state in (Step.NONE, Step.FAILED)
        if not (built or (retry and q.now >= item.not_before)):
            return None
        batch.append(item.id)
    return tuple(batch) or None


def _post_item(item: ItemView, batch: tuple[int, ...] | None) -> list[Action]:
    """Commits merged outside the gate: final build at once, publish as one batch."""
    if item.tip is TipStep.NONE:
        return [FinalBuild(item.id)]
    if item.tip is TipStep.FINAL_BUILD and item.tip_state is Step.FAILED:
        return [Dequeue(item.id, merged=False, reason=item.failure)]
    if item.tip is TipStep.DONE:
        return [Dequeue(item.id, merged=True)]
    if batch and item.id == batch[0]:
        return [Publish(batch)]
    return []
