"""Pipelines: stages per arch, early failure, flaky retries, builddeps (docs/pipelines.md).

The config errors are checked on the model; the behaviour runs through the
real gate with real git, rpmbuild and createrepo_c.  Command jobs decide from
files under the test's directory and write what they saw there, so each test
can tell which run ran where, and in which order, without timing anything.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import col, select

from gate.cli import main
from gate.client import item_lines
from gate.config import ConfigError, parse_config
from gate.config_check import offline_findings
from gate.daemon import Gate
from gate.demo_world import PackageSpec, World
from gate.jobs.base import JobConfig, JobContext
from gate.jobs.builddeps import BuildDeps
from gate.jobs.command import CommandJobConfig
from gate.metrics import GateMetrics
from gate.pipeline import RunnerAttributes, RunnerMatch, RunnerRule, arch_stages, runner_for
from gate.web.status import item_doc, status
from repo_state.db import session
from repo_state.models import ChangeRow, ItemRow, JobRunRow
from tests.conftest import NOVA_1201, propose
from tests.daemon import Daemon, free_port
from tests.invariants import check_invariants, failure_of, results
from tests.rpmfactory import build_rpm

# --- the config model ------------------------------------------------------------------


def _doc(tmp_path: Path, **queue: Any) -> dict[str, Any]:
    return {
        "state_dir": str(tmp_path / "state"),
        "publishers": {
            "liberty": {"root": str(tmp_path / "repo"), "arches": ["x86_64", "aarch64"]}
        },
        "projects": {"nova": {"git": str(tmp_path / "nova.git")}},
        "queues": {"liberty": {"projects": ["nova"], "repo": "liberty", **queue}},
    }


LAUNCHPAD_JOBS = [
    {"type": "repoclosure", "arches": ["x86_64"]},
    {"type": "builddeps", "arches": ["x86_64"]},
    {"name": "install-test", "command": "true", "arches": ["x86_64"]},
    {"name": "packstack", "command": "true"},
]


@pytest.mark.parametrize(
    ("queue", "key", "message"),
    [
        (
            {
                "arches": ["x86_64", "aarch64"],
                "jobs": LAUNCHPAD_JOBS,
                "pipeline": [["repoclosure", "builddeps"], ["install-test"], ["packstack"]],
            },
            "queues.liberty.pipeline.2.0",
            "job packstack would run on aarch64, but no job of the previous stage runs there",
        ),
        (
            {"jobs": [{"name": "t", "command": "true", "arches": ["ppc64le"]}]},
            "queues.liberty.jobs.0.arches.0",
            "job t names unknown arch 'ppc64le' (the queue's arches: x86_64, aarch64)",
        ),
        (
            {"arches": ["s390x"]},
            "queues.liberty.arches.0",
            "s390x is not one of publisher liberty's arches (x86_64, aarch64)",
        ),
        (
            {"arches": ["noarch"]},
            "queues.liberty.arches",
            "noarch is not an arch tree: noarch packages are in every arch's tree",
        ),
        ({"pipeline": []}, "queues.liberty.pipeline", "the pipeline has no stage"),
        (
            {"jobs": LAUNCHPAD_JOBS, "pipeline": [["repoclosure", "builddeps", "install-test"]]},
            "queues.liberty.jobs.3",
            "job packstack is in no stage of the pipeline (it would never run)",
        ),
        (
            {"pipeline": [["repoclosure", "packstack"]]},
            "queues.liberty.pipeline.0.1",
            "unknown job 'packstack' (jobs: repoclosure)",
        ),
        (
            {
                "jobs": LAUNCHPAD_JOBS,
                "pipeline": [
                    ["repoclosure", "builddeps", "install-test"],
                    ["packstack", "builddeps"],
                ],
            },
            "queues.liberty.pipeline.1.1",
            "job builddeps is already in stage 1",
        ),
        (
            {"runners": [{"match": {"job": "packstack"}, "attributes": {"tags": ["big"]}}]},
            "queues.liberty.runners.0.match.job",
            "unknown job 'packstack' (jobs: repoclosure)",
        ),
        (
            {"runners": [{"attributes": {"variables": {"RPMGATE_ITEM": "1"}}}]},
            "queues.liberty.runners.0.attributes.variables",
            "RPMGATE_ITEM: RPMGATE_* variables are set by the gate",
        ),
    ],
)
def test_a_pipeline_that_cannot_run_is_refused_at_load_naming_the_key(
    tmp_path: Path, queue: dict[str, Any], key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(_doc(tmp_path, **queue))
    lines = str(raised.value).splitlines()
    assert any(line.strip().startswith(f"{key}: ") and message in line for line in lines), lines


def test_check_config_names_every_pipeline_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = _doc(
        tmp_path,
        arches=["x86_64", "aarch64"],
        jobs=LAUNCHPAD_JOBS,
        pipeline=[["repoclosure", "builddeps"], ["install-test", "nope"], ["packstack"]],
    )
    path = tmp_path / "rpmgate.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["check-config", "-c", str(path)]) != 0
    out, err = capsys.readouterr()
    text = out + err
    assert "queues.liberty.pipeline.1.1: unknown job 'nope'" in text
    assert (
        "queues.liberty.pipeline.2.0: job packstack would run on aarch64, "
        "but no job of the previous stage runs there"
    ) in text


def test_check_config_warns_of_an_arch_the_local_backend_builds_noarch_packages_only_for(
    tmp_path: Path,
) -> None:
    config = parse_config(_doc(tmp_path, arches=["x86_64", "aarch64"]))
    warned = {f.key: f for f in offline_findings(config) if f.key.startswith("queues.")}
    foreign = {
        f"queues.liberty.arches.{i}"
        for i, arch in enumerate(["x86_64", "aarch64"])
        if arch != platform.machine()
    }
    assert set(warned) == foreign
    for finding in warned.values():
        assert finding.warning and "gets the noarch packages only" in finding.problem


def test_no_pipeline_is_one_stage_of_every_job_on_the_publishers_arches(tmp_path: Path) -> None:
    config = parse_config(_doc(tmp_path, jobs=["repoclosure", {"name": "t", "command": "true"}]))
    qcfg = config.queues["liberty"]
    assert config.arches_of("liberty") == ("x86_64", "aarch64")
    plan = arch_stages(qcfg.pipeline, qcfg.jobs, config.arches_of("liberty"))
    assert {arch: [[p.job.name for p in st] for st in stages] for arch, stages in plan.items()} == {
        "x86_64": [["repoclosure", "t"]],
        "aarch64": [["repoclosure", "t"]],
    }
    assert all(j.retries == 0 for j in qcfg.jobs)  # never implied, not even for commands


def test_stages_are_planned_per_arch_and_runners_first_match_wins() -> None:
    jobs: list[JobConfig] = [
        CommandJobConfig(name="smoke", command="true"),
        CommandJobConfig(name="big", command="true", arches=("x86_64",)),
        CommandJobConfig(name="install", command="true", arches=("x86_64",)),
    ]
    plan = arch_stages((("smoke",), ("big",), ("install",)), jobs, ("x86_64", "aarch64"))
    assert [[(p.job.name, p.stage) for p in st] for st in plan["x86_64"]] == [
        [("smoke", 1)],
        [("big", 2)],
        [("install", 3)],
    ]
    assert [[(p.job.name, p.stage) for p in st] for st in plan["aarch64"]] == [[("smoke", 1)]]
    rules = (
        RunnerRule(
            match=RunnerMatch(job="big", arches=("aarch64",)),
            attributes=RunnerAttributes(tags=("aarch64-large",)),
        ),
        RunnerRule(match=RunnerMatch(job="big"), attributes=RunnerAttributes(tags=("large",))),
        RunnerRule(attributes=RunnerAttributes(tags=("default",))),
    )
    assert runner_for(rules, "big", "aarch64").tags == ("aarch64-large",)
    assert runner_for(rules, "big", "x86_64").tags == ("large",)
    assert runner_for(rules, "smoke", "aarch64").tags == ("default",)
    assert runner_for((), "smoke", "x86_64") == RunnerAttributes()


# --- the gate ------------------------------------------------------------------------


def _item(gate: Any, title: str) -> ItemRow:
    with session(gate.engine) as s:
        return s.exec(
            select(ItemRow)
            .join(ChangeRow, col(ChangeRow.id) == ItemRow.change_id)
            .where(ChangeRow.title == title)
        ).one()


def _runs(gate: Any, item_id: int, attempt: int | None = None) -> list[JobRunRow]:
    with session(gate.engine) as s:
        query = select(JobRunRow).where(JobRunRow.item_id == item_id)
        if attempt is not None:
            query = query.where(JobRunRow.attempt == attempt)
        return list(s.exec(query.order_by(col(JobRunRow.id))).all())


def _two_arch_config(world: World, jobs: list[dict[str, Any]], **queue: Any) -> dict[str, Any]:
    doc = world.config()
    doc["publishers"]["liberty"]["arches"] = ["x86_64", "aarch64"]
    doc["queues"]["liberty"].update(arches=["x86_64", "aarch64"], jobs=jobs, **queue)
    return doc


@pytest.mark.slow
async def test_stage_two_runs_on_an_arch_as_soon_as_stage_one_passed_there(
    world: World, gate_for: Callable[..., Any], tmp_path: Path
) -> None:
    """Stage 2 on x86_64 does not wait for stage 1 on aarch64, and never runs on aarch64
    when stage 1 failed there; each run gets its arch's tree and its runner."""
    d = tmp_path / "ctl"
    d.mkdir()
    # check on aarch64 fails when told to, and only after install started on x86_64:
    # were stages global, it would wait for ever (and fail after 60 s)
    check = (
        f'if [ "$RPMGATE_ARCH" = aarch64 ] && [ -e {d}/fail-aarch64 ]; then '
        f"for i in $(seq 600); do "
        f'[ -e {d}/install-x86_64-"$RPMGATE_ITEM" ] && exit 1; sleep 0.1; done; exit 2; fi'
    )
    install = (
        f'touch {d}/install-"$RPMGATE_ARCH"-"$RPMGATE_ITEM"; '
        f'test -f "$RPMGATE_ARCH_REPO_PATH/repodata/repomd.xml" && '
        f'echo "$RPMGATE_ITEM $RPMGATE_ARCH $RPMGATE_STAGE $RPMGATE_ARCHES '
        f'tags=$RPMGATE_RUNNER_TAGS mem=$MEM" >> {d}/install.log'
    )
    jobs = [{"name": "check", "command": check}, {"name": "install", "command": install}]
    runners = [
        {
            "match": {"job": "install", "arches": ["aarch64"]},
            "attributes": {"tags": ["aarch64-large"], "variables": {"MEM": "16G"}},
        },
        {"match": {}, "attributes": {"tags": ["default"]}},
    ]
    doc = _two_arch_config(world, jobs, pipeline=[["check"], ["install"]], runners=runners)
    async with gate_for(world, **doc) as gate:
        propose(gate, world, "nova", NOVA_1201, "A")
        gate.wake()
        await gate.wait_idle(180)
        a = _item(gate, "A")
        assert a.result == "merged", a.failure
        ran = {(r.name, r.arch): (r.state, r.stage) for r in _runs(gate, a.id or 0, a.attempt)}
        assert ran == {
            ("check", "x86_64"): ("passed", 1),
            ("check", "aarch64"): ("passed", 1),
            ("install", "x86_64"): ("passed", 2),
            ("install", "aarch64"): ("passed", 2),
        }
        lines = [
            ln for ln in (d / "install.log").read_text().splitlines() if ln.startswith(f"{a.id} ")
        ]
        assert sorted(lines) == [
            f"{a.id} aarch64 2 aarch64 tags=aarch64-large mem=16G",
            f"{a.id} x86_64 2 x86_64 tags=default mem=",
        ]

        (d / "fail-aarch64").touch()
        propose(gate, world, "ceilometer", PackageSpec("ceilometer", "8.0.1"), "B")
        gate.wake()
        await gate.wait_idle(180)
        b = _item(gate, "B")
        assert b.result == "rejected"
        assert failure_of(gate, "B") == "check (aarch64): exit code 1"
        ran_b = {(r.name, r.arch): r.state for r in _runs(gate, b.id or 0, b.attempt)}
        assert ran_b[("check", "x86_64")] == "passed"
        assert ran_b[("check", "aarch64")] == "failed"
        # stage 2 started on x86_64 while stage 1 ran on aarch64 (cancelled when it failed,
        # or passed first); it never started on aarch64
        assert ran_b[("install", "x86_64")] in ("passed", "canceled")
        assert ("install", "aarch64") not in ran_b
        assert not (d / f"install-aarch64-{b.id}").exists()
        check_invariants(gate)


