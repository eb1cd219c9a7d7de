"""Is a change ready for the gate, and which earlier patch sets are the same code.

Both questions are answered from a ChangeInfo read with DETAILED_LABELS and
ALL_REVISIONS (rest-api-changes.html#change-info, #label-info,
#revision-info): ``labels.<name>.all`` holds every reviewer's vote on the
current patch set (``value``; no vote is 0 or absent), ``labels.<name>.values``
the label's allowed values (keys like ``"-2"``, ``" 0"``, ``"+2"``), and each
RevisionInfo its ``_number`` and ``kind`` (rest-api-changes.html#revision-info,
ChangeKind: REWORK, TRIVIAL_REBASE, MERGE_FIRST_PARENT_UPDATE,
NO_CODE_CHANGE, NO_CHANGE).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gate.sources.gerrit.config import ApprovalRule

#: patch set kinds whose code is the patch set before it (Gerrit's ChangeKind):
#: a rebase without conflicts, a new commit message, or nothing changed at all
SAME_CODE_KINDS = frozenset({"TRIVIAL_REBASE", "NO_CODE_CHANGE", "NO_CHANGE"})


def _votes(label: dict[str, Any]) -> list[int]:
    votes = []
    for approval in label.get("all") or ():
        value = approval.get("value") if isinstance(approval, dict) else None
        if isinstance(value, int) and not isinstance(value, bool):
            votes.append(value)
    return votes


def _lowest(label: dict[str, Any]) -> int | None:
    values = label.get("values")
    if not isinstance(values, dict):
        return None
    numbers = []
    for key in values:
        try:
            numbers.append(int(str(key).strip()))
        except ValueError:
            continue
    return min(numbers, default=None)


def evaluate(change: dict[str, Any], rules: Sequence[ApprovalRule]) -> tuple[bool, str]:
    """(approved, why not) for the change's current patch set as Gerrit has it now."""
    status = change.get("status")
    if status != "NEW":
        return False, f"the change is {str(status).lower()}"
    if change.get("work_in_progress"):
        return False, "the change is work in progress"
    labels = change.get("labels")
    if not isinstance(labels, dict):
        labels = {}
    missing = []
    for rule in rules:
        label = labels.get(rule.label)
        if not isinstance(label, dict):
            missing.append(f"{rule.label} is not a label of this change")
            continue
        votes = _votes(label)
        lowest = _lowest(label)
        if lowest is not None and lowest < 0 and lowest in votes:
            missing.append(f"{rule.label} {lowest:+d} blocks it")
        elif max(votes, default=0) < rule.value:
            missing.append(f"needs {rule.label} {rule.value:+d}")
    return not missing, "; ".join(missing)


def revisions_by_number(change: dict[str, Any]) -> dict[int, tuple[str, str]]:
    """Patch set number -> (sha, kind), from ``revisions`` (ALL_REVISIONS)."""
    found: dict[int, tuple[str, str]] = {}
    revisions = change.get("revisions")
    if not isinstance(revisions, dict):
        return found
    for sha, info in revisions.items():
        if isinstance(info, dict) and isinstance(info.get("_number"), int):
            found[info["_number"]] = (sha, str(info.get("kind") or "REWORK"))
    return found


def equivalent_revisions(change: dict[str, Any]) -> tuple[str, ...]:
    """The earlier patch sets whose code the current one has, newest first.

    Walks back from the current patch set while each one's kind says it is
    the same code as the one before (a trivial rebase, a new message): an
    item tested on any of them tested this code.
    """
    current = change.get("current_revision")
    by_number = revisions_by_number(change)
    numbers = [n for n, (sha, _) in by_number.items() if sha == current]
    if not numbers:
        return ()
    found = []
    n = numbers[0]
    while n in by_number and by_number[n][1] in SAME_CODE_KINDS and n - 1 in by_number:
        found.append(by_number[n - 1][0])
        n -= 1
    return tuple(found)
