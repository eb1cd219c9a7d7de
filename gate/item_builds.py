"""An item's builds as a set over (named build, package): recorded, read, summed up.

A queue may build every change once per named build (``gate.build_matrix``);
each of an item's builds is an ``item_build`` row naming the build row that
serves it.  The first build of the set -- the queue's first named build -- is
also the item's own columns (``build_key``, ``final_build_id``,
``draft_build_id``), exactly as when an item had one build, so a queue of one
build reads and writes what it always did, and a row recorded before this
table existed still reads.

The planner sees one build state per item (:func:`aggregate`): running while
any is, passed when all passed, failed as soon as one failed, its reason
naming the build (``build el10: ...``) when the queue has several.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlmodel import Session, col, select

from gate.model import BuildState, ItemKind, Step
from repo_state.models import BuildRow, ItemBuildRow, ItemRow

#: what a build's state means as the step of the item that uses it
BUILD_STEP = {
    BuildState.RUNNING: Step.RUNNING,
    BuildState.PASSED: Step.PASSED,
    BuildState.FAILED: Step.FAILED,
}


@dataclass(frozen=True)
class Summary:
    """The builds of one purpose of an item, summed up as one step."""

    step: Step
    #: the first failed build's words ("" unless ``step`` is failed)
    failure: str = ""


def record(
    s: Session,
    item_id: int,
    attempt: int,
    build_name: str,
    package: str,
    purpose: str,
    build_id: int,
    reused: bool = False,
) -> ItemBuildRow:
    """Say that build ``build_id`` serves the item's (build_name, package, purpose).

    Idempotent: recording the same entry again points it at ``build_id``
    (a restart re-recording what it did before the crash).  The caller commits.
    """
    row = s.exec(
        select(ItemBuildRow).where(
            ItemBuildRow.item_id == item_id,
            ItemBuildRow.attempt == attempt,
            ItemBuildRow.build_name == build_name,
            ItemBuildRow.package == package,
            ItemBuildRow.purpose == purpose,
        )
    ).first()
    if row is None:
        row = ItemBuildRow(
            item_id=item_id,
            attempt=attempt,
            build_name=build_name,
            package=package,
            purpose=purpose,
            build_id=build_id,
        )
    row.build_id, row.reused = build_id, reused
    s.add(row)
    return row


def entries(s: Session, item_id: int, attempt: int | None, purpose: str) -> dict[str, ItemBuildRow]:
    """build name -> the item's entry of ``purpose`` (``attempt`` None: the latest of any)."""
    query = select(ItemBuildRow).where(
        ItemBuildRow.item_id == item_id, ItemBuildRow.purpose == purpose
    )
    if attempt is not None:
        query = query.where(ItemBuildRow.attempt == attempt)
    found: dict[str, ItemBuildRow] = {}
    for row in s.exec(query.order_by(col(ItemBuildRow.id))):
        found[row.build_name] = row  # the latest wins
    return found


def builds_of(
    s: Session, item: ItemRow, purpose: str, *, any_attempt: bool = False
) -> dict[str, BuildRow]:
    """build name -> the build row serving the item's ``purpose`` (its current attempt's,
    unless ``any_attempt``: a post item's final builds are its own whatever the attempt)."""
    assert item.id is not None
    found: dict[str, BuildRow] = {}
    attempt = None if any_attempt else item.attempt
    for name, entry in entries(s, item.id, attempt, purpose).items():
        build = s.get(BuildRow, entry.build_id)
        if build is not None:
            found[name] = build
    return found


def build_for(s: Session, item: ItemRow, purpose: str, build_name: str) -> BuildRow | None:
    """The build serving ``item``'s ``purpose`` for the named build ``build_name``."""
    return builds_of(s, item, purpose, any_attempt=purpose != "scratch").get(build_name)


def scratch_sets(s: Session, items: Iterable[ItemRow]) -> dict[int, dict[str, BuildRow]]:
    """item id -> its current attempt's scratch builds by name, for many items at once
    (items with no entry are left out: one build, read through ``build_key``)."""
    attempts = {i.id: i.attempt for i in items if i.id is not None}
    if not attempts:
        return {}
    rows = [
        r
        for r in s.exec(
            select(ItemBuildRow).where(
                col(ItemBuildRow.item_id).in_(list(attempts)), ItemBuildRow.purpose == "scratch"
            )
        )
        if attempts.get(r.item_id) == r.attempt
    ]
    if not rows:
        return {}
    builds = {
        b.id: b
        for b in s.exec(select(BuildRow).where(col(BuildRow.id).in_([r.build_id for r in rows])))
    }
    sets: dict[int, dict[str, BuildRow]] = {}
    for r in sorted(rows, key=lambda r: r.id or 0):
        build = builds.get(r.build_id)
        if build is not None:
            sets.setdefault(r.item_id, {})[r.build_name] = build
    return sets


def tested_purpose(kind: str) -> str:
    """Which entries carry what the item's jobs ran on: a gate item's scratch builds;
    a post item is tested on its final builds (it was merged already)."""
    return "final" if kind == ItemKind.POST else "scratch"


def aggregate(builds: Mapping[str, BuildRow], order: Iterable[str] = ()) -> Summary:
    """One step for a set of builds: failed as soon as one failed (the first in
    ``order``, then by name, named when there are several), passed when all passed,
    running while any runs; none when one is gone (cancelled) and none failed."""
    names = [n for n in order if n in builds] + sorted(set(builds) - set(order))
    steps = {n: BUILD_STEP.get(BuildState(builds[n].state), Step.NONE) for n in names}
    for name in names:
        if steps[name] is Step.FAILED:
            build = builds[name]
            words = build.reason or f"{build.purpose} build {build.id} failed"
            return Summary(Step.FAILED, f"build {name}: {words}" if len(names) > 1 else words)
    if not names:
        return Summary(Step.NONE)
    if all(step is Step.PASSED for step in steps.values()):
        return Summary(Step.PASSED)
    if any(step is Step.NONE for step in steps.values()):
        return Summary(Step.NONE)
    return Summary(Step.RUNNING)


def named_failure(name: str, several: bool, failure: str) -> str:
    """A build's failure as the item's reason: the build named when the queue has several."""
    return f"build {name}: {failure}" if several and failure else failure
