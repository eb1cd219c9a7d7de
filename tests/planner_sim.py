"""An in-memory shell for the planner: runs its actions with outcomes that
complete in an order chosen by the test, so property tests can check the
queue semantics under every interleaving Hypothesis finds.

What an action's start and end do to an item is not re-implemented here: the
simulation applies ``gate.transitions`` and ``gate.queue_rules``, the code the
daemon applies to its rows, so the property tests prove the real rules.

Each simulated change has an intrinsic fate: its scratch build breaks, its
jobs break on their own, it needs other changes in its tested set, it
conflicts with another change in the same project, or its final build breaks.
The serial oracle (:func:`serial_outcome`) processes changes one at a time in
queue order; a correct gate must end with exactly the oracle's result.

At every planning step the simulation also checks the window (Zuul's
semantics): no action gives work to a gate item outside it
(``gate.model.outside_window``), and the gate items with work in progress are
at most ``window``, not counting items the window left behind when it last
narrowed, which only finish the work they had.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field, replace

from gate import transitions
from gate.model import (
    Base,
    ItemKind,
    ItemView,
    QueueState,
    RunningBuild,
    Step,
    TipStep,
    normalize_base,
    outside_window,
)
from gate.planner import (
    Action,
    CancelBuild,
    Dequeue,
    DraftBuild,
    FinalBuild,
    MergeChange,
    Prepare,
    PromoteDraft,
    Publish,
    RunJobs,
    StartAttempt,
    plan,
)
from gate.queue_rules import WINDOW_DEFAULT, WindowRule, window_after_dequeue


@dataclass
class Change:
    id: int
    project: str
    bad_build: bool = False
    bad_jobs: bool = False
    requires: frozenset[int] = frozenset()
    conflicts: frozenset[int] = frozenset()
    final_fails: bool = False
    publish_failures: int = 0


@dataclass
class SimItem:
    change: Change
    #: the item's progress, changed only through gate.transitions
    view: ItemView
    tested: frozenset[int] | None = None
    rejected_on: Base | None = None
    #: the key of the draft the current attempt asked for (its tree)
    draft_key: str | None = None
    #: how its final build was made: "final" (at the tip) or "promoted" (a draft)
    final_via: str = ""

    @property
    def attempt(self) -> int:
        return self.view.attempt


@dataclass
class Simulation:
    changes: list[Change]
    window: int = 20
    rng: random.Random = field(default_factory=random.Random)
    generation: int = 0
    producers: dict[int, tuple[int, ...]] = field(default_factory=dict)
    published: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    builds: dict[str, Step] = field(default_factory=dict)
    build_submissions: Counter[str] = field(default_factory=Counter)
    queue: list[SimItem] = field(default_factory=list)
    #: (kind, item id, attempt) or ("build", key, 0)
    inflight: list[tuple[str, int | str, int]] = field(default_factory=list)
    now: float = 0.0
    publish_attempts: Counter[int] = field(default_factory=Counter)
    #: every invariant violation seen while running
    violations: list[str] = field(default_factory=list)
    window_rule: WindowRule = WINDOW_DEFAULT
    #: planning steps so far; the step at which the window last narrowed
    steps: int = 0
    narrowed_at: int = -1
    #: item id -> the planning step at which it was last given work
    last_work: dict[int, int] = field(default_factory=dict)
    #: window violations seen (an item outside given work, too many items at work)
    window_violations: list[str] = field(default_factory=list)
    #: the largest number of gate items with work in progress at once
    most_busy: int = 0
    #: the backend builds drafts (``QueueState.drafts``)
    drafts_enabled: bool = False
    #: drafts start with the jobs (``draft_start: with-jobs``)
    draft_with_jobs: bool = False
    #: scratch builds are reused across attempts (False: every attempt builds again)
    reuse_builds: bool = True
    #: draft builds by key (the tree), like scratch builds; submissions per key
    drafts: dict[str, Step] = field(default_factory=dict)
    draft_submissions: Counter[str] = field(default_factory=Counter)
    #: draft keys promoted (a promoted draft claims its NVR: never twice)
    promoted: set[str] = field(default_factory=set)
    #: final builds started at the tip (not promoted drafts)
    final_builds: int = 0
    #: item id -> time it was enqueued, time it was published
    enqueued_at: dict[int, float] = field(default_factory=dict)
    published_at: dict[int, float] = field(default_factory=dict)

    # -- the view the planner sees -------------------------------------------------
    def view(self) -> QueueState:
        running = {
            k: RunningBuild(self._change(_last(k)).project, _includes(k))
            for k, s in self.builds.items()
            if s is Step.RUNNING
        }
        return QueueState(
            name="sim",
            items=tuple(self._item_view(i) for i in self.queue),
            generation=self.generation,
            producers=dict(self.producers),
            window=self.window,
            running_builds=running,
            now=self.now,
            drafts=self.drafts_enabled,
            draft_with_jobs=self.draft_with_jobs,
        )

    def _item_view(self, item: SimItem) -> ItemView:
        key = item.view.build_key
        return replace(item.view, build=self.builds.get(key, Step.NONE) if key else Step.NONE)

    def _change(self, cid: int) -> Change:
        return next(c for c in self.changes if c.id == cid)

    def _item(self, cid: int) -> SimItem | None:
        return next((i for i in self.queue if i.change.id == cid), None)

    # -- running -------------------------------------------------------------------
    def enqueue(self, change: Change) -> None:
        view = ItemView(id=change.id, kind=ItemKind.GATE, project=change.project)
        self.queue.append(SimItem(change, view))
        self.enqueued_at[change.id] = self.now

    def start(self, work: tuple[str, int | str, int]) -> None:
        """Work begins; it ends when :meth:`complete_one` picks it."""
        self.inflight.append(work)

    def apply_plan(self) -> int:
        q = self.view()
        actions = plan(q)
        self.steps += 1
        self._check_window(q, actions)
        for action in actions:
            self._apply(action)
        return len(actions)

    def _check_window(self, q: QueueState, actions: list[Action]) -> None:
        outside = outside_window(q.items, q.window)
        for action in actions:
            for item_id in _work_for(action):
                if item_id in outside:
                    self.window_violations.append(
                        f"step {self.steps}: {action} for item {item_id}, outside window {q.window}"
                    )
                self.last_work[item_id] = self.steps
        busy = {i.id for i in q.items if i.kind is ItemKind.GATE and _at_work(i)}
        # what the window left behind when it narrowed finishes, and only that
        left_behind = {i for i in busy & outside if self.last_work.get(i, -1) <= self.narrowed_at}
        self.most_busy = max(self.most_busy, len(busy))
        if len(busy - left_behind) > q.window:
            self.window_violations.append(
                f"step {self.steps}: items {sorted(busy)} at work with window {q.window} "
                f"(left behind by the last narrowing: {sorted(left_behind)})"
            )

    def _apply(self, action: object) -> None:
        match action:
            case StartAttempt(item_id, base):
                item = self._item(item_id)
                assert item is not None
                published = set(self.published[: base.generation])
                if published & set(base.ahead):
                    self.violations.append(f"{item_id} based on {base}: ahead already published")
                item.view = transitions.start_attempt(item.view, base)
                item.tested = None
                item.draft_key = None
            case Prepare(item_id):
                item = self._item(item_id)
                assert item is not None and item.view.merge is Step.NONE
                item.view = transitions.merge_started(item.view)
                self.start(("merge", item_id, item.attempt))
            case RunJobs(item_id):
                item = self._item(item_id)
                assert item is not None and item.view.jobs is Step.NONE
                item.view = transitions.jobs_started(item.view)
                self.start(("jobs", item_id, item.attempt))
            case DraftBuild(item_id):
                item = self._item(item_id)
                assert item is not None and item.view.draft is Step.NONE
                self._draft(item)
            case FinalBuild(item_id):
                item = self._item(item_id)
                assert item is not None and item.view.tip is TipStep.NONE
                item.view = transitions.final_build_started(item.view)
                item.final_via = "final"
                self.final_builds += 1
                self.start(("final", item_id, item.attempt))
            case PromoteDraft(item_id):
                item = self._item(item_id)
                assert item is not None and item.view.tip is TipStep.NONE
                self._check_promotion(item)
                item.view = transitions.promote_started(item.view)
                item.final_via = "promoted"
                self.start(("promote", item_id, item.attempt))
            case MergeChange(item_id):
                item = self._item(item_id)
                assert item is not None
                item.view = transitions.push_started(item.view)
                self.start(("git", item_id, item.attempt))
            case Publish((item_id,)):
                item = self._item(item_id)
                assert item is not None
                item.view = transitions.publish_started(item.view)
                self.start(("publish", item_id, item.attempt))
            case Dequeue(item_id, merged, reason):
                item = self._item(item_id)
                assert item is not None
                if not merged:
                    self.rejected[item_id] = reason
                    assert item.view.base is not None
                    item.rejected_on = normalize_base(item.view.base, self.producers)
                    if item.rejected_on != Base(self.generation, ()):
                        self.violations.append(f"{item_id} rejected on {item.rejected_on}")
                result = "merged" if merged else "rejected"
                passed_tests = item.view.jobs is Step.PASSED
                window = window_after_dequeue(
                    self.window, ItemKind.GATE, result, self.window_rule, passed_tests
                )
                if window < self.window:
                    self.narrowed_at = self.steps
                self.window = window
                self.queue.remove(item)
            case CancelBuild(key):
                self.builds.pop(key, None)
                self.inflight.remove(("build", key, 0))
            case _:
                raise AssertionError(f"unknown action {action!r}")

    # -- drafts --------------------------------------------------------------------
    def _draft(self, item: SimItem) -> None:
        """Ask for the draft of the item's tree: the same tree gets the same draft
        back (the shell's ``Builds.ensure`` by key), a new tree a new draft."""
        assert item.view.build_key is not None
        key = "d:" + _tree(item.view.build_key)
        item.view = transitions.draft_started(item.view)
        item.draft_key = key
        state = self.drafts.get(key)
        if state is Step.PASSED:  # the same tree's draft (``build_reusable``)
            item.view = transitions.draft_finished(item.view, "")
        elif state in (None, Step.FAILED):  # a failed draft is built again
            self.drafts[key] = Step.RUNNING
            self.draft_submissions[key] += 1
            self.start(("draftbuild", key, 0))

    def _check_promotion(self, item: SimItem) -> None:
        """Only the draft of the tree the item was tested with, built, never twice."""
        assert item.view.build_key is not None
        key = "d:" + _tree(item.view.build_key)
        if item.draft_key != key:
            self.violations.append(f"{item.change.id}: promoting {item.draft_key}, tree {key}")
        if self.drafts.get(key) is not Step.PASSED:
            self.violations.append(f"{item.change.id}: promoting {key} in {self.drafts.get(key)}")
        if key in self.promoted:
            self.violations.append(f"{item.change.id}: {key} promoted twice (its NVR burnt)")
        if item.view.jobs is not Step.PASSED:
            self.violations.append(f"{item.change.id}: promoting with jobs {item.view.jobs}")
        self.promoted.add(key)

    def _draft_done(self, key: str) -> None:
        failed = self._change(_last(key)).final_fails
        self.drafts[key] = Step.FAILED if failed else Step.PASSED
        for item in self.queue:
            if item.draft_key == key and item.view.draft is Step.RUNNING:
                failure = "draft build failed" if failed else ""
                item.view = transitions.draft_finished(item.view, failure)

    def pick(self) -> tuple[str, int | str, int]:
        """The in-flight work that ends next: any one (the property tests)."""
        self.now += 1
        return self.inflight.pop(self.rng.randrange(len(self.inflight)))

    def complete_one(self) -> bool:
        """Finish one random piece of in-flight work; False when nothing is in flight."""
        if not self.inflight:
            return False
        kind, item_id, tag = self.pick()
        if kind == "build":
            assert isinstance(item_id, str)
            failed = self._change(_last(item_id)).bad_build
            self.builds[item_id] = Step.FAILED if failed else Step.PASSED
            return True
        if kind == "draftbuild":
            assert isinstance(item_id, str)
            self._draft_done(item_id)
            return True
        assert isinstance(item_id, int)
        item = self._item(item_id)
        if item is None or item.attempt != tag:
            return True  # the attempt was reset meanwhile: its outcome is stale
        handler = getattr(self, f"_finish_{kind}")
        handler(item)
        return True

    def _finish_merge(self, item: SimItem) -> None:
        assert item.view.base is not None
        project = item.change.project
        ahead = [a for a in item.view.base.ahead if self._change(a).project == project]
        merged = [p for p in self.published if self._change(p).project == project]
        tree = [*merged, *[a for a in ahead if a not in merged]]
        if item.change.conflicts & set(tree):
            item.view = transitions.merge_failed(item.view, "merge conflict")
            return
        key = "/".join(map(str, [*tree, item.change.id]))
        if not self.reuse_builds:  # every attempt builds again (Zuul has no reuse)
            key = f"{key}@{item.attempt}"
        item.view = transitions.merged(item.view, key)
        if key not in self.builds:
            self.builds[key] = Step.RUNNING
            self.build_submissions[key] += 1
            self.start(("build", key, 0))

    def _finish_jobs(self, item: SimItem) -> None:
        assert item.view.base is not None
        base = normalize_base(item.view.base, self.producers)
        tested = frozenset(self.published[: base.generation]) | set(base.ahead) | {item.change.id}
        item.tested = tested
        broken = item.change.bad_jobs or not item.change.requires <= tested
        item.view = transitions.jobs_finished(item.view, "jobs failed" if broken else "")

    def _finish_final(self, item: SimItem) -> None:
        failure = "final build failed" if item.change.final_fails else ""
        item.view = transitions.final_build_finished(item.view, failure)

    def _finish_promote(self, item: SimItem) -> None:
        item.view = transitions.final_build_finished(item.view, "")

    def _finish_git(self, item: SimItem) -> None:
        item.view = transitions.push_finished(item.view, "")

    def _finish_publish(self, item: SimItem) -> None:
        cid = item.change.id
        self.publish_attempts[cid] += 1
        if self.publish_attempts[cid] <= item.change.publish_failures:
            item.view = transitions.publish_failed(item.view, "publish failed", self.now + 2)
            return
        self.generation += 1
        self.producers[self.generation] = (cid,)
        self.published.append(cid)
        self.published_at[cid] = self.now
        if item.final_via == "promoted" and item.draft_key not in self.promoted:
            self.violations.append(f"{cid} published from an unpromoted draft")
        if item.tested != frozenset(self.published):
            self.violations.append(
                f"generation {self.generation} = {sorted(self.published)} but item {cid} "
                f"was tested on {sorted(item.tested or ())}"
            )
        item.view = transitions.published(item.view)

    def run(self, arrivals: list[int], max_steps: int = 5_000) -> None:
        """Enqueue changes as they arrive (``arrivals[i]``: steps before change i enters)."""
        pending = list(zip(arrivals, self.changes, strict=True))
        for _ in range(max_steps):
            while pending and pending[0][0] <= 0:
                self.enqueue(pending.pop(0)[1])
            if pending:
                pending[0] = (pending[0][0] - 1, pending[0][1])
            self.apply_plan()
            if not self.complete_one():
                if not pending and not self.queue:
                    return
                if not pending:
                    # nothing in flight: only a backoff timer can still be running
                    self.now += 1
                    if self.now > 5_000:
                        raise AssertionError(f"queue stuck: {self.view()}")
        raise AssertionError(f"did not drain in {max_steps} steps: {self.view()}")


def serial_outcome(changes: list[Change]) -> tuple[list[int], set[int]]:
    """What a gate testing one change at a time would do: (merged in order, rejected)."""
    merged: list[int] = []
    rejected: set[int] = set()
    for change in changes:
        tested = set(merged) | {change.id}
        ok = (
            not change.conflicts & set(merged)
            and not change.bad_build
            and not change.bad_jobs
            and change.requires <= tested
            and not change.final_fails
        )
        if ok:
            merged.append(change.id)
        else:
            rejected.add(change.id)
    return merged, rejected


def _work_for(action: Action) -> tuple[int, ...]:
    """The items an action gives work to (starts, merges, builds, tests, lands)."""
    match action:
        case StartAttempt(item_id) | Prepare(item_id) | RunJobs(item_id):
            return (item_id,)
        case FinalBuild(item_id) | MergeChange(item_id) | DraftBuild(item_id):
            return (item_id,)
        case PromoteDraft(item_id):
            return (item_id,)
        case Publish(item_ids):
            return item_ids
    return ()


def _at_work(item: ItemView) -> bool:
    """Work of the item's attempt is running or about to (a merge, its build, jobs, a tip
    step)."""
    running = (item.merge, item.build, item.jobs, item.tip_state, item.draft)
    return Step.RUNNING in running


def _tree(key: str) -> str:
    """A scratch build key without the attempt a gate without reuse adds."""
    return key.split("@", 1)[0]


def _includes(key: str) -> frozenset[int]:
    return frozenset(map(int, _tree(key).removeprefix("d:").split("/")))


def _last(key: str) -> int:
    return int(_tree(key).removeprefix("d:").rsplit("/", 1)[-1])
