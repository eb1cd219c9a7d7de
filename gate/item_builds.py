"""An item's builds as a set over (named build, package): recorded, read, summed up.

A queue may build every change once per named build (``gate.build_matrix``),
and a project may hold several packages (``gate.packages``); each member of
an item's set is an ``item_build`` row naming the build row that serves it,
and whether that build was reused (made for an earlier item, or the
published one) rather than made for it.  The first member -- the queue's
first named build, the project's first package in build order -- is also the
item's own columns (``build_key``, ``final_build_id``, ``draft_build_id``),
exactly as when an item had one build: a queue of one build and projects of
one package record no ``item_build`` row and read and write what they always
did, and an item recorded before this table existed still reads.

The planner sees one build state per item (:func:`aggregate`): running while
any is, passed when all passed, failed as soon as one failed, its reason
naming the member (``build el10: ...``, ``package foo-doc: ...``).
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

#: a member of an item's set: (named build, package)
Member = tuple[str, str]


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
    member: Member,
    purpose: str,
    build_id: int,
    reused: bool = False,
) -> ItemBuildRow:
    """Say that build ``build_id`` serves the item's ``member`` for ``purpose``.

    Idempotent: recording the same member again points it at ``build_id``
    (a restart re-recording what it did before the crash).  The caller commits.
    """
    build_name, package = member
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


def entries(
    s: Session, item_id: int, attempt: int | None, purpose: str
) -> dict[Member, ItemBuildRow]:
    """member -> the item's entry of ``purpose``, in the order recorded (each named
    build's packages in build order); ``attempt`` None: the latest of any attempt."""
    query = select(ItemBuildRow).where(
        ItemBuildRow.item_id == item_id, ItemBuildRow.purpose == purpose
    )
    if attempt is not None:
        query = query.where(ItemBuildRow.attempt == attempt)
    latest: dict[Member, ItemBuildRow] = {}
    for row in s.exec(query.order_by(col(ItemBuildRow.id))):
        latest.pop((row.build_name, row.package), None)  # the latest wins, in its place
        latest[(row.build_name, row.package)] = row
    if attempt is None and latest:
        # a later attempt recorded the whole set again: keep that attempt's members
        last = max(r.attempt for r in latest.values())
        latest = {m: r for m, r in latest.items() if r.attempt == last}
    return latest


def builds_for(s: Session, item: ItemRow, purpose: str, build_name: str) -> list[BuildRow] | None:
    """The builds serving ``item``'s ``purpose`` for the named build ``build_name``, its
    packages in build order; None when the item has no set (its own columns serve).

    Scratch builds are the current attempt's; final (and draft) builds the latest
    recorded: a post item's final builds are its own whatever the attempt.
    """
    attempt = item.attempt if purpose == "scratch" else None
    found = entries(s, item.id or 0, attempt, purpose)
    if not found:
        return None
    rows = [s.get(BuildRow, e.build_id) for m, e in found.items() if m[0] == build_name]
    return [r for r in rows if r is not None]


def scratch_sets(s: Session, items: Iterable[ItemRow]) -> dict[int, dict[Member, BuildRow]]:
    """item id -> its current attempt's scratch builds by member, for many items at once
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
    ids = [r.build_id for r in rows]
    builds = {b.id: b for b in s.exec(select(BuildRow).where(col(BuildRow.id).in_(ids)))}
    sets: dict[int, dict[Member, BuildRow]] = {}
    for r in sorted(rows, key=lambda r: r.id or 0):
        build = builds.get(r.build_id)
        if build is not None:
            sets.setdefault(r.item_id, {})[(r.build_name, r.package)] = build
    return sets


def tested_purpose(kind: str) -> str:
    """Which entries carry what the item's jobs ran on: a gate item's scratch builds;
    a post item is tested on its final builds (it was merged already)."""
    return "final" if kind == ItemKind.POST else "scratch"


def member_label(member: Member, members: Iterable[Member]) -> str:
    """How a member is named in a reason: its build and/or package, whichever vary."""
    build_name, package = member
    seen = list(members)
    builds = len({m[0] for m in seen}) > 1
    packages = len({m[1] for m in seen}) > 1
    if builds and packages:
        return f"package {package} (build {build_name})"
    if packages:
        return f"package {package}"
    return f"build {build_name}"


def named_failure(member: Member, members: Iterable[Member], failure: str) -> str:
    """A member's failure as the item's reason: the member named when the set has several."""
    seen = list(members)
    if len(seen) < 2 or not failure:
        return failure
    return f"{member_label(member, seen)}: {failure}"


def aggregate(builds: Mapping[Member, BuildRow]) -> Summary:
    """One step for a set of builds: failed as soon as one failed (the first in the
    set's order, named when there are several), passed when all passed, running while
    any runs; none when one is gone (cancelled) and none failed."""
    steps = {m: BUILD_STEP.get(BuildState(b.state), Step.NONE) for m, b in builds.items()}
    for member, step in steps.items():
        if step is Step.FAILED:
            build = builds[member]
            words = build.reason or f"{build.purpose} build {build.id} failed"
            return Summary(Step.FAILED, named_failure(member, builds, words))
    if not steps:
        return Summary(Step.NONE)
    if all(step is Step.PASSED for step in steps.values()):
        return Summary(Step.PASSED)
    if any(step is Step.NONE for step in steps.values()):
        return Summary(Step.NONE)
    return Summary(Step.RUNNING)
