"""Repoclosure on libsolv: the blame rule on synthetic pools, then the job on real RPMs."""

from __future__ import annotations

import asyncio
import functools
import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import solv

from gate.jobs import depsolve
from gate.jobs.base import JobContext
from gate.jobs.dependencies import Repoclosure
from gate.jobs.depsolve import Trees
from gate.jobs.solvrepo import Stopped, finish_pool, new_pool
from tests.rpmfactory import Subpackage, build_rpm, build_rpms

# --------------------------------------------------------------------------
# The rules, on pools made in memory (no RPM, no metadata)
# --------------------------------------------------------------------------

_FLAGS = {
    "=": solv.REL_EQ,
    "<": solv.REL_LT,
    ">": solv.REL_GT,
    "<=": solv.REL_LT | solv.REL_EQ,
    ">=": solv.REL_GT | solv.REL_EQ,
}


def dep(pool: solv.Pool, text: str) -> solv.Dep:
    if text.startswith("("):
        return pool.parserpmrichdep(text)  # libsolv parses rich dependencies itself
    parts = text.split()
    if len(parts) == 1:
        return pool.Dep(text)
    name, op, evr = parts
    return pool.Dep(name).Rel(_FLAGS[op], pool.Dep(evr))


def pkg(
    repo: solv.XRepo,
    nevr: str,
    requires: Iterable[str] = (),
    provides: Iterable[str] = (),
    arch: str = "noarch",
    checksum: str = "",
) -> solv.XSolvable:
    """``pkg(repo, "nova-12.0.1-1", requires=["python-oslo >= 2"])``."""
    name, version, release = nevr.rsplit("-", 2)
    pool = repo.pool
    s = repo.add_solvable()
    s.name, s.evr, s.arch = name, f"{version}-{release}", arch
    s.add_deparray(solv.SOLVABLE_PROVIDES, dep(pool, f"{name} = {version}-{release}"))
    for text in requires:
        s.add_deparray(solv.SOLVABLE_REQUIRES, dep(pool, text))
    for text in provides:
        s.add_deparray(solv.SOLVABLE_PROVIDES, dep(pool, text))
    data = repo.first_repodata() or repo.add_repodata()
    digest = (checksum or nevr.encode().hex()).ljust(64, "0")[:64]
    data.set_checksum(s.id, solv.SOLVABLE_CHECKSUM, solv.Chksum(solv.REPOKEY_TYPE_SHA256, digest))
    return s


Spec = dict[str, Any]


def trees(
    speculative: list[Spec], baseline: list[Spec] | None = None, base: Iterable[Spec] = ()
) -> Trees:
    def fill(pool: solv.Pool, name: str, specs: Iterable[Spec]) -> solv.XRepo:
        repo = pool.add_repo(name)
        for spec in specs:
            pkg(repo, **spec)
        repo.internalize()
        return repo

    pool = new_pool("x86_64")
    spec_repo = fill(pool, "speculative", speculative)
    bases = [fill(pool, "base", base)] if base else []
    finish_pool(pool)
    result = Trees("x86_64", pool, spec_repo, bases)
    if baseline is not None:
        baseline_pool = new_pool("x86_64")
        result.baseline = fill(baseline_pool, "baseline", baseline)
        if base:
            fill(baseline_pool, "base", base)
        finish_pool(baseline_pool)
        result.baseline_pool = baseline_pool
    return result


def problems(verdict: depsolve.Verdict) -> tuple[list[str], list[str]]:
    return [f.problem for f in verdict.failures], [f.problem for f in verdict.warnings]


def closure(
    speculative: list[Spec], baseline: list[Spec] | None = None, base: Iterable[Spec] = ()
) -> tuple[list[str], list[str]]:
    return problems(depsolve.repoclosure(trees(speculative, baseline, base)))


