"""The local rpmbuild backend, with real git repositories and real rpmbuild."""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import os
import socket
import subprocess
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gate.builders.base import (
    BuildOutcome,
    BuildRequest,
    Lookaside,
    Purpose,
    TaskLost,
    TransientBackendError,
)
from gate.builders.local import LocalBackend
from repo_state.pool import Pool, sha256_file

pytestmark = pytest.mark.slow

FEDORA_LAYOUT = "{name}/{filename}/{hashtype}/{hash}/{filename}"


def spec(
    name: str = "hello",
    version: str = "1.0",
    release: str = "1",
    build: str = "",
    preamble: str = "",
    prep: str = "",
    install_extra: str = "",
) -> str:
    """A tiny noarch spec with one subpackage; %build and friends are injectable."""
    return f"""\
Name: {name}
Version: {version}
Release: {release}
Summary: test package {name}
License: MIT
BuildArch: noarch
{preamble}

%description
Test package.

%package extra
Summary: extra files of {name}

%description extra
Extra files.

%prep
{prep}

%build
{build}

%install
mkdir -p %{{buildroot}}/usr/share/{name}
echo {release} > %{{buildroot}}/usr/share/{name}/main.txt
echo extra > %{{buildroot}}/usr/share/{name}/extra.txt
{install_extra}

%files
/usr/share/{name}/main.txt

%files extra
/usr/share/{name}/extra.txt
"""


@dataclass
class Distgit:
    """A real git repository holding one package."""

    path: Path
    name: str

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(self.path), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    def commit(self, files: dict[str, str]) -> tuple[str, str]:
        """Write ``files``, commit, return (commit sha, tree sha)."""
        for rel, text in files.items():
            (self.path / rel).write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", "change")
        return self.git("rev-parse", "HEAD"), self.git("rev-parse", "HEAD^{tree}")

    def request(
        self,
        commit: tuple[str, str],
        purpose: Purpose = "scratch",
        key: str = "k1",
        lookaside: Lookaside | None = None,
    ) -> BuildRequest:
        sha, tree = commit
        return BuildRequest(
            project=f"rpms/{self.name}",
            package=self.name,
            purpose=purpose,
            key=key,
            git_dir=self.path,
            commit=sha,
            tree=tree,
            spec_path=f"{self.name}.spec",
            target="liberty-candidate",
            lookaside=lookaside,
        )


@pytest.fixture
def distgit(tmp_path: Path):
    def make(name: str = "hello") -> Distgit:
        path = tmp_path / "git" / name
        path.mkdir(parents=True)
        repo = Distgit(path, name)
        repo.git("init", "-q", "-b", "main")
        repo.git("config", "user.email", "gate@example.com")
        repo.git("config", "user.name", "gate")
        return repo

    return make


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    backend = LocalBackend(tmp_path / "state", Pool(tmp_path / "pool"), workers=2)
    yield backend
    await backend.close()


async def build(backend: LocalBackend, request: BuildRequest) -> BuildOutcome:
    return await backend.wait(await backend.submit(request))


async def test_scratch_build_puts_rpms_in_pool_with_nevra_and_sourcerpm(
    backend: LocalBackend, distgit
) -> None:
    repo = distgit()
    request = repo.request(repo.commit({"hello.spec": spec()}), key="scratch-key")

    outcome = await build(backend, request)

    assert outcome.ok, outcome.reason
    assert outcome.nvr == "hello-1.0-1"
    assert outcome.reason == ""
    assert sorted(a.nevra for a in outcome.artifacts) == [
        "hello-0:1.0-1.noarch",
        "hello-0:1.0-1.src",
        "hello-extra-0:1.0-1.noarch",
    ]
    for artifact in outcome.artifacts:
        assert artifact.checksum in backend.pool
        assert sha256_file(backend.pool.path_for(artifact.checksum)) == artifact.checksum
        assert artifact.size == backend.pool.path_for(artifact.checksum).stat().st_size
        assert artifact.sourcerpm == ("" if artifact.is_source else "hello-1.0-1.src.rpm")
    assert "Wrote:" in Path(outcome.log).read_text()
    assert Path(outcome.log) == backend.log_path(outcome.extra["task_ref"])
    assert backend.rebuild_count("scratch", "scratch-key") == 1
    assert backend.rebuild_count("final") == 0
    assert not (backend.tasks_dir / outcome.extra["task_ref"]).exists()  # scratch dirs removed


