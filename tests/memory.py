"""In-memory parts implementing the real interfaces: a review system, a build backend and
speculative merges, so ingest, attempt and tip logic is tested in milliseconds.

Commits are names; a commit's history is the list of commits it contains.  A
speculative merge of changes on a base is the base's history plus each change
not in it, unless two changes were declared to conflict.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import SQLModel

from gate.builders.base import BuildBackend, BuildOutcome, BuildRequest
from gate.config import Config, parse_config
from gate.merger import MergeResult, RefNotFound
from gate.plumbing import Plumbing
from gate.refs import check_ref
from gate.runtime import Runtime
from gate.sources.base import ChangeSource, MergeOutcome, Report, Review
from repo_state.db import make_engine
from repo_state.pool import Pool


def sha(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


@dataclass
class Repository:
    """One project's commits: sha -> the shas it contains (itself included)."""

    history: dict[str, tuple[str, ...]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    branch: str = ""

    def commit(self, name: str, parent: str | None = None) -> str:
        commit = sha(name)
        self.history[commit] = (*(self.history[parent] if parent else ()), commit)
        return commit


class MemorySource(ChangeSource):
    """A review system holding :class:`Repository` objects; merging fast-forwards only."""

    def __init__(self, repos: dict[str, Repository], name: str = "git") -> None:
        self.repos = repos
        self.name = name
        self.reports: list[Report] = []

    async def resolve(self, project: str, ref: str) -> str:
        ref = check_ref(ref)
        repo = self.repos[project]
        found = ref if ref in repo.history else repo.refs.get(ref)
        if found is None:
            raise RefNotFound(["resolve", ref], 1, f"ref {ref} not found on the remote")
        return found

    async def branch_head(self, project: str) -> str:
        return self.repos[project].branch

    async def merge(self, project: str, commit: str, review: Review | None = None) -> MergeOutcome:
        repo = self.repos[project]
        if commit in repo.history and repo.branch in repo.history[commit]:
            repo.branch = commit
            return MergeOutcome(True)
        return MergeOutcome(False, f"branch moved to {repo.branch[:12]}")

    async def is_merged(self, project: str, commit: str) -> bool:
        repo = self.repos[project]
        return commit in repo.history.get(repo.branch, ())

    async def report(self, project: str, report: Report) -> None:
        self.reports.append(report)


class MemoryMerger:
    """The merger's speculative side over :class:`Repository` histories."""

    def __init__(self, repos: dict[str, Repository], root: Path) -> None:
        self.repos = repos
        self.root = root
        #: pairs of commits that conflict with each other
        self.conflicts: set[frozenset[str]] = set()

    def git_dir(self, project: str) -> Path:
        return self.root / project

    async def speculative_merge(
        self, project: str, url: str, base: str, changes: Sequence[str]
    ) -> MergeResult:
        repo = self.repos[project]
        merged = list(repo.history[base])
        for change in changes:
            for other in merged:
                if frozenset((change, other)) in self.conflicts:
                    return MergeResult(
                        conflict=True, conflict_with=change, message="merge conflict"
                    )
            merged += [c for c in repo.history[change] if c not in merged]
        commit = (
            merged[-1]
            if len(merged) == len(repo.history[merged[-1]])
            else sha("merge:" + ":".join(merged))
        )
        repo.history.setdefault(commit, tuple(merged))
        return MergeResult(commit=commit, tree=sha("tree:" + ":".join(sorted(merged))))

    async def commits_between(self, project: str, url: str, old: str, new: str) -> list[str]:
        repo = self.repos[project]
        return [c for c in repo.history[new] if c not in repo.history[old]]


class MemoryBackend(BuildBackend):
    """Builds that end when the test says so (or at once), with a chosen outcome."""

    name = "memory"

    def __init__(self) -> None:
        self.requests: dict[str, BuildRequest] = {}
        #: project -> the reason its builds fail
        self.failing: dict[str, str] = {}

    async def submit(self, request: BuildRequest) -> str:
        ref = f"task-{len(self.requests) + 1}"
        self.requests[ref] = request
        return ref

    async def wait(self, task_ref: str) -> BuildOutcome:
        request = self.requests[task_ref]
        reason = self.failing.get(request.project, "")
        if reason:
            return BuildOutcome(ok=False, reason=reason)
        return BuildOutcome(ok=True, nvr=f"{request.package}-1-{request.tree[:6]}")

    async def cancel(self, task_ref: str) -> None:
        pass


def memory_config(
    tmp_path: Path, projects: Sequence[str] = ("nova", "ceilometer"), **overrides: Any
) -> Config:
    doc: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "publishers": {"liberty": {"root": str(tmp_path / "repo")}},
        "projects": {p: {"git": f"memory:{p}"} for p in projects},
        "queues": {"liberty": {"projects": list(projects), "repo": "liberty", "poll_interval": 0}},
        **overrides,
    }
    return parse_config(doc)


@dataclass
class MemoryWorld:
    runtime: Runtime
    repos: dict[str, Repository]
    source: MemorySource
    backend: MemoryBackend
    merger: MemoryMerger


def memory_runtime(tmp_path: Path, projects: Sequence[str] = ("nova", "ceilometer")) -> MemoryWorld:
    """A runtime of in-memory parts (SQLite on disk, tables made directly: no migrations)."""
    config = memory_config(tmp_path, projects)
    repos = {p: Repository() for p in projects}
    for p, repo in repos.items():
        repo.branch = repo.commit(f"{p}-initial")
    engine = make_engine(f"sqlite:///{tmp_path / 'gate.db'}")
    SQLModel.metadata.create_all(engine)
    source, backend = MemorySource(repos), MemoryBackend()
    merger = MemoryMerger(repos, tmp_path / "git")
    runtime = Runtime(
        config=config,
        engine=engine,
        pool=Pool(tmp_path / "pool"),
        merger=merger,  # type: ignore[arg-type]
        sources={"git": source},
        backends={"local": backend},
        publishers={},
        plumbing=Plumbing(),
    )
    return MemoryWorld(runtime, repos, source, backend, merger)