@pytest.mark.parametrize(
    ("requirement", "available", "met"),
    [
        ("(nova or nova-legacy)", ["nova-legacy"], True),
        ("(nova or nova-legacy)", [], False),
        ("(nova >= 12 or (glance and keystone))", ["glance", "keystone"], True),
        ("(nova >= 12 or (glance and keystone))", ["glance"], False),
        ("(nova and glance and keystone)", ["nova", "glance", "keystone"], True),
        # as rpm and dnf: the condition is whether it is *installed*, so a
        # conditional requirement holds on an empty system (the hand-written
        # closure counted a condition as true when anything provided it)
        ("(nova-selinux if selinux-policy)", [], True),
        ("(nova-selinux if selinux-policy)", ["selinux-policy"], True),
        ("(a if b else c)", ["c"], True),
        ("(a if b else c)", [], False),
        ("(a unless b)", [], False),
        ("(a unless b else c)", ["c"], False),
        ("(a unless b else c)", ["b", "c"], True),
        ("(python3dist(oslo-config) >= 2 or oslo)", ["python3dist(oslo-config)"], True),
    ],
)
def test_rich_dependencies(requirement: str, available: list[str], met: bool) -> None:
    providers = [
        {"nevr": f"p{i}-1-1", "provides": [f"{name} = 12"]} for i, name in enumerate(available)
    ]
    failures, _ = closure([{"nevr": "user-1-1", "requires": [requirement]}, *providers])
    assert (failures == []) is met, failures


def test_with_needs_one_package_to_provide_both() -> None:
    py3 = {"nevr": "python3-foo-1-1", "provides": ["foo = 1", "python(abi) = 3.11"]}
    py2 = {"nevr": "python2-foo-2-1", "provides": ["foo = 2", "python(abi) = 2.7"]}
    ok = {"nevr": "a-1-1", "requires": ["(foo >= 2 with python(abi) = 2.7)"]}
    bad = {"nevr": "b-1-1", "requires": ["(foo >= 2 with python(abi) = 3.11)"]}
    failures, _ = closure([py3, py2, ok, bad])
    assert failures == ["b-1-1.noarch requires (foo >= 2 with python(abi) = 3.11)"]


def test_only_the_repository_is_checked_and_base_repositories_provide() -> None:
    nova = {"nevr": "nova-12.0.1-1", "requires": ["oslo-config-api >= 2", "python3"]}
    oslo = {"nevr": "python-oslo-config-2.0-1", "provides": ["oslo-config-api = 2"]}
    broken_base = {"nevr": "old-1-1", "requires": ["gone"]}
    assert closure([nova], base=[oslo, broken_base, {"nevr": "python3-3.9-1"}]) == ([], [])
    assert closure([nova], base=[{"nevr": "python3-3.9-1"}]) == (
        ["nova-12.0.1-1.noarch requires oslo-config-api >= 2"],
        [],
    )


APP_A_BROKEN = {"nevr": "app-a-1.0-5", "requires": ["does-not-exist"]}
HORIZON = {"nevr": "horizon-9.0.0-1", "requires": ["python-django-compat"]}
DJANGO_COMPAT = {"nevr": "python-django-1.8.0-1", "provides": ["python-django-compat"]}
DJANGO_NO_COMPAT = {"nevr": "python-django-1.8.1-1"}


def test_a_problem_the_baseline_already_had_is_a_warning_not_a_failure() -> None:
    baseline = [APP_A_BROKEN, {"nevr": "nova-12.0.0-1"}]
    speculative = [APP_A_BROKEN, {"nevr": "nova-12.0.1-1"}]
    assert closure(speculative, baseline) == ([], ["app-a-1.0-5.noarch requires does-not-exist"])


def test_a_kept_package_whose_provider_the_change_removed_fails() -> None:
    verdict = depsolve.repoclosure(trees([HORIZON, DJANGO_NO_COMPAT], [HORIZON, DJANGO_COMPAT]))
    assert problems(verdict) == (["horizon-9.0.0-1.noarch requires python-django-compat"], [])
    # which change broke it: the one that brings python-django 1.8.1 (named by its
    # source package; these packages have none, so by their NEVRA)
    assert verdict.failures[0].cause == "introduced by this change (python-django-1.8.1-1.noarch)"
    assert verdict.failures[0].words == (
        "nothing provides python-django-compat needed by horizon-9.0.0-1.noarch"
    )