@pytest.mark.slow
async def test_a_failing_job_resets_the_items_behind_without_waiting_for_its_stage(
    world: World, gate_for: Callable[..., Any], tmp_path: Path
) -> None:
    """A's fast-fail fails while its stage-mate slow still runs: A leaves and B is tested
    again without it at once.  Slow can end by itself only once B was tested again (it
    waits for that, or for a minute): had the reset waited for the stage, slow would have
    ended first, on its own.  The events say in which order it happened; no clock."""
    d = tmp_path / "ctl"
    d.mkdir()
    marks = tmp_path / "marks"
    marks.mkdir()
    has_bad = 'ls -R "$RPMGATE_REPO_PATH" | grep -q "horizon-9.0.9"'
    jobs = [
        {
            "name": "fast-fail",
            "command": f"if {has_bad}; then echo 'horizon-9.0.9 is here'; exit 1; fi; "
            f'touch {marks}/clean-"$RPMGATE_ITEM"-"$RPMGATE_ATTEMPT"',
        },
        {
            "name": "slow",
            # waits for a run on a repository without A by an item tested again
            # (attempt 2 or later), or for a minute
            "command": f"if {has_bad}; then for i in $(seq 600); do "
            f"ls {marks} | grep -Eq -- '-([2-9]|[1-9][0-9]+)$' && break; sleep 0.1; done; "
            f'touch {d}/slow-finished-"$RPMGATE_ITEM"-"$RPMGATE_ATTEMPT"; fi',
        },
    ]
    queues = world.config()["queues"]
    queues["liberty"]["jobs"] = jobs
    async with gate_for(world, queues=queues) as gate:
        events: list[dict[str, Any]] = []
        gate.runtime.plumbing.listeners.append(events.append)
        bad = PackageSpec("horizon", "9.0.9", requires=("python-django-compat",))
        propose(gate, world, "horizon", bad, "A")
        propose(gate, world, "nova", NOVA_1201, "B")
        gate.wake()
        await gate.wait_idle(180)
        assert results(gate) == {"rejected": ["A"], "merged": ["B"]}
        assert failure_of(gate, "A") == "fast-fail: exit code 1"
        a, b = _item(gate, "A"), _item(gate, "B")
        runs_a = {r.name: r for r in _runs(gate, a.id or 0, a.attempt)}
        assert runs_a["fast-fail"].state == "failed"
        assert runs_a["slow"].state == "canceled"
        assert runs_a["slow"].summary == "cancelled: the item failed or was reset"
        # nobody's slow job ran to its end: A's was cancelled when its stage-mate failed,
        # B's first attempt (on top of A) likewise, and B was reset on a base without A
        assert list(d.iterdir()) == []
        assert b.attempt >= 2
        earlier = [r for r in _runs(gate, b.id or 0) if r.attempt < b.attempt]
        assert {r.state for r in earlier} <= {"failed", "canceled"}
        last = _runs(gate, b.id or 0, b.attempt)
        assert {r.name: r.state for r in last} == {"fast-fail": "passed", "slow": "passed"}
        # in order: A's fast-fail failed, B was tested again without A, and B's jobs
        # ran; A's slow job never ended by itself (a cancelled run says nothing)
        order = [
            (e["topic"], e.get("item"), e.get("name") or e.get("state"), e.get("attempt"))
            for e in events
            if e["topic"] in ("job", "item") and e.get("item") in (a.id, b.id)
        ]
        a_failed = order.index(("job", a.id, "fast-fail", a.attempt))
        b_again = order.index(("item", b.id, "testing", b.attempt))
        b_tested = order.index(("job", b.id, "fast-fail", b.attempt))
        assert a_failed < b_again < b_tested
        assert [e["passed"] for e in events if e["topic"] == "job" and e["item"] == a.id] == [False]
        assert ("item", a.id, "rejected", None) in order
        assert not [o for o in order if o[:3] == ("job", a.id, "slow")]
        # the failed job's log ends A's document (the tail under its reason)
        with session(gate.engine) as s:
            tail = item_doc(gate.runtime, s, s.get(ItemRow, a.id), None)["log_tail"]
        assert tail["label"] == "job fast-fail (x86_64)"
        assert "horizon-9.0.9 is here" in tail["lines"]
        check_invariants(gate)


