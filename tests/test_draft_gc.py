"""Unpromoted drafts deleted by policy (gate/draft_gc.py) on the local backend: real
rpmbuild drafts, a real SQLite database migrated to head, the sweep the daemon runs.

A draft no item can use goes ``draft_retention`` after it was last of use; one an
active item uses, or will ask for, or is promoting (across a restart too), never;
a promoted one never."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from gate.builders.base import Draft, draft_retention_seconds
from gate.builders.local import LocalBackend, LocalBackendConfig
from gate.draft_gc import DraftSweep
from gate.model import BuildState, Step, TipStep
from gate.plumbing import Plumbing
from gate.queue_rules import build_reusable
from repo_state.db import make_engine, migrate, session
from repo_state.models import BuildRow, ChangeRow, ItemRow
from repo_state.pool import Pool
from tests.conftest import POSTGRES_URL, postgres_schema
from tests.test_local_builder import build, distgit, spec  # noqa: F401 (fixtures)

DAY = 86400.0
WEEK = 7 * DAY
NOW = time.time()


def _ago(seconds: float) -> datetime:
    return datetime.fromtimestamp(NOW - seconds, UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """SQLite, and PostgreSQL in a schema of its own when RPMGATE_TEST_DATABASE_URL
    names one (the conditional update and the ``||`` of the promotion check)."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'gate.db'}")
        migrate(engine)
        yield engine
        engine.dispose()
        return
    if not POSTGRES_URL:
        pytest.skip("set RPMGATE_TEST_DATABASE_URL=postgresql://... to run the PostgreSQL tests")
    with postgres_schema() as (_, url):
        engine = make_engine(url)
        try:
            migrate(engine)
            yield engine
        finally:
            engine.dispose()


def _item(engine: Engine, project: str = "hello", **fields: Any) -> int:
    with session(engine) as s:
        change = ChangeRow(project=project, ref="refs/heads/x", sha="0" * 40)
        s.add(change)
        s.commit()
        s.refresh(change)
        item = ItemRow(queue="liberty", change_id=change.id or 0, project=project, **fields)
        s.add(item)
        s.commit()
        s.refresh(item)
        return item.id or 0


def _draft_row(
    engine: Engine, key: str, item_id: int, tree: str, nvr: str = "hello-1.0-1", **fields: Any
) -> int:
    with session(engine) as s:
        row = BuildRow(
            purpose="draft",
            key=key,
            project="hello",
            package="hello",
            backend="local",
            commit="c" * 40,
            tree=tree,
            target="",
            includes=json.dumps([item_id]),
            state=BuildState.PASSED.value,
            nvr=nvr,
            **fields,
        )
        s.add(row)
        s.commit()
        s.refresh(row)
        return row.id or 0


def _state(engine: Engine, build_id: int) -> tuple[str, str]:
    with session(engine) as s:
        row = s.get(BuildRow, build_id)
        assert row is not None
        return row.state, row.reason