def test_an_update_that_keeps_its_predecessors_problem_fails_like_rpmdeplint() -> None:
    app_a_6 = {"nevr": "app-a-1.0-6", "requires": ["does-not-exist"]}
    assert closure([app_a_6], [APP_A_BROKEN]) == (
        ["app-a-1.0-6.noarch requires does-not-exist"],
        [],
    )


def test_a_rebuild_of_the_same_nevra_is_the_items_package() -> None:
    published = {**APP_A_BROKEN, "checksum": "aa"}
    rebuilt = {**APP_A_BROKEN, "checksum": "bb"}
    assert closure([rebuilt], [published])[0] == ["app-a-1.0-5.noarch requires does-not-exist"]
    assert closure([published], [published])[0] == []


def test_a_second_requirement_broken_in_an_already_broken_package_fails() -> None:
    # rpmdeplint would excuse the whole package; the rule here is per requirement.
    horizon = {"nevr": "horizon-9.0.0-1", "requires": ["python-django-compat", "does-not-exist"]}
    assert closure([horizon, DJANGO_NO_COMPAT], [horizon, DJANGO_COMPAT]) == (
        ["horizon-9.0.0-1.noarch requires python-django-compat"],
        ["horizon-9.0.0-1.noarch requires does-not-exist"],
    )


def test_a_problem_the_item_fixes_is_not_reported() -> None:
    assert closure([APP_A_BROKEN, {"nevr": "does-not-exist-1-1"}], [APP_A_BROKEN]) == ([], [])


def test_base_repositories_provide_on_both_sides() -> None:
    compat = {"nevr": "compat-shim-1-1", "provides": ["python-django-compat"]}
    assert closure([HORIZON, DJANGO_NO_COMPAT], [HORIZON, DJANGO_COMPAT], [compat]) == ([], [])


def test_without_a_baseline_every_problem_fails() -> None:
    assert closure([APP_A_BROKEN, {"nevr": "nova-12.0.1-1"}]) == (
        ["app-a-1.0-5.noarch requires does-not-exist"],
        [],
    )


def test_a_conflict_the_solver_finds_is_reported_in_its_words() -> None:
    # beyond "some provider exists": the item's new provider conflicts with d
    t = trees(
        [{"nevr": "d-1-1", "requires": ["nova-legacy"]}, {"nevr": "nova-legacy-1.0-2"}],
        baseline=[{"nevr": "d-1-1", "requires": ["nova-legacy"]}, {"nevr": "nova-legacy-1.0-1"}],
    )
    new = next(s for s in t.speculative.solvables_iter() if s.name == "nova-legacy")
    new.add_deparray(solv.SOLVABLE_CONFLICTS, t.pool.Dep("d"))
    t.pool.createwhatprovides()
    verdict = depsolve.repoclosure(t)
    assert problems(verdict) == (
        ["package d-1-1.noarch requires nova-legacy, but none of the providers can be installed"],
        [],
    )
    assert "package nova-legacy-1.0-2.noarch conflicts with d provided by d-1-1.noarch" in (
        verdict.failures[0].words
    )
    assert verdict.failures[0].cause == "introduced by this change (nova-legacy-1.0-2.noarch)"


def test_a_kept_package_left_with_only_a_broken_provider_fails() -> None:
    # d needed "virt"; the change replaced p, which provided it, by a version that
    # does not, and the only other provider cannot be installed: the solver says so
    d = {"nevr": "d-1-1", "requires": ["virt"]}
    q = {"nevr": "q-1-1", "provides": ["virt"], "requires": ["gone"]}
    assert closure([d, {"nevr": "p-2-1"}, q], [d, {"nevr": "p-1-1", "provides": ["virt"]}, q]) == (
        ["d-1-1.noarch cannot be installed: nothing provides gone needed by q-1-1.noarch"],
        ["q-1-1.noarch requires gone"],
    )


# --------------------------------------------------------------------------
# The job, on real RPMs and real repodata
# --------------------------------------------------------------------------


