"""Real git repositories holding one tiny package each, and requests for them."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from gate.builders.base import BuildRequest, Purpose

SCM_PREFIX = "https://git.example.com/rpms/"


def spec(
    name: str = "hello",
    version: str = "1.0",
    release: str = "1%{?dist}",
    build: str = "",
    noarch: bool = True,
    content: str = "hello",
) -> str:
    """A small spec; ``build`` is injected into %build (``exit 1``, ``sleep 30``)."""
    arch = "BuildArch: noarch\n" if noarch else ""
    return f"""\
Name: {name}
Version: {version}
Release: {release}
Summary: test package {name}
License: MIT
{arch}
%description
Test package {name}.

%build
{build}

%install
mkdir -p %{{buildroot}}/usr/share/{name}
echo '{content}' > %{{buildroot}}/usr/share/{name}/{name}.txt

%files
/usr/share/{name}/{name}.txt
"""


@dataclass
class Distgit:
    path: Path
    name: str

    @classmethod
    def create(cls, parent: Path, name: str = "hello") -> Distgit:
        path = Path(parent) / f"{name}.git"
        path.mkdir(parents=True)
        repo = cls(path, name)
        repo.git("init", "-q", "-b", "main")
        repo.git("config", "user.email", "gate@example.com")
        repo.git("config", "user.name", "gate")
        return repo

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(self.path), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    def commit(self, text: str) -> tuple[str, str]:
        """Commit ``text`` as the spec; return (commit sha, tree sha)."""
        (self.path / f"{self.name}.spec").write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", "change")
        return self.git("rev-parse", "HEAD"), self.git("rev-parse", "HEAD^{tree}")

    def request(
        self,
        commit: tuple[str, str],
        purpose: Purpose = "scratch",
        key: str = "0123456789abcdef0123",
        target: str = "liberty-candidate",
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
            target=target,
            scm_url=f"git+{SCM_PREFIX}{self.name}.git#{sha}",
        )
