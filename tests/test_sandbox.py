"""What a change's build can reach on the gate host (gate/builders/sandbox.py), observed
from inside a real rpmbuild that the local backend runs the way the daemon does.

Each %build below tries what an attacker's spec would: connect to a socket the test
listens on, write under ``/usr`` and ``/etc``, into the daemon's ``$HOME`` and into the
state directory, and prints ``id -u``.  Every target is made writable by the build user
(world-writable directories the test creates), and the same probe run as the build user
without the sandbox (``runuser``) reaches each one: only the sandbox stands between
the build and them, so each assertion fails if the sandbox stops doing its part.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from gate.builders.base import BuildRequest
from gate.builders.local import LocalBackend
from gate.builders.sandbox import BubblewrapMode, Sandbox, SandboxError
from gate.config import load_config
from gate.config_check import offline_findings
from gate.demo_world import World
from repo_state.pool import Pool

pytestmark = pytest.mark.slow

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="the suite runs as root: a non-root daemon's builds keep its uid, and the "
    "test cannot make world-writable probe directories under /usr and /etc",
)


def bubblewrap_sandbox() -> Sandbox:
    """The sandbox a daemon with ``sandbox.bubblewrap: required`` runs builds in.

    Skipped only where bwrap is not installed (``./dev setup`` installs it); a bwrap
    that is there but fails the start-up probe fails the test."""
    if shutil.which("bwrap") is None:
        pytest.skip("bwrap is not installed (package bubblewrap)")
    return Sandbox.create("required")


@pytest.fixture
def exposed() -> Iterator[Path]:
    """A directory anyone may enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="rpmgate-exposed-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket listening on the host's loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def connections(sock: socket.socket) -> int:
    """Connections ``sock`` received and no one accepted yet (all accepted now)."""
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


@dataclass
class Targets:
    """Places outside the build directory a build user could write without a sandbox."""

    usr: Path
    etc: Path
    home: Path
    state: Path

    def named(self) -> dict[str, Path]:
        return {"usr": self.usr, "etc": self.etc, "home": self.home, "state": self.state}


@pytest.fixture
def targets(exposed: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Targets]:
    """World-writable directories under /usr, /etc, the daemon's $HOME and its state dir."""
    made = [Path(tempfile.mkdtemp(prefix="rpmgate-probe-", dir=d)) for d in ("/usr/local", "/etc")]
    home = exposed / "home"
    state = exposed / "state"
    drop = state / "drop"
    for path in (home, drop):
        path.mkdir(parents=True)
    state.chmod(0o755)
    for path in (*made, home, drop):
        path.chmod(0o777)
    monkeypatch.setenv("HOME", str(home))
    try:
        yield Targets(usr=made[0], etc=made[1], home=home, state=drop)
    finally:
        for path in made:
            shutil.rmtree(path)


def probe_script(port: int, targets: Targets, inside: str) -> str:
    """Shell lines that report, one ``PROBE`` line each, what the build could do.

    ``inside`` is a path in the build's own directory (the one place it may write)."""
    lines = [
        'echo "PROBE uid=$(id -u)"',
        'echo "PROBE HOME=$HOME"',
        f"if bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' 2>/dev/null;"
        ' then echo "PROBE net=connected"; else echo "PROBE net=refused"; fi',
    ]
    for name, directory in targets.named().items():
        target = directory / "written-by-the-build"
        lines.append(
            f'if (echo x > "{target}") 2>/dev/null;'
            f' then echo "PROBE {name}=written"; else echo "PROBE {name}=denied"; fi'
        )
    lines.append(
        f'if (echo x > "{inside}") 2>/dev/null;'
        ' then echo "PROBE build=written"; else echo "PROBE build=denied"; fi'
    )
    return "\n".join(lines) + "\n"


def observed(log: str) -> dict[str, str]:
    """The ``PROBE key=value`` lines of a log (the command echo lines start with ``+``)."""
    found = {}
    for line in log.splitlines():
        if line.startswith("PROBE "):
            key, _, value = line.removeprefix("PROBE ").partition("=")
            found[key] = value
    return found


SPEC = """\
Name: probe
Version: 1.0
Release: 1
Summary: a build that tries to leave its sandbox
License: MIT
BuildArch: noarch

%description
Probes.

%prep

%build
{build}

%install
mkdir -p %{{buildroot}}/usr/share/probe
echo 1 > %{{buildroot}}/usr/share/probe/probe.txt

%files
/usr/share/probe/probe.txt
"""