@pytest.mark.slow
async def test_a_job_that_passes_on_a_retry_counts_and_is_reported_flaky(
    world: World, gate_for: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    jobs = [
        "repoclosure",
        {"name": "install-test", "command": '[ "$RPMGATE_TRY" -ge 2 ]', "retries": 2},
    ]
    queues = world.config()["queues"]
    queues["liberty"]["jobs"] = jobs
    caplog.set_level(logging.INFO, logger="gate.sources.plaingit")
    async with gate_for(world, queues=queues) as gate:
        metrics = GateMetrics(gate.runtime)
        gate.runtime.plumbing.listeners.append(metrics.observe)
        propose(gate, world, "nova", NOVA_1201, "A")
        gate.wake()
        await gate.wait_idle(180)
        a = _item(gate, "A")
        assert a.result == "merged", a.failure
        tries = [
            (r.try_number, r.tries, r.state)
            for r in _runs(gate, a.id or 0, a.attempt)
            if r.name == "install-test"
        ]
        assert tries == [(1, 3, "failed"), (2, 3, "passed")]
        passed = [r for r in _runs(gate, a.id or 0, a.attempt) if r.state == "passed"]
        flaky = next(r for r in passed if r.name == "install-test")
        assert flaky.summary.endswith("(flaky: passed on try 2 of 3)")
        # deterministic jobs are never retried unless configured
        assert [(r.try_number, r.tries) for r in passed if r.name == "repoclosure"] == [(1, 1)]

        with session(gate.engine) as s:
            doc = status(gate.runtime, s)
        queue = doc["queues"][0]
        item = next(i for i in queue["recent"] if i["id"] == a.id)
        assert item["flaky"] == ["install-test (x86_64): flaky: passed on try 2 of 3"]
        assert [j["flaky"] for j in item["jobs"] if j["name"] == "install-test"] == [False, True]
        shown = item_lines(item)  # `rpmgate item show`
        assert "  job install-test (try 1 of 3): failed exit code 1" in shown
        assert "  install-test (x86_64): flaky: passed on try 2 of 3" in shown
        # every run of install-test so far (the bootstrap's and A's) passed only on a retry
        (reported,) = queue["flaky_jobs"]
        assert reported["job"] == "install-test"
        assert reported["rate"] == 1.0 and reported["runs"] == reported["flaky"] >= 1
        assert "passed only on a retry" in reported["summary"]

        samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(metrics.render().decode())
            for sample in family.samples
        }
        key = frozenset({"job": "install-test", "build": "", "arch": "x86_64"}.items())
        assert samples[("rpmgate_job_flaky_passes_total", key)] == 1
        failed_tries = frozenset({"job": "install-test", "result": "failed"}.items())
        assert samples[("rpmgate_jobs_total", failed_tries)] == 1

        await gate.runtime.plumbing.settle()
    merged_reports = [r.getMessage() for r in caplog.records if " merged " in r.getMessage()]
    assert any(
        "Flaky: install-test (x86_64): flaky: passed on try 2 of 3." in m for m in merged_reports
    ), merged_reports


