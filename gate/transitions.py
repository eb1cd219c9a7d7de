"""What starting and finishing each piece of work does to an item.  Pure.

The planner names the next actions; these functions are the only place that
says how an item's progress (:class:`~gate.model.ItemView`) changes when an
action starts (its intent is recorded) and when it ends (its outcome is
recorded).  The shell applies them to the rows (``gate.items``) and the
planner's property tests apply them to their simulated queue
(``tests/planner_sim.py``), so the tests prove the code the daemon runs.

Each function takes the item as it is and returns it as it becomes; an empty
``failure`` means the work passed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TypeVar

from gate.model import Base, ItemView, Step, TipStep

V = TypeVar("V", bound=ItemView)


def start_attempt(item: V, base: Base) -> V:
    """A new try on ``base``: everything of the previous attempt is thrown away."""
    return replace(
        item,
        attempt=item.attempt + 1,
        base=base,
        merge=Step.NONE,
        build_key=None,
        build=Step.NONE,
        jobs=Step.NONE,
        tip=TipStep.NONE,
        tip_state=Step.NONE,
        failure="",
        # a draft of the old attempt is left unpromoted; the new attempt asks for
        # one again, and gets the same build back if its tree did not change
        draft=Step.NONE,
    )


def merge_started(item: V) -> V:
    """The speculative merge of the attempt runs."""
    return replace(item, merge=Step.RUNNING)


def merged(item: V, build_key: str) -> V:
    """The speculative merge worked; ``build_key`` names its scratch build."""
    return replace(item, merge=Step.PASSED, build_key=build_key, failure="")


def merge_failed(item: V, failure: str) -> V:
    """The change does not merge on this base (a conflict, a change it carries)."""
    return replace(item, merge=Step.FAILED, failure=failure)


def merge_interrupted(item: V) -> V:
    """A restart found the merge running: merges are cheap and idempotent, redo it."""
    return replace(item, merge=Step.NONE)


def jobs_started(item: V) -> V:
    return replace(item, jobs=Step.RUNNING)


def jobs_finished(item: V, failure: str) -> V:
    """Jobs done; a failure the draft recorded meanwhile (``draft_start: with-jobs``)
    is kept when the jobs pass."""
    kept = item.failure if item.draft is Step.FAILED else ""
    return replace(item, jobs=Step.FAILED if failure else Step.PASSED, failure=failure or kept)


def jobs_interrupted(item: V) -> V:
    """A restart found jobs running: run them again."""
    return replace(item, jobs=Step.NONE)


def final_build_started(item: V) -> V:
    """Tip step 1 begins."""
    return replace(item, tip=TipStep.FINAL_BUILD, tip_state=Step.RUNNING)


def final_build_finished(item: V, failure: str) -> V:
    return replace(item, tip_state=Step.FAILED if failure else Step.PASSED, failure=failure)


def final_build_not_started(item: V) -> V:
    """A restart found the step recorded but no build behind it: start it again."""
    return replace(item, tip=TipStep.NONE, tip_state=Step.NONE)


def draft_started(item: V) -> V:
    """The final build of the attempt's tree runs ahead of the tip, as a draft."""
    return replace(item, draft=Step.RUNNING)


def draft_finished(item: V, failure: str) -> V:
    """The draft is built (or failed: the item fails, and is rejected at the head).
    A failure the jobs recorded first (``draft_start: with-jobs``) is kept."""
    kept = item.failure if item.jobs is Step.FAILED else ""
    return replace(item, draft=Step.FAILED if failure else Step.PASSED, failure=failure or kept)


def draft_not_started(item: V) -> V:
    """A restart found the draft recorded but no build behind it: ask again."""
    return replace(item, draft=Step.NONE)


def promote_started(item: V) -> V:
    """Tip step 1 with a draft: the draft is promoted to the real build (a metadata
    operation); it ends as the final build does (``final_build_finished``)."""
    return replace(item, tip=TipStep.FINAL_BUILD, tip_state=Step.RUNNING)


def push_started(item: V) -> V:
    """Tip step 2: the tested merge is being pushed to the branch."""
    return replace(item, tip=TipStep.MERGE, tip_state=Step.RUNNING)


def push_finished(item: V, failure: str) -> V:
    return replace(item, tip_state=Step.FAILED if failure else Step.PASSED, failure=failure)


def push_not_done(item: V) -> V:
    """A restart found the push unfinished and the commit not on the branch: the final
    build is there, push again."""
    return replace(item, tip=TipStep.FINAL_BUILD, tip_state=Step.PASSED)


def publish_started(item: V) -> V:
    """Tip step 3: the generation with this item's final build is being written."""
    return replace(item, tip=TipStep.PUBLISH, tip_state=Step.RUNNING)


def publish_failed(item: V, failure: str, retry_at: float) -> V:
    """Publishing failed after the merge: retried (not before ``retry_at``), never undone."""
    return replace(
        item, tip=TipStep.PUBLISH, tip_state=Step.FAILED, failure=failure, not_before=retry_at
    )


def publish_interrupted(item: V) -> V:
    """A restart found the publish running: the publisher is idempotent, run it again."""
    return replace(item, tip_state=Step.NONE)


def published(item: V) -> V:
    return replace(item, tip=TipStep.DONE, tip_state=Step.PASSED, failure="", not_before=0.0)


def retry(item: V) -> V:
    """A release engineer's retry: forget the attempt, so the planner starts a new one
    (a failed final build is built again, the jobs run again)."""
    return replace(item, base=None, failure="")
