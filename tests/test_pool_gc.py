"""The RPM pool collected (gate/pool_gc.py): real RPMs in a real pool, a real
publisher's kept generations, a real database migrated to head, the sweep the
daemon runs.

A pool file goes ``pool_retention`` after the last build that named it was of
use, unless a kept generation serves it or an active item uses (or will ask for)
its build; a file pooled lately stays whatever names it."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from gate import pool_gc
from gate.config import load_config
from gate.demo_world import World as DemoWorld
from gate.model import BuildState
from gate.pool_gc import COLLECTED_NOTE, PoolSweep, checksums
from gate.queue_rules import build_reusable
from publishers.createrepo import Publisher
from repo_state.db import session
from repo_state.models import BuildRow, ItemBuildRow
from repo_state.pool import Pool
from repo_state.state import Artifact, RepoState
from tests.conftest import CEILO_801, DJANGO_NO_COMPAT, NOVA_1201
from tests.rpmfactory import build_entry, build_rpms
from tests.served import ClientFactory, served
from tests.test_draft_gc import _item, engine  # noqa: F401 (fixture)
from tests.test_web_api import propose

DAY = 86400.0
WEEK = 7 * DAY
NOW = time.time()


def _ago(seconds: float) -> datetime:
    return datetime.fromtimestamp(NOW - seconds, UTC)


@pytest.fixture(scope="module")
def rpms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One real noarch RPM per name (rpmbuild)."""
    out = tmp_path_factory.mktemp("rpms")
    names = ("old", "used", "served", "young", "reused", "draft", "promoted", "orphan")
    return {n: build_rpms(out / n, f"pkg-{n}", "1.0").binaries[0] for n in names}


class World:
    def __init__(self, db: Engine, root: Path, rpms: dict[str, Path]) -> None:
        self.engine, self.root = db, root
        self.pool = Pool(root / "pool")
        self.artifacts: dict[str, Artifact] = {
            name: self.pool.add_rpm(path) for name, path in rpms.items()
        }
        self.publisher = Publisher(root / "repo", self.pool, arches=("x86_64",))
        self.retention: float | None = WEEK
        self.sweep = PoolSweep(db, self.pool, {"liberty": self.publisher}, self.retention_now)

    def retention_now(self) -> float | None:
        return self.retention

    def age(self, name: str, seconds: float) -> None:
        """Make the pooled file of ``name`` look pooled ``seconds`` ago."""
        path = self.file(name)
        os.utime(path, (NOW - seconds, NOW - seconds))

    def file(self, name: str) -> Path:
        return self.pool.path_for(self.artifacts[name].checksum)

    def build(self, name: str, purpose: str = "scratch", **fields: Any) -> int:
        fields.setdefault("finished_at", _ago(10 * DAY))
        fields.setdefault("state", BuildState.PASSED)
        fields.setdefault("nvr", f"pkg-{name}-1.0-1")
        with session(self.engine) as s:
            row = BuildRow(
                purpose=purpose,
                key=f"{purpose}-{name}",
                project="hello",
                package="hello",
                backend="local",
                commit="c" * 40,
                tree=f"tree-{name}",
                target="rpmgate",
                artifacts=json.dumps([self.artifacts[name].to_dict()]),
                **fields,
            )
            s.add(row)
            s.commit()
            s.refresh(row)
            return row.id or 0

    def state(self, build_id: int) -> str:
        with session(self.engine) as s:
            row = s.get(BuildRow, build_id)
            assert row is not None
            return row.state


@pytest.fixture
def pooled(engine: Engine, tmp_path: Path, rpms: dict[str, Path]) -> Iterator[World]:  # noqa: F811
    w = World(engine, tmp_path, rpms)
    for name in w.artifacts:
        w.age(name, 10 * DAY)
    yield w


def test_what_nothing_needs_goes_and_everything_else_stays(
    pooled: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool_gc, "_CHUNK", 2)  # the item reads come in several queries
    gone = _item(pooled.engine, active=False, finished_at=_ago(10 * DAY))
    old = pooled.build("old", includes=json.dumps([gone]))
    # an active item's scratch build, by key
    used = pooled.build("used")
    _item(pooled.engine, active=True, build_key="scratch-used")
    # a final build the current generation serves
    served = pooled.build("served", purpose="final")
    entry = build_entry([pooled.file("served")], pooled.pool)
    pooled.publisher.publish(1, RepoState({entry.source_name: entry}), {"kind": "test"})
    pooled.age("served", 10 * DAY)  # publishing linked it: old again
    young = pooled.build("young", finished_at=_ago(DAY))
    # an old build an item finished with yesterday (reused: item_build says so)
    reused = pooled.build("reused")
    lately = _item(pooled.engine, active=False, finished_at=_ago(DAY))
    with session(pooled.engine) as s:
        s.add(
            ItemBuildRow(
                item_id=lately,
                attempt=1,
                build_name="default",
                package="hello",
                purpose="scratch",
                build_id=reused,
                reused=True,
            )
        )
        s.commit()
    # an unpromoted draft is gate/draft_gc's; a promoted one is let go of here
    draft = pooled.build("draft", purpose="draft", task_ref="local-1")
    promoted = pooled.build("promoted", purpose="draft", task_ref="local-2")
    final_of_promoted = pooled.build("promoted", purpose="final", task_ref="promoted:local-2")
    with session(pooled.engine) as s:  # the final row of a promoted draft has its key
        row = s.get(BuildRow, final_of_promoted)
        assert row is not None
        row.key = "draft-promoted"
        s.add(row)
        s.commit()
    pooled.age("young", 10 * DAY)  # the file is old; its build is not
    pooled.age("orphan", 10 * DAY)  # no build names it

    swept = pooled.sweep.sweep(NOW)

    assert pooled.state(old) == BuildState.COLLECTED
    assert pooled.state(promoted) == pooled.state(final_of_promoted) == BuildState.COLLECTED
    for kept in (used, served, young, reused, draft):
        assert pooled.state(kept) == BuildState.PASSED, kept
    assert not pooled.file("old").exists()
    assert not pooled.file("promoted").exists()
    assert not pooled.file("orphan").exists()
    for name in ("used", "served", "young", "reused", "draft"):
        assert pooled.file(name).exists(), name
    assert swept.builds == 3 and swept.files == 3  # old, promoted (two rows, one file), orphan
    with session(pooled.engine) as s:
        row = s.get(BuildRow, old)
        assert row is not None and COLLECTED_NOTE in row.reason
    # a collected build is built again, never reused
    assert not build_reusable("scratch", BuildState.COLLECTED)
    # the published generation still serves its file, and the next one can be made
    served_path = pooled.root / "repo" / "packages"
    assert any(p.name.endswith(".rpm") for p in served_path.rglob("*"))


