"""The four dependency jobs in the gate, end to end (real git, rpmbuild, createrepo_c).

One queue runs ``repoclosure``, ``installability``, ``conflicts`` and
``upgrade``.  The published repository is broken first (a pushed horizon that
needs ``does-not-exist``, published by a release engineer), then four changes
are proposed: an unrelated one, which merges with a warning, and three that
are each rejected by exactly one of the checks, with the check's reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlmodel import col, select

from gate.deliveries import store_delivery
from gate.demo_world import PackageSpec, World
from repo_state.db import session
from repo_state.models import ChangeRow, ItemRow, JobRunRow
from tests.conftest import NOVA_1201, propose
from tests.invariants import check_invariants, failure_of, results

pytestmark = pytest.mark.slow

HORIZON_BROKEN_BY_PUSH = PackageSpec(
    "horizon", "9.0.2", requires=("python-django-compat", "does-not-exist")
)
#: needs horizon, which the published repository cannot install
CEILO_NEEDS_HORIZON = PackageSpec("ceilometer", "8.0.2", requires=("nova >= 12.0.0", "horizon"))
#: fixes horizon, and declares a conflict with ceilometer, which is published
HORIZON_CONFLICTING = PackageSpec(
    "horizon", "9.0.3", requires=("python-django-compat",), tags=("Conflicts: ceilometer",)
)
#: older than the published 1.8.0
DJANGO_DOWNGRADE = PackageSpec("python-django", "1.7.0", provides=("python-django-compat",))

JOBS = ["repoclosure", "installability", "conflicts", "upgrade"]


def _item(gate: Any, title: str) -> ItemRow:
    with session(gate.engine) as s:
        return s.exec(
            select(ItemRow)
            .join(ChangeRow, col(ChangeRow.id) == ItemRow.change_id)
            .where(ChangeRow.title == title)
        ).one()


def _jobs(gate: Any, title: str) -> dict[str, JobRunRow]:
    item = _item(gate, title)
    with session(gate.engine) as s:
        rows = s.exec(
            select(JobRunRow).where(JobRunRow.item_id == item.id, JobRunRow.attempt == item.attempt)
        ).all()
        return {row.name: row for row in rows}


async def test_each_dependency_job_rejects_what_it_checks_and_nothing_else(
    world: World, gate_for: Callable[..., Any]
) -> None:
    queues = world.config()["queues"]
    queues["liberty"]["jobs"] = JOBS
    async with gate_for(world, queues=queues) as gate:
        world.push_direct("horizon", HORIZON_BROKEN_BY_PUSH, "needs does-not-exist")
        store_delivery(gate, "api", "ref.updated", {"project": "horizon"}, None)
        gate.wake()
        await gate.wait_idle(120)
        push = _push(gate)
        store_delivery(gate, "api", "item.publish", {"item": push.id}, None, requested_by="releng")
        gate.wake()
        await gate.wait_idle(120)
        assert gate.publishers["liberty"].state().nvrs()["horizon"] == "horizon-9.0.2-1"

        propose(gate, world, "nova", NOVA_1201, "A")  # unrelated
        propose(gate, world, "ceilometer", CEILO_NEEDS_HORIZON, "I")
        propose(gate, world, "horizon", HORIZON_CONFLICTING, "F")
        propose(gate, world, "python-django", DJANGO_DOWNGRADE, "U")
        gate.wake()
        await gate.wait_idle(240)

        assert results(gate) == {"merged": ["A"], "rejected": ["I", "F", "U"]}, {
            t: failure_of(gate, t) for t in "AIFU"
        }
        assert failure_of(gate, "I") == (
            "installability: 1 installability problem: ceilometer-8.0.2-1.noarch cannot be "
            "installed: nothing provides does-not-exist needed by horizon-9.0.2-1.noarch"
        )
        assert failure_of(gate, "F") == (
            "conflicts: 1 conflict: package horizon-9.0.3-1.noarch conflicts with ceilometer "
            "provided by ceilometer-8.0.0-1.noarch"
        )
        assert failure_of(gate, "U") == (
            "upgrade: 1 upgrade problem: python-django-1.7.0-1.noarch downgrades "
            "python-django-1.8.0-1.noarch"
        )
        # each was rejected by exactly one check: the others passed, or were cancelled
        # when it failed (early failure, docs/pipelines.md); none failed
        for title, failing in {"I": "installability", "F": "conflicts", "U": "upgrade"}.items():
            states = {name: row.state for name, row in _jobs(gate, title).items()}
            assert states.pop(failing) == "failed", title
            assert set(states.values()) <= {"passed", "canceled"}, (title, states)

        # the unrelated change passed every check; the old breakage is a warning
        a = _jobs(gate, "A")
        assert {name: row.state for name, row in a.items()} == dict.fromkeys(JOBS, "passed")
        assert json.loads(a["repoclosure"].warnings) == [
            "horizon-9.0.2-1.noarch requires does-not-exist"
        ]
        # the finding says which change introduced it
        details = json.loads(_jobs(gate, "I")["installability"].details)
        assert details[0].endswith("introduced by this change (ceilometer-8.0.2-1))")
        assert "package ceilometer-8.0.2-1.noarch requires horizon, but none of the " in details[0]
        check_invariants(gate)


def _push(gate: Any) -> ItemRow:
    with session(gate.engine) as s:
        return s.exec(select(ItemRow).where(col(ItemRow.active), ItemRow.kind == "post")).one()