async def test_failing_build_is_an_outcome_with_the_error_in_its_log(
    backend: LocalBackend, distgit
) -> None:
    repo = distgit()
    failing = spec(build='echo "compiler exploded on line 42" >&2\nexit 3')
    request = repo.request(repo.commit({"hello.spec": failing}))

    outcome = await build(backend, request)

    assert not outcome.ok
    # what the log says went wrong, not rpmbuild's "Bad exit status from /var/tmp/rpm-tmp.X"
    assert outcome.reason == "rpmbuild failed in %build: compiler exploded on line 42"
    assert outcome.artifacts == ()
    assert "compiler exploded on line 42" in Path(outcome.log).read_text()


async def test_broken_spec_fails_at_srpm_with_log(backend: LocalBackend, distgit) -> None:
    repo = distgit()
    request = repo.request(repo.commit({"hello.spec": "Name: hello\nthis is not a spec\n"}))

    outcome = await build(backend, request)

    assert not outcome.ok
    assert outcome.reason.startswith("rpmbuild -bs failed:")
    assert "rpmbuild -bs" in Path(outcome.log).read_text()
    assert backend.rebuild_count() == 0


async def test_commit_whose_tree_is_not_the_requested_tree_is_refused(
    backend: LocalBackend, distgit
) -> None:
    repo = distgit()
    sha, _ = repo.commit({"hello.spec": spec()})
    _, other_tree = repo.commit({"hello.spec": spec(release="2")})

    outcome = await build(backend, repo.request((sha, other_tree)))

    assert not outcome.ok
    assert outcome.reason.startswith(f"commit {sha} has tree ")
    assert backend.rebuild_count() == 0


async def test_build_requires_are_recorded_though_not_installed(
    backend: LocalBackend, distgit
) -> None:
    repo = distgit()
    preamble = "BuildRequires: rpmgate-not-installed-dep >= 2\nBuildRequires: pkgconfig(nothing)"
    request = repo.request(repo.commit({"hello.spec": spec(preamble=preamble)}))

    outcome = await build(backend, request)

    assert outcome.ok, outcome.reason
    assert outcome.build_requires == ("pkgconfig(nothing)", "rpmgate-not-installed-dep >= 2")