def distgit(path: Path, spec: str) -> BuildRequest:
    """A real git repository with ``probe.spec``; the request to build its commit."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(path), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    path.mkdir(parents=True)
    git("init", "-q", "-b", "main")
    (path / "probe.spec").write_text(spec)
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "probe")
    return BuildRequest(
        project="rpms/probe",
        package="probe",
        purpose="scratch",
        key="probe",
        git_dir=path,
        commit=git("rev-parse", "HEAD"),
        tree=git("rev-parse", "HEAD^{tree}"),
        spec_path="probe.spec",
        target="liberty-candidate",
    )


async def build_probe(
    sandbox: Sandbox, state: Path, workdir: Path, script: str
) -> tuple[bool, str, str]:
    """Build the probe spec with the local backend; (ok, reason, the build's log)."""
    backend = LocalBackend(state, Pool(state / "pool"), workers=1, sandbox=sandbox)
    try:
        request = distgit(workdir / "git", SPEC.format(build=script))
        outcome = await backend.wait(await backend.submit(request))
    finally:
        await backend.close()
    return outcome.ok, outcome.reason, Path(outcome.log).read_text()


@needs_root
async def test_a_build_under_bubblewrap_reaches_no_network_and_writes_only_its_directory(
    targets: Targets, listener: socket.socket, tmp_path: Path
) -> None:
    sandbox = bubblewrap_sandbox()
    port = listener.getsockname()[1]
    nobody = pwd.getpwnam("nobody").pw_uid
    # the control: the same probe as the build user, without the sandbox, reaches all
    unconfined = subprocess.run(
        ["runuser", "-u", "nobody", "--", "sh", "-c", probe_script(port, targets, "/dev/null")],
        capture_output=True,
        text=True,
        cwd="/",
        check=True,
    )
    control = observed(unconfined.stdout)
    del control["HOME"]  # runuser sets nobody's own
    assert control == {
        "uid": str(nobody),
        "net": "connected",
        "usr": "written",
        "etc": "written",
        "home": "written",
        "state": "written",
        "build": "written",
    }
    assert connections(listener) == 1
    for directory in targets.named().values():
        (directory / "written-by-the-build").unlink()

    ok, reason, log = await build_probe(
        sandbox,
        targets.state.parent,
        tmp_path,
        probe_script(port, targets, "%{_topdir}/written-by-the-build"),
    )

    assert ok, reason
    seen = observed(log)
    assert seen.pop("HOME").startswith(f"{targets.state.parent}/tasks/"), log
    assert seen == {
        "uid": str(nobody),
        "net": "refused",
        "usr": "denied",
        "etc": "denied",
        "home": "denied",
        "state": "denied",
        "build": "written",
    }, log
    assert connections(listener) == 0
    for directory in targets.named().values():
        assert not (directory / "written-by-the-build").exists()


@needs_root
async def test_a_build_without_bubblewrap_still_runs_as_the_build_user_with_its_own_home(
    exposed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sandbox.bubblewrap: off`` under a root daemon: the user switch and the minimal
    environment remain (no network or mount isolation is promised then)."""
    monkeypatch.setenv("HOME", "/root")
    state = exposed / "state"
    state.mkdir(mode=0o755)
    sandbox = Sandbox.create("off")
    script = 'echo "PROBE uid=$(id -u)"\necho "PROBE HOME=$HOME"\n'

    ok, reason, log = await build_probe(sandbox, state, tmp_path, script)

    assert ok, reason
    seen = observed(log)
    assert seen["uid"] == str(pwd.getpwnam("nobody").pw_uid) != "0"
    assert seen["HOME"].startswith(f"{state}/tasks/"), seen


@needs_root
def test_root_as_the_build_user_is_refused() -> None:
    modes: tuple[BubblewrapMode, ...] = ("off", "auto")
    for mode in modes:
        with pytest.raises(SandboxError, match=r"sandbox\.user 'root' is root: builds must not"):
            Sandbox.create(mode, user="root")


@needs_root
def test_a_config_with_root_as_the_build_user_does_not_start(world: World, tmp_path: Path) -> None:
    doc = world.config(sandbox={"user": "root"})
    path = tmp_path / "rpmgate.yaml"
    path.write_text(yaml.safe_dump(doc))
    findings = [str(f) for f in offline_findings(load_config(path))]
    assert findings == [
        "sandbox.user: 'root' is uid 0: builds must not run as root; "
        "name an unprivileged account (the Ansible role creates rpmgate-build)"
    ]
    for command in ("check-config", "run"):
        result = subprocess.run(
            [sys.executable, "-m", "gate.cli", command, "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert "sandbox.user: 'root' is uid 0: builds must not run as root" in result.stderr
        assert "Traceback" not in result.stderr
    assert not Path(doc["state_dir"]).exists()
