"""check-config catches what parses but cannot work, and `rpmgate run` refuses it too.

One test per row of issue 15's table (a config that passed check-config and
then failed at run time), with real git repositories, real files and real
sockets.  Each finding must name the key, say what is wrong and what would be
right.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gate.cli import main
from gate.config import ConfigError, load_config
from gate.config_check import Finding, offline_findings, online_findings

Doc = dict[str, Any]


def _git(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare distgit repository whose branch ``main`` holds ``nova.spec``."""
    work = tmp_path / "work"
    work.mkdir()
    _git("init", "--quiet", "--initial-branch=main", str(work))
    (work / "nova.spec").write_text("Name: nova\n")
    _git("add", "nova.spec", cwd=work)
    _git("commit", "--quiet", "-m", "spec", cwd=work)
    bare = tmp_path / "nova.git"
    _git("clone", "--quiet", "--bare", str(work), str(bare))
    return bare


@pytest.fixture
def doc(tmp_path: Path, remote: Path) -> Doc:
    """A config that passes every check, offline and online."""
    (tmp_path / "lookaside").mkdir()
    return {
        "state_dir": str(tmp_path / "state"),
        "listen": {"host": "127.0.0.1", "port": 0},
        "public_url": "http://gate.example.com:8080",
        "publishers": {"liberty": {"root": str(tmp_path / "repos" / "liberty")}},
        "projects": {
            "nova": {
                "git": str(remote),
                "lookaside": {
                    "url": f"file://{tmp_path}/lookaside/{{name}}/{{filename}}/{{hashtype}}/{{hash}}"
                },
            }
        },
        "queues": {"liberty": {"projects": ["nova"], "repo": "liberty"}},
    }


def _findings(doc: Doc, path: Path, online: bool = False) -> list[Finding]:
    path.write_text(yaml.safe_dump(doc))
    config = load_config(path)
    found = offline_findings(config)
    return found + online_findings(config) if online else found


def _one(findings: list[Finding], key: str) -> Finding:
    named = [f for f in findings if f.key == key]
    assert len(named) == 1, findings
    return named[0]