@pytest.mark.slow
async def test_builddeps_rejects_a_build_requirement_nothing_ahead_provides(
    world: World, gate_for: Callable[..., Any]
) -> None:
    queues = world.config()["queues"]
    queues["liberty"]["jobs"] = ["repoclosure", "builddeps"]
    ceilo = PackageSpec(
        "ceilometer",
        "8.0.1",
        requires=("nova >= 12.0.0",),
        tags=("BuildRequires: nova-devel >= 12.0.1",),
    )
    async with gate_for(world, queues=queues) as gate:
        propose(gate, world, "ceilometer", ceilo, "B")
        gate.wake()
        await gate.wait_idle(180)
        assert failure_of(gate, "B") == (
            "builddeps: 1 unresolved build dependency: "
            "ceilometer-8.0.1-1.src BuildRequires nova-devel >= 12.0.1"
        )
        b = _item(gate, "B")
        (row,) = [r for r in _runs(gate, b.id or 0, b.attempt) if r.name == "builddeps"]
        (detail,) = json.loads(row.details)
        assert "nothing provides requested nova-devel >= 12.0.1" in detail
        assert detail.endswith("introduced by this change (ceilometer-8.0.1-1))")

        # with a nova ahead that provides it, the same BuildRequires resolves
        nova = PackageSpec("nova", "12.0.1", lookaside=True, provides=("nova-devel = 12.0.1",))
        propose(gate, world, "nova", nova, "A")
        propose(gate, world, "ceilometer", ceilo, "B2")
        gate.wake()
        await gate.wait_idle(180)
        assert results(gate) == {"rejected": ["B"], "merged": ["A", "B2"]}
        b2 = _item(gate, "B2")
        (row,) = [r for r in _runs(gate, b2.id or 0, b2.attempt) if r.name == "builddeps"]
        assert row.summary == "the build dependencies of 1 source package resolve on x86_64"
        check_invariants(gate)


