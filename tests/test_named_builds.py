"""Named builds (docs/pipelines.md, Named builds): the config model, job references, keys.

The config errors are checked on the model; a queue's named build reaching
Koji with its own target runs through the real gate against the fake hub.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import col, select

from gate.build_matrix import DEFAULT_BUILD, build_problems, job_runs
from gate.builds import final_key, scratch_key
from gate.config import ConfigError, parse_config
from gate.daemon import Gate
from gate.demo_world import INITIAL, PackageSpec, World
from gate.events import RepoRollback
from gate.flaky import RunOutcome, flaky_notes, run_outcomes
from gate.jobs.command import CommandJobConfig
from gate.metrics import GateMetrics
from gate.pipeline import arch_stages
from gate.web.app import speculative_repo_file
from gate.web.status import item_doc
from repo_state.db import session
from repo_state.models import BuildRow, GenerationRow, ItemBuildRow, ItemRow, JobRunRow
from tests.conftest import propose
from tests.fakekoji.builder import Failure
from tests.invariants import check_invariants, results
from tests.koji_gate import koji_config_doc, start_hub


def _doc(tmp_path: Path, **queue: Any) -> dict[str, Any]:
    return {
        "state_dir": str(tmp_path / "state"),
        "publishers": {
            "liberty": {"root": str(tmp_path / "repo"), "arches": ["x86_64", "aarch64"]},
            "liberty-el9": {"root": str(tmp_path / "el9"), "arches": ["x86_64", "aarch64"]},
            "narrow": {"root": str(tmp_path / "narrow"), "arches": ["x86_64"]},
        },
        "projects": {"nova": {"git": str(tmp_path / "nova.git")}},
        "queues": {
            "liberty": {"projects": ["nova"], "repo": "liberty", "target": "liberty", **queue}
        },
    }


def _error(tmp_path: Path, **queue: Any) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(_doc(tmp_path, **queue), "rpmgate.yaml")
    return str(exc.value)


# --- the config model --------------------------------------------------------------------


def test_a_queue_without_builds_has_one_build_named_default_on_its_target(
    tmp_path: Path,
) -> None:
    config = parse_config(_doc(tmp_path))
    assert config.builds_of("liberty") == {DEFAULT_BUILD: "liberty"}
    assert config.build_of("liberty") == ("default", "liberty")


def test_the_build_publishing_to_the_queues_repo_is_the_queues_own_whatever_the_key_order(
    tmp_path: Path,
) -> None:
    """A tool that writes the config with sorted keys puts el10 first: el9, which
    publishes to the queue's repo, is still the queue's own build (the item's columns)."""
    config = parse_config(
        _doc(tmp_path, builds={"el10": {"repo": "liberty-el9"}, "el9": {"target": "c9"}})
    )
    assert list(config.builds_of("liberty")) == ["el9", "el10"]
    assert config.repos_of("liberty") == {"el9": "liberty", "el10": "liberty-el9"}
    assert config.build_of("liberty") == ("el9", "c9")


def test_a_named_build_has_its_own_target_and_a_job_may_name_it(tmp_path: Path) -> None:
    config = parse_config(
        _doc(
            tmp_path,
            builds={"el9": {"target": "cloud9s-candidate"}},
            jobs=[{"name": "install-test", "command": "true", "builds": ["el9"]}],
        )
    )
    assert config.build_of("liberty") == ("el9", "cloud9s-candidate")
    # a named build without a target builds on the queue's
    config = parse_config(_doc(tmp_path, builds={"el9": {}}))
    assert config.builds_of("liberty") == {"el9": "liberty"}


@pytest.mark.parametrize(
    ("queue", "line"),
    [
        (
            {
                "builds": {"el9": {"target": "c9"}},
                "jobs": ["repoclosure", {"name": "t", "command": "true", "builds": ["el10"]}],
            },
            "queues.liberty.jobs.1.builds.0: job t names unknown build 'el10' "
            "(the queue's builds: el9)",
        ),
        (
            {"jobs": [{"name": "t", "command": "true", "builds": ["el9"]}]},
            "queues.liberty.jobs.0.builds.0: job t names unknown build 'el9' "
            "(the queue's builds: default)",
        ),
        (
            {
                "builds": {"el9": {"target": "c9"}},
                "jobs": [{"name": "t", "command": "true", "matrix": [{"builds": ["el9", "el8"]}]}],
            },
            "queues.liberty.jobs.0.matrix.0.builds.1: job t names unknown build 'el8' "
            "(the queue's builds: el9)",
        ),
        (
            {"jobs": [{"name": "t", "command": "true", "matrix": [{"arches": ["ppc64le"]}]}]},
            "queues.liberty.jobs.0.matrix.0.arches.0: job t names unknown arch 'ppc64le' "
            "(the queue's arches: x86_64, aarch64)",
        ),
        (
            {
                "jobs": [
                    {
                        "name": "t",
                        "command": "true",
                        "arches": ["x86_64"],
                        "matrix": [{"arches": ["x86_64"]}],
                    }
                ]
            },
            "queues.liberty.jobs.0.matrix: job t has a matrix and builds/arches: say its runs "
            "one way (each matrix entry has builds and arches)",
        ),
        (
            {"builds": {"EL9": {"target": "c9"}}},
            "queues.liberty.builds: 'EL9' is not a build name",
        ),
        (
            {"builds": {"el9": {"target": "-c9"}}},
            "queues.liberty.builds.el9.target: String should match pattern",
        ),
        (
            {"builds": {"el9": {"target": "c9"}, "el10": {"target": "c10"}}},
            "queues.liberty.builds.el10.repo: builds el9 and el10 both publish to 'liberty': "
            "give each named build a publisher of its own (builds.<name>.repo)",
        ),
        (
            {"builds": {"el9": {"target": "c9"}, "el10": {"target": "c10", "repo": "nope"}}},
            "queues.liberty.builds.el10.repo: unknown publisher 'nope'",
        ),
        (
            {"builds": {"el9": {"repo": "liberty-el9"}}},
            "queues.liberty.builds: no named build publishes to the queue's repo 'liberty' "
            "(its generations are the queue's): leave one build's repo out",
        ),
        (
            {"builds": {"el9": {}, "el10": {"repo": "narrow"}}},
            "queues.liberty.builds.el10.repo: publisher narrow has no tree for aarch64 "
            "(each named build's repository has the queue's arches)",
        ),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, queue: dict[str, Any], line: str) -> None:
    assert line in _error(tmp_path, **queue)


def test_stages_are_checked_per_build_and_arch(tmp_path: Path) -> None:
    """The issue's packstack: el9 on x86_64, el10 on both; install-test only names el9."""
    jobs = [
        CommandJobConfig(name="repoclosure", command="true"),
        CommandJobConfig(name="install-test", command="true", builds=("el9",)),
        CommandJobConfig.model_validate(
            {
                "name": "packstack",
                "command": "true",
                "matrix": [
                    {"builds": ["el9"], "arches": ["x86_64"]},
                    {"builds": ["el10"], "arches": ["x86_64", "aarch64"]},
                ],
            }
        ),
    ]
    builds, arches = ["el9", "el10"], ["x86_64", "aarch64"]
    assert job_runs(jobs[2], builds, arches) == (
        ("el9", "x86_64"),
        ("el10", "x86_64"),
        ("el10", "aarch64"),
    )
    assert job_runs(jobs[1], builds, arches) == (("el9", "x86_64"), ("el9", "aarch64"))
    pipeline = [["repoclosure"], ["install-test"], ["packstack"]]
    assert build_problems("queues.liberty", builds, arches, jobs, pipeline) == [
        (
            "queues.liberty.pipeline.2.0",
            "job packstack would run on x86_64 (build el10), "
            "but no job of the previous stage runs there",
        ),
        (
            "queues.liberty.pipeline.2.0",
            "job packstack would run on aarch64 (build el10), "
            "but no job of the previous stage runs there",
        ),
    ]
    fixed = [["repoclosure"], ["install-test", "packstack"]]
    assert build_problems("queues.liberty", builds, arches, jobs, fixed) == []


def test_a_matrix_job_runs_on_its_entries_arches(tmp_path: Path) -> None:
    config = parse_config(
        _doc(
            tmp_path,
            jobs=[
                "repoclosure",
                {"name": "packstack", "command": "true", "matrix": [{"arches": ["x86_64"]}]},
            ],
            pipeline=[["repoclosure"], ["packstack"]],
        )
    )
    q = config.queues["liberty"]
    plan = arch_stages(q.pipeline, q.jobs, config.arches_of("liberty"))
    assert [[r.job.name for r in stage] for stage in plan["x86_64"]] == [
        ["repoclosure"],
        ["packstack"],
    ]
    assert [[r.job.name for r in stage] for stage in plan["aarch64"]] == [["repoclosure"]]


def test_build_keys_include_the_build_name_and_keep_the_default_key() -> None:
    tree = "a" * 40
    # the key every scratch build had before named builds: rows recorded then still match
    legacy = hashlib.sha256(f"scratch\0nova\0{tree}\0t\0local\0".encode()).hexdigest()
    default = scratch_key("nova", tree, "t", "local")
    assert default == scratch_key("nova", tree, "t", "local", DEFAULT_BUILD) == legacy
    old_final = hashlib.sha256(f"final\0nova\0{tree}\0t".encode()).hexdigest()
    assert final_key("nova", tree, "t") == old_final
    el9 = scratch_key("nova", tree, "t", "local", "el9")
    assert len({default, el9, scratch_key("nova", tree, "t", "local", "el10")}) == 3
    assert final_key("nova", tree, "t") != final_key("nova", tree, "t", "el9")


# --- Koji: a named build's target ----------------------------------------------------------


@pytest.mark.slow
async def test_koji_builds_a_named_build_with_its_own_target(tmp_path: Path) -> None:
    world = World(tmp_path / "world", projects={"nova": PackageSpec("nova", "12.0.0")}).create()
    fk = start_hub(tmp_path / "hub", world)
    try:

        def c9s() -> None:
            fk.hub.add_tag("c9s-build")
            fk.hub.add_tag("c9s-candidate")
            fk.hub.add_target("cloud9s-candidate", "c9s-build", "c9s-candidate")
            fk.hub.add_package("c9s-candidate", "nova")
            fk.hub.builder.allow_srpm_final = True

        fk.run(c9s)
        doc = koji_config_doc(world, fk)
        doc["queues"]["liberty"]["builds"] = {"el9": {"target": "cloud9s-candidate"}}
        gate = Gate(parse_config(doc))
        await gate.start()
        try:
            await gate.wait_idle(120)
            propose(gate, world, "nova", PackageSpec("nova", "12.0.1"), "A")
            gate.wake()
            await gate.wait_idle(120)
            assert results(gate) == {"merged": ["A"]}
            assert gate.publishers["liberty"].state().nvrs()["nova"] == "nova-12.0.1-1"
            targets = fk.run(
                lambda: sorted(
                    {t.request[1] for t in fk.hub.state.tasks.values() if t.method == "build"}
                )
            )
            assert targets == ["cloud9s-candidate"]
            with session(gate.engine) as s:
                rows = s.exec(select(BuildRow).where(BuildRow.purpose == "scratch")).all()
            assert rows and {r.target for r in rows} == {"cloud9s-candidate"}
            for row in rows:
                assert row.key == scratch_key(
                    row.project, row.tree, "cloud9s-candidate", "koji", "el9"
                )
            check_invariants(gate)
        finally:
            await gate.stop()
    finally:
        fk.stop()


# --- the local backend: one named build, jobs that name it -----------------------------------


@pytest.mark.slow
async def test_a_job_naming_the_queues_build_runs_against_it_and_a_matrix_on_its_arches(
    world: World, tmp_path: Path
) -> None:
    """Real git, rpmbuild and createrepo_c: the scratch build is keyed by the build's name and
    its target label, each job run is told its build, the matrix job runs on x86_64 only."""
    d = tmp_path / "ctl"
    d.mkdir()
    record = (
        f'test -f "$RPMGATE_ARCH_REPO_PATH/repodata/repomd.xml" && '
        f'echo "$RPMGATE_JOB $RPMGATE_BUILD $RPMGATE_ARCH" >> {d}/runs.log'
    )
    doc = world.config()
    doc["publishers"]["liberty"]["arches"] = ["x86_64", "aarch64"]
    doc["queues"]["liberty"].update(
        arches=["x86_64", "aarch64"],
        builds={"el9": {"target": "el9-label"}},
        jobs=[
            {"name": "install-test", "command": record, "builds": ["el9"]},
            {"name": "packstack", "command": record, "matrix": [{"arches": ["x86_64"]}]},
        ],
        pipeline=[["install-test"], ["packstack"]],
    )
    gate = Gate(parse_config(doc))
    await gate.start()
    try:
        await gate.wait_idle(120)
        propose(gate, world, "nova", PackageSpec("nova", "12.0.1"), "A")
        gate.wake()
        await gate.wait_idle(180)
        assert results(gate) == {"merged": ["A"]}
        with session(gate.engine) as s:
            scratch = s.exec(
                select(BuildRow).where(BuildRow.purpose == "scratch", BuildRow.project == "nova")
            ).one()
        assert scratch.target == "el9-label"
        assert scratch.key == scratch_key("nova", scratch.tree, "el9-label", "local", "el9")
        runs = sorted(set((d / "runs.log").read_text().splitlines()))
        assert runs == [
            "install-test el9 aarch64",
            "install-test el9 x86_64",
            "packstack el9 x86_64",
        ]
        check_invariants(gate)
    finally:
        await gate.stop()


# --- several named builds in one queue (local backend, real rpmbuild) -----------------------


def _two_builds(world: World, record: str) -> dict[str, Any]:
    doc = world.config()
    doc["publishers"]["liberty-el10"] = {
        "root": str(world.root / "repos" / "liberty-el10"),
        "arches": ["x86_64"],
        "keep": 10,
    }
    doc["queues"]["liberty"].update(
        builds={
            "el9": {"target": "el9-label"},
            "el10": {"target": "el10-label", "repo": "liberty-el10"},
        },
        jobs=["repoclosure", {"name": "install-test", "command": record, "builds": ["el9"]}],
        pipeline=[["repoclosure"], ["install-test"]],
    )
    return doc


@pytest.mark.slow
async def test_two_named_builds_each_get_their_repository_jobs_final_build_and_publisher(
    world: World, tmp_path: Path
) -> None:
    """Each change is built once per named build; a job naming el9 is given el9's
    repository only; the tip makes both final builds; both publishers get generation N."""
    d = tmp_path / "ctl"
    d.mkdir()
    record = f'echo "$RPMGATE_BUILD $RPMGATE_ARCH $RPMGATE_ARCH_REPO_PATH" >> {d}/runs.log'
    gate = Gate(parse_config(_two_builds(world, record)))
    await gate.start()
    try:
        await gate.wait_idle(180)
        propose(gate, world, "nova", PackageSpec("nova", "12.0.1"), "A")
        gate.wake()
        await gate.wait_idle(240)
        assert results(gate) == {"merged": ["A"]}
        for repo in ("liberty", "liberty-el10"):
            assert gate.publishers[repo].state().nvrs()["nova"] == "nova-12.0.1-1", repo
        with session(gate.engine) as s:
            item = s.exec(select(ItemRow).where(ItemRow.kind == "gate")).one()
            sets = {
                (e.purpose, e.build_name): s.get(BuildRow, e.build_id)
                for e in s.exec(select(ItemBuildRow).where(ItemBuildRow.item_id == item.id))
            }
            generations = {
                (g.repo, g.number)
                for g in s.exec(select(GenerationRow))
                if json.loads(g.items) == [item.id]
            }
            runs = s.exec(
                select(JobRunRow).where(
                    JobRunRow.item_id == item.id, JobRunRow.attempt == item.attempt
                )
            ).all()
            doc = item_doc(gate.runtime, s, item, None)
        # the item's document: each named build's state, each run's build
        assert {
            name: (b["build"]["state"], b["final_build"]["state"])
            for name, b in doc["builds"].items()
        } == {"el9": ("passed", "passed"), "el10": ("passed", "passed")}
        assert sorted((j["name"], j["build"]) for j in doc["jobs"]) == [
            ("install-test", "el9"),
            ("repoclosure", "el10"),
            ("repoclosure", "el9"),
        ]
        # the local backend has drafts: each named build's final build is its promoted draft
        purposes = ("scratch", "draft", "final")
        assert set(sets) == {(p, b) for p in purposes for b in ("el9", "el10")}
        for name in ("el9", "el10"):
            draft, final = sets[("draft", name)], sets[("final", name)]
            assert draft is not None and final is not None
            assert final.task_ref == f"promoted:{draft.task_ref}"
        for (purpose, name), build in sets.items():
            assert build is not None and build.state == "passed"
            assert build.target == f"{name}-label"
            expected = (
                scratch_key(build.project, build.tree, build.target, "local", name)
                if purpose == "scratch"
                else final_key(build.project, build.tree, build.target, name)
            )
            assert build.key == expected
        # the item's own columns name the first build, as with one build
        assert item.final_build_id == sets[("final", "el9")].id
        assert item.build_key == sets[("scratch", "el9")].key
        # one generation per named build's publisher, with the same number
        assert {r for r, _ in generations} == {"liberty", "liberty-el10"}
        assert len({n for _, n in generations}) == 1
        # repoclosure ran on both builds' repositories, install-test on el9's only
        assert sorted((r.name, r.build) for r in runs) == [
            ("install-test", "el9"),
            ("repoclosure", "el10"),
            ("repoclosure", "el9"),
        ]
        # (the bootstrap post items ran it too, each on its el9 repository)
        lines = [line.split() for line in (d / "runs.log").read_text().splitlines()]
        assert lines and all(build == "el9" and "/el9/" in path for build, _, path in lines)
        assert [ln for ln in lines if f"/speculative/{item.id}-{item.attempt}/" in ln[2]] == [
            [
                "el9",
                "x86_64",
                str(world.root / f"state/speculative/{item.id}-{item.attempt}/el9/x86_64"),
            ]
        ]
        check_invariants(gate)
        # dnf's .repo file of the item's speculative repositories: a section per build
        # (kept a day after the item finished: speculative_retention)
        text = speculative_repo_file(
            gate.runtime, str(item.id), str(item.attempt), str(item.id)
        ).text
        assert text is not None
        base = f"{gate.config.base_url}/speculative/{item.id}-{item.attempt}"
        assert [line for line in text.splitlines() if line.startswith(("[", "baseurl"))] == [
            f"[rpmgate-{item.id}-el10]",
            f"baseurl={base}/el10/$basearch/",
            f"[rpmgate-{item.id}-el9]",
            f"baseurl={base}/el9/$basearch/",
        ]
        # a rollback of the queue's repository rolls each named build's back, one number
        number = gate.publishers["liberty"].current().number  # type: ignore[union-attr]
        said = await gate.admin.command(RepoRollback(repo="liberty", to=number - 1))
        assert said == f"liberty generation {number + 1} (rollback)"
        for repo in ("liberty", "liberty-el10"):
            current = gate.publishers[repo].current()
            assert current is not None and current.number == number + 1, repo
            assert gate.publishers[repo].state().nvrs()["nova"] == "nova-12.0.0-1", repo
    finally:
        await gate.stop()


def test_each_named_builds_run_of_a_job_is_a_run_of_its_own() -> None:
    """el9's run of install-test on x86_64 passed on a retry, el10's at once: two runs,
    one flaky, each named by its build (a run of a queue of one build names none)."""

    def row(build: str, try_number: int, state: str, arch: str = "x86_64") -> JobRunRow:
        return JobRunRow(
            item_id=7,
            attempt=1,
            name="install-test",
            arch=arch,
            build=build,
            state=state,
            try_number=try_number,
            tries=3,
        )

    rows = [row("el10", 1, "passed"), row("el9", 2, "passed"), row("el9", 1, "failed")]
    assert sorted(run_outcomes(rows), key=lambda o: o.flaky) == [
        RunOutcome("install-test", passed=True, flaky=False),
        RunOutcome("install-test", passed=True, flaky=True),
    ]
    assert flaky_notes(rows) == ["install-test (el9, x86_64): flaky: passed on try 2 of 3"]
    assert flaky_notes([row("", 2, "passed")]) == [
        "install-test (x86_64): flaky: passed on try 2 of 3"
    ]


@pytest.mark.slow
async def test_a_job_flaky_on_one_named_build_only_is_reported_for_that_build(
    world: World,
) -> None:
    """Real git, rpmbuild and createrepo_c: install-test runs on el9 and el10 and passes
    on el9 only on a retry: the item, the runs' outcomes and /metrics name el9 alone."""
    doc = _two_builds(world, "true")
    doc["queues"]["liberty"]["jobs"][1] = {
        "name": "install-test",
        "command": '[ "$RPMGATE_BUILD" != el9 ] || [ "$RPMGATE_TRY" -ge 2 ]',
        "builds": ["el9", "el10"],
        "retries": 2,
    }
    gate = Gate(parse_config(doc))
    metrics = GateMetrics(gate.runtime)
    gate.runtime.plumbing.listeners.append(metrics.observe)
    await gate.start()
    try:
        await gate.wait_idle(180)
        propose(gate, world, "nova", PackageSpec("nova", "12.0.1"), "A")
        gate.wake()
        await gate.wait_idle(240)
        assert results(gate) == {"merged": ["A"]}
        with session(gate.engine) as s:
            item = s.exec(select(ItemRow).where(ItemRow.kind == "gate")).one()
            runs = s.exec(
                select(JobRunRow)
                .where(JobRunRow.item_id == item.id, JobRunRow.attempt == item.attempt)
                .where(JobRunRow.name == "install-test")
                .order_by(col(JobRunRow.id).desc())
            ).all()
            item_document = item_doc(gate.runtime, s, item, None)
        assert sorted((r.build, r.try_number, r.state) for r in runs) == [
            ("el10", 1, "passed"),
            ("el9", 1, "failed"),
            ("el9", 2, "passed"),
        ]
        assert sorted(o.flaky for o in run_outcomes(runs)) == [False, True]
        assert item_document["flaky"] == ["install-test (el9, x86_64): flaky: passed on try 2 of 3"]
        samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(metrics.render().decode())
            for sample in family.samples
            if sample.name == "rpmgate_job_flaky_passes_total"
        }
        # the bootstrap post items ran it too (on el9): every el9 run was flaky
        el9 = frozenset({"job": "install-test", "build": "el9", "arch": "x86_64"}.items())
        assert samples[("rpmgate_job_flaky_passes_total", el9)] >= 1
        assert {dict(labels)["build"] for _, labels in samples} == {"el9"}
        await gate.runtime.plumbing.settle()
    finally:
        await gate.stop()


#: a Release with the build tag's dist tag
DIST = "1%{?dist}"


@pytest.mark.slow
async def test_koji_builds_each_named_build_on_its_target_and_one_failure_rejects_the_item(
    tmp_path: Path,
) -> None:
    """Two named builds on the fake hub: every build task of a change names its
    build's target; an el10 build failure rejects the change (nothing of it merged
    or published in either repository) and the item behind is tested again without it."""
    # Koji builds an NVR once: each target's build tag gives its own %{dist}
    # (rpm.macro.dist, as Fedora's and CentOS's build tags do)
    initial = {name: replace(spec, release=DIST) for name, spec in INITIAL.items()}
    world = World(tmp_path / "world", projects=initial).create()
    fk = start_hub(tmp_path / "hub", world)
    try:

        def targets() -> None:
            for dist in ("c9s", "c10s"):
                fk.hub.add_tag(f"{dist}-build", **{"rpm.macro.dist": f".el{dist[1:-1]}"})
                fk.hub.add_tag(f"{dist}-candidate")
                fk.hub.add_target(
                    f"cloud{dist[1:]}-candidate", f"{dist}-build", f"{dist}-candidate"
                )
                for name in world.projects:
                    fk.hub.add_package(f"{dist}-candidate", name)
            fk.hub.builder.allow_srpm_final = True

        fk.run(targets)
        doc = koji_config_doc(world, fk)
        doc["publishers"]["liberty-el10"] = {
            "root": str(world.root / "repos" / "liberty-el10"),
            "arches": ["x86_64"],
        }
        doc["queues"]["liberty"]["builds"] = {
            "el9": {"target": "cloud9s-candidate"},
            "el10": {"target": "cloud10s-candidate", "repo": "liberty-el10"},
        }
        gate = Gate(parse_config(doc))
        await gate.start()
        try:
            await gate.wait_idle(180)
            propose(gate, world, "nova", PackageSpec("nova", "12.0.1", DIST), "A")
            gate.wake()
            await gate.wait_idle(180)
            assert results(gate) == {"merged": ["A"]}
            for repo, dist in (("liberty", "el9"), ("liberty-el10", "el10")):
                assert gate.publishers[repo].state().nvrs()["nova"] == f"nova-12.0.1-1.{dist}"

            def build_tasks() -> list[tuple[str, bool]]:
                return [
                    (str(t.request[1]), bool((t.request[2] or {}).get("scratch")))
                    for t in fk.hub.state.tasks.values()
                    if t.method == "build"
                ]

            # a scratch and a final build per named build, each on its target
            # (bootstrap post items: final builds of every project on both targets)
            tasks = fk.run(build_tasks)
            assert sorted(set(tasks)) == [
                ("cloud10s-candidate", False),
                ("cloud10s-candidate", True),
                ("cloud9s-candidate", False),
                ("cloud9s-candidate", True),
            ]
            assert tasks.count(("cloud9s-candidate", True)) == 1
            assert tasks.count(("cloud10s-candidate", True)) == 1

            fk.run(
                lambda: fk.hub.builder.failures.append(
                    Failure("buildArch", "el10 only", package="ceilometer", build_tag="c10s-build")
                )
            )
            propose(gate, world, "ceilometer", PackageSpec("ceilometer", "8.0.1", DIST), "B")
            propose(gate, world, "horizon", PackageSpec("horizon", "9.0.1", DIST), "C")
            gate.wake()
            await gate.wait_idle(240)
            assert results(gate) == {"merged": ["A", "C"], "rejected": ["B"]}
            with session(gate.engine) as s:
                items = {
                    i.project: i for i in s.exec(select(ItemRow).where(ItemRow.kind == "gate"))
                }
            b, c = items["ceilometer"], items["horizon"]
            assert b.failure.startswith("build el10: "), b.failure
            assert "el10 only" in b.failure
            assert b.id not in json.loads(c.base_ahead)
            for repo, dist in (("liberty", "el9"), ("liberty-el10", "el10")):
                nvrs = gate.publishers[repo].state().nvrs()
                assert nvrs["ceilometer"] == f"ceilometer-8.0.0-1.{dist}", repo
                assert nvrs["horizon"] == f"horizon-9.0.1-1.{dist}", repo
            check_invariants(gate)
        finally:
            await gate.stop()
    finally:
        fk.stop()
