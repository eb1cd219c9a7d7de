"""What the status page says of an item: its steps as a progress bar, and why it waits.

Both read the item documents of the status document (``gate.web.status``):
the state label there is the one derivation of where an item is
(:class:`gate.model.ItemState`); this module only puts it in the context of
the items ahead, which a single item's label cannot know (a failing item
ahead, builds ahead still running, how many must merge first).  Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gate.model import ItemState, TipStep

Doc = dict[str, Any]

#: the tip protocol's steps in order (``gate.model.TipStep``)
_TIP_ORDER = [TipStep.NONE, TipStep.FINAL_BUILD, TipStep.MERGE, TipStep.PUBLISH, TipStep.DONE]
#: what a build row's or a job's state shows as on the bar
_SHOWN = {"running": "running", "passed": "passed", "failed": "failed", "canceled": "none"}
#: the state label of an item whose build watch stopped on a backend error
STUCK = "stuck: backend error"
#: what a Koji task state (``koji.TASK_STATES``) shows as on the bar
_KOJI_SHOWN = {
    "FREE": "running",
    "OPEN": "running",
    "ASSIGNED": "running",
    "CLOSED": "passed",
    "FAILED": "failed",
    "CANCELED": "none",
}


@dataclass(frozen=True)
class Segment:
    """One step of an item's progress bar."""

    #: what the step is ("speculative merge", "scratch build", "job repoclosure", ...)
    label: str
    #: none | running | passed | failed
    state: str


def _tip_state(item: Doc, step: TipStep) -> str:
    tip = item.get("tip") or {}
    try:
        at = _TIP_ORDER.index(TipStep(tip.get("step", "none")))
    except ValueError:
        return "none"
    mine = _TIP_ORDER.index(step)
    if at > mine:
        return "passed"
    if at < mine:
        return "none"
    state = str(tip.get("state", "none"))
    return "running" if state == "none" else _SHOWN.get(state, "running")


def _build_state(build: Doc | None) -> str:
    return "none" if build is None else _SHOWN.get(str(build.get("state")), "none")


def build_segments(label: str, build: Doc | None, backends: Mapping[str, Any]) -> list[Segment]:
    """A build's step, one per arch where the backend says which arches it builds.

    Running in Koji: the ``buildArch`` children of its task as the backend's watcher
    last saw them (``backends[<name>]["tasks"]``, polled by the multicall it makes
    anyway; an arch whose child has not been made yet is not known, so not shown).
    Finished and passed: the arches its RPMs are for (``arches``), each passed,
    whatever the backend (the local backend builds for one arch, or noarch).
    Otherwise (running locally, waiting, failed): one step.
    """
    state = _build_state(build)
    if build is None:
        return [Segment(label, state)]
    tasks = (backends.get(str(build.get("backend"))) or {}).get("tasks") or {}
    # task ids are numbers in the document, strings once it went through JSON
    task = next((t for tid, t in tasks.items() if str(tid) == str(build.get("task"))), None)
    children = (task or {}).get("children") or {} if state == "running" else {}
    arches = sorted(
        (key.removeprefix("buildArch "), _KOJI_SHOWN.get(str(child), "running"))
        for key, child in children.items()
        if key.startswith("buildArch ")
    )
    if not arches and state == "passed":
        arches = [(str(arch), "passed") for arch in build.get("arches") or []]
    if not arches:
        return [Segment(label, state)]
    return [Segment(f"{label} {arch}", shown) for arch, shown in arches]


def segments(
    item: Doc, job_names: Sequence[str], backends: Mapping[str, Any] | None = None
) -> list[Segment]:
    """The item's steps in the order they run: for a gate item the speculative merge,
    its scratch build (per arch where known, :func:`build_segments`; ``backends``:
    the status document's), each job, then the tip (final build, merge, publish); a
    post item (merged in git already) has its final build, its jobs and publish."""
    job_segments = _job_segments(item.get("jobs") or [], job_names)
    final = _tip_state(item, TipStep.FINAL_BUILD)
    if final == "none" and item.get("final_build"):
        final = _build_state(item["final_build"])  # a draft build started before the tip
    if item.get("kind") == "post":
        return [
            Segment("final build", final),
            *job_segments,
            Segment("publish", _tip_state(item, TipStep.PUBLISH)),
        ]
    merge = item.get("merge") or {}
    return [
        Segment("speculative merge", _SHOWN.get(str(merge.get("state")), "none")),
        *build_segments("scratch build", item.get("build"), backends or {}),
        *job_segments,
        Segment("final build", final),
        Segment("merge", _tip_state(item, TipStep.MERGE)),
        Segment("publish", _tip_state(item, TipStep.PUBLISH)),
    ]


