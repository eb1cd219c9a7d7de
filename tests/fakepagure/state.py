"""The fake Pagure's records and repositories: projects, forks, PRs, users, groups.

Real bare git repositories under ``root/repos/<fullname>.git`` (forks under
``forks/<user>/...``, as ``Project.fullname`` names them), with
``refs/pull/<id>/head`` kept at each PR's head as Pagure's ``sync_pull_ref``
task keeps it.  The JSON shapes are those of Pagure's ``to_json(public=True)``
methods (pagure/lib/model.py: ``User``, ``Project``, ``PullRequest``,
``PullRequestComment``, ``CommitFlag``), checked against the captured messages in
``tests/data/pagure``.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Fake Pagure",
    "GIT_AUTHOR_EMAIL": "pagure@fake.invalid",
    "GIT_COMMITTER_NAME": "Fake Pagure",
    "GIT_COMMITTER_EMAIL": "pagure@fake.invalid",
    "LC_ALL": "C",
}


def git(cwd: Path | str, *args: str, check: bool = True) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def now() -> str:
    # Pagure's arrow_ts: seconds since the epoch, as a string
    return str(int(time.time()))


@dataclass
class User:
    name: str
    fullname: str = ""

    def to_json(self, app_url: str) -> dict[str, Any]:
        # pagure/lib/model.py User.to_json(public=True)
        return {
            "full_url": f"{app_url}/user/{self.name}",
            "fullname": self.fullname or self.name,
            "name": self.name,
            "url_path": f"user/{self.name}",
        }


@dataclass
class Token:
    user: str
    acls: tuple[str, ...]


@dataclass
class Project:
    name: str
    namespace: str | None
    owner: str
    id: int
    #: for a fork: the user who forked and the parent's fullname
    fork_of: str | None = None
    hook_token: str = field(default_factory=lambda: uuid.uuid4().hex)
    webhooks: list[str] = field(default_factory=list)
    access_users: dict[str, list[str]] = field(
        default_factory=lambda: {
            "admin": [],
            "collaborator": [],
            "commit": [],
            "owner": [],
            "ticket": [],
        }
    )
    access_groups: dict[str, list[str]] = field(
        default_factory=lambda: {"admin": [], "collaborator": [], "commit": [], "ticket": []}
    )
    settings: dict[str, Any] = field(
        default_factory=lambda: {"always_merge": False, "pull_requests": True}
    )
    date_created: str = field(default_factory=now)

    @property
    def fullname(self) -> str:
        # pagure/lib/model.py Project.fullname
        name = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"forks/{self.owner}/{name}" if self.fork_of else name

    @property
    def url_path(self) -> str:
        name = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"fork/{self.owner}/{name}" if self.fork_of else name

    def committers(self, groups: dict[str, list[str]]) -> set[str]:
        """pagure/utils.py is_repo_committer: owner, admin/commit users and groups."""
        users = {self.owner, *self.access_users["admin"], *self.access_users["commit"]}
        for level in ("admin", "commit"):
            for group in self.access_groups[level]:
                users.update(groups.get(group, []))
        return users


@dataclass
class Comment:
    id: int
    user: str
    comment: str
    notification: bool = False
    date_created: str = field(default_factory=now)

    def to_json(self, users: dict[str, User], app_url: str) -> dict[str, Any]:
        # pagure/lib/model.py PullRequestComment.to_json(public=True)
        return {
            "comment": self.comment,
            "commit": None,
            "date_created": self.date_created,
            "edited_on": None,
            "editor": None,
            "filename": None,
            "id": self.id,
            "line": None,
            "notification": self.notification,
            "parent": None,
            "reactions": {},
            "tree": None,
            "user": users[self.user].to_json(app_url),
        }


@dataclass
class Flag:
    uid: str
    commit_hash: str
    user: str
    username: str
    status: str
    comment: str
    url: str
    percent: int | None = None
    date_created: str = field(default_factory=now)
    date_updated: str = field(default_factory=now)

    def to_json(self, users: dict[str, User], app_url: str) -> dict[str, Any]:
        # pagure/lib/model.py CommitFlag.to_json(public=True)
        return {
            "comment": self.comment,
            "commit_hash": self.commit_hash,
            "date_created": self.date_created,
            "date_updated": self.date_updated,
            "percent": self.percent,
            "status": self.status,
            "url": self.url,
            "user": users[self.user].to_json(app_url),
            "username": self.username,
        }


@dataclass
class PullRequest:
    id: int
    project: str
    title: str
    branch: str
    branch_from: str
    #: the fork (fullname) the PR comes from; None: a branch of the project itself
    repo_from: str | None
    user: str
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: str = "Open"
    commit_start: str | None = None
    commit_stop: str | None = None
    closed_by: str | None = None
    closed_at: str | None = None
    initial_comment: str | None = None
    comments: list[Comment] = field(default_factory=list)
    date_created: str = field(default_factory=now)
    last_updated: str = field(default_factory=now)


@dataclass
class State:
    """Every record of the fake instance, and its repositories on disk."""

    root: Path
    app_url: str = "http://pagure.invalid"
    users: dict[str, User] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    projects: dict[str, Project] = field(default_factory=dict)
    prs: dict[tuple[str, int], PullRequest] = field(default_factory=dict)
    flags: list[Flag] = field(default_factory=list)
    #: repositories kept elsewhere (a test world's bare repositories), by fullname
    paths: dict[str, Path] = field(default_factory=dict)
    next_id: int = 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def repo(self, fullname: str) -> Path:
        return self.paths.get(fullname) or self.root / "repos" / f"{fullname}.git"

    # -- records -----------------------------------------------------------------------
    def add_user(self, name: str, fullname: str = "") -> User:
        self.users.setdefault(name, User(name, fullname))
        return self.users[name]

    def add_token(self, user: str, acls: tuple[str, ...]) -> str:
        self.add_user(user)
        token = uuid.uuid4().hex.upper() + uuid.uuid4().hex.upper()[:32]
        self.tokens[token] = Token(user, acls)
        return token

    def project_json(self, project: Project) -> dict[str, Any]:
        # pagure/lib/model.py Project.to_json(public=True, api=True)
        parent = self.projects[project.fork_of] if project.fork_of else None
        return {
            "access_groups": {k: list(v) for k, v in project.access_groups.items()},
            "access_users": {
                **{k: list(v) for k, v in project.access_users.items()},
                "owner": [project.owner],
            },
            "close_status": [],
            "custom_keys": [],
            "date_created": project.date_created,
            "date_modified": project.date_created,
            "description": f"The {project.name} package",
            "full_url": f"{self.app_url}/{project.url_path}",
            "fullname": project.fullname,
            "id": project.id,
            "milestones": {},
            "name": project.name,
            "namespace": project.namespace,
            "parent": self.project_json(parent) if parent else None,
            "priorities": {},
            "tags": [],
            "url_path": project.url_path,
            "user": self.users[project.owner].to_json(self.app_url),
        }

    def pr_json(self, pr: PullRequest, with_comments: bool = True) -> dict[str, Any]:
        # pagure/lib/model.py PullRequest.to_json(public=True, api=True)
        project = self.projects[pr.project]
        return {
            "assignee": None,
            "branch": pr.branch,
            "branch_from": pr.branch_from,
            "cached_merge_status": "unknown",
            "closed_at": pr.closed_at,
            "closed_by": self.users[pr.closed_by].to_json(self.app_url) if pr.closed_by else None,
            "comments": [c.to_json(self.users, self.app_url) for c in pr.comments]
            if with_comments
            else [],
            "commit_start": pr.commit_start,
            "commit_stop": pr.commit_stop,
            "date_created": pr.date_created,
            "full_url": f"{self.app_url}/{project.url_path}/pull-request/{pr.id}",
            "id": pr.id,
            "initial_comment": pr.initial_comment,
            "last_updated": pr.last_updated,
            "project": self.project_json(project),
            "remote_git": None,
            "repo_from": self.project_json(self.projects[pr.repo_from or pr.project]),
            "status": pr.status,
            "tags": [],
            "threshold_reached": None,
            "title": pr.title,
            "uid": pr.uid,
            "updated_on": pr.last_updated,
            "user": self.users[pr.user].to_json(self.app_url),
        }

    # -- git ---------------------------------------------------------------------------
    def create_repo(self, fullname: str, branch: str, files: dict[str, str], owner: str) -> str:
        bare = self.repo(fullname)
        bare.parent.mkdir(parents=True, exist_ok=True)
        git(bare.parent, "init", "-q", "--bare", "-b", branch, bare.name)
        return self.commit(fullname, branch, files, "Initial import", author=owner)

    def commit(
        self,
        fullname: str,
        branch: str,
        files: dict[str, str],
        message: str,
        author: str = "packager",
        base: str | None = None,
    ) -> str:
        """A commit of ``files`` on ``branch`` (from ``base``, default the branch head)."""
        bare = self.repo(fullname)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            git(work, "init", "-q")
            head = base or git(
                bare, "rev-parse", "-q", "--verify", f"refs/heads/{branch}", check=False
            )
            if head:
                git(work, "fetch", "-q", str(bare), head)
                git(work, "checkout", "-q", "-b", "work", head)
            else:
                git(work, "checkout", "-q", "-b", "work")
            for path, text in files.items():
                target = work / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
                git(work, "add", path)
            git(
                work,
                "-c",
                f"user.name={author}",
                "-c",
                f"user.email={author}@fake.invalid",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                message,
            )
            sha = git(work, "rev-parse", "HEAD")
            git(work, "push", "-q", "-f", str(bare), f"HEAD:refs/heads/{branch}")
        return sha

    def head(self, fullname: str, branch: str) -> str:
        return git(self.repo(fullname), "rev-parse", f"refs/heads/{branch}")

    def copy_repo(self, src: str, dst: str) -> None:
        bare = self.repo(dst)
        bare.parent.mkdir(parents=True, exist_ok=True)
        git(bare.parent, "clone", "-q", "--bare", str(self.repo(src)), bare.name)

    def diff_commits(self, pr: PullRequest) -> list[str]:
        """pagure/lib/git.py get_diff_info: the PR's commits, newest first."""
        target = self.repo(pr.project)
        source = self.repo(pr.repo_from or pr.project)
        tip = git(source, "rev-parse", f"refs/heads/{pr.branch_from}")
        if pr.repo_from:
            git(target, "fetch", "-q", str(source), f"+{tip}:refs/pagure-fetch/{pr.id}")
        out = git(target, "rev-list", tip, "--not", f"refs/heads/{pr.branch}")
        return out.split() if out else []

    def sync_pull_ref(self, pr: PullRequest) -> None:
        """pagure/lib/tasks.py sync_pull_ref: ``refs/pull/<id>/head`` at the PR's head."""
        if pr.commit_stop:
            git(self.repo(pr.project), "update-ref", f"refs/pull/{pr.id}/head", pr.commit_stop)