def publish(tree: Path, rpms: Iterable[Path]) -> Path:
    """Copy ``rpms`` into ``tree`` and run createrepo_c there."""
    tree.mkdir(parents=True, exist_ok=True)
    for rpm in rpms:
        shutil.copy(rpm, tree / rpm.name)
    subprocess.run(["createrepo_c", "--quiet", str(tree)], check=True)
    return tree


def make_ctx(
    tmp_path: Path,
    arches: tuple[str, ...] = ("x86_64",),
    base_repos: tuple[str, ...] = (),
    baseline: bool = False,
) -> JobContext:
    return JobContext(
        item_id=7,
        attempt=1,
        repo_path=tmp_path / "speculative",
        repo_url="http://gate.example.invalid/7/",
        arches=arches,
        base_repos=base_repos,
        log_path=tmp_path / "logs" / "repoclosure.log",
        env={},
        baseline_path=tmp_path / "baseline" if baseline else None,
        baseline_url="http://gate.example.invalid/7-baseline/" if baseline else None,
    )


@pytest.fixture
def rpms(tmp_path: Path) -> Path:
    return tmp_path / "rpms"


async def test_versioned_require_satisfied(tmp_path: Path, rpms: Path) -> None:
    nova = build_rpm(rpms, "nova", "12.0.1")
    ceilometer = build_rpm(rpms, "ceilometer", "8.0.1", requires=["nova >= 12.0.1"])
    ctx = make_ctx(tmp_path)
    publish(ctx.repo_path / "x86_64", [nova, ceilometer])

    result = await Repoclosure().run(ctx)

    assert result.passed, result
    assert result.name == "repoclosure"
    assert result.summary == "all dependencies of 2 packages resolve on x86_64"
    assert result.log_path == str(ctx.log_path)


async def test_require_newer_than_the_repo_has_fails_naming_the_package(
    tmp_path: Path, rpms: Path
) -> None:
    nova = build_rpm(rpms, "nova", "12.0.0")
    ceilometer = build_rpm(rpms, "ceilometer", "8.0.1", requires=["nova >= 12.0.1"])
    ctx = make_ctx(tmp_path)
    publish(ctx.repo_path / "x86_64", [nova, ceilometer])

    result = await Repoclosure().run(ctx)

    assert not result.passed
    assert result.summary == (
        "1 unresolved dependency: ceilometer-8.0.1-1.noarch requires nova >= 12.0.1"
    )
    assert result.details == (
        "ceilometer-8.0.1-1.noarch requires nova >= 12.0.1 (available: nova-12.0.0-1.noarch; "
        "nothing provides nova >= 12.0.1 needed by ceilometer-8.0.1-1.noarch; "
        "introduced by this change (ceilometer-8.0.1-1))",
    )
    log = ctx.log_path.read_text()
    assert "ceilometer-8.0.1-1.noarch requires nova >= 12.0.1" in log
    assert "x86_64: 2 packages in" in log


async def test_dropped_provides_fail_the_packages_that_need_them(
    tmp_path: Path, rpms: Path
) -> None:
    # The new oslo build dropped both a virtual provide and its -doc subpackage.
    oslo = build_rpm(rpms, "python-oslo-config", "3.0")
    nova = build_rpm(rpms, "nova", "12.0.1", requires=["oslo-config-api >= 2"])
    docs = build_rpm(rpms, "nova-docs", "12.0.1", requires=["python-oslo-config-doc"])
    ctx = make_ctx(tmp_path)
    publish(ctx.repo_path / "x86_64", [oslo, nova, docs])

    result = await Repoclosure().run(ctx)

    assert not result.passed
    assert result.summary == (
        "2 unresolved dependencies: nova-12.0.1-1.noarch requires oslo-config-api >= 2; "
        "nova-docs-12.0.1-1.noarch requires python-oslo-config-doc"
    )

    # ... and the old build, which still had them, passes.
    old = build_rpms(
        rpms / "old",
        "python-oslo-config",
        "2.0",
        provides=["oslo-config-api = 2.0"],
        subpackages=[Subpackage("python-oslo-config-doc")],
    )
    shutil.rmtree(ctx.repo_path)
    publish(ctx.repo_path / "x86_64", [*old.binaries, nova, docs])
    assert (await Repoclosure().run(ctx)).passed