def _job_segments(runs: Sequence[Doc], job_names: Sequence[str]) -> list[Segment]:
    """Each job's step: one per run (named build, arch) once it has several, as the
    scratch build has one per arch; the last try of a run decides its state (a failed
    try 1 of 3 followed by a running try 2 is running).  A job not run yet is one step.

    The arch is named when the item's runs are on several arches, the build when the
    queue has several (a run's ``build`` is "" in a queue of one build).
    """
    last: dict[str, dict[tuple[str, str], Doc]] = {}
    for run in runs:  # in the order they started: a later try replaces an earlier
        key = (str(run.get("build") or ""), str(run.get("arch") or ""))
        last.setdefault(str(run.get("name")), {})[key] = run
    several_arches = len({str(r.get("arch") or "") for r in runs}) > 1
    out = []
    for name in [*job_names, *(n for n in last if n not in job_names)]:
        by_run = last.get(name)
        if not by_run:
            out.append(Segment(f"job {name}", "none"))
            continue
        for (build, arch), run in sorted(by_run.items()):
            where = " ".join(w for w in (build, arch if several_arches else "") if w)
            label = f"job {name} {where}" if where else f"job {name}"
            out.append(Segment(label, _SHOWN.get(str(run.get("state")), "none")))
    return out


def _name(item: Doc) -> str:
    change = item.get("change") or {}
    return f"item {item.get('id')} ({change.get('project') or item.get('queue', '')})"


def why_waiting(
    item: Doc, position: int, by_id: Mapping[int, Doc], window: int | None = None
) -> str:
    """One line: why the item is not moving on now, or "" while it is working.

    ``position`` is its place in the queue (0: the head), ``by_id`` the queue's
    items by id (those it is tested with are looked up there).
    """
    state = str(item.get("state", ""))
    failure = str(item.get("failure") or "")
    if state == STUCK:
        return f"held up by its build backend: {failure}"
    if state == ItemState.BLOCKED:
        return (
            f"held out of the repository: {failure or 'its checks failed'}; "
            "a release engineer may publish, retry or dequeue it"
        )
    if state == ItemState.PUBLISH_RETRY:
        return f"merged in git, publishing is retried: {failure or 'the last try failed'}"
    if state == ItemState.FAILING:
        if position == 0:
            return f"failing: {failure}; it leaves the queue"
        return (
            f"failing: {failure}; it leaves the queue once the items ahead are through "
            "(if one of them fails, it is tested again without it)"
        )
    if state == ItemState.OUTSIDE_WINDOW:
        size = f"{window} items are" if window else "the window is"
        return f"outside the window ({size} tested at once): starts when an item ahead leaves"
    # the items this attempt is tested with (a failing item ahead that it is not
    # tested with any more, after a reset, changes nothing for it)
    tested_with = [by_id[i] for i in (item.get("base") or {}).get("ahead") or [] if i in by_id]
    failing = [a for a in tested_with if a.get("state") == ItemState.FAILING]
    if failing and item.get("kind") != "post":
        return (
            f"an item ahead, {_name(failing[0])}, is failing: this item will be reset and "
            "re-tested without it"
        )
    if state == ItemState.BUILT:
        building = [
            _name(a) for a in tested_with if _build_state(a.get("build")) in ("none", "running")
        ]
        return "waiting for the builds ahead" + (f": {', '.join(building)}" if building else "")
    if state in (ItemState.PASSED, ItemState.DRAFT_BUILT):
        # (a built draft is promoted at the tip instead of a final build there)
        if position == 0:
            return "passed; waiting for the tip to start"
        n = position
        return f"waiting for the tip: {n} item{'s' if n != 1 else ''} ahead must be through first"
    return ""


def speculative_base(item: Doc) -> str:
    """What the item is tested on: ``generation 3 + items 7, 8``."""
    base = item.get("base")
    if not base:
        return "not yet tested"
    ahead = base.get("ahead") or []
    items = f" + item{'s' if len(ahead) != 1 else ''} {', '.join(map(str, ahead))}" if ahead else ""
    return f"generation {base.get('generation')}{items}"
