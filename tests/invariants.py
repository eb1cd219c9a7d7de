"""Checks of the design invariants on a gate's durable state and its repository."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path

from sqlmodel import col, select

from gate.daemon import Gate
from repo_state.db import session
from repo_state.models import BuildRow, ChangeRow, GenerationRow, ItemRow
from repo_state.state import RepoState


def results(gate: Gate) -> dict[str, list[str]]:
    """Titles of gate items by result, in item order."""
    out: dict[str, list[str]] = {}
    with session(gate.engine) as s:
        for item in s.exec(select(ItemRow).where(ItemRow.kind == "gate").order_by(col(ItemRow.id))):
            change = s.get(ChangeRow, item.change_id)
            assert change is not None
            out.setdefault(item.result or "active", []).append(change.title)
    return out


def failure_of(gate: Gate, title: str) -> str:
    with session(gate.engine) as s:
        change = s.exec(select(ChangeRow).where(ChangeRow.title == title)).one()
        item = s.exec(select(ItemRow).where(ItemRow.change_id == change.id)).one()
        return item.failure


def check_invariants(
    gate: Gate, repo: str = "liberty", remotes: Mapping[str, Path] | None = None
) -> None:
    """``remotes``: where each project's repository is on disk, when the gate
    reaches it by a URL (default: the project's ``git``)."""
    publisher = gate.publishers[repo]
    queue = next(q for q, c in gate.config.queues.items() if c.repo == repo)
    project_git = {p: c.git for p, c in gate.config.projects.items()}
    project_git.update(remotes or {})
    with session(gate.engine) as s:
        generations = s.exec(
            select(GenerationRow)
            .where(GenerationRow.repo == repo)
            .order_by(col(GenerationRow.number))
        ).all()
        items = {i.id: i for i in s.exec(select(ItemRow).where(ItemRow.queue == queue))}
        changes = {c.id: c for c in s.exec(select(ChangeRow))}
        finals = s.exec(select(BuildRow).where(BuildRow.purpose == "final")).all()

    # I3: generations are numbered 1..N without gaps, each complete on disk
    assert [g.number for g in generations] == list(range(1, len(generations) + 1))
    assert publisher.current() is not None
    assert publisher.current().number == generations[-1].number  # type: ignore[union-attr]

    published_items: list[int] = []
    for g in generations:
        made = json.loads(g.items)
        published_items.extend(made)
        manifest = publisher.generation(g.number)
        if manifest is None:  # collected by gc
            continue
        assert manifest.manifest["produced_by"]["items"] == made
        # I2: a gate item's generation is exactly the set its jobs ran against
        for item_id in made:
            item = items[item_id]
            if item.kind == "gate":
                tested = RepoState.from_json(item.tested_state).nevras()
                assert manifest.state.nevras() == tested, (g.number, item_id)

    # I1: merged in git <=> published; each merged commit is on its branch
    merged = [i.id for i in items.values() if i.result == "merged"]
    assert sorted(merged) == sorted(published_items)
    for item_id in merged:
        item = items[item_id]
        commit = item.merge_commit if item.kind == "gate" else changes[item.change_id].sha
        branch = gate.config.projects[item.project].branch
        rc = subprocess.run(
            ["git", "merge-base", "--is-ancestor", commit or "", branch],
            cwd=project_git[item.project],
            capture_output=True,
        ).returncode
        assert rc == 0, f"item {item_id}: {commit} is not on {item.project}/{branch}"
    for item in items.values():
        # (a rejected post item's commit is on the branch: that is what it was)
        if item.result == "rejected" and item.kind == "gate" and item.merge_commit:
            branch = gate.config.projects[item.project].branch
            rc = subprocess.run(
                ["git", "merge-base", "--is-ancestor", item.merge_commit, branch],
                cwd=project_git[item.project],
                capture_output=True,
            ).returncode
            assert rc != 0, f"rejected item {item.id} is on the branch"

    # I3: gate items publish in queue order
    gate_order = [i for i in published_items if items[i].kind == "gate"]
    assert gate_order == sorted(gate_order, key=lambda i: items[i].seq)

    # never two final builds of one source tree, never one NVR from two trees
    keys = [f.key for f in finals]
    assert len(keys) == len(set(keys))
    by_nvr: dict[str, set[str]] = {}
    for f in finals:
        if f.state == "passed":
            by_nvr.setdefault(f.nvr, set()).add(f.tree)
    assert all(len(trees) == 1 for trees in by_nvr.values()), by_nvr