def make_tarball(name: str, version: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"from the lookaside\n"
        info = tarfile.TarInfo(f"{name}-{version}/README")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tarball_spec() -> str:
    return spec(
        preamble="Source0: hello-1.0.tar.gz",
        prep="%setup -q",
        install_extra="cp README %{buildroot}/usr/share/hello/extra.txt",
    )


async def test_lookaside_tarball_is_fetched_verified_and_cached(
    backend: LocalBackend, distgit, tmp_path: Path
) -> None:
    remote = tmp_path / "lookaside"
    tarball = make_tarball("hello", "1.0")
    digest = hashlib.sha512(tarball).hexdigest()
    stored = remote / "hello" / "hello-1.0.tar.gz" / "sha512" / digest / "hello-1.0.tar.gz"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(tarball)
    lookaside = Lookaside(url=f"file://{remote}/{FEDORA_LAYOUT}", cache_dir=tmp_path / "cache")
    repo = distgit()
    commit = repo.commit(
        {"hello.spec": tarball_spec(), "sources": f"SHA512 (hello-1.0.tar.gz) = {digest}\n"}
    )

    first = await build(backend, repo.request(commit, key="a", lookaside=lookaside))
    assert first.ok, first.reason
    assert "lookaside: hello-1.0.tar.gz" in Path(first.log).read_text()
    assert (tmp_path / "cache" / "sha512" / digest[:2] / digest).read_bytes() == tarball

    # With the lookaside emptied, a second build can only succeed from the cache.
    stored.unlink()
    second = await build(backend, repo.request(commit, key="b", lookaside=lookaside))
    assert second.ok, second.reason


async def test_lookaside_checksum_mismatch_fails_clearly(
    backend: LocalBackend, distgit, tmp_path: Path
) -> None:
    remote = tmp_path / "lookaside"
    tarball = make_tarball("hello", "1.0")
    claimed = hashlib.sha512(b"not the tarball").hexdigest()
    stored = remote / "hello" / "hello-1.0.tar.gz" / "sha512" / claimed / "hello-1.0.tar.gz"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(tarball)
    lookaside = Lookaside(url=f"file://{remote}/{FEDORA_LAYOUT}", cache_dir=tmp_path / "cache")
    repo = distgit()
    commit = repo.commit(
        {"hello.spec": tarball_spec(), "sources": f"SHA512 (hello-1.0.tar.gz) = {claimed}\n"}
    )

    outcome = await build(backend, repo.request(commit, lookaside=lookaside))

    assert not outcome.ok
    assert "hello-1.0.tar.gz" in outcome.reason
    assert claimed in outcome.reason
    assert hashlib.sha512(tarball).hexdigest() in outcome.reason
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert backend.rebuild_count() == 0


async def test_sources_file_without_lookaside_fails_clearly(backend: LocalBackend, distgit) -> None:
    repo = distgit()
    digest = hashlib.sha512(b"x").hexdigest()
    commit = repo.commit(
        {"hello.spec": tarball_spec(), "sources": f"SHA512 (hello-1.0.tar.gz) = {digest}\n"}
    )

    outcome = await build(backend, repo.request(commit))

    assert not outcome.ok
    assert "no lookaside is configured" in outcome.reason
    assert "hello-1.0.tar.gz" in outcome.reason


async def test_final_build_is_stored_and_found(backend: LocalBackend, distgit) -> None:
    repo = distgit()
    commit = repo.commit({"hello.spec": spec()})
    request = repo.request(commit, purpose="final", key="final-key")

    assert await backend.find_final("hello-1.0-1") is None
    outcome = await build(backend, request)
    assert outcome.ok, outcome.reason

    existing = await backend.find_final("hello-1.0-1")
    assert existing is not None
    assert existing.state == "COMPLETE"
    assert existing.source == commit[1]
    assert existing.task_ref == outcome.extra["task_ref"]
    assert existing.artifacts == outcome.artifacts
    assert (backend.builds_dir / "hello" / "1.0" / "1" / "build.json").is_file()
    # A backend started afresh on the same state dir (daemon restart) sees it too.
    restarted = LocalBackend(backend.state_dir, backend.pool)
    assert await restarted.find_final("hello-1.0-1") == existing
    assert await backend.find_final("hello-9-9") is None


async def test_failed_final_build_is_not_stored(backend: LocalBackend, distgit) -> None:
    repo = distgit()
    request = repo.request(repo.commit({"hello.spec": spec(build="exit 1")}), purpose="final")

    assert not (await build(backend, request)).ok
    assert await backend.find_final("hello-1.0-1") is None


async def test_final_build_of_existing_nvr_from_another_tree_is_refused(
    backend: LocalBackend, distgit
) -> None:
    repo = distgit()
    first_commit = repo.commit({"hello.spec": spec()})
    first = await build(backend, repo.request(first_commit, purpose="final", key="f1"))
    assert first.ok, first.reason
    # Same NVR, different content: the release was not bumped.
    second_commit = repo.commit({"hello.spec": spec(), "README": "changed\n"})

    second = await build(backend, repo.request(second_commit, purpose="final", key="f2"))

    assert not second.ok
    assert second.reason == (
        f"build hello-1.0-1 already exists (built from tree {first_commit[1]}, "
        f"this change is tree {second_commit[1]})"
    )
    assert backend.rebuild_count("final") == 1
    assert (await backend.find_final("hello-1.0-1")).source == first_commit[1]


async def test_final_build_of_existing_nvr_from_same_tree_is_adopted(
    backend: LocalBackend, distgit
) -> None:
    repo = distgit()
    commit = repo.commit({"hello.spec": spec()})
    first = await build(backend, repo.request(commit, purpose="final", key="f"))
    assert first.ok, first.reason

    again = await build(backend, repo.request(commit, purpose="final", key="f"))

    assert again.ok, again.reason
    assert again.extra["adopted"] == "true"
    assert again.artifacts == first.artifacts
    assert backend.rebuild_count("final", "f") == 1


async def test_unknown_task_ref_raises_task_lost(backend: LocalBackend, distgit) -> None:
    repo = distgit()
    request = repo.request(repo.commit({"hello.spec": spec()}))
    with pytest.raises(TaskLost):
        await backend.wait("no-such-ref")
    # A restarted daemon's backend does not know the refs of the previous one.
    ref = await backend.submit(request)
    restarted = LocalBackend(backend.state_dir, backend.pool)
    with pytest.raises(TaskLost):
        await restarted.wait(ref)
    await backend.cancel(ref)


def process_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie nobody reaped yet counts as dead)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def sleeper(marker: int) -> str:
    """A %build that sleeps as ``sleep 300.<marker>``: findable from outside the sandbox
    (a build can write nothing outside its own directory, and has its own PIDs)."""
    return f"exec sleep 300.{marker}"


