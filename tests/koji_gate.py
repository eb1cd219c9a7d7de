"""A demo world gated with ``backend: koji`` against the fake hub (shared by the scenario tests).

The hub has the world's packages on the target's list, maps the distgit host
``git.example.com`` to the world's bare remotes (kojid fetches from there, over
``file://``, as it would from a real git server), and, for builds from SRPMs,
lets the gate's user make final builds from an SRPM (a hub policy an admin sets).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

from gate.demo_world import World
from tests.fakekoji import FakeKoji

PACKAGES = ("nova", "ceilometer", "horizon", "python-django")
TARGET = "liberty-candidate"
SCM_PREFIX = "https://git.example.com/rpms/"
SOURCES_CMD = Path(__file__).with_name("lookaside_sources.py")
#: how builds reach the hub: where scratch and final builds come from
MODES = {"srpm": ("srpm", "srpm"), "scm": ("scm", "scm")}


def start_hub(root: Path, world: World, **options: Any) -> FakeKoji:
    fk = FakeKoji(root, **options).start()
    for name in world.projects:
        fk.hub.add_package(TARGET, name)
    fk.hub.builder.allow_srpm_final = True
    fk.hub.builder.scm_roots[SCM_PREFIX] = world.remotes
    # kojid.conf allowed_scms: host:path:use_common:source_cmd, the source
    # command being the world's "fedpkg sources" (run in the checkout)
    fetch = ",".join([sys.executable, str(SOURCES_CMD), str(world.lookaside)])
    fk.hub.builder.allowed_scms = f"git.example.com:/rpms/*:no:{fetch}"
    return fk


def koji_settings(fk: FakeKoji, mode: str = "srpm") -> dict[str, Any]:
    scratch, final = MODES[mode]
    return {
        "server": fk.url,
        "weburl": fk.weburl,
        "topurl": fk.topurl,
        "authtype": "password",
        "user": "rpmgate",
        "password": "secret",
        "target": TARGET,
        "scratch_source": scratch,
        "final_source": final,
        "poll_interval": 0.1,
        "retry_initial": 0.05,
        "retry_max_interval": 0.2,
        "retry_deadline": 20,
        "call_timeout": 10,
    }


def koji_config_doc(
    world: World, fk: FakeKoji, mode: str = "srpm", **overrides: Any
) -> dict[str, Any]:
    """The world's config with its queue building in Koji (the ``local`` backend unused)."""
    doc = world.config(**overrides)
    doc["backends"] = {"koji": {"type": "koji", **koji_settings(fk, mode)}}
    doc["queues"]["liberty"]["backend"] = "koji"
    for name, project in doc["projects"].items():
        project["scm_url"] = f"git+{SCM_PREFIX}{name}.git"
    return doc


def hub_calls(fk: FakeKoji) -> Counter[str]:
    """Hub methods called so far (inside multicalls too), by name."""
    return Counter(c.method for c in fk.hub.calls)


def request_report(name: str, fk: FakeKoji) -> str:
    """One line for the test output: what a build cost on the hub."""
    calls = hub_calls(fk)
    builds = calls["build"]
    return (
        f"[koji requests] {name}: {builds} builds, {len(fk.hub.calls)} calls, "
        f"{len(fk.hub.calls) / max(builds, 1):.1f} per build, "
        f"{fk.hub.http_requests} HTTP requests, listTasks {calls['listTasks']}"
    )
