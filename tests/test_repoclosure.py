"""Repoclosure: pure checking on plain data, then the job on real RPMs and repodata."""

from __future__ import annotations

import asyncio
import functools
import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from gate.jobs import repoclosure
from gate.jobs.base import JobContext
from gate.jobs.repoclosure import (
    BoolOp,
    Conditional,
    Package,
    Repoclosure,
    RichDepError,
    Simple,
    Universe,
    Unresolved,
    Wanted,
    check_change,
    check_closure,
    load_repo,
    parse_rich,
)
from gate.jobs.rpmvercmp import EVR, Dep, parse_evr
from tests.rpmfactory import Subpackage, build_rpm, build_rpms

# --------------------------------------------------------------------------
# Pure checking on plain data
# --------------------------------------------------------------------------


def pkg(
    nevr: str,
    requires: Iterable[str] = (),
    provides: Iterable[str] = (),
    files: Iterable[str] = (),
    arch: str = "noarch",
    checksum: str = "",
) -> Package:
    """``pkg("nova-12.0.1-1", requires=["python-oslo >= 2"])``."""
    name, version, release = nevr.rsplit("-", 2)
    evr = parse_evr(f"{version}-{release}")
    return Package(
        name=name,
        epoch=evr.epoch,
        version=evr.version,
        release=evr.release,
        arch=arch,
        requires=tuple(dep(r) for r in requires),
        provides=tuple(dep(p) for p in provides),
        files=frozenset(files),
        checksum=checksum,
    )


_FLAGS = {"=": "EQ", "<": "LT", ">": "GT", "<=": "LE", ">=": "GE"}


def dep(text: str) -> Dep:
    if text.startswith("("):
        return Dep(text)
    parts = text.split()
    if len(parts) == 1:
        return Dep(parts[0])
    name, op, evr = parts
    return Dep(name, _FLAGS[op], parse_evr(evr))


def test_versioned_require_met_by_the_package_itself() -> None:
    nova = pkg("nova-12.0.1-1")
    ceilometer = pkg("ceilometer-8.0.1-1", requires=["nova >= 12.0.1"])
    assert check_closure([nova, ceilometer]) == []


def test_versioned_require_on_too_old_a_package_is_reported_with_what_exists() -> None:
    nova = pkg("nova-12.0.0-1")
    ceilometer = pkg("ceilometer-8.0.1-1", requires=["nova >= 12.0.1"])
    assert check_closure([nova, ceilometer]) == [
        Unresolved("ceilometer-8.0.1-1.noarch", "nova >= 12.0.1", "available: nova = 12.0.0-1")
    ]


def test_explicit_provides_and_available_packages_count() -> None:
    oslo = pkg("python-oslo-config-2.0-1", provides=["oslo-config-api = 2"])
    nova = pkg("nova-12.0.1-1", requires=["oslo-config-api >= 2", "python3"])
    base_python = pkg("python3-3.9-1", arch="x86_64")
    assert check_closure([nova], [oslo, base_python]) == []
    assert check_closure([nova], [base_python]) == [
        Unresolved("nova-12.0.1-1.noarch", "oslo-config-api >= 2")
    ]


def test_only_candidates_are_checked() -> None:
    broken_base = pkg("old-1-1", requires=["gone"])
    assert check_closure([pkg("nova-1-1")], [broken_base]) == []


def test_file_requires_resolve_through_file_lists_and_file_provides() -> None:
    bash = pkg("bash-5-1", files=["/usr/bin/bash", "/usr/share/bash"])
    sh = pkg("filesystem-1-1", provides=["/bin/sh"])
    script = pkg("tool-1-1", requires=["/usr/bin/bash", "/bin/sh", "/usr/bin/zsh"])
    assert check_closure([script], [bash, sh]) == [Unresolved("tool-1-1.noarch", "/usr/bin/zsh")]


def test_rpmlib_requires_are_rpms_business() -> None:
    assert check_closure([pkg("a-1-1", requires=["rpmlib(PayloadIsZstd) <= 5.4.18-1"])]) == []


def test_epochs() -> None:
    nova = pkg("nova-1:11.0-1")
    assert nova.nevra == "nova-1:11.0-1.noarch"
    assert check_closure([nova, pkg("a-1-1", requires=["nova >= 12.0"])]) == []
    assert check_closure([nova, pkg("a-1-1", requires=["nova >= 2:1.0"])]) == [
        Unresolved("a-1-1.noarch", "nova >= 2:1.0", "available: nova = 1:11.0-1")
    ]
    assert check_closure([nova, pkg("a-1-1", requires=["nova = 1:11.0"])]) == []
    assert check_closure([nova, pkg("a-1-1", requires=["nova = 11.0"])]) != []


