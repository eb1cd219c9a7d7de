"""The Ansible role: lint, the hardened unit, secrets, the env file, idempotent installs.

Each test needs a tool the suite does not pip-install by itself (ansible-lint,
ansible-playbook, systemd-analyze, bwrap, strace, root); without it the test
is skipped and the message names the tool.  ``./dev`` installs them all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gate import envfile
from gate.builders.sandbox import Sandbox

REPO = Path(__file__).resolve().parent.parent
ANSIBLE = REPO / "ansible"
ROLE = ANSIBLE / "roles" / "rpmgate"
BIN = Path(sys.executable).parent

#: values a secret may well have: each character the old unquoted file mangled
TRICKY_SECRETS = {
    "SPACE": "two words",
    "DOLLAR": "pa$$word$HOME${HOME}",
    "DOUBLE_QUOTE": 'say "hi"',
    "BACKSLASH": "back\\slash\\\\n\\",
    "HASH": "#not-a-comment # either",
    "SINGLE_QUOTE": "it's 'quoted'",
    "EQUALS": "=a=b==",
    "TRAILING_SPACES": "  padded  ",
    "BACKTICK": "`id` $(id)",
    "SEMICOLON": ";starts like a comment",
    "NEWLINE": "line1\nline2\r\n",
    "TAB": "\tx\t",
    "UNICODE": "ąęół śćńźżμ ✓",
    "EMPTY": "",
    "JINJA": "{{ not_a_template }} {% raw %}",
    "ALL": " a\"b\\c`d$e#f'g=h;i \\",
}


def _tool(name: str) -> str:
    """Path of ``name`` (the venv's bin first), or skip naming it."""
    found = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.skip(f"{name} is not installed (./dev installs it)")
    return found


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
    }