@pytest.mark.slow
def test_kill_9_during_stage_two_keeps_stage_one_and_runs_stage_two_again(
    tmp_path: Path,
) -> None:
    """A run that passed in the attempt is kept over a kill -9; the one cut short runs
    again, from its first try.  Counted from the commands' own output, not the database."""
    root = Path(tempfile.mkdtemp(prefix="rpmgate-pipeline-crash-"))
    root.chmod(0o755)  # the build user (nobody, under root) reaches the state directory
    try:
        d = tmp_path / "ctl"
        d.mkdir()
        world = World(tmp_path / "world").create()
        port = free_port()
        config = world.config(
            listen={"host": "127.0.0.1", "port": port},
            state_dir=str(root / "state"),
            sandbox={"bubblewrap": "off"},
        )
        config["queues"]["liberty"].update(
            jobs=[
                {"name": "check", "command": f'echo "$RPMGATE_ITEM" >> {d}/check.log'},
                {
                    "name": "wait",
                    "command": f'echo "$RPMGATE_ITEM" >> {d}/wait.log; '
                    f"while [ ! -e {d}/go ]; do sleep 0.1; done",
                    "retries": 1,
                },
            ],
            pipeline=[["check"], ["wait"]],
        )
        config_path = tmp_path / "rpmgate.yaml"
        config_path.write_text(yaml.safe_dump(config))
        (d / "go").touch()  # the bootstrap's items pass at once
        daemon = Daemon(config_path, f"http://127.0.0.1:{port}", tmp_path / "daemon.log")
        daemon.start()
        try:
            _until(lambda: not daemon.busy() and daemon.get("/api/repos/liberty")["current"])
            (d / "go").unlink()
            ref = world.propose("nova", NOVA_1201, "A")
            status_code, _ = daemon.post(
                "/api/changes", {"project": "nova", "ref": ref, "title": "A", "approve": True}
            )
            assert status_code == 202
            bootstrap = _item_lines(d / "wait.log")
            _until(lambda: bool(_item_lines(d / "wait.log") - bootstrap))  # A in stage 2
            waiting = _item_lines(d / "wait.log") - bootstrap
            daemon.kill9()
            daemon.start()
            (d / "go").touch()
            _until(lambda: not daemon.busy())
        finally:
            daemon.stop()
        gate = Gate(parse_config(config))
        try:
            assert results(gate) == {"merged": ["A"]}
            a = _item(gate, "A")
            (item,) = {str(a.id)} & waiting
            check_lines = (d / "check.log").read_text().split()
            wait_lines = (d / "wait.log").read_text().split()
            assert check_lines.count(item) == 1  # stage 1 was not run again
            assert wait_lines.count(item) == 2  # stage 2 was, after the restart
            rows = [(r.name, r.try_number, r.state) for r in _runs(gate, a.id or 0, a.attempt)]
            assert rows == [("check", 1, "passed"), ("wait", 1, "failed"), ("wait", 1, "passed")]
            interrupted = _runs(gate, a.id or 0, a.attempt)[1]
            assert interrupted.summary == "interrupted; run again"
            check_invariants(gate)
        finally:
            gate.engine.dispose()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _item_lines(path: Path) -> set[str]:
    return set(path.read_text().split()) if path.exists() else set()