def _check_config(
    capsys: pytest.CaptureFixture[str], config: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """``rpmgate check-config`` in this process (the CLI's own main)."""
    code = main(["check-config", "-c", str(config), *args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess([], code, out, err)


def test_a_good_config_has_no_findings_offline_or_online(
    doc: Doc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _findings(doc, tmp_path / "c.yaml", online=True) == []
    result = _check_config(capsys, tmp_path / "c.yaml", "--online")
    assert result.returncode == 0, result.stderr
    assert "checked offline and online" in result.stdout
    assert not (tmp_path / "state").exists()  # nothing created


# --- the table's rows -----------------------------------------------------------------


def test_public_url_without_a_scheme_is_refused_with_the_url_it_meant(
    doc: Doc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc["public_url"] = "gate.example.com:8080"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    result = _check_config(capsys, tmp_path / "c.yaml")
    assert result.returncode == 2
    assert (
        "public_url: 'gate.example.com:8080' is not an http:// or https:// URL with a host; "
        "write 'https://gate.example.com:8080'"
    ) in result.stderr


def test_lookaside_url_with_an_unknown_scheme_is_refused(doc: Doc, tmp_path: Path) -> None:
    doc["projects"]["nova"]["lookaside"]["url"] = "htp://lookaside.example.com/{name}/{filename}"
    finding = _one(_findings(doc, tmp_path / "c.yaml"), "projects.nova.lookaside.url")
    assert "is not an http://, https:// or file:// URL or an absolute path" in finding.problem
    assert finding.fix == "did you mean 'http://lookaside.example.com/{name}/{filename}'?"


@pytest.mark.parametrize(
    ("git", "problem", "fix"),
    [
        ("htps://git.example.com/nova.git", "unknown scheme 'htps://'", "https://git.example"),
        ("/nowhere/nova.git", "/nowhere/nova.git does not exist", "path of a git repository"),
        ("nova.git", "neither a URL git knows nor an absolute path", "absolute path"),
        ("ext::sh -c touch% /tmp/x", "names a git remote helper", "https://"),
    ],
)
def test_project_git_that_git_cannot_fetch_is_refused(
    doc: Doc, tmp_path: Path, git: str, problem: str, fix: str
) -> None:
    doc["projects"]["nova"]["git"] = git
    finding = _one(_findings(doc, tmp_path / "c.yaml"), "projects.nova.git")
    assert problem in finding.problem
    assert fix in finding.fix


def test_a_directory_that_is_not_a_repository_is_refused(doc: Doc, tmp_path: Path) -> None:
    doc["projects"]["nova"]["git"] = str(tmp_path)
    finding = _one(_findings(doc, tmp_path / "c.yaml"), "projects.nova.git")
    assert finding.problem == f"{tmp_path} is not a git repository"


@pytest.mark.parametrize(
    "git", ["https://git.example.com/nova.git", "git@git.example.com:rpms/nova.git", "ssh://h/x"]
)
def test_remote_git_locations_pass_offline(doc: Doc, tmp_path: Path, git: str) -> None:
    doc["projects"]["nova"]["git"] = git
    assert _findings(doc, tmp_path / "c.yaml") == []


def test_database_url_with_a_misspelt_dialect_says_what_it_meant(
    doc: Doc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc["database_url"] = "postgress://rpmgate:s3cret@db.example.com/rpmgate"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    result = _check_config(capsys, tmp_path / "c.yaml")
    assert result.returncode == 2
    assert "database_url: unsupported database 'postgress'" in result.stderr
    assert "did you mean postgresql://?" in result.stderr
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr


def test_database_url_names_the_installed_driver(doc: Doc, tmp_path: Path) -> None:
    doc["database_url"] = "postgresql+psycopg://rpmgate@db.example.com/rpmgate"
    finding = _one(_findings(doc, tmp_path / "c.yaml"), "database_url")
    assert "psycopg" in finding.problem
    assert "driver psycopg2" in finding.fix and "installed" in finding.fix


def test_a_postgresql_url_with_the_installed_driver_passes(doc: Doc, tmp_path: Path) -> None:
    doc["database_url"] = "postgresql+psycopg2://rpmgate@db.example.com/rpmgate"
    assert _findings(doc, tmp_path / "c.yaml") == []


def test_state_dir_that_is_a_file_is_refused(doc: Doc, tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    finding = _one(_findings(doc, tmp_path / "c.yaml"), "state_dir")
    assert finding.problem == f"{tmp_path / 'state'} is not a directory"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can read (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="rpmgate-check-"))
    path.chmod(0o755)
    yield path
    for sub in path.rglob("*"):
        if sub.is_dir():
            sub.chmod(0o755)
    shutil.rmtree(path)


def _unprivileged(*argv: str) -> subprocess.CompletedProcess[str]:
    """``argv`` as nobody when we are root (root may write anywhere), else as we are."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv to drop privileges")
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=120, cwd="/")


def test_unwritable_state_dir_and_publisher_root_are_refused(shared_dir: Path) -> None:
    readonly = shared_dir / "ro"
    readonly.mkdir()
    remote = shared_dir / "nova.git"
    _git("init", "--quiet", "--bare", str(remote))
    config = shared_dir / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(readonly / "state"),
                "publishers": {"liberty": {"root": str(readonly)}},
                "projects": {"nova": {"git": str(remote)}},
                "queues": {"liberty": {"projects": ["nova"], "repo": "liberty"}},
            }
        )
    )
    config.chmod(0o644)
    readonly.chmod(0o555)
    result = _unprivileged(sys.executable, "-m", "gate.cli", "check-config", "-c", str(config))
    assert result.returncode == 2, result.stderr
    assert f"state_dir: {readonly / 'state'} does not exist and user" in result.stderr
    assert f"cannot create it in {readonly}" in result.stderr
    assert f"publishers.liberty.root: {readonly} is not writable by user" in result.stderr


def test_a_spec_missing_from_the_branch_is_found_online(doc: Doc, tmp_path: Path) -> None:
    doc["projects"]["nova"]["spec"] = "nope.spec"
    findings = _findings(doc, tmp_path / "c.yaml", online=True)
    finding = _one(findings, "projects.nova.spec")
    assert finding.problem == "no file 'nope.spec' at the head of 'main'"


def test_a_missing_branch_and_a_dead_remote_are_found_online(doc: Doc, tmp_path: Path) -> None:
    doc["projects"]["nova"]["branch"] = "rpm-liberty"
    finding = _one(_findings(doc, tmp_path / "c.yaml", online=True), "projects.nova.branch")
    assert "has no branch 'rpm-liberty'" in finding.problem

    doc["projects"]["nova"]["branch"] = "main"
    doc["projects"]["nova"]["git"] = "https://user:pw-secret@127.0.0.1:1/nova.git"
    finding = _one(_findings(doc, tmp_path / "c.yaml", online=True), "projects.nova.git")
    assert "git ls-remote" in finding.problem and "failed" in finding.problem
    assert "pw-secret" not in str(finding)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_port_in_use_is_found_online(doc: Doc, tmp_path: Path, busy_port: int) -> None:
    doc["listen"]["port"] = busy_port
    assert _findings(doc, tmp_path / "c.yaml") == []  # offline: nothing is bound
    finding = _one(_findings(doc, tmp_path / "c.yaml", online=True), "listen.port")
    assert finding.problem == f"127.0.0.1:{busy_port} is already in use by another program"


def test_run_with_a_port_in_use_names_listen_port_without_a_traceback(
    doc: Doc, tmp_path: Path, busy_port: int
) -> None:
    doc["listen"]["port"] = busy_port
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(doc))
    result = subprocess.run(
        [sys.executable, "-m", "gate.cli", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert f"listen.port: 127.0.0.1:{busy_port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_bare_dollar_var_is_reported_and_left_as_written(
    doc: Doc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc["public_url"] = "https://$GATE_HOST"
    doc["queues"]["liberty"]["jobs"] = [{"name": "smoke", "command": 'echo "$HOME"'}]
    path = tmp_path / "c.yaml"
    findings = _findings(doc, path)
    assert [f.key for f in findings] == ["public_url"]  # a command's $HOME is the shell's
    assert findings[0].warning
    assert "$GATE_HOST is not expanded (only ${GATE_HOST} is)" in findings[0].problem
    assert load_config(path).public_url == "https://$GATE_HOST"
    result = _check_config(capsys, path)
    assert result.returncode == 0  # a warning does not refuse the file
    assert "public_url: $GATE_HOST is not expanded" in result.stderr


def test_a_job_timeout_beyond_the_busy_stall_limit_is_a_warning(doc: Doc, tmp_path: Path) -> None:
    doc["queues"]["liberty"]["jobs"] = [
        {"name": "quick", "command": "true", "timeout": 600},
        {"name": "soak", "command": "true", "timeout": 2 * 86400},
    ]
    found = _findings(doc, tmp_path / "c.yaml")
    finding = _one(found, "queues.liberty.jobs.1.timeout")
    assert finding.warning
    assert "job soak may run 172800s, longer than health.stall_after_busy (86400s)" in str(finding)
    assert [f.key for f in found] == ["queues.liberty.jobs.1.timeout"]
    doc["health"] = {"stall_after_busy": 3 * 86400}
    assert _findings(doc, tmp_path / "c.yaml") == []


def test_a_zuul_style_decrease_factor_without_its_type_is_a_warning(
    doc: Doc, tmp_path: Path
) -> None:
    doc["queues"]["liberty"]["window"] = {"start": 20, "decrease_factor": 2}
    found = _findings(doc, tmp_path / "c.yaml")
    finding = _one(found, "queues.liberty.window.decrease_factor")
    assert finding.warning
    assert "2 is taken off the window per failure (decrease_type defaults to linear)" in str(
        finding
    )
    assert "exponential for Zuul's /2" in finding.fix
    for kind in ("linear", "exponential"):
        doc["queues"]["liberty"]["window"]["decrease_type"] = kind
        assert _findings(doc, tmp_path / "c.yaml") == []


def test_window_bounds_are_refused_with_the_key(doc: Doc, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    doc["queues"]["liberty"]["window"] = {"start": 20, "ceiling": 10}
    path.write_text(yaml.safe_dump(doc))
    refused = r"queues\.liberty\.window: ceiling \(10\) must not be below start \(20\)"
    with pytest.raises(ConfigError, match=refused):
        load_config(path)
    doc["queues"]["liberty"]["window"] = {"increase_type": "exponential", "increase": 0}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="increase must be at least 1 with increase_type"):
        load_config(path)
    doc["queues"]["liberty"]["window"] = {"decrease_type": "halving"}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"queues\.liberty\.window\.decrease_type"):
        load_config(path)


# --- run refuses what check-config refuses ----------------------------------------------


def test_run_exits_2_with_the_check_config_messages_and_creates_nothing(
    doc: Doc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc["public_url"] = "gate.example.com:8080"
    doc["projects"]["nova"]["git"] = "htps://git.example.com/nova.git"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(doc))
    checked = _check_config(capsys, config)
    result = subprocess.run(
        [sys.executable, "-m", "gate.cli", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == checked.returncode == 2
    assert checked.stderr in result.stderr  # after the log lines of the start
    assert "public_url:" in result.stderr and "projects.nova.git:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "state").exists()


# --- more offline checks ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("scm_url", "problem", "fix"),
    [
        ("https://git.example.com/nova.git", "not an SCM URL kojid builds from", "git+https://"),
        ("git+https://u:pw@git.example.com/nova.git", "user:password", "user@"),
        ("git+https:///nova.git", "has no host", "git+https://host"),
    ],
)
def test_scm_url_follows_kojids_rules(
    doc: Doc, tmp_path: Path, scm_url: str, problem: str, fix: str
) -> None:
    doc["projects"]["nova"]["scm_url"] = scm_url
    finding = _one(_findings(doc, tmp_path / "c.yaml"), "projects.nova.scm_url")
    assert problem in finding.problem and fix in finding.fix
    assert "pw" not in finding.problem.replace("password", "")


def test_every_finding_is_reported_not_just_the_first(doc: Doc, tmp_path: Path) -> None:
    doc["public_url"] = "gate:80"
    doc["database_url"] = "mysql://db/x"
    doc["projects"]["nova"]["git"] = "/nowhere"
    doc["projects"]["nova"]["lookaside"]["url"] = "/srv/{nme}"
    keys = [f.key for f in _findings(doc, tmp_path / "c.yaml")]
    assert keys == [
        "public_url",
        "database_url",
        "projects.nova.git",
        "projects.nova.lookaside.url",
    ]


# --- more online checks -----------------------------------------------------------------


def test_a_lookaside_directory_that_is_missing_is_found_online(doc: Doc, tmp_path: Path) -> None:
    doc["projects"]["nova"]["lookaside"]["url"] = f"file://{tmp_path}/gone/{{name}}/{{filename}}"
    finding = _one(_findings(doc, tmp_path / "c.yaml", online=True), "projects.nova.lookaside.url")
    assert finding.problem == f"{tmp_path / 'gone'} does not exist"


def test_a_lookaside_server_that_does_not_answer_is_found_online(doc: Doc, tmp_path: Path) -> None:
    doc["projects"]["nova"]["lookaside"]["url"] = "http://127.0.0.1:1/pkgs/{name}/{filename}"
    finding = _one(_findings(doc, tmp_path / "c.yaml", online=True), "projects.nova.lookaside.url")
    assert finding.problem.startswith("http://127.0.0.1:1/pkgs/ does not answer")


def test_a_database_that_refuses_connections_is_found_online(doc: Doc, tmp_path: Path) -> None:
    doc["database_url"] = "postgresql://rpmgate:pw-secret@127.0.0.1:1/rpmgate"
    finding = _one(_findings(doc, tmp_path / "c.yaml", online=True), "database_url")
    assert "refuses a connection" in finding.problem
    assert "pw-secret" not in str(finding)


def test_a_running_rpmgate_on_the_port_is_only_a_warning(doc: Doc, tmp_path: Path) -> None:
    """The Ansible role checks online before it restarts the daemon that holds the port."""

    class Healthz(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"ok": False, "failing": ["loop"], "checks": []}).encode()
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthz) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        doc["listen"]["port"] = server.server_address[1]
        finding = _one(_findings(doc, tmp_path / "c.yaml", online=True), "listen.port")
        server.shutdown()
    assert finding.warning
    assert "in use by a running rpmgate" in finding.problem


def test_a_koji_hub_is_asked_for_its_version_a_login_and_the_targets(
    doc: Doc, tmp_path: Path
) -> None:
    from tests.fakekoji import FakeKoji

    with FakeKoji(tmp_path / "hub") as hub:
        backend = {"type": "koji", "server": hub.url, "topurl": hub.topurl}
        doc["backends"] = {"hub": {**backend, "user": "rpmgate", "password": "secret"}}
        doc["queues"]["liberty"].update(backend="hub", target="liberty-candidate")
        assert _findings(doc, tmp_path / "c.yaml", online=True) == []

        doc["backends"]["hub"]["password"] = "wrong-password"
        doc["queues"]["liberty"]["target"] = "mitaka-candidate"
        found = _findings(doc, tmp_path / "c.yaml", online=True)
        assert "login (password) to" in _one(found, "backends.hub").problem
        assert "wrong-password" not in str(found)
        target = _one(found, "queues.liberty.target")
        assert target.problem.endswith("has no build target 'mitaka-candidate'")

        # a named build's target is asked for under its own key
        doc["backends"]["hub"]["password"] = "secret"
        doc["queues"]["liberty"]["builds"] = {"el9": {"target": "cloud9s-candidate"}}
        found = _findings(doc, tmp_path / "c.yaml", online=True)
        target = _one(found, "queues.liberty.builds.el9.target")
        assert target.problem.endswith("has no build target 'cloud9s-candidate'")
        assert [f for f in found if f.key == "queues.liberty.target"] == []

        # two named builds whose build tags give the same %dist would build one NVR twice
        def el(n: str, dist: str | None) -> None:
            extra = {"rpm.macro.dist": dist} if dist else {}
            hub.hub.add_tag(f"c{n}s-build", **extra)
            hub.hub.add_tag(f"c{n}s-candidate")
            hub.hub.add_target(f"cloud{n}s-candidate", f"c{n}s-build", f"c{n}s-candidate")

        hub.run(lambda: (el("9", ".el9"), el("10", None), el("11", ".el9")))
        doc["publishers"]["el10"] = {**doc["publishers"]["liberty"], "root": str(tmp_path / "b")}
        # (the config file is written with sorted keys: el9 stays the first build)
        doc["queues"]["liberty"]["builds"] = {
            "el9": {"target": "cloud9s-candidate"},
            "epel10": {"target": "cloud10s-candidate", "repo": "el10"},
        }
        assert _findings(doc, tmp_path / "c.yaml", online=True) == []
        doc["queues"]["liberty"]["builds"]["epel10"]["target"] = "cloud11s-candidate"
        found = _findings(doc, tmp_path / "c.yaml", online=True)
        dist = _one(found, "queues.liberty.builds.epel10.target")
        assert dist.problem.startswith(
            "target 'cloud11s-candidate' builds with '.el9', as queues.liberty.builds.el9.target "
            "does: Koji builds an NVR once"
        )
        del doc["queues"]["liberty"]["builds"]

    doc["backends"]["hub"]["password"] = "secret"
    found = _findings(doc, tmp_path / "c.yaml", online=True)
    assert "does not answer getAPIVersion" in _one(found, "backends.hub.server").problem


def test_run_with_a_state_dir_the_build_user_cannot_enter_says_so_without_a_traceback(
    doc: Doc, tmp_path: Path
) -> None:
    """Builds switch to ``nobody`` (the daemon is root) without bubblewrap: a state
    directory under a private one cannot be reached; ``run`` says which and how to fix."""
    if os.geteuid() != 0:
        pytest.skip("only a root daemon switches builds to another user")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    doc["state_dir"] = str(private / "state")
    doc["sandbox"] = {"bubblewrap": "off"}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(doc))
    result = subprocess.run(
        [sys.executable, "-m", "gate.cli", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert f"{config}: cannot start\n  sandbox: builds run as nobody, who cannot enter" in (
        result.stderr
    )
    assert "make it traversable or install bubblewrap" in result.stderr
    assert "Traceback" not in result.stderr
