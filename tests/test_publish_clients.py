"""What clients make of a published generation, against createrepo_c over the same RPMs.

A generation's metadata is assembled from cached gzip members and locates
packages through the tree's ``Packages`` symlink (publishers/chunked.py,
publishers/pooled.py).  Here dnf (Debian's build, installed by ``./dev``) and
createrepo_c's own reader must see exactly what they see in a repository that
``createrepo_c`` made from the same RPM files: the same NEVRAs, dependencies
and files, and every package downloadable, over file:// and over HTTP as the
gate serves it (aiohttp's static route), with the checksum createrepo_c
computed.  The generation checked is the third one, so its metadata mixes
copied members, rebuilt members and freshly read headers.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import createrepo_c as cr
import pytest
from aiohttp import web

from publishers.createrepo import Publisher
from repo_state.pool import Pool
from repo_state.state import RepoState
from tests.rpmfactory import Subpackage, build_entry, build_rpms

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("dnf") is None, reason="dnf is not installed (./dev setup)"),
]

ARCH = "x86_64"
QF = "%{name}|%{epoch}|%{version}|%{release}|%{arch}|%{sourcerpm}|%{downloadsize}"


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Publisher, Path]:
    """Three generations (the last with one package replaced, one added); a createrepo_c twin."""
    tmp = tmp_path_factory.mktemp("clients")
    pool = Pool(tmp / "pool")
    rpms = tmp / "rpms"
    entries = {}
    for i in range(12):
        built = build_rpms(
            rpms / f"p{i}",
            f"pkg{i:02d}",
            "1.0",
            requires=[f"pkg{(i + 1) % 12:02d}"],
            provides=[f"cap{i} = 1"],
            subpackages=[Subpackage(f"pkg{i:02d}-doc", requires=[f"pkg{i:02d}"])] if i % 4 else [],
            arch=ARCH if i % 3 == 0 else "noarch",
            epoch=1 if i == 5 else None,
        )
        entries[f"pkg{i:02d}"] = build_entry(built.binaries, pool)
    state = RepoState(entries)
    publisher = Publisher(tmp / "repo", pool, arches=(ARCH,), keep=5)
    publisher.publish(1, state, {"kind": "test"})
    changed = build_rpms(rpms / "p3-2", "pkg03", "2.0", requires=["pkg04 >= 1.0"], arch=ARCH)
    state = state.with_build(build_entry(changed.binaries, pool))
    publisher.publish(2, state, {"kind": "test"})
    added = build_rpms(rpms / "new", "newpkg", "0.1", requires=["(pkg03 >= 2 or cap99)"])
    state = state.with_build(build_entry(added.binaries, pool))
    generation = publisher.publish(3, state, {"kind": "test"})
    assert generation.manifest["metadata"]["read"] == 1
    assert generation.manifest["metadata"]["reused"] == len(state.artifacts()) - 1

    twin = tmp / "twin"
    twin.mkdir()
    for artifact in state.artifacts():
        shutil.copyfile(pool.path_for(artifact.checksum), twin / artifact.filename)
    subprocess.run(["createrepo_c", "--quiet", "--no-database", str(twin)], check=True)
    return publisher, twin


def query(tmp: Path, repo: str, *args: str) -> list[str]:
    result = _dnf_url(tmp, repo, *args)
    assert result.returncode == 0, result.stderr
    return sorted(line for line in result.stdout.splitlines() if line.strip())


def _dnf_url(tmp: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    tmp.mkdir(parents=True, exist_ok=True)
    cmd = [
        "dnf",
        "--quiet",
        "--noplugins" if args[0] != "download" else "--setopt=plugins=1",
        f"--installroot={tmp / 'root'}",
        "--releasever=1",
        f"--setopt=cachedir={tmp / 'cache'}",
        "--setopt=reposdir=/nonexistent",
        f"--forcearch={ARCH}",
        f"--repofrompath=t,{url}",
        "--repo=t",
        "--setopt=t.gpgcheck=0",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@contextmanager
def served_over_http(root: Path) -> Iterator[str]:
    """``root`` behind the same aiohttp static route the gate uses for repositories."""
    app = web.Application()
    app.router.add_static("/repos/r/", root, show_index=True, follow_symlinks=True)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/repos/r"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def test_dnf_lists_what_it_lists_from_createrepo_c_over_the_same_rpms(published, tmp_path):
    publisher, twin = published
    ours = (publisher.root / "current" / ARCH).as_uri()
    theirs = twin.as_uri()
    for args in (
        ("repoquery", "--qf", QF),
        ("repoquery", "--requires", "--resolve", "--qf", QF),
        ("repoquery", "--provides"),
        ("repoquery", "--requires"),
        ("repoquery", "--list"),
        ("repoquery", "--whatprovides", "/usr/share/*", "--qf", QF),
    ):
        mine = query(tmp_path / "ours", ours, *args)
        assert mine, args
        assert mine == query(tmp_path / "theirs", theirs, *args), args
    assert "newpkg|0|0.1|1|noarch" in "\n".join(
        query(tmp_path / "ours", ours, "repoquery", "--qf", QF)
    )


@pytest.mark.parametrize("transport", ["file", "http"])
def test_dnf_downloads_every_package_with_the_checksum_createrepo_c_computed(
    published, tmp_path, transport
):
    publisher, twin = published
    expected = {
        pkg.location_href: pkg.pkgId
        for pkg in cr.RepositoryReader.from_path(str(twin)).iter_packages()
    }
    dest = tmp_path / "downloads"

    def download(url: str) -> None:
        result = _dnf_url(tmp_path / "dnf", url, "download", f"--destdir={dest}", "*")
        assert result.returncode == 0, result.stderr

    if transport == "http":
        with served_over_http(publisher.root) as url:
            download(f"{url}/current/{ARCH}")
    else:
        download((publisher.root / "current" / ARCH).as_uri())
    got = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in dest.iterdir()}
    assert got == expected


def test_createrepo_c_reads_the_generation_as_it_reads_its_own(published):
    publisher, twin = published

    def packages(path: Path) -> dict[str, tuple[object, ...]]:
        reader = cr.RepositoryReader.from_path(str(path))
        return {
            pkg.pkgId: (
                pkg.name,
                pkg.epoch,
                pkg.version,
                pkg.release,
                pkg.arch,
                pkg.rpm_sourcerpm,
                sorted(pkg.requires),
                sorted(pkg.provides),
                sorted(pkg.files),
                len(pkg.changelogs),
                pkg.size_package,
                pkg.location_href.rsplit("/", 1)[-1],
            )
            for pkg in reader.iter_packages()
        }

    ours = packages(publisher.root / "current" / ARCH)
    assert ours == packages(twin)
    # the member-by-member file is still one valid gzip stream with the right count
    repomd = cr.Repomd(str(publisher.root / "current" / ARCH / "repodata" / "repomd.xml"))
    primary = next(r for r in repomd.records if r.type == "primary")
    path = publisher.root / "current" / ARCH / primary.location_href
    text = gzip.decompress(path.read_bytes()).decode()
    assert f'packages="{len(ours)}"' in text
    assert text.count("<package ") == len(ours)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == primary.checksum