async def wait_for_process(marker: int, timeout: float = 60.0) -> int:
    """The host PID of the ``sleep 300.<marker>`` a build started."""
    wanted = b"sleep\x00300.%d\x00" % marker
    for _ in range(int(timeout * 20)):
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if cmdline.read_bytes() == wanted and process_alive(int(cmdline.parent.name)):
                    return int(cmdline.parent.name)
            except OSError:
                continue
        await asyncio.sleep(0.05)
    raise AssertionError(f"no process sleep 300.{marker} appeared")


async def test_cancel_kills_a_running_build(backend: LocalBackend, distgit, tmp_path: Path) -> None:
    marker = os.getpid() * 1000 + 1
    repo = distgit()
    request = repo.request(repo.commit({"hello.spec": spec(build=sleeper(marker))}))
    ref = await backend.submit(request)
    pid = await wait_for_process(marker)
    assert process_alive(pid)

    await backend.cancel(ref)
    await backend.cancel(ref)  # idempotent
    await backend.cancel("never-submitted")

    assert not process_alive(pid)
    outcome = await backend.wait(ref)
    assert not outcome.ok
    assert outcome.reason == "build canceled"


async def test_close_cancels_running_builds(tmp_path: Path, distgit) -> None:
    backend = LocalBackend(tmp_path / "state", Pool(tmp_path / "pool"))
    marker = os.getpid() * 1000 + 2
    repo = distgit()
    request = repo.request(repo.commit({"hello.spec": spec(build=sleeper(marker))}))
    await backend.submit(request)
    pid = await wait_for_process(marker)

    await backend.close()

    assert not process_alive(pid)


async def test_one_worker_runs_builds_one_at_a_time(tmp_path: Path, distgit) -> None:
    backend = LocalBackend(tmp_path / "state", Pool(tmp_path / "pool"), workers=1)
    # %% escapes date's format from rpm's macro expansion; the lines land in
    # each build's log (a build can write nothing outside its directory)
    build_script = (
        "echo TIMES %{name} start $(date +%%s%%N)\n"
        "sleep 0.5\n"
        "echo TIMES %{name} end $(date +%%s%%N)"
    )
    requests = []
    for name in ("alpha", "beta", "gamma"):
        repo = distgit(name)
        requests.append(repo.request(repo.commit({f"{name}.spec": spec(name, build=build_script)})))
    try:
        refs = [await backend.submit(r) for r in requests]
        outcomes = [await backend.wait(ref) for ref, r in zip(refs, requests, strict=True)]
    finally:
        await backend.close()

    assert all(o.ok for o in outcomes), [o.reason for o in outcomes]
    spans: dict[str, dict[str, int]] = {}
    lines = [
        line
        for o in outcomes
        for line in Path(o.log).read_text().splitlines()
        if line.startswith("TIMES ")
    ]
    for line in lines:
        _, name, event, stamp = line.split()
        spans.setdefault(name, {})[event] = int(stamp)
    intervals = sorted((s["start"], s["end"]) for s in spans.values())
    assert len(intervals) == 3
    for (_, end), (next_start, _) in itertools.pairwise(intervals):
        assert end <= next_start, "two builds ran at once with workers=1"


async def test_a_build_that_ends_in_a_fault_is_forgotten_so_a_retry_submits_it_again(
    backend: LocalBackend, distgit, tmp_path: Path
) -> None:
    """The lookaside is unreachable (connection refused): the fault propagates once,
    then the task is unknown (``TaskLost``), so the caller submits the build again
    instead of waiting on a dead task forever."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tarball = make_tarball("hello", "1.0")
    digest = hashlib.sha512(tarball).hexdigest()
    lookaside = Lookaside(
        url=f"http://127.0.0.1:{port}/{FEDORA_LAYOUT}", cache_dir=tmp_path / "cache"
    )
    repo = distgit()
    commit = repo.commit(
        {"hello.spec": tarball_spec(), "sources": f"SHA512 (hello-1.0.tar.gz) = {digest}\n"}
    )
    ref = await backend.submit(repo.request(commit, lookaside=lookaside))
    with pytest.raises(TransientBackendError):
        await backend.wait(ref)
    with pytest.raises(TaskLost):
        await backend.wait(ref)