async def test_file_requires_resolve_through_filelists(tmp_path: Path, rpms: Path) -> None:
    # /usr/share/... is not in primary.xml's file subset, only in filelists.
    bar = build_rpm(rpms, "bar", "1.0")
    ok = build_rpm(rpms, "uses-bar", "1.0", requires=["/usr/share/bar/bar.txt"])
    ctx = make_ctx(tmp_path)
    publish(ctx.repo_path / "x86_64", [bar, ok])
    assert (await Repoclosure().run(ctx)).passed

    missing = build_rpm(rpms, "uses-missing", "1.0", requires=["/usr/share/bar/gone.txt"])
    publish(ctx.repo_path / "x86_64", [missing])
    result = await Repoclosure().run(ctx)
    assert result.summary == (
        "1 unresolved dependency: uses-missing-1.0-1.noarch requires /usr/share/bar/gone.txt"
    )


async def test_epochs_in_real_metadata(tmp_path: Path, rpms: Path) -> None:
    nova = build_rpm(rpms, "nova", "11.0", epoch=1)
    newer_by_epoch = build_rpm(rpms, "a", "1", requires=["nova >= 12.0"])
    exact = build_rpm(rpms, "b", "1", requires=["nova = 1:11.0"])
    needs_epoch_2 = build_rpm(rpms, "c", "1", epoch=3, requires=["nova >= 2:1.0"])
    ctx = make_ctx(tmp_path)
    publish(ctx.repo_path / "x86_64", [nova, newer_by_epoch, exact, needs_epoch_2])

    result = await Repoclosure().run(ctx)

    assert result.summary == "1 unresolved dependency: c-3:1-1.noarch requires nova >= 2:1.0"
    assert result.details == (
        "c-3:1-1.noarch requires nova >= 2:1.0 (available: nova-1:11.0-1.noarch; "
        "nothing provides nova >= 2:1.0 needed by c-3:1-1.noarch; "
        "introduced by this change (c-1-1))",
    )


async def test_rich_dependency_in_real_metadata(tmp_path: Path, rpms: Path) -> None:
    legacy = build_rpm(rpms, "nova-legacy", "1.0")
    ok = build_rpm(rpms, "a", "1", requires=["(nova >= 12 or nova-legacy)"])
    bad = build_rpm(rpms, "b", "1", requires=["(nova >= 12 and nova-legacy)"])
    ctx = make_ctx(tmp_path)
    publish(ctx.repo_path / "x86_64", [legacy, ok, bad])

    result = await Repoclosure().run(ctx)

    assert result.summary == (
        "1 unresolved dependency: b-1-1.noarch requires (nova >= 12 and nova-legacy)"
    )


async def test_base_repo_satisfies_dependencies_but_is_not_checked(
    tmp_path: Path, rpms: Path
) -> None:
    python = build_rpm(rpms / "base", "python3-oslo-utils", "4.0", provides=["oslo-utils = 4.0"])
    broken_in_base = build_rpm(rpms / "base", "unrelated", "1", requires=["not-in-any-repo"])
    base = publish(tmp_path / "base", [python, broken_in_base])
    nova = build_rpm(rpms, "nova", "12.0.1", requires=["oslo-utils >= 3"])
    ctx = make_ctx(tmp_path)
    publish(ctx.repo_path / "x86_64", [nova])

    without_base = await Repoclosure().run(ctx)
    assert without_base.summary == (
        "1 unresolved dependency: nova-12.0.1-1.noarch requires oslo-utils >= 3"
    )

    for location in (str(base), base.as_uri()):
        result = await Repoclosure().run(make_ctx(tmp_path, base_repos=(location,)))
        assert result.passed, (location, result)
        assert result.summary == "all dependencies of 1 package resolve on x86_64"
        assert f"base repo {location}: 2 packages" in ctx.log_path.read_text()