def test_source_packages_neither_need_nor_provide() -> None:
    srpm = pkg("nova-12.0.1-1", requires=["python3-devel"], arch="src")
    user = pkg("user-1-1", requires=["nova"])
    assert check_closure([srpm, user]) == [Unresolved("user-1-1.noarch", "nova")]


@pytest.mark.parametrize(
    ("requirement", "available", "met"),
    [
        ("(nova or nova-legacy)", ["nova-legacy"], True),
        ("(nova or nova-legacy)", [], False),
        ("(nova >= 12 or (glance and keystone))", ["glance", "keystone"], True),
        ("(nova >= 12 or (glance and keystone))", ["glance"], False),
        ("(nova and glance and keystone)", ["nova", "glance", "keystone"], True),
        ("(nova-selinux if selinux-policy)", [], True),
        ("(nova-selinux if selinux-policy)", ["selinux-policy"], False),
        ("(nova-selinux if selinux-policy)", ["selinux-policy", "nova-selinux"], True),
        ("(a if b else c)", ["c"], True),
        ("(a if b else c)", ["b", "c"], False),
        ("(a unless b)", ["b"], True),
        ("(a unless b)", [], False),
        ("(a unless b else c)", ["b", "c"], True),
        ("(a unless b else c)", ["a", "b"], False),
        ("(python3dist(oslo-config) >= 2 or oslo)", ["python3dist(oslo-config)"], True),
    ],
)
def test_rich_dependencies(requirement: str, available: list[str], met: bool) -> None:
    providers = [pkg(f"p{i}-1-1", provides=[f"{name} = 12"]) for i, name in enumerate(available)]
    problems = check_closure([pkg("user-1-1", requires=[requirement])], providers)
    assert (problems == []) is met


def test_with_and_without_need_one_package_to_provide_both() -> None:
    py3 = pkg("python3-foo-1-1", provides=["foo = 1", "python(abi) = 3.11"])
    py2 = pkg("python2-foo-2-1", provides=["foo = 2", "python(abi) = 2.7"])
    universe = Universe([py3, py2])
    assert universe.rich_met(parse_rich("(foo >= 2 with python(abi) = 2.7)"))
    assert not universe.rich_met(parse_rich("(foo >= 2 with python(abi) = 3.11)"))
    assert universe.rich_met(parse_rich("(foo without python(abi) = 3.11)"))
    assert not universe.rich_met(parse_rich("(foo < 2 without python(abi) = 3.11)"))


def test_unparseable_rich_dependency_is_reported_not_ignored() -> None:
    problems = check_closure([pkg("user-1-1", requires=["(a or b and c)"])], [pkg("a-1-1")])
    assert len(problems) == 1
    assert problems[0].requirement == "(a or b and c)"
    assert problems[0].hint.startswith("cannot check:")


def test_parse_rich() -> None:
    assert parse_rich("(a >= 1.0-2 or (b with c))") == BoolOp(
        "or",
        (
            Simple(Dep("a", "GE", "1.0-2")),
            BoolOp("with", (Simple(Dep("b")), Simple(Dep("c")))),
        ),
    )
    assert parse_rich("(a if python3dist(b) < 2 else c)") == Conditional(
        "if", Simple(Dep("a")), Simple(Dep("python3dist(b)", "LT", "2")), Simple(Dep("c"))
    )
    for bad in [
        "a or b",
        "(a or)",
        "(a or b",
        "(a or b) c",
        "(a xor b)",
        "(a >= )",
        "(a or b and c)",
    ]:
        with pytest.raises(RichDepError):
            parse_rich(bad)


def test_wanted_collects_names_inside_rich_dependencies() -> None:
    user = pkg("user-1-1", requires=["nova >= 1", "/usr/bin/zsh", "(a or (b if /etc/c))"])
    assert Wanted.by([user]) == Wanted(
        frozenset({"nova", "/usr/bin/zsh", "a", "b", "/etc/c"}),
        frozenset({"/usr/bin/zsh", "/etc/c"}),
    )


# --------------------------------------------------------------------------
# Blame against the baseline (rpmdeplint's rule), on plain data
# --------------------------------------------------------------------------

APP_A_BROKEN = pkg("app-a-1.0-5", requires=["does-not-exist"])
HORIZON = pkg("horizon-9.0.0-1", requires=["python-django-compat"])
DJANGO_COMPAT = pkg("python-django-1.8.0-1", provides=["python-django-compat"])
DJANGO_NO_COMPAT = pkg("python-django-1.8.1-1")


def test_a_problem_the_baseline_already_had_is_a_warning_not_a_failure() -> None:
    baseline = [APP_A_BROKEN, pkg("nova-12.0.0-1")]
    speculative = [APP_A_BROKEN, pkg("nova-12.0.1-1")]

    verdict = check_change(speculative, baseline)

    assert verdict.failures == []
    assert verdict.warnings == [Unresolved("app-a-1.0-5.noarch", "does-not-exist")]