def test_a_file_pooled_again_lately_stays_though_nothing_names_it(pooled: World) -> None:
    pooled.pool.add_rpm(pooled.file("orphan"))  # pooled again: mtime now
    pooled.build("old")
    pooled.sweep.sweep(NOW)
    assert pooled.file("orphan").exists()
    assert not pooled.file("old").exists()
    # and a sweep a retention later takes it (the add's mtime is the clock's, not NOW)
    pooled.sweep.sweep(time.time() + WEEK + 60)
    assert not pooled.file("orphan").exists()


def test_an_item_reaching_for_a_build_keeps_it(pooled: World) -> None:
    """The mark is conditional: an active item that references the row by the time
    of the UPDATE keeps it passed (and its files)."""
    old = pooled.build("old")
    _item(pooled.engine, active=True, merge_tree="tree-old")  # the same tree: asks for it
    pooled.sweep.sweep(NOW)
    assert pooled.state(old) == BuildState.PASSED
    assert pooled.file("old").exists()


def test_keep_collects_nothing(pooled: World) -> None:
    pooled.retention = None
    old = pooled.build("old")
    assert pooled.sweep.sweep(NOW).files == 0
    assert pooled.state(old) == BuildState.PASSED
    assert pooled.file("orphan").exists()


def test_pool_retention_is_configured_in_seconds_or_keep(tmp_path: Path) -> None:
    doc = {
        "state_dir": str(tmp_path / "state"),
        "projects": {"hello": {"git": str(tmp_path)}},
        "publishers": {"liberty": {"root": str(tmp_path / "repo")}},
        "queues": {"liberty": {"projects": ["hello"], "repo": "liberty"}},
    }
    path = tmp_path / "c.yaml"
    for value, expected in ((None, 7 * DAY), ("keep", "keep"), (7200, 7200.0)):
        if value is not None:
            doc["pool_retention"] = value
        path.write_text(json.dumps(doc))
        assert load_config(path).pool_retention == expected
    doc["pool_retention"] = 60
    path.write_text(json.dumps(doc))
    with pytest.raises(Exception, match="pool_retention"):
        load_config(path)


@pytest.mark.slow
async def test_the_gate_goes_on_after_its_pool_was_collected(
    world: DemoWorld, aiohttp_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change merged and one rejected by its jobs, a month passes, the sweep runs:
    the rejected change's scratch build is let go of and its RPMs leave the pool,
    every file a kept generation serves stays, and the next change is gated, built
    and published as usual."""
    monkeypatch.setattr(pool_gc, "FIRST_SWEEP_AFTER", 0.0)  # the loop sweeps at once
    async with served(world, aiohttp_client) as (gate, client):
        await propose(client, world, "nova", NOVA_1201, "A")
        await propose(client, world, "python-django", DJANGO_NO_COMPAT, "D")
        await gate.wait_idle(180)
        await gate.pool_sweep.wait()
        assert gate.pool_sweep._task is not None  # the loop's sweep ran: nothing was due
        assert gate.pool_sweep._task.result() == pool_gc.Swept()
        publisher = gate.runtime.publishers["liberty"]
        with session(gate.engine) as s:
            scratch = [
                r
                for r in s.exec(select(BuildRow))
                if r.purpose == "scratch" and r.artifacts != "[]"
            ]
        served_before = publisher.served_checksums()
        unserved = [r for r in scratch if not checksums(r.artifacts) & served_before]
        assert unserved, "D's scratch build is served by nothing"
        gone = set().union(*(checksums(r.artifacts) for r in unserved))

        swept = await asyncio.to_thread(gate.pool_sweep.sweep, time.time() + 30 * DAY)

        assert swept.builds == len(unserved) and swept.files >= len(gone)
        pool = gate.runtime.pool
        assert all(c in pool for c in served_before)
        assert not any(c in pool for c in gone)
        with session(gate.engine) as s:
            states = {r.id: s.get(BuildRow, r.id).state for r in scratch}  # type: ignore[union-attr]
        assert {states[r.id] for r in unserved} == {BuildState.COLLECTED}
        # a scratch build whose RPMs are the published ones (rpmbuild made the final
        # build byte for byte the same) stays reusable
        assert {states[r.id] for r in scratch if r not in unserved} <= {BuildState.PASSED}

        await propose(client, world, "ceilometer", CEILO_801, "B")
        await gate.wait_idle(180)
        status = await (await client.get("/api/status")).json()
    nevras = publisher.current().packages  # type: ignore[union-attr]
    assert any("ceilometer" in n and "8.0.1" in n for n in nevras)
    assert any("nova" in n and "12.0.1" in n for n in nevras)
    assert all(c in pool for c in publisher.served_checksums())
    assert not status["queues"][0]["items"]