async def test_base_repo_per_arch_layout_and_basearch(tmp_path: Path, rpms: Path) -> None:
    lib = build_rpm(rpms / "base", "libfoo", "1", arch="x86_64")
    publish(tmp_path / "centos" / "x86_64" / "os", [lib])
    publish(tmp_path / "epel" / "x86_64", [build_rpm(rpms / "base", "libbar", "1")])
    user = build_rpm(rpms, "user", "1", requires=["libfoo", "libbar"])
    ctx = make_ctx(
        tmp_path,
        base_repos=(f"{tmp_path}/centos/$basearch/os", str(tmp_path / "epel")),
    )
    publish(ctx.repo_path / "x86_64", [user])

    result = await Repoclosure().run(ctx)

    assert result.passed, result


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_base_repo_over_http(tmp_path: Path, rpms: Path, http_root: tuple[Path, str]) -> None:
    www, url = http_root
    publish(www / "base" / "x86_64", [build_rpm(rpms / "base", "libfoo", "1")])
    user = build_rpm(rpms, "user", "1", requires=["libfoo"])
    ctx = make_ctx(tmp_path, base_repos=(f"{url}/base/$basearch/",))
    publish(ctx.repo_path / "x86_64", [user])

    result = await Repoclosure().run(ctx)

    assert result.passed, result


async def test_each_problem_is_reported_once_across_arches(tmp_path: Path, rpms: Path) -> None:
    noarch_user = build_rpm(rpms, "client", "1", requires=["server"])
    x86_only = build_rpm(rpms, "agent", "1", arch="x86_64", requires=["x86-helper"])
    arm_helper = build_rpm(rpms, "agent", "1", arch="aarch64")
    ctx = make_ctx(tmp_path, arches=("x86_64", "aarch64"))
    publish(ctx.repo_path / "x86_64", [noarch_user, x86_only])
    publish(ctx.repo_path / "aarch64", [noarch_user, arm_helper])

    result = await Repoclosure().run(ctx)

    assert not result.passed
    assert result.summary == (
        "2 unresolved dependencies: agent-1-1.x86_64 requires x86-helper; "
        "client-1-1.noarch requires server"
    )
    assert result.details == (
        "agent-1-1.x86_64 requires x86-helper (nothing provides x86-helper needed by "
        "agent-1-1.x86_64; introduced by this change (agent-1-1)) [on x86_64]",
        "client-1-1.noarch requires server (nothing provides server needed by "
        "client-1-1.noarch; introduced by this change (client-1-1))",
    )