def test_a_kept_package_whose_provider_the_change_removed_fails() -> None:
    verdict = check_change([HORIZON, DJANGO_NO_COMPAT], [HORIZON, DJANGO_COMPAT])
    assert verdict.failures == [Unresolved("horizon-9.0.0-1.noarch", "python-django-compat")]
    assert verdict.warnings == []


def test_the_items_own_new_requirement_fails() -> None:
    verdict = check_change([pkg("nova-12.0.1-1", requires=["oslo >= 3"])], [pkg("nova-12.0.0-1")])
    assert verdict.failures == [Unresolved("nova-12.0.1-1.noarch", "oslo >= 3")]


def test_an_update_that_keeps_its_predecessors_problem_fails_like_rpmdeplint() -> None:
    # rpmdeplint checks the packages under test in full (check-sat): the new
    # version ships the unresolvable requirement again, so it is the item's.
    app_a_6 = pkg("app-a-1.0-6", requires=["does-not-exist"])
    verdict = check_change([app_a_6], [APP_A_BROKEN])
    assert verdict.failures == [Unresolved("app-a-1.0-6.noarch", "does-not-exist")]
    assert verdict.warnings == []


def test_a_rebuild_of_the_same_nevra_is_the_items_package() -> None:
    published = pkg("app-a-1.0-5", requires=["does-not-exist"], checksum="aaa")
    rebuilt = pkg("app-a-1.0-5", requires=["does-not-exist"], checksum="bbb")
    assert check_change([rebuilt], [published]).failures == [
        Unresolved("app-a-1.0-5.noarch", "does-not-exist")
    ]
    assert check_change([published], [published]).failures == []


def test_a_second_requirement_broken_in_an_already_broken_package_fails() -> None:
    # rpmdeplint would excuse the whole package; the rule here is per requirement.
    horizon = pkg("horizon-9.0.0-1", requires=["python-django-compat", "does-not-exist"])
    verdict = check_change([horizon, DJANGO_NO_COMPAT], [horizon, DJANGO_COMPAT])
    assert verdict.failures == [Unresolved("horizon-9.0.0-1.noarch", "python-django-compat")]
    assert verdict.warnings == [Unresolved("horizon-9.0.0-1.noarch", "does-not-exist")]


def test_a_problem_the_item_fixes_is_not_reported() -> None:
    provider = pkg("does-not-exist-1-1")
    verdict = check_change([APP_A_BROKEN, provider], [APP_A_BROKEN])
    assert verdict.failures == [] and verdict.warnings == []


def test_base_repositories_provide_on_both_sides() -> None:
    # horizon's requirement was met by the base repository all along: D breaks nothing.
    compat = pkg("compat-shim-1-1", provides=["python-django-compat"])
    verdict = check_change([HORIZON, DJANGO_NO_COMPAT], [HORIZON, DJANGO_COMPAT], [compat])
    assert verdict.failures == [] and verdict.warnings == []


def test_without_a_baseline_every_problem_fails() -> None:
    verdict = check_change([APP_A_BROKEN, pkg("nova-12.0.1-1")], None)
    assert verdict.failures == [Unresolved("app-a-1.0-5.noarch", "does-not-exist")]
    assert verdict.warnings == []


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
        "ceilometer-8.0.1-1.noarch requires nova >= 12.0.1 (available: nova = 12.0.0-1)",
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
    assert result.details == ("c-3:1-1.noarch requires nova >= 2:1.0 (available: nova = 1:11.0-1)",)


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
        "agent-1-1.x86_64 requires x86-helper [on x86_64]",
        "client-1-1.noarch requires server",
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
    assert result.details == ("horizon-9.0.0-1.noarch requires python-django-compat",)
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


def test_load_repo_reads_provides_requires_and_files(tmp_path: Path, rpms: Path) -> None:
    foo = build_rpm(rpms, "foo", "1.0", epoch=2, requires=["bar >= 1"], provides=["foo-api = 3"])
    repo = publish(tmp_path / "repo", [foo])

    (package,) = load_repo(repo)
    assert package.nevra == "foo-2:1.0-1.noarch"
    assert Dep("bar", "GE", EVR(0, "1", "")) in package.requires
    assert Dep("foo-api", "EQ", EVR(0, "3", "")) in package.provides
    assert package.files == frozenset({"/usr/share/foo/foo.txt"})

    (filtered,) = load_repo(repo, wanted=Wanted(frozenset({"foo-api"}), frozenset()))
    assert [d.name for d in filtered.provides] == ["foo-api"]
    assert filtered.files == frozenset()


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
    with pytest.raises(repoclosure._Stopped):
        Repoclosure().run_blocking(ctx, stop)
    assert ctx.log_path.read_text().splitlines()[-1] == "cancelled"
