"""Config: the demo config loads; every mistake is refused with the offending key named."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gate.config import ConfigError, load_config, parse_config
from gate.demo_world import World

Doc = dict[str, Any]


@pytest.fixture
def doc(tmp_path: Path) -> Doc:
    """The demo world's config document (the world itself need not exist to load it)."""
    return World(tmp_path / "world").config()


def _write(path: Path, doc: Doc) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _error(doc: Doc) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(doc, "rpmgate.yaml")
    return str(exc.value)


def test_demo_config_loads_from_yaml(doc: Doc, tmp_path: Path) -> None:
    config = load_config(_write(tmp_path / "rpmgate.yaml", doc))

    assert set(config.projects) == {"nova", "ceilometer", "horizon", "python-django"}
    assert config.queues["liberty"].repo == "liberty"
    assert config.queues["liberty"].target == "liberty-candidate"
    assert [j.name for j in config.queues["liberty"].jobs] == ["repoclosure"]
    assert config.projects["nova"].lookaside is not None
    assert config.queue_of("ceilometer") == "liberty"
    assert config.spec_of("nova") == "nova.spec"
    assert config.db_url == f"sqlite:///{tmp_path / 'world' / 'state' / 'rpmgate.db'}"
    assert config.base_url == "http://127.0.0.1:0"


def _queue(doc: Doc) -> Doc:
    return doc["queues"]["liberty"]


def _second_queue_with_nova(doc: Doc) -> None:
    doc["publishers"]["mitaka"] = {"root": "/srv/repos/mitaka"}
    doc["queues"]["mitaka"] = {"projects": ["nova"], "repo": "mitaka"}


BAD: dict[str, tuple[Callable[[Doc], object], str, str]] = {
    # case: (mutation, key named in the error, words of the message)
    "unknown project in a queue": (
        lambda d: _queue(d)["projects"].append("glance"),
        "queues.liberty.projects.4",
        "unknown project 'glance'",
    ),
    "unknown backend": (
        lambda d: _queue(d).update(backend="brew"),
        "queues.liberty.backend",
        "unknown backend 'brew'",
    ),
    "unknown backend type": (
        lambda d: d["backends"].update(brew={"type": "brew"}),
        "backends.brew",
        "'brew'",
    ),
    "unknown repo": (
        lambda d: _queue(d).update(repo="mitaka"),
        "queues.liberty.repo",
        "unknown publisher 'mitaka'",
    ),
    "extra top-level key": (
        lambda d: d.update(colour="blue"),
        "colour",
        "Extra inputs are not permitted",
    ),
    "extra project key": (
        lambda d: d["projects"]["nova"].update(brnch="main"),
        "projects.nova.brnch",
        "Extra inputs are not permitted",
    ),
    "extra queue key": (
        lambda d: _queue(d).update(windw={"start": 3}),
        "queues.liberty.windw",
        "Extra inputs are not permitted",
    ),
    "extra publisher key": (
        lambda d: d["publishers"]["liberty"].update(kep=3),
        "publishers.liberty.kep",
        "Extra inputs are not permitted",
    ),
    "extra local backend key": (
        lambda d: d["backends"]["local"].update(wrkers=4),
        "backends.local.wrkers",
        "Extra inputs are not permitted",
    ),
    "extra command job key": (
        lambda d: _queue(d).update(jobs=[{"name": "smoke", "command": "true", "timout": 3}]),
        "queues.liberty.jobs.0.timout",
        "Extra inputs are not permitted",
    ),
    "extra repoclosure job key": (
        lambda d: _queue(d).update(jobs=[{"name": "repoclosure", "base_repo": ["/x"]}]),
        "queues.liberty.jobs.0.base_repo",
        "Extra inputs are not permitted",
    ),
    "extra listen key": (
        lambda d: d["listen"].update(hots="0.0.0.0"),
        "listen.hots",
        "Extra inputs are not permitted",
    ),
    "extra auth key": (
        lambda d: d.update(auth={"api_token": "0123456789abcdef"}),
        "auth.api_token",
        "Extra inputs are not permitted",
    ),
    "window floor above start": (
        lambda d: _queue(d).update(window={"start": 2, "floor": 5}),
        "queues.liberty.window",
        "floor (5) must not exceed start (2)",
    ),
    "duplicate job names": (
        lambda d: _queue(d).update(
            jobs=[
                "repoclosure",
                {"name": "smoke", "command": "true"},
                {"name": "smoke", "command": "false"},
            ]
        ),
        "queues.liberty.jobs",
        "duplicate job names: smoke",
    ),
    "command job without command": (
        lambda d: _queue(d).update(jobs=[{"name": "smoke"}]),
        "queues.liberty.jobs.0.command",
        "Field required",
    ),
    "unknown koji key": (
        lambda d: d["backends"].update(
            koji={"type": "koji", "server": "https://k/kojihub", "hub": "https://k"}
        ),
        "backends.koji",
        "unknown key 'hub'",
    ),
    "a project in two queues": (
        _second_queue_with_nova,
        "queues.mitaka.projects.0",
        "project 'nova' is already in queue 'liberty'",
    ),
    "invalid project name": (
        lambda d: d["projects"].update({"no/slash": {"git": "/x"}}),
        "projects",
        "'no/slash' is not a valid name",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_names_the_offending_key(doc: Doc, case: str) -> None:
    mutate, key, words = BAD[case]
    bad = copy.deepcopy(doc)
    mutate(bad)

    message = _error(bad)

    assert message.startswith("rpmgate.yaml: invalid configuration\n")
    assert f"  {key}: " in message, message
    assert words in message, message


def test_a_user_name_that_equals_a_backend_type_is_kept_in_the_error(doc: Doc) -> None:
    doc["projects"]["local"] = {"git": "/srv/git/local.git", "brnch": "main"}
    assert "  projects.local.brnch: Extra inputs are not permitted" in _error(doc)


def test_bad_yaml_is_refused_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "rpmgate.yaml"
    path.write_text("queues:\n  liberty: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^{path}: not valid YAML"):
        load_config(path)


def test_a_top_level_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rpmgate.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="the top level must be a mapping"):
        load_config(path)


def test_missing_file_is_refused_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError, match=rf"^{path}: cannot read: No such file"):
        load_config(path)