async def test_drafts_no_item_can_use_go_after_their_retention_and_no_other(
    tmp_path: Path,
    engine: Engine,
    distgit,  # noqa: F811
) -> None:
    backend = LocalBackend(tmp_path / "state", Pool(tmp_path / "pool"), draft_retention=WEEK)
    events: list[dict[str, Any]] = []
    plumbing = Plumbing()
    plumbing.listeners.append(events.append)
    try:
        repo = distgit()
        rejected_req = repo.request(repo.commit({"hello.spec": spec()}), purpose="draft", key="r")
        promoting_req = repo.request(
            repo.commit({"hello.spec": spec(), "README": "x\n"}), purpose="draft", key="p"
        )
        rejected_out = await build(backend, rejected_req)
        promoting_out = await build(backend, promoting_req)
        assert rejected_out.ok and promoting_out.ok

        # rejected 8 days ago: its draft is due
        rejected = _item(engine, active=False, finished_at=_ago(8 * DAY), attempt=1)
        r1 = _draft_row(
            engine,
            "r",
            rejected,
            rejected_req.tree,
            task_ref=rejected_out.extra["task_ref"],
            finished_at=_ago(9 * DAY),
        )
        # dequeued yesterday: kept six more days
        dequeued = _item(engine, active=False, finished_at=_ago(DAY), attempt=1)
        r2 = _draft_row(engine, "k2", dequeued, "t2", task_ref="x2", finished_at=_ago(10 * DAY))
        # built ten days ago, still waiting for the tip
        r3 = _draft_row(engine, "k3", 0, "t3", task_ref="x3", finished_at=_ago(10 * DAY))
        _item(engine, active=True, attempt=1, merge_tree="t3", draft=Step.PASSED, draft_build_id=r3)
        # being promoted at the tip (the final build not recorded yet)
        promoting = _item(engine, active=True, attempt=2, merge_tree=promoting_req.tree)
        r4 = _draft_row(
            engine,
            "p",
            promoting,
            promoting_req.tree,
            task_ref=promoting_out.extra["task_ref"],
            finished_at=_ago(10 * DAY),
        )
        with session(engine) as s:
            row = s.get(ItemRow, promoting)
            assert row is not None
            row.tip, row.tip_state, row.draft_build_id = (
                TipStep.FINAL_BUILD.value,
                Step.RUNNING.value,
                r4,
            )
            row.merge_tree = "another tree: the row is referenced by id alone"
            s.add(row)
            s.commit()
        # an active item of the project tested on the draft's tree, jobs still running
        r5 = _draft_row(engine, "k5", 0, "t5", task_ref="x5", finished_at=_ago(10 * DAY))
        _item(engine, active=True, attempt=3, merge_tree="t5", jobs=Step.RUNNING)
        # promoted, its item long gone
        gone = _item(engine, active=False, finished_at=_ago(30 * DAY), attempt=1)
        r6 = _draft_row(engine, "k6", gone, "t6", task_ref="x6", finished_at=_ago(30 * DAY))
        with session(engine) as s:
            s.add(
                BuildRow(
                    purpose="final",
                    key="k6",
                    project="hello",
                    package="hello",
                    backend="local",
                    commit="c" * 40,
                    tree="t6",
                    target="",
                    task_ref="promoted:x6",
                    state=BuildState.PASSED.value,
                )
            )
            s.commit()
        # its item moved to another tree two days ago
        moved = _item(
            engine, active=True, attempt=2, merge_tree="t7b", attempt_started_at=_ago(2 * DAY)
        )
        r7 = _draft_row(engine, "k7", moved, "t7", task_ref="x7", finished_at=_ago(10 * DAY))

        sweep = DraftSweep(engine, plumbing, {"local": backend})
        assert sweep.sweep(now=NOW) == 1
        assert _state(engine, r1)[0] == BuildState.COLLECTING
        assert await sweep.remove_collecting() == 1
        assert _state(engine, r1) == ("collected", "unpromoted draft deleted (draft_retention)")
        assert not backend.draft_dir("r").exists()
        assert [(e["topic"], e["build"], e["result"]) for e in events] == [
            ("draft-removal", r1, "deleted")
        ]
        # a draft let go of is built again if its tree is needed again
        assert not build_reusable("draft", BuildState.COLLECTED)
        assert not build_reusable("draft", BuildState.COLLECTING)

        # six days later: the dequeued item's draft; five: the moved item's
        assert sweep.sweep(now=NOW + 5 * DAY + 60) == 1
        assert sweep.sweep(now=NOW + 6 * DAY + 60) == 1
        assert await sweep.remove_collecting() == 2
        for collected in (r2, r7):
            assert _state(engine, collected)[0] == BuildState.COLLECTED
        for kept in (r3, r4, r5, r6):
            assert _state(engine, kept) == ("passed", "")

        # a restart while the promotion runs: a new sweep, a new backend, same rows
        backend_after = LocalBackend(
            tmp_path / "state", Pool(tmp_path / "pool"), draft_retention=0.0
        )
        after = DraftSweep(engine, Plumbing(), {"local": backend_after})
        assert after.sweep(now=NOW + 365 * DAY) == 0
        assert await after.remove_collecting() == 0
        assert backend_after.draft_dir("p").is_dir()
        draft = Draft(
            nvr=promoting_out.nvr,
            task_ref=promoting_out.extra["task_ref"],
            artifacts=promoting_out.artifacts,
        )
        promoted = await backend_after.promote(promoting_req, draft)
        assert promoted.ok, promoted.reason
        await backend_after.close()
    finally:
        await backend.close()


async def test_a_draft_built_again_after_it_was_let_go_of_is_not_removed(
    tmp_path: Path,
    distgit,  # noqa: F811
) -> None:
    """The removal deletes the record of the draft the gate let go of, never a newer
    draft of the same key built meanwhile (the key was needed again)."""
    backend = LocalBackend(tmp_path / "state", Pool(tmp_path / "pool"))
    try:
        repo = distgit()
        request = repo.request(repo.commit({"hello.spec": spec()}), purpose="draft", key="k")
        old = await build(backend, request)
        new = await build(backend, request)
        assert old.ok and new.ok
        kept = await backend.remove_draft("k", "", Draft(old.nvr, old.extra["task_ref"]))
        assert kept.outcome == "deleted" and "newer draft" in kept.reason
        assert backend.draft_dir("k").is_dir()
        removed = await backend.remove_draft("k", "", Draft(new.nvr, new.extra["task_ref"]))
        assert removed == type(removed)("deleted")
        assert not backend.draft_dir("k").exists()
        gone = await backend.promote(request, Draft(new.nvr, new.extra["task_ref"]))
        assert not gone.ok and "is gone" in gone.reason
    finally:
        await backend.close()


def test_retention_is_seconds_or_keep_and_the_old_hours_key_still_reads() -> None:
    assert LocalBackendConfig().draft_retention == WEEK
    keep = LocalBackendConfig(draft_retention="keep")
    assert draft_retention_seconds(keep.draft_retention) is None
    assert LocalBackendConfig(draft_retention=0).draft_retention == 0
    assert LocalBackendConfig.model_validate({"draft_keep_hours": 2}).draft_retention == 7200
    with pytest.raises(ValueError, match="draft_retention"):
        LocalBackendConfig(draft_retention=-1)
    with pytest.raises(ValueError):
        LocalBackendConfig.model_validate({"draft_retention": "forever"})
