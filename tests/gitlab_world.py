"""A GitLab world for tests: a fake GitLab hosting real bare repositories, and a
GitLab source configured against it."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gate.merger import Merger
from gate.sources.gitlab.config import GitLabConfig
from gate.sources.gitlab.source import GitLabSource
from tests.fakegitlab import FakeGitLab

WEBHOOK_TOKEN = "webhook-secret-token"
PATH = "redhat/centos-stream/rpms/nova"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@dataclass(frozen=True)
class Proj:
    git: str
    branch: str
    name: str


def make_repo(root: Path, name: str) -> tuple[Path, Path]:
    """A bare repository with one commit on main, and a work tree pushing to it."""
    bare, work = root / f"{name}.git", root / f"{name}-work"
    bare.mkdir(parents=True)
    git(bare, "init", "-q", "--bare", "-b", "main")
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    git(work, "config", "user.email", "dev@example.com")
    git(work, "config", "user.name", "Dev")
    git(work, "remote", "add", "origin", str(bare))
    (work / "nova.spec").write_text("Version: 12.0.0\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "Import nova 12.0.0")
    git(work, "push", "-q", "origin", "main")
    return bare, work


def commit_on_branch(
    work: Path, branch: str, text: str, message: str, base: str = "main", file: str = "nova.spec"
) -> str:
    git(work, "fetch", "-q", "origin")
    git(work, "checkout", "-q", "-B", branch, f"origin/{base}")
    (work / file).write_text(text)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message)
    git(work, "push", "-q", "-f", "origin", f"HEAD:refs/heads/{branch}")
    return git(work, "rev-parse", "HEAD")


def gitlab_config(fake: FakeGitLab, **extra: Any) -> GitLabConfig:
    return GitLabConfig.model_validate(
        {
            "type": "gitlab",
            "url": fake.web,
            "token": fake.bot_token,
            "webhook_token": WEBHOOK_TOKEN,
            **extra,
        }
    )


def gitlab_source(fake: FakeGitLab, bare: Path, tmp: Path, **extra: Any) -> GitLabSource:
    projects = {"nova": Proj(str(bare), "main", PATH)}
    return GitLabSource(
        "centos-gitlab",
        gitlab_config(fake, **extra),
        projects,
        Merger(tmp / "merger"),
        public_url="http://gate.example",
    )