def test_environment_variables_are_expanded(doc: Doc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RPMGATE_TEST_TOKEN", "s3cret-0123456789abcdef")
    monkeypatch.setenv("RPMGATE_TEST_DB", "postgresql://gate@db/rpmgate")
    doc["auth"] = {"api_tokens": ["${RPMGATE_TEST_TOKEN}"]}
    doc["database_url"] = "${RPMGATE_TEST_DB}"
    doc["projects"]["nova"]["git"] = "https://${RPMGATE_TEST_TOKEN}@git.example.org/nova.git"

    config = parse_config(doc)

    assert config.auth.api_tokens == ("s3cret-0123456789abcdef",)
    assert config.db_url == "postgresql://gate@db/rpmgate"
    assert config.projects["nova"].git == "https://s3cret-0123456789abcdef@git.example.org/nova.git"


def test_job_commands_keep_shell_variables_for_the_job(
    doc: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RPMGATE_REPO_PATH", "/daemon/env/must/not/leak")
    command = 'dnf --repofrompath=spec,"$RPMGATE_REPO_PATH" && echo $${RPMGATE_ITEM}'
    _queue(doc)["jobs"] = [{"name": "smoke", "command": command}]

    (job,) = parse_config(doc).queues["liberty"].jobs

    assert job.command == 'dnf --repofrompath=spec,"$RPMGATE_REPO_PATH" && echo ${RPMGATE_ITEM}'


def test_an_unset_variable_is_an_error_naming_the_key(
    doc: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RPMGATE_TEST_UNSET", raising=False)
    doc["auth"] = {"api_tokens": ["${RPMGATE_TEST_UNSET}"]}

    message = _error(doc)

    assert "  auth.api_tokens.0: environment variable RPMGATE_TEST_UNSET is not set" in message


def test_a_default_is_used_when_the_variable_is_unset_or_empty(
    doc: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RPMGATE_TEST_UNSET", raising=False)
    monkeypatch.setenv("RPMGATE_TEST_EMPTY", "")
    monkeypatch.setenv("RPMGATE_TEST_PORT", "9090")
    doc["public_url"] = "https://${RPMGATE_TEST_UNSET:-gate.example.com}:${RPMGATE_TEST_PORT:-80}"
    doc["listen"]["host"] = "${RPMGATE_TEST_EMPTY:-0.0.0.0}"
    _queue(doc)["window"] = {"start": "${RPMGATE_TEST_UNSET:-7}", "floor": 2}

    config = parse_config(doc)

    assert config.public_url == "https://gate.example.com:9090"
    assert config.listen.host == "0.0.0.0"
    assert config.queues["liberty"].window.start == 7
    assert config.notes == ()


def test_an_escaped_default_is_literal(doc: Doc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RPMGATE_TEST_UNSET", raising=False)
    _queue(doc)["jobs"] = [{"name": "smoke", "command": "echo $${RPMGATE_TEST_UNSET:-a b}"}]
    (job,) = parse_config(doc).queues["liberty"].jobs
    assert job.command == "echo ${RPMGATE_TEST_UNSET:-a b}"


def test_a_bare_variable_is_noted_with_its_key_and_left_as_written(doc: Doc) -> None:
    doc["projects"]["nova"]["git"] = "https://$GIT_HOST/rpms/nova.git"
    _queue(doc)["jobs"] = [{"name": "smoke", "command": "echo $HOME", "env": {"A": "$HOME"}}]

    config = parse_config(doc)

    assert config.projects["nova"].git == "https://$GIT_HOST/rpms/nova.git"
    assert config.notes == (
        "projects.nova.git: $GIT_HOST is not expanded (only ${GIT_HOST} is) and stays as "
        "written; write ${GIT_HOST} to use the environment variable",
        "queues.liberty.jobs.0.env.A: $HOME is not expanded (only ${HOME} is) and stays as "
        "written; write ${HOME} to use the environment variable",
    )


@pytest.mark.parametrize(
    ("mutate", "line"),
    [
        (
            lambda d: d["projects"]["nova"].update(brnach="main"),
            "projects.nova.brnach: Extra inputs are not permitted; did you mean 'branch'?",
        ),
        (
            lambda d: _queue(d).update(jobs=[{"name": "s", "command": "true", "timout": 3}]),
            "queues.liberty.jobs.0.timout: Extra inputs are not permitted; did you mean 'timeout'?",
        ),
        (
            lambda d: d["backends"].update(
                k={"type": "koji", "server": "http://h/x", "topurl": "http://h", "pollinterval": 3}
            ),
            "backends.k: unknown key 'pollinterval' (did you mean 'poll_interval'? known:",
        ),
        (
            lambda d: d.update(colour="blue"),
            "colour: Extra inputs are not permitted (known: auth, backends,",
        ),
    ],
)
def test_an_unknown_key_close_to_a_known_one_says_which(
    doc: Doc, mutate: Callable[[Doc], object], line: str
) -> None:
    mutate(doc)
    assert f"  {line}" in _error(doc)


def test_a_short_api_token_is_refused(doc: Doc) -> None:
    doc["auth"] = {"api_tokens": ["0123456789abcdef", "short"]}
    message = _error(doc)
    assert "  auth.api_tokens.1: String should have at least 16 characters" in message
    assert "api_tokens.0" not in message
    assert "short" not in message  # a secret is never echoed


def test_relative_paths_resolve_against_the_config_files_directory(
    doc: Doc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc" / "rpmgate"
    etc.mkdir(parents=True)
    doc["state_dir"] = "state"
    doc["publishers"]["liberty"]["root"] = "../repos/liberty"
    monkeypatch.chdir(tmp_path)  # not the config's directory

    config = load_config(_write(etc / "rpmgate.yaml", doc))

    assert config.state_dir == etc / "state"
    assert config.publishers["liberty"].root == etc / "../repos/liberty"
    assert config.db_url == f"sqlite:///{etc / 'state' / 'rpmgate.db'}"


def test_absolute_paths_are_kept(doc: Doc, tmp_path: Path) -> None:
    config = load_config(_write(tmp_path / "rpmgate.yaml", doc))
    assert config.state_dir == Path(doc["state_dir"])
    assert config.publishers["liberty"].root == Path(doc["publishers"]["liberty"]["root"])


def _rpmgate(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "rpmgate"
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=60)


def test_check_config_accepts_a_valid_file(doc: Doc, tmp_path: Path) -> None:
    for project in doc["projects"].values():  # the repositories must exist
        subprocess.run(["git", "init", "--quiet", "--bare", project["git"]], check=True)
    Path(doc["projects"]["nova"]["lookaside"]["url"].removeprefix("file://").split("{")[0]).mkdir()
    path = _write(tmp_path / "rpmgate.yaml", doc)
    out = _rpmgate("check-config", "-c", str(path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{path}: ok (4 projects, 1 queues; checked offline)"


def test_check_config_exits_2_with_the_message_on_stderr(doc: Doc, tmp_path: Path) -> None:
    _queue(doc)["backend"] = "brew"
    path = _write(tmp_path / "rpmgate.yaml", doc)

    out = _rpmgate("check-config", "-c", str(path))

    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr == (
        f"{path}: invalid configuration\n  queues.liberty.backend: unknown backend 'brew'\n"
    )


def test_check_config_exits_2_for_a_missing_file(tmp_path: Path) -> None:
    out = _rpmgate("check-config", "-c", str(tmp_path / "nowhere.yaml"))
    assert out.returncode == 2
    assert "nowhere.yaml: cannot read" in out.stderr