def _playbook(
    play: dict[str, Any], tmp: Path, *args: str, roles: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one play on localhost; the role's filters are found, ``roles`` too if given."""
    path = tmp / f"play-{len(list(tmp.glob('play-*')))}.yml"
    path.write_text(yaml.safe_dump([play], sort_keys=False))
    env = {**_env(), "ANSIBLE_FILTER_PLUGINS": str(ROLE / "filter_plugins")}
    if roles is not None:
        env["ANSIBLE_ROLES_PATH"] = str(roles)
    return subprocess.run(
        [_tool("ansible-playbook"), "-i", "localhost,", "-c", "local", str(path), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        check=False,
    )


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _render(template: str, dest: Path, tmp: Path, **extra_vars: Any) -> str:
    """Render one of the role's templates with Ansible, the role's defaults and ``extra_vars``."""
    extra = tmp / f"extra-{dest.name}.json"
    extra.write_text(json.dumps(extra_vars))
    play = {
        "name": "Render",
        "hosts": "localhost",
        "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
        "tasks": [
            {
                "name": "Template",
                "ansible.builtin.template": {
                    "src": str(ROLE / "templates" / template),
                    "dest": str(dest),
                    "mode": "0600",
                },
            }
        ],
    }
    _ok(_playbook(play, tmp, "-e", f"@{extra}"))
    return dest.read_text()


@pytest.fixture(scope="module")
def unit_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The unit rendered with the role's defaults."""
    tmp = tmp_path_factory.mktemp("unit")
    _render("rpmgate.service.j2", tmp / "rpmgate.service", tmp)
    return tmp / "rpmgate.service"


def _unit_settings(unit: Path) -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings[key.strip()] = value.strip()
    return settings


def _exposure(unit: Path) -> float:
    result = subprocess.run(
        [_tool("systemd-analyze"), "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, f"no overall exposure in:\n{result.stdout}{result.stderr}"
    return float(match.group(1))


# --- (a) ansible-lint, (d) syntax ----------------------------------------------------


def test_ansible_lint_passes_with_the_production_profile() -> None:
    lint = _tool("ansible-lint")
    result = subprocess.run(
        [lint, "--offline", "--nocolor", "--profile", "production", "ansible/"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_playbook_passes_the_syntax_check(tmp_path: Path) -> None:
    result = subprocess.run(
        [_tool("ansible-playbook"), "-i", "localhost,", "--syntax-check", "playbook.yml"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ANSIBLE,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- (b) the hardened unit -------------------------------------------------------------


def test_unit_scores_below_5_in_systemd_analyze_security(unit_file: Path) -> None:
    # the role's unit before issue 6 scored 9.2 ("UNSAFE")
    assert _exposure(unit_file) < 5.0


def test_unit_for_a_root_daemon_also_scores_below_5(tmp_path: Path) -> None:
    unit = tmp_path / "rpmgate.service"
    _render("rpmgate.service.j2", unit, tmp_path, rpmgate_user="root")
    settings = _unit_settings(unit)

    assert _exposure(unit) < 5.0
    # only what handing builds to rpmgate-build, under bwrap started as root, needs
    assert settings["CapabilityBoundingSet"].split() == [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SYS_ADMIN",
    ]


def test_unit_may_write_only_the_state_dir_and_the_publisher_roots(tmp_path: Path) -> None:
    unit = tmp_path / "rpmgate.service"
    config = {
        "publishers": {"a": {"root": "/srv/repos/a"}, "b": {"root": "/srv/repos/b"}},
        "projects": {},
        "queues": {},
    }
    _render(
        "rpmgate.service.j2",
        unit,
        tmp_path,
        rpmgate_config=config,
        rpmgate_unit_read_write_paths=["/var/cache/lookaside"],
    )
    settings = _unit_settings(unit)

    assert settings["ProtectSystem"] == "strict"
    assert settings["ReadWritePaths"].split() == [
        "/var/lib/rpmgate",
        "/srv/repos/a",
        "/srv/repos/b",
        "/var/cache/lookaside",
    ]
    assert settings["CapabilityBoundingSet"] == ""
    assert settings["User"] == "rpmgate"


def test_unit_leaves_bubblewrap_what_it_needs(unit_file: Path) -> None:
    settings = _unit_settings(unit_file)

    # every namespace bwrap --unshare-all creates
    assert set(settings["RestrictNamespaces"].split()) >= {
        "user",
        "mnt",
        "net",
        "pid",
        "ipc",
        "uts",
        "cgroup",
    }
    assert "@mount" in settings["SystemCallFilter"].split()
    assert "AF_NETLINK" in settings["RestrictAddressFamilies"].split()
    # these over-mount /proc, and bwrap --proc then fails (see the simulation below)
    assert settings["ProtectKernelTunables"] == "no"
    assert settings["ProtectKernelLogs"] == "no"
    assert "ProcSubset" not in settings


# --- bwrap under the unit's restrictions ----------------------------------------------

#: the mount side of the unit, as systemd sets it up (src/core/namespace.c), per setting
_MOUNTS = {
    (
        "ProtectProc",
        "invisible",
    ): "mount -t proc -o hidepid=invisible,nosuid,nodev,noexec proc /proc",
    ("ProcSubset", "pid"): "mount -t proc -o subset=pid,nosuid,nodev,noexec proc /proc",
    ("ProtectKernelTunables", "yes"): "for p in /proc/sys /proc/sysrq-trigger; do "
    "mount --bind $p $p && mount -o remount,bind,ro $p; done",
    ("ProtectKernelLogs", "yes"): "mount --bind /run/inaccessible/file /proc/kmsg",
    ("ProtectControlGroups", "yes"): "[ ! -d /sys/fs/cgroup ] || "
    "{ mount --bind /sys/fs/cgroup /sys/fs/cgroup && mount -o remount,bind,ro /sys/fs/cgroup; }",
    ("ProtectKernelModules", "yes"): "[ ! -d /usr/lib/modules ] || "
    "mount --bind /run/inaccessible/dir /usr/lib/modules",
    ("ProtectHome", "yes"): "for d in /home /root /run/user; do [ ! -d $d ] || "
    "mount --bind /run/inaccessible/dir $d; done",
    ("PrivateTmp", "yes"): "mount -t tmpfs tmpfs /tmp && mount -t tmpfs tmpfs /var/tmp",
    ("PrivateDevices", "yes"): "mkdir -p /run/dev && mount -t tmpfs -o mode=0755 tmpfs /run/dev && "
    "for n in null zero full random urandom tty; do touch /run/dev/$n; "
    "mount --bind /dev/$n /run/dev/$n; done && mount --move /run/dev /dev",
    ("ProtectSystem", "strict"): "mount -o remount,bind,ro / && "
    "for p in $READ_WRITE; do mount --bind $p $p; done",
}

_SIMULATION = """
set -eu
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/inaccessible/dir && chmod 0 /run/inaccessible/dir
touch /run/inaccessible/file && chmod 0 /run/inaccessible/file
mount -t tmpfs -o mode=0755 tmpfs "$STATE"
mkdir "$STATE/build" && chown "$BUILD_UID:$BUILD_GID" "$STATE/build"
cp "$SPEC" "$STATE/build/probe.spec"
{mounts}
exec setpriv --reuid "$BUILD_UID" --regid "$BUILD_GID" --clear-groups --no-new-privs \\
    --inh-caps=-all --bounding-set=-all -- "$@"
"""

_PROBE_SPEC = """\
Name: probe
Version: 1
Release: 1
Summary: runs %(echo inside) at parse time
License: MIT
BuildArch: noarch
%description
probe
%build
test "$(cat /proc/1/comm)" = bwrap -o "$(cat /proc/1/comm)" = rpmbuild
! ls /sys/class/net/eth0 2>/dev/null
%install
mkdir -p %{buildroot}/usr/share/probe && echo ok > %{buildroot}/usr/share/probe/ok
%files
/usr/share/probe/ok
"""


def _bwrap_argv(build: str) -> list[str]:
    """What gate/builders/sandbox.py runs for a daemon that is not root (the unit's user)."""
    sandbox = Sandbox(user=None, bwrap=shutil.which("bwrap") or "bwrap")
    if shutil.which("rpmbuild"):
        inner = ["rpmbuild", "--define", f"_topdir {build}/top", "-bb", f"{build}/probe.spec"]
    else:
        inner = ["sh", "-c", "test -w . && ! test -w /usr && cat /proc/1/status >/dev/null"]
    argv, _ = sandbox.command(inner, Path(build))
    return argv


def _require_bwrap_as_nobody() -> None:
    """Skip unless root can run bwrap as an unprivileged user on this host at all."""
    if os.geteuid() != 0:
        pytest.skip("running bwrap as an unprivileged user needs root (setpriv)")
    for tool in ("bwrap", "unshare", "setpriv"):
        _tool(tool)
    probe = subprocess.run(
        [
            "setpriv",
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
            "bwrap",
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--ro-bind",
            "/",
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--",
            "true",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    if probe.returncode != 0:
        pytest.skip(f"bwrap does not work on this host, unit or not: {probe.stderr.strip()}")


def _simulate(settings: dict[str, str], tmp: Path) -> subprocess.CompletedProcess[str]:
    _require_bwrap_as_nobody()
    mounts = [cmd for (key, value), cmd in _MOUNTS.items() if settings.get(key) == value]
    script = tmp / "simulate.sh"
    script.write_text(_SIMULATION.format(mounts="\n".join(mounts)))
    spec = tmp / "probe.spec"
    spec.write_text(_PROBE_SPEC)
    state = "/mnt"  # a ReadWritePaths= entry, world-traversable like /var/lib
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "STATE": state,
        "SPEC": str(spec),
        "READ_WRITE": state,
        "BUILD_UID": "65534",
        "BUILD_GID": "65534",
    }
    return subprocess.run(
        ["unshare", "--mount", "--", "sh", str(script), *_bwrap_argv(f"{state}/build")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


def test_bwrap_builds_under_the_units_mount_restrictions(unit_file: Path, tmp_path: Path) -> None:
    """The unit's file-system sandboxing, set up by hand as systemd would, leaves bwrap working.

    The seccomp and namespace side is checked with strace below; a running
    systemd (systemd-run -p ...) is not needed.
    """
    result = _simulate(_unit_settings(unit_file), tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr


def test_bwrap_fails_if_the_unit_protected_kernel_tunables(unit_file: Path, tmp_path: Path) -> None:
    # the reason ProtectKernelTunables=no: the simulation catches the setting
    settings = {**_unit_settings(unit_file), "ProtectKernelTunables": "yes"}

    result = _simulate(settings, tmp_path)

    assert result.returncode != 0
    assert "Can't mount proc" in result.stderr


def _expand_syscall_groups(names: list[str]) -> set[str]:
    out = subprocess.run(
        [_tool("systemd-analyze"), "syscall-filter", "--no-pager"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = line.strip()
            groups[current] = []
        elif current and line.strip() and not line.strip().startswith("#"):
            groups[current].append(line.strip())

    def expand(items: list[str]) -> set[str]:
        result: set[str] = set()
        for item in items:
            result |= expand(groups[item]) if item.startswith("@") else {item}
        return result

    return expand(names)


@pytest.fixture
def world_traversable_dir() -> Iterator[Path]:
    """A directory every user can walk to (pytest's tmp_path is under a 0700 one):
    an unprivileged bwrap binds the build directory by its path, as the calling user."""
    with tempfile.TemporaryDirectory(prefix="rpmgate-bwrap-", dir="/tmp") as tmp:
        Path(tmp).chmod(0o755)
        yield Path(tmp)


def test_a_sandboxed_build_stays_inside_the_units_syscall_namespace_and_socket_filters(
    unit_file: Path, tmp_path: Path, world_traversable_dir: Path
) -> None:
    _require_bwrap_as_nobody()
    strace = _tool("strace")
    settings = _unit_settings(unit_file)
    build = world_traversable_dir / "build"
    build.mkdir()
    (build / "probe.spec").write_text(_PROBE_SPEC)
    shutil.chown(build, 65534, 65534)
    trace = tmp_path / "trace"
    result = subprocess.run(
        [
            strace,
            "-f",
            "-qq",
            "-o",
            str(trace),
            "setpriv",
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--no-new-privs",
            "--",
            *_bwrap_argv(str(build)),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    calls = trace.read_text().splitlines()
    used = {m.group(1) for line in calls if (m := re.match(r"\d+\s+([a-z0-9_]+)\(", line))}
    used -= {"setresuid", "setresgid", "setgroups", "prctl", "execve"}  # setpriv's own, or allowed

    allowed = _expand_syscall_groups(settings["SystemCallFilter"].split())
    assert used - allowed == set()
    flags = {f for line in calls for f in re.findall(r"CLONE_NEW([A-Z]+)", line)}
    namespaces = {
        "NS": "mnt",
        "USER": "user",
        "PID": "pid",
        "NET": "net",
        "IPC": "ipc",
        "UTS": "uts",
        "CGROUP": "cgroup",
        "TIME": "time",
    }
    assert {namespaces[f] for f in flags} <= set(settings["RestrictNamespaces"].split())
    families = {f for line in calls for f in re.findall(r"socket\((AF_[A-Z0-9]+)", line)}
    assert families <= set(settings["RestrictAddressFamilies"].split())


# --- (c) the environment file ----------------------------------------------------------


def _filter_plugin() -> Any:
    sys.path.insert(0, str(ROLE / "filter_plugins"))
    try:
        import systemd_env  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    return systemd_env


def _quote_filter() -> Any:
    return _filter_plugin().systemd_env_quote


def test_env_file_rendered_by_ansible_reads_back_byte_identical(tmp_path: Path) -> None:
    # secrets from a vars file tagged !unsafe, as the README says ("{{" is not templated)
    vars_file = tmp_path / "secrets.yml"
    vars_file.write_text(
        "rpmgate_environment:\n"
        + "".join(
            f"  {name}: !unsafe {json.dumps(value)}\n" for name, value in TRICKY_SECRETS.items()
        )
    )
    env = tmp_path / "rpmgate.env"
    play = {
        "name": "Render",
        "hosts": "localhost",
        "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(vars_file)],
        "tasks": [
            {
                "name": "Template",
                "ansible.builtin.template": {
                    "src": str(ROLE / "templates" / "rpmgate.env.j2"),
                    "dest": str(env),
                    "mode": "0600",
                },
            }
        ],
    }
    _ok(_playbook(play, tmp_path))

    loaded = envfile.load(env)

    assert loaded.variables == TRICKY_SECRETS
    assert loaded.ignored == ()


def test_env_file_means_the_same_to_a_posix_shell(tmp_path: Path) -> None:
    # systemd's test-env-file.c checks its writer against `. file` the same way
    quote = _quote_filter()
    env = tmp_path / "rpmgate.env"
    env.write_text("".join(f"{k}={quote(v, k)}\n" for k, v in TRICKY_SECRETS.items()))
    for name, value in TRICKY_SECRETS.items():
        shell = subprocess.run(
            ["sh", "-c", f'. "$1" && printf %s "${name}"', "sh", str(env)],
            capture_output=True,
            check=True,
        )
        assert shell.stdout.decode() == value, name


@settings(max_examples=300, deadline=None)
@given(
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0")).filter(
        lambda s: not any(0xFDD0 <= ord(c) <= 0xFDEF or ord(c) & 0xFFFE == 0xFFFE for c in s)
    )
)
def test_any_value_the_filter_accepts_reads_back_unchanged(value: str) -> None:
    quote = _quote_filter()
    text = f"# header\nTOKEN={quote(value, 'TOKEN')}\nAFTER=1\n"

    assert envfile.parse(text.encode()).variables == {"TOKEN": value, "AFTER": "1"}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("1BAD", "s3cr3t-value", "not a variable name"),
        ("export X", "s3cr3t-value", "not a variable name"),
        ("X", "s3cr3t-value\0", "NUL"),
        ("X", "s3cr3t-value\ufffe", "U\\+FFFE"),
        ("X", ["s3cr3t-value"], "must be a string"),
    ],
)
def test_the_filter_refuses_what_systemd_would_drop_without_printing_it(
    name: str, value: Any, message: str
) -> None:
    plugin = _filter_plugin()
    with pytest.raises(plugin.AnsibleFilterError, match=message) as exc:
        plugin.systemd_env_quote(value, name)
    assert "s3cr3t" not in str(exc.value)


# --- (e) secrets never printed ---------------------------------------------------------


def _tasks(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for task in items:
        yield task
        for key in ("block", "rescue", "always"):
            yield from _tasks(task.get(key, []))


def _role_tasks() -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    for path in [*sorted((ROLE / "tasks").glob("*.yml")), ROLE / "handlers" / "main.yml"]:
        tasks += list(_tasks(yaml.safe_load(path.read_text()) or []))
    return tasks


def test_every_task_that_handles_the_secrets_has_no_log() -> None:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    handled = []
    for task in _role_tasks():
        args = next((v for k, v in task.items() if k.startswith("ansible.builtin.")), None)
        if not isinstance(args, dict):
            continue
        # the secrets' values, the files made from them, or the config (it may hold one)
        reads_secrets = "rpmgate_environment" in yaml.safe_dump(args) or any(
            marker in str(args.get(key, ""))
            for key in ("src", "dest", "content")
            for marker in ("rpmgate_env_file", "rpmgate.env.j2", "rpmgate.yaml.j2")
        )
        if not reads_secrets:
            continue
        handled.append(task["name"])
        no_log = task.get("no_log")
        if no_log == "{{ rpmgate_config_no_log }}":
            assert defaults["rpmgate_config_no_log"] is True, task["name"]
        else:
            assert no_log is True, task["name"]
    # the next env file, the config checked with it, the env file in use
    assert len(handled) >= 3, handled


def test_the_argument_spec_hides_the_secrets() -> None:
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]

    assert options["rpmgate_environment"]["no_log"] is True
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert set(options) == set(defaults)


# --- the role's tasks on this host: idempotent, secrets hidden ------------------------


def _local_role(tmp: Path) -> Path:
    """A copy of the role whose restart handler only says it ran (no systemd here)."""
    roles = tmp / "roles"
    shutil.copytree(ROLE, roles / "rpmgate")
    (roles / "rpmgate" / "handlers" / "main.yml").write_text(
        textwrap.dedent("""\
            - name: Restart rpmgate
              ansible.builtin.debug:
                msg: RESTART-HANDLER-RAN
        """)
    )
    return roles


def _toy_project(path: Path, value: str) -> None:
    (path / "toy_rpmgate").mkdir(parents=True, exist_ok=True)
    (path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "toy-rpmgate"\nversion = "0.1.0"\n'
    )
    (path / "toy_rpmgate" / "__init__.py").write_text(f"VALUE = {value!r}\n")


def _recap(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    match = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+).*failed=(\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    ok, changed, failed = (int(g) for g in match.groups())
    return {"ok": ok, "changed": changed, "failed": failed}


def test_install_step_reinstalls_and_restarts_only_when_the_code_changes(tmp_path: Path) -> None:
    source = tmp_path / "src"
    _toy_project(source, "one")
    # a stale build directory must not leak into the wheel (it is built from a copy)
    (source / "build" / "lib" / "toy_rpmgate").mkdir(parents=True)
    (source / "build" / "lib" / "toy_rpmgate" / "stale.py").write_text("")
    venv = tmp_path / "venv"
    play = {
        "name": "Install",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Install",
                "ansible.builtin.include_role": {"name": "rpmgate", "tasks_from": "install.yml"},
            }
        ],
    }
    extra = {
        "rpmgate_source": str(source),
        "rpmgate_venv": str(venv),
        "rpmgate_dist_dir": str(tmp_path / "dist"),
        "rpmgate_wheel_cache": str(tmp_path / "cache"),
        "rpmgate_build_python": sys.executable,
        "rpmgate_virtualenv_command": f"{sys.executable} -m venv",
    }
    (tmp_path / "dist").mkdir()
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    roles = _local_role(tmp_path)

    def run() -> subprocess.CompletedProcess[str]:
        return _ok(_playbook(play, tmp_path, "-e", f"@{tmp_path / 'extra.json'}", roles=roles))

    def installed() -> str:
        code = "import toy_rpmgate, importlib.util as u; print(toy_rpmgate.VALUE, "
        code += "u.find_spec('toy_rpmgate.stale') is not None)"
        return subprocess.run(
            [str(venv / "bin" / "python"), "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd="/",
        ).stdout.strip()

    first = run()
    assert "RESTART-HANDLER-RAN" in first.stdout
    assert installed() == "one False"

    second = run()
    assert _recap(second)["changed"] == 0, second.stdout
    assert "RESTART-HANDLER-RAN" not in second.stdout

    _toy_project(source, "two")  # same version number, new code
    third = run()
    assert "RESTART-HANDLER-RAN" in third.stdout
    assert installed() == "two False"

    fourth = run()
    assert _recap(fourth)["changed"] == 0, fourth.stdout


def test_config_and_env_file_are_checked_together_and_never_printed(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    # the project's repository exists: check-config looks
    subprocess.run(["git", "init", "--quiet", "--bare", str(tmp_path / "nova.git")], check=True)
    roles = _local_role(tmp_path)
    check = f"{sys.executable} -m gate.cli check-config -c @CONFIG@ --env-file @ENV@"
    base = {
        "rpmgate_config_path": str(etc / "rpmgate.yaml"),
        "rpmgate_home": str(tmp_path / "state"),
        "rpmgate_group": "root",
        # system.yml creates the build account before config.yml runs; here it must exist
        "rpmgate_build_user": "nobody",
        "rpmgate_check_config_commands": {"parser": check},
        "rpmgate_api_tokens": [{"name": "releng", "token": "${RELENG_TOKEN}"}],
        "rpmgate_config": {
            "publishers": {"liberty": {"root": str(tmp_path / "repos")}},
            "projects": {"nova": {"git": str(tmp_path / "nova.git")}},
            "queues": {"liberty": {"projects": ["nova"], "repo": "liberty"}},
        },
    }
    play = {
        "name": "Config",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Config",
                "ansible.builtin.include_role": {"name": "rpmgate", "tasks_from": "config.yml"},
            }
        ],
    }

    def run(secrets: dict[str, str]) -> subprocess.CompletedProcess[str]:
        extra = tmp_path / "extra.yml"
        extra.write_text(
            yaml.safe_dump(base)
            + "rpmgate_environment:\n"
            + "".join(f"  {k}: !unsafe {json.dumps(v)}\n" for k, v in secrets.items())
        )
        return _playbook(play, tmp_path, "--diff", "-e", f"@{extra}", roles=roles)

    good = {"RELENG_TOKEN": TRICKY_SECRETS["ALL"] + " and more"}
    first = run(good)
    assert _recap(first)["failed"] == 0, first.stdout + first.stderr
    assert "RESTART-HANDLER-RAN" in first.stdout
    env_file = etc / "rpmgate.env"
    assert envfile.load(env_file).variables == good
    assert env_file.stat().st_mode & 0o777 == 0o600

    second = run(good)
    assert _recap(second)["changed"] == 0, second.stdout

    # a secret that breaks the config is refused and the files in use are kept
    in_use = env_file.read_bytes()
    short = {"RELENG_TOKEN": "short $ecret"}
    refused = run(short)
    assert _recap(refused)["failed"] == 1
    assert "refused the new configuration or environment file" in refused.stdout
    assert env_file.read_bytes() == in_use

    for result in (first, second, refused):
        output = result.stdout + result.stderr
        assert "short $ecret" not in output
        assert "and more" not in output


def test_the_service_is_started_only_after_the_online_check() -> None:
    service = yaml.safe_load((ROLE / "tasks" / "service.yml").read_text())
    names = [task["name"] for task in service]
    check = next(i for i, t in enumerate(service) if "check_online.yml" in str(t))
    starts = [
        i
        for i, t in enumerate(service)
        if "ansible.builtin.systemd_service" in t or "ansible.builtin.meta" in t
    ]
    assert starts and check < min(starts), names
    (task,) = yaml.safe_load((ROLE / "tasks" / "check_online.yml").read_text())
    assert task["ansible.builtin.command"]["argv"].startswith("{{ rpmgate_check_config_online")
    commands = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())[
        "rpmgate_check_config_online_commands"
    ]
    for argv in commands.values():
        assert argv[argv.index("check-config") :][:2] == ["check-config", "--online"]


def test_online_check_stops_the_play_when_a_remote_lacks_the_branch(tmp_path: Path) -> None:
    remote = tmp_path / "nova.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(remote)], check=True)
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "--quiet", str(remote), str(work)], check=True)
    (work / "nova.spec").write_text("Name: nova\n")
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "add", "nova.spec"], check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", "spec"], check=True)
    subprocess.run([*git, "push", "--quiet", "origin", "HEAD:refs/heads/main"], check=True)
    config = tmp_path / "rpmgate.yaml"
    env_file = tmp_path / "rpmgate.env"
    env_file.write_text("")
    play = {
        "name": "Check",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Check",
                "ansible.builtin.include_role": {
                    "name": "rpmgate",
                    "tasks_from": "check_online.yml",
                },
            }
        ],
    }
    extra = {
        "rpmgate_config_no_log": False,
        "rpmgate_check_config_online_commands": {
            "parser": [
                sys.executable,
                *("-m", "gate.cli", "check-config", "--online"),
                *("-c", str(config), "--env-file", str(env_file)),
            ]
        },
    }
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    roles = _local_role(tmp_path)

    def run(branch: str) -> subprocess.CompletedProcess[str]:
        doc = {
            "state_dir": str(tmp_path / "state"),
            "listen": {"port": 0},
            "publishers": {"liberty": {"root": str(tmp_path / "repos")}},
            "projects": {"nova": {"git": str(remote), "branch": branch}},
            "queues": {"liberty": {"projects": ["nova"], "repo": "liberty"}},
        }
        config.write_text(yaml.safe_dump(doc))
        return _playbook(play, tmp_path, "-e", f"@{tmp_path / 'extra.json'}", roles=roles)

    good = run("main")
    assert _recap(good) == {"ok": 2, "changed": 0, "failed": 0}, good.stdout + good.stderr
    bad = run("rpm-liberty")
    assert _recap(bad)["failed"] == 1
    assert "projects.nova.branch" in bad.stdout and "has no branch 'rpm-liberty'" in bad.stdout
