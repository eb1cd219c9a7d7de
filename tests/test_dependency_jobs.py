"""installability, conflicts and upgrade on real RPMs and repodata; the .solv cache."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from gate.jobs.base import JobContext
from gate.jobs.dependencies import Conflicts, Installability, Upgrade
from gate.jobs.solvrepo import SolvCache, read_repomd
from tests.rpmfactory import build_rpm


def publish(tree: Path, rpms: Iterable[Path]) -> Path:
    tree.mkdir(parents=True, exist_ok=True)
    for rpm in rpms:
        shutil.copy(rpm, tree / rpm.name)
    subprocess.run(["createrepo_c", "--quiet", str(tree)], check=True)
    return tree


def ctx_for(
    tmp_path: Path, new: Iterable[Path], old: Iterable[Path], base_repos: tuple[str, ...] = ()
) -> JobContext:
    """The speculative repo ``old`` + ``new`` over the baseline ``old``."""
    new, old = list(new), list(old)
    publish(tmp_path / "baseline" / "x86_64", old)
    names = {p.name.rsplit("-", 2)[0] for p in new}
    kept = [p for p in old if p.name.rsplit("-", 2)[0] not in names]
    publish(tmp_path / "speculative" / "x86_64", [*kept, *new])
    return JobContext(
        item_id=3,
        attempt=1,
        repo_path=tmp_path / "speculative",
        repo_url="http://gate.example.invalid/3/",
        arches=("x86_64",),
        base_repos=base_repos,
        log_path=tmp_path / "logs" / "job.log",
        baseline_path=tmp_path / "baseline",
        cache_dir=tmp_path / "cache",
    )


async def test_installability_checks_only_the_changes_packages_with_the_solver(
    tmp_path: Path,
) -> None:
    rpms = tmp_path / "rpms"
    lib = build_rpm(rpms, "lib", "1.0")
    broken_old = build_rpm(rpms, "old-broken", "1", requires=["gone"])
    # requires lib and conflicts with it: every requirement has a provider, but
    # no solver can install it
    tool = build_rpm(rpms, "tool", "2", requires=["lib"], tags=["Conflicts: lib"])
    ctx = ctx_for(tmp_path, [tool], [lib, broken_old])

    result = await Installability("installability").run(ctx)

    assert not result.passed
    assert result.summary == (
        "1 installability problem: package tool-2-1.noarch requires lib, but none of the "
        "providers can be installed"
    )
    assert result.details == (
        "package tool-2-1.noarch requires lib, but none of the providers can be installed "
        "(package tool-2-1.noarch conflicts with lib provided by lib-1.0-1.noarch; "
        "introduced by this change (tool-2-1))",
    )
    # old-broken is not the change's: not checked here
    ok = ctx_for(tmp_path / "ok", [build_rpm(rpms / "ok", "tool", "3", requires=["lib"])], [lib])
    passed = await Installability("installability").run(ok)
    assert passed.passed and passed.summary == (
        "1 package of this change can be installed on x86_64"
    )


async def test_conflicts_finds_a_shared_file_with_other_content_not_an_identical_one(
    tmp_path: Path,
) -> None:
    rpms = tmp_path / "rpms"
    owner = build_rpm(rpms, "owner", "1", files={"/etc/shared.conf": "owner"})
    same = build_rpm(rpms / "same", "same", "1", files={"/etc/same.conf": "same"})
    also_same = build_rpm(rpms / "also", "also-same", "1", files={"/etc/same.conf": "same"})
    intruder = build_rpm(rpms, "intruder", "1", files={"/etc/shared.conf": "mine"})
    ctx = ctx_for(tmp_path, [intruder, also_same], [owner, same])

    result = await Conflicts("conflicts").run(ctx)

    assert not result.passed
    assert result.summary == (
        "1 conflict: intruder-1-1.noarch provides /etc/shared.conf which is also provided by "
        "owner-1-1.noarch"
    )
    assert result.details[0].endswith("(introduced by this change (intruder-1-1))")


async def test_an_explicit_conflict_the_baseline_had_is_a_warning(tmp_path: Path) -> None:
    rpms = tmp_path / "rpms"
    postfix = build_rpm(rpms, "postfix", "3")
    sendmail_old = build_rpm(rpms / "old", "sendmail", "8", tags=["Conflicts: postfix"])
    sendmail_new = build_rpm(rpms / "new", "sendmail", "9", tags=["Conflicts: postfix"])
    ctx = ctx_for(tmp_path, [sendmail_new], [postfix, sendmail_old])

    result = await Conflicts("conflicts").run(ctx)

    assert result.passed, result
    assert result.warnings == (
        "package sendmail-9-1.noarch conflicts with postfix provided by postfix-3-1.noarch",
    )


async def test_upgrade_refuses_a_lower_version_unless_the_queue_allows_it(
    tmp_path: Path,
) -> None:
    rpms = tmp_path / "rpms"
    published = build_rpm(rpms / "old", "nova", "12.0.0", release="2", epoch=1)
    lower_release = build_rpm(rpms / "new", "nova", "12.0.0", release="1", epoch=1)
    ctx = ctx_for(tmp_path, [lower_release], [published])

    result = await Upgrade("upgrade").run(ctx)
    assert not result.passed
    assert result.summary == (
        "1 upgrade problem: nova-1:12.0.0-1.noarch downgrades nova-1:12.0.0-2.noarch"
    )
    allowed = await Upgrade("upgrade", allow_downgrade=True).run(ctx)
    assert allowed.passed
    assert allowed.warnings == ("nova-1:12.0.0-1.noarch downgrades nova-1:12.0.0-2.noarch",)

    # a tilde sorts before the release it precedes, a caret after
    rc = build_rpm(rpms / "rc", "nova", "12.0.0~rc1", epoch=1)
    assert not (await Upgrade("upgrade").run(ctx_for(tmp_path / "rc", [rc], [published]))).passed
    snap = build_rpm(rpms / "snap", "nova", "12.0.0^git1", epoch=1)
    assert (await Upgrade("upgrade").run(ctx_for(tmp_path / "snap", [snap], [published]))).passed


async def test_upgrade_finds_a_package_that_something_else_obsoletes(tmp_path: Path) -> None:
    rpms = tmp_path / "rpms"
    base = publish(
        tmp_path / "base",
        [build_rpm(rpms / "base", "nova-ng", "1", tags=["Obsoletes: nova < 13"])],
    )
    nova = build_rpm(rpms, "nova", "12.0.1")
    ctx = ctx_for(tmp_path, [nova], [build_rpm(rpms / "old", "nova", "12.0.0")], (str(base),))

    result = await Upgrade("upgrade").run(ctx)

    assert not result.passed
    assert result.summary == (
        f"1 upgrade problem: nova-12.0.1-1.noarch would be obsoleted by nova-ng-1-1.noarch "
        f"from repo base0:{base}"
    )


async def test_repositories_are_read_once_then_from_the_solv_cache(tmp_path: Path) -> None:
    rpms = tmp_path / "rpms"
    ctx = ctx_for(tmp_path, [build_rpm(rpms, "tool", "2")], [build_rpm(rpms / "o", "tool", "1")])
    assert (await Installability("installability").run(ctx)).passed
    cache = SolvCache(ctx.cache_dir)
    keys = [
        read_repomd(ctx.repo_path / "x86_64").key,
        read_repomd(ctx.baseline_path / "x86_64").key,
    ]  # type: ignore[operator]
    files = [cache.path(k) for k in keys]
    assert all(f is not None and f.is_file() for f in files)
    # the second run reads the .solv files: metadata that is not there any more is not read
    for xml in (ctx.repo_path / "x86_64" / "repodata").glob("*primary.xml*"):
        xml.unlink()
    assert (await Installability("installability").run(ctx)).passed
    # a truncated cache file is read again from the metadata (here: gone, so it fails)
    for f in files:
        assert f is not None
        f.write_bytes(f.read_bytes()[:20])
    result = await Installability("installability").run(ctx)
    assert not result.passed and result.summary.startswith("cannot read repository metadata")


async def test_metadata_that_points_outside_its_repository_is_refused(tmp_path: Path) -> None:
    rpms = tmp_path / "rpms"
    ctx = ctx_for(tmp_path, [build_rpm(rpms, "tool", "2")], [build_rpm(rpms / "o", "tool", "1")])
    repomd = ctx.repo_path / "x86_64" / "repodata" / "repomd.xml"
    repomd.write_text(repomd.read_text().replace('href="repodata/', 'href="../../../../etc/'))

    result = await Installability("installability").run(ctx)

    assert not result.passed
    assert "refusing metadata location '../../../../etc/" in result.summary
