"""The config repository: what a commit may set, hostile values, and the start.

Real git repositories; no daemon (``tests/test_reload.py`` runs the daemon
following a repository).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gate.config import ConfigError, parse_config
from gate.config_check import offline_findings, online_findings
from gate.config_repo import ConfigRepo
from gate.demo_world import git
from gate.reload import CandidateRefused


def _policy(tmp_path: Path, projects: list[str]) -> dict[str, Any]:
    remote = tmp_path / "nova.git"
    if not remote.exists():
        subprocess.run(["git", "init", "--quiet", "--bare", str(remote)], check=True)
    return {
        "publishers": {"liberty": {"root": str(tmp_path / "repos" / "liberty")}},
        "projects": {"nova": {"git": str(remote)}},
        "queues": {"liberty": {"projects": projects, "repo": "liberty"}},
    }


class Repo:
    def __init__(self, tmp_path: Path) -> None:
        self.bare, self.work = tmp_path / "config.git", tmp_path / "config"
        git(tmp_path, "init", "-q", "--bare", "-b", "main", str(self.bare))
        git(tmp_path, "clone", "-q", str(self.bare), str(self.work))

    def commit(self, doc: Any, path: str = "rpmgate.yaml") -> str:
        (self.work / path).parent.mkdir(parents=True, exist_ok=True)
        (self.work / path).write_text(yaml.safe_dump(doc))
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", "policy")
        git(self.work, "push", "-q", "origin", "HEAD:refs/heads/main")
        return git(self.work, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


def _local(tmp_path: Path, repo: Repo, **settings: Any) -> Path:
    local = tmp_path / "local.yaml"
    local.write_text(
        yaml.safe_dump(
            {
                "state_dir": "state",
                "config_repo": {"git": str(repo.bare), **settings},
            }
        )
    )
    return local


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("git", "--upload-pack=touch /tmp/pwned", "is not a repository URL or path"),
        ("branch", "--upload-pack=x", "is not a valid branch name: it starts with -"),
        ("path", "../../etc/passwd", "is not a relative path inside the repository"),
        ("path", "/etc/passwd", "is not a relative path inside the repository"),
        ("path", "-rpmgate.yaml", "is not a relative path inside the repository"),
    ],
)
def test_hostile_config_repo_values_are_refused_at_load(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    doc = {
        **_policy(tmp_path, ["nova"]),
        "state_dir": str(tmp_path / "state"),
        "config_repo": {"git": str(tmp_path), key: value},
    }
    with pytest.raises(ConfigError) as exc:
        parse_config(doc, "local.yaml")
    assert f"config_repo.{key}:" in str(exc.value) and message in str(exc.value)


async def test_the_commit_is_laid_over_the_local_file(tmp_path: Path, repo: Repo) -> None:
    commit = repo.commit(_policy(tmp_path, ["nova"]), "gate/policy.yaml")
    loaded = ConfigRepo.of(_local(tmp_path, repo, path="gate/policy.yaml"))
    assert loaded is not None
    config, status = await loaded.initial()
    assert list(config.projects) == ["nova"]
    assert config.state_dir == tmp_path / "state"  # the local file's, resolved there
    assert status.commit == commit and status.last_refused is None
    assert loaded.recorded() == commit


@pytest.mark.parametrize("key", ["auth", "database_url", "state_dir", "listen", "config_repo"])
async def test_a_commit_that_sets_a_host_key_is_refused(
    tmp_path: Path, repo: Repo, key: str
) -> None:
    values: dict[str, Any] = {
        "auth": {"api_tokens": ["an-attackers-token-0123456789"]},
        "database_url": "sqlite:////tmp/elsewhere.db",
        "state_dir": "/tmp/elsewhere",
        "listen": {"host": "0.0.0.0"},
        "config_repo": {"git": "https://example.com/other.git"},
    }
    commit = repo.commit({**_policy(tmp_path, ["nova"]), key: values[key]})
    loaded = ConfigRepo.of(_local(tmp_path, repo))
    assert loaded is not None
    with pytest.raises(CandidateRefused) as exc:
        await loaded.candidate()
    assert exc.value.commit == commit
    assert exc.value.findings[0].startswith(f"{key}: set in the config repository, but only")


async def test_a_commit_without_the_file_is_refused_naming_the_path(
    tmp_path: Path, repo: Repo
) -> None:
    repo.commit(_policy(tmp_path, ["nova"]), "elsewhere.yaml")
    loaded = ConfigRepo.of(_local(tmp_path, repo))
    assert loaded is not None
    with pytest.raises(CandidateRefused) as exc:
        await loaded.candidate()
    assert exc.value.findings == [
        f"config_repo.path: commit {exc.value.commit[:12]} has no file rpmgate.yaml"  # type: ignore[index]
    ]


async def test_a_daemon_starts_with_the_last_applied_commit_when_the_head_is_refused(
    tmp_path: Path, repo: Repo
) -> None:
    good = repo.commit(_policy(tmp_path, ["nova"]))
    local = _local(tmp_path, repo)
    first = ConfigRepo.of(local)
    assert first is not None
    await first.initial()
    broken = repo.commit(_policy(tmp_path, ["nova", "keystone"]))

    again = ConfigRepo.of(local)
    assert again is not None
    config, status = await again.initial()
    assert status.commit == good and list(config.queues["liberty"].projects) == ["nova"]
    assert status.newest_refused and status.last_refused is not None
    assert status.last_refused.commit == broken and status.last_refused.trigger == "start"
    assert "keystone" in status.last_refused.findings[0]

    # with no commit applied before, a refused head does not start
    (tmp_path / "state" / "config-repo" / "applied").unlink()
    with pytest.raises(ConfigError) as exc:
        await again.initial()
    assert broken[:12] in str(exc.value) and "unknown project 'keystone'" in str(exc.value)


def test_check_config_checks_the_config_repository(tmp_path: Path, repo: Repo) -> None:
    repo.commit(_policy(tmp_path, ["nova"]), "elsewhere.yaml")
    doc = {**_policy(tmp_path, ["nova"]), "state_dir": str(tmp_path / "state")}
    relative = parse_config({**doc, "config_repo": {"git": "config.git"}}, "local.yaml")
    assert [str(f) for f in offline_findings(relative) if f.key.startswith("config_repo")] == [
        "config_repo.git: 'config.git' is neither a URL git knows nor an absolute path; "
        "write https://host/path.git, user@host:path, or an absolute path (a relative one "
        "is read against the daemon's working directory)"
    ]
    online = parse_config({**doc, "config_repo": {"git": str(repo.bare)}}, "local.yaml")
    assert [str(f) for f in online_findings(online) if f.key.startswith("config_repo")] == [
        "config_repo.path: no file 'rpmgate.yaml' at the head of 'main'; give the file's "
        "path inside the repository"
    ]
    other = parse_config(
        {**doc, "config_repo": {"git": str(repo.bare), "branch": "stable"}}, "local.yaml"
    )
    assert [f.key for f in online_findings(other) if f.key.startswith("config_repo")] == [
        "config_repo.branch"
    ]
