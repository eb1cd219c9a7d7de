"""The baseline: an item is blamed only for what it breaks (issue 8).

End to end through the gate (real git, rpmbuild, createrepo_c, SQLite): a
direct push of a package whose dependency nothing provides is held back, and
published anyway by a release engineer, so the repository is broken; unrelated
changes behind it pass with a warning, while changes that newly break a
dependency, or ship the broken one again, are still rejected.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from gate.deliveries import store_delivery
from gate.demo_world import PackageSpec, World
from gate.jobs.base import JobContext
from gate.jobs.command import CommandJob
from gate.web.status import status
from repo_state.db import session
from repo_state.models import ChangeRow, ItemRow, JobRunRow
from tests.conftest import DJANGO_NO_COMPAT, NOVA_1201, propose
from tests.invariants import check_invariants, failure_of, results

HORIZON_BROKEN_BY_PUSH = PackageSpec(
    "horizon", "9.0.2", requires=("python-django-compat", "does-not-exist")
)
HORIZON_STILL_BROKEN = PackageSpec(
    "horizon", "9.0.3", requires=("python-django-compat", "does-not-exist")
)

#: a command job that shows what it was given: the baseline's packages and where it is
SHOW_BASELINE = (
    'test -f "$RPMGATE_BASELINE_REPO_PATH/x86_64/repodata/repomd.xml" && '
    # the first bootstrap item's baseline is empty: nothing to list
    '{ ls "$RPMGATE_BASELINE_REPO_PATH/x86_64/Packages/"*/ 2>/dev/null || true; } && '
    'echo "baseline path: $RPMGATE_BASELINE_REPO_PATH" && '
    'echo "baseline url: $RPMGATE_BASELINE_REPO_URL"'
)


def _queues(world: World) -> dict[str, Any]:
    queues = world.config()["queues"]
    queues["liberty"]["jobs"] = ["repoclosure", {"name": "baseline", "command": SHOW_BASELINE}]
    return queues


def _item(gate: Any, title: str) -> ItemRow:
    with session(gate.engine) as s:
        return s.exec(
            select(ItemRow)
            .join(ChangeRow, col(ChangeRow.id) == ItemRow.change_id)
            .where(ChangeRow.title == title)
        ).one()


def _active_post_item(gate: Any) -> ItemRow:
    with session(gate.engine) as s:
        return s.exec(select(ItemRow).where(col(ItemRow.active), ItemRow.kind == "post")).one()


def _job(gate: Any, item: ItemRow, name: str) -> JobRunRow:
    with session(gate.engine) as s:
        return s.exec(
            select(JobRunRow).where(
                JobRunRow.item_id == item.id,
                JobRunRow.attempt == item.attempt,
                JobRunRow.name == name,
            )
        ).one()


@pytest.mark.slow
async def test_a_broken_published_repo_does_not_reject_an_unrelated_change(
    world: World, gate_for: Callable[..., Any]
) -> None:
    async with gate_for(world, queues=_queues(world)) as gate:
        # A direct push of horizon with a dependency nothing provides is held back
        # (its own package breaks the repository), until a release engineer
        # publishes it anyway: now the published repository is broken.
        world.push_direct("horizon", HORIZON_BROKEN_BY_PUSH, "needs does-not-exist")
        store_delivery(gate, "api", "ref.updated", {"project": "horizon"}, None)
        gate.wake()
        await gate.wait_idle(120)
        assert gate.publishers["liberty"].state().nvrs()["horizon"] == "horizon-9.0.0-1"
        push = _active_post_item(gate)
        store_delivery(gate, "api", "item.publish", {"item": push.id}, None, requested_by="releng")
        gate.wake()
        await gate.wait_idle(120)
        published = gate.publishers["liberty"].state().nvrs()
        assert published["horizon"] == "horizon-9.0.2-1"

        propose(gate, world, "nova", NOVA_1201, "A")  # unrelated
        propose(gate, world, "python-django", DJANGO_NO_COMPAT, "D")  # breaks horizon further
        propose(gate, world, "horizon", HORIZON_STILL_BROKEN, "H")  # ships the problem again
        gate.wake()
        await gate.wait_idle(180)

        assert results(gate) == {"merged": ["A"], "rejected": ["D", "H"]}, {
            title: failure_of(gate, title) for title in "ADH"
        }
        assert failure_of(gate, "D") == (
            "repoclosure: 1 unresolved dependency: "
            "horizon-9.0.2-1.noarch requires python-django-compat "
            "(and 1 warning: already broken in the base)"
        )
        # rpmdeplint's rule: the problems of the packages an item ships are its own.
        assert failure_of(gate, "H") == (
            "repoclosure: 1 unresolved dependency: horizon-9.0.3-1.noarch requires does-not-exist"
        )

        a = _item(gate, "A")
        closure = _job(gate, a, "repoclosure")
        assert closure.state == "passed"
        assert closure.summary == (
            "passed with 1 warning: already broken in the base: "
            "horizon-9.0.2-1.noarch requires does-not-exist"
        )
        assert json.loads(closure.warnings) == ["horizon-9.0.2-1.noarch requires does-not-exist"]
        d = _item(gate, "D")
        assert json.loads(_job(gate, d, "repoclosure").warnings) == [
            "horizon-9.0.2-1.noarch requires does-not-exist"
        ]
        with session(gate.engine) as s:
            doc = status(gate.runtime, s)
        [a_doc] = [i for i in doc["queues"][0]["recent"] if i["id"] == a.id]
        [a_closure] = [j for j in a_doc["jobs"] if j["name"] == "repoclosure"]
        assert a_closure["warnings"] == ["horizon-9.0.2-1.noarch requires does-not-exist"]
        assert a_closure["details"] == []

        # The baseline the jobs saw is A's speculative repo without A's own build.
        log = Path(_job(gate, a, "baseline").log_path).read_text()
        assert "nova-12.0.0-1.noarch.rpm" in log
        assert "nova-12.0.1-1.noarch.rpm" not in log
        assert "horizon-9.0.2-1.noarch.rpm" in log
        # ... served with the speculative repos (the /speculative/ file tree)
        name = f"{a.id}-{a.attempt}-baseline"
        assert f"baseline path: {Path(gate.config.state_dir) / 'speculative' / name}\n" in log
        assert f"baseline url: {gate.config.base_url}/speculative/{name}/\n" in log
        # Finished items keep their trees, baselines included, for speculative_retention
        # (gate/retention.py); past it, none is left behind.
        trees = Path(gate.config.state_dir) / "speculative"
        assert {name, f"{a.id}-{a.attempt}"} <= {p.name for p in trees.iterdir()}
        await gate.retention.sweep(now=time.time() + gate.config.speculative_retention + 1)
        assert not list(trees.iterdir())
        check_invariants(gate)


def _ctx(tmp_path: Path, baseline: bool) -> JobContext:
    return JobContext(
        item_id=4,
        attempt=2,
        repo_path=tmp_path / "spec",
        repo_url="http://gate.example.invalid/speculative/4-2/",
        arches=("x86_64",),
        base_repos=(),
        log_path=tmp_path / "env.log",
        env={"RPMGATE_BASELINE_REPO_PATH": "/not/from/the/item"},
        baseline_path=tmp_path / "base" if baseline else None,
        baseline_url="http://gate.example.invalid/speculative/4-2-baseline/" if baseline else None,
    )


def test_command_jobs_learn_where_the_baseline_is(tmp_path: Path) -> None:
    job = CommandJob("env", "true", 30, {"RPMGATE_BASELINE_REPO_URL": "from the config"})

    env = job.environment(_ctx(tmp_path, baseline=True))
    assert env["RPMGATE_BASELINE_REPO_PATH"] == str(tmp_path / "base")
    assert env["RPMGATE_BASELINE_REPO_URL"] == (
        "http://gate.example.invalid/speculative/4-2-baseline/"
    )

    env = job.environment(_ctx(tmp_path, baseline=False))
    assert env["RPMGATE_BASELINE_REPO_PATH"] == ""
    assert env["RPMGATE_BASELINE_REPO_URL"] == ""