def _until(done: Callable[[], Any], timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if done():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


# --- builddeps on real SRPMs and repodata ----------------------------------------------


def _srpm(outdir: Path, name: str, version: str, build_requires: list[str]) -> Path:
    """A source RPM with these BuildRequires (``-bs --nodeps``: nothing is installed)."""
    top = outdir / f"top-{name}-{version}"
    (top / "SPECS").mkdir(parents=True)
    spec = top / "SPECS" / f"{name}.spec"
    spec.write_text(
        "\n".join(
            [
                f"Name: {name}",
                f"Version: {version}",
                "Release: 1",
                "Summary: rpmgate test source package",
                "License: MIT",
                "BuildArch: noarch",
                *(f"BuildRequires: {r}" for r in build_requires),
                "",
                "%description",
                "test",
                "",
                "%files",
                "",
            ]
        )
    )
    subprocess.run(
        ["rpmbuild", "-bs", "--nodeps", "--quiet", "--define", f"_topdir {top}", str(spec)],
        check=True,
        capture_output=True,
    )
    (found,) = (top / "SRPMS").glob("*.src.rpm")
    return found


def _tree(root: Path, rpms: list[Path]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for rpm in rpms:
        shutil.copy(rpm, root / rpm.name)
    subprocess.run(["createrepo_c", "--quiet", str(root)], check=True)


async def test_builddeps_blames_the_item_only_for_what_the_baseline_did_not_lack(
    tmp_path: Path,
) -> None:
    rpms = tmp_path / "rpms"
    devel = build_rpm(rpms, "nova-devel", "12.0.0")
    x86_only = build_rpm(rpms, "libvirt-devel", "1.0", arch="x86_64")
    old = _srpm(rpms, "ceilometer", "8.0.0", ["does-not-exist", "nova-devel"])
    new = _srpm(
        rpms,
        "ceilometer",
        "8.0.1",
        ["does-not-exist", "nova-devel >= 12.0.1", "(nova-devel or nothing-else)", "libvirt-devel"],
    )
    for arch in ("x86_64", "aarch64"):
        binaries = [devel, x86_only] if arch == "x86_64" else [devel]
        _tree(tmp_path / "baseline" / arch, binaries)
        _tree(tmp_path / "speculative" / arch, binaries)
    _tree(tmp_path / "baseline" / "src", [old])
    _tree(tmp_path / "speculative" / "src", [new])

    def ctx(arch: str) -> JobContext:
        return JobContext(
            item_id=3,
            attempt=1,
            repo_path=tmp_path / "speculative",
            repo_url="http://gate.example.invalid/3/",
            arches=(arch,),
            base_repos=(),
            log_path=tmp_path / "logs" / f"{arch}.log",
            baseline_path=tmp_path / "baseline",
            cache_dir=tmp_path / "cache",
            arch=arch,
        )

    x86 = await BuildDeps("builddeps").run(ctx("x86_64"))
    assert not x86.passed
    assert x86.summary == (
        "1 unresolved build dependency: ceilometer-8.0.1-1.src BuildRequires "
        "nova-devel >= 12.0.1 (and 1 warning: already broken in the base)"
    )
    assert x86.details == (
        "ceilometer-8.0.1-1.src BuildRequires nova-devel >= 12.0.1 (available: "
        "nova-devel-12.0.0-1.noarch; nothing provides requested nova-devel >= 12.0.1; "
        "introduced by this change (ceilometer-8.0.1-1))",
    )
    # the old version lacked does-not-exist too: a warning, not the item's fault
    assert x86.warnings == ("ceilometer-8.0.1-1.src BuildRequires does-not-exist",)
    # an arch-specific build dependency resolves only where it is built
    aarch64 = await BuildDeps("builddeps").run(ctx("aarch64"))
    assert [line.split(" (")[0] for line in aarch64.details] == [
        "ceilometer-8.0.1-1.src BuildRequires libvirt-devel",
        "ceilometer-8.0.1-1.src BuildRequires nova-devel >= 12.0.1",
    ]