async def test_missing_metadata_fails_the_job(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    result = await Repoclosure().run(ctx)
    assert not result.passed
    assert result.summary.startswith("cannot read repository metadata: no repository metadata at")
    assert "cannot read repository metadata" in ctx.log_path.read_text()


async def test_empty_repo_passes(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    publish(ctx.repo_path / "x86_64", [])
    result = await Repoclosure().run(ctx)
    assert result.passed
    assert result.summary == "no packages to check on x86_64"


async def test_summary_names_a_few_and_counts_the_rest(tmp_path: Path, rpms: Path) -> None:
    needy = build_rpm(rpms, "needy", "1", requires=[f"missing{i}" for i in range(5)])
    ctx = make_ctx(tmp_path)
    publish(ctx.repo_path / "x86_64", [needy])

    result = await Repoclosure(summary_items=2).run(ctx)

    assert result.summary == (
        "5 unresolved dependencies: needy-1-1.noarch requires missing0, missing1; and 3 more"
    )
    assert len(result.details) == 5


async def test_a_problem_already_in_the_baseline_passes_with_a_warning(
    tmp_path: Path, rpms: Path
) -> None:
    app_a = build_rpm(rpms, "app-a", "1.0", release="5", requires=["does-not-exist"])
    nova_old = build_rpm(rpms, "nova", "12.0.0")
    nova_new = build_rpm(rpms, "nova", "12.0.1")
    ctx = make_ctx(tmp_path, baseline=True)
    assert ctx.baseline_path is not None
    publish(ctx.baseline_path / "x86_64", [app_a, nova_old])
    publish(ctx.repo_path / "x86_64", [app_a, nova_new])

    result = await Repoclosure().run(ctx)

    assert result.passed, result
    assert result.summary == (
        "passed with 1 warning: already broken in the base: "
        "app-a-1.0-5.noarch requires does-not-exist"
    )
    assert result.details == ()
    assert result.warnings == ("app-a-1.0-5.noarch requires does-not-exist",)
    log = ctx.log_path.read_text()
    assert "x86_64: already broken in the base: app-a-1.0-5.noarch requires does-not-exist" in log
    assert "the item brings 1 of the 2" in log

    # Without the baseline, as before: the item is blamed.
    alone = await Repoclosure().run(make_ctx(tmp_path))
    assert not alone.passed
    assert alone.summary == "1 unresolved dependency: app-a-1.0-5.noarch requires does-not-exist"


async def test_what_the_change_breaks_fails_next_to_the_warnings(
    tmp_path: Path, rpms: Path
) -> None:
    horizon = build_rpm(
        rpms, "horizon", "9.0.0", requires=["python-django-compat", "does-not-exist"]
    )
    django_old = build_rpm(rpms, "python-django", "1.8.0", provides=["python-django-compat"])
    django_new = build_rpm(rpms, "python-django", "1.8.1")
    ctx = make_ctx(tmp_path, baseline=True)
    assert ctx.baseline_path is not None
    publish(ctx.baseline_path / "x86_64", [horizon, django_old])
    publish(ctx.repo_path / "x86_64", [horizon, django_new])

    result = await Repoclosure().run(ctx)

    assert not result.passed
    assert result.summary == (
        "1 unresolved dependency: horizon-9.0.0-1.noarch requires python-django-compat "
        "(and 1 warning: already broken in the base)"
    )
    # which change broke it: the item's build, by its source package
    assert result.details == (
        "horizon-9.0.0-1.noarch requires python-django-compat (nothing provides "
        "python-django-compat needed by horizon-9.0.0-1.noarch; "
        "introduced by this change (python-django-1.8.1-1))",
    )
    assert result.warnings == ("horizon-9.0.0-1.noarch requires does-not-exist",)


async def test_a_rebuilt_package_with_its_old_problem_fails(tmp_path: Path, rpms: Path) -> None:
    # Same NEVRA, another file: the item's own package.
    published = build_rpm(rpms / "old", "app-a", "1.0", requires=["does-not-exist"])
    rebuilt = build_rpm(
        rpms / "new", "app-a", "1.0", requires=["does-not-exist"], provides=["app-a-api"]
    )
    ctx = make_ctx(tmp_path, baseline=True)
    assert ctx.baseline_path is not None
    publish(ctx.baseline_path / "x86_64", [published])
    publish(ctx.repo_path / "x86_64", [rebuilt])

    result = await Repoclosure().run(ctx)

    assert not result.passed
    assert result.warnings == ()


async def test_an_unreadable_baseline_fails_the_job(tmp_path: Path, rpms: Path) -> None:
    ctx = make_ctx(tmp_path, baseline=True)
    publish(ctx.repo_path / "x86_64", [build_rpm(rpms, "app-a", "1", requires=["gone"])])

    result = await Repoclosure().run(ctx)

    assert not result.passed
    assert result.summary.startswith("cannot read repository metadata: no repository metadata")


async def test_cancelling_the_job_raises_cancelled(tmp_path: Path, rpms: Path) -> None:
    ctx = make_ctx(tmp_path)
    publish(ctx.repo_path / "x86_64", [build_rpm(rpms, "foo", "1")])
    task = asyncio.create_task(Repoclosure().run(ctx))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_cancelled_run_stops_between_packages_and_says_so(tmp_path: Path, rpms: Path) -> None:
    ctx = make_ctx(tmp_path)
    publish(ctx.repo_path / "x86_64", [build_rpm(rpms, "foo", "1")])
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        Repoclosure().run_blocking(ctx, stop)
    assert ctx.log_path.read_text().splitlines()[-1] == "cancelled"
