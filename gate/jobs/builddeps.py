"""The ``builddeps`` job: every BuildRequires of the item's SRPMs resolves.

The speculative repository carries the SRPM of every build in its ``src``
tree (``<repo_path>/src/repodata``).  For each SRPM the item brings (one the
baseline's ``src`` tree does not have as the same file), each of its
requirements (its BuildRequires) is asked of libsolv as ``dnf builddep``
asks it: install something that provides it, from the speculative
repository's binaries of the arch plus the base repositories.  A requirement
the solver cannot satisfy is a finding in libsolv's words, with the SRPM and
the change that introduced it:

    ceilometer-8.0.1-1.src BuildRequires nova-devel >= 12.0.1 (available:
    nova-devel-12.0.0-1.noarch; nothing provides requested nova-devel >=
    12.0.1; introduced by this change (ceilometer-8.0.1-1))

This is what catches, before the final build fails on it, a change that
needs a version nothing ahead of it provides.  When the baseline's SRPM of
the same name has the same requirement and the baseline cannot satisfy it
either, the finding is a warning: it was broken before this change.

The local backend builds with ``rpmbuild --nodeps`` (the gate host cannot
install BuildRequires), so this job is where they are checked at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, TextIO

import solv
from pydantic import Field

from gate.jobs.base import JobContext
from gate.jobs.dependencies import DependencyJob, DependencyJobConfig, HeaderDigests
from gate.jobs.depsolve import Finding, Trees, Verdict, hint, identity
from gate.jobs.solvrepo import MetadataError, RepoLoader, arch_subtree, finish_pool
from gate.registry import NAME_PATTERN

#: the tree SRPMs are in (publishers.trees.SOURCE_TREE)
SOURCE_TREE = "src"
_SOURCE_ARCHES = frozenset({"src", "nosrc"})


class BuildDepsJobConfig(DependencyJobConfig):
    type: Literal["builddeps"] = "builddeps"
    name: Annotated[str, Field(pattern=NAME_PATTERN)] = "builddeps"


class BuildDeps(DependencyJob):
    """Every BuildRequires of every SRPM the item brings can be installed."""

    noun = "unresolved build dependenc"
    clean = "the build dependencies of {count} source {packages} resolve{on}"

    def _count(self, n: int) -> str:
        return f"{n} unresolved build {'dependency' if n == 1 else 'dependencies'}"

    def _trees(
        self,
        ctx: JobContext,
        arch: str,
        base_repos: tuple[str, ...],
        loader: RepoLoader,
        log: TextIO,
    ) -> tuple[Trees, dict[str, Path]]:
        trees, roots = super()._trees(ctx, arch, base_repos, loader, log)
        trees.sources = _add_sources(loader, trees.pool, "sources", ctx.repo_path)
        if trees.baseline_pool is not None and ctx.baseline_path is not None:
            trees.baseline_sources = _add_sources(
                loader, trees.baseline_pool, "baseline-sources", ctx.baseline_path
            )
        count = trees.sources.nsolvables if trees.sources is not None else 0
        log.write(f"{arch or 'repo'}: {count} source packages\n")
        return trees, roots

    def check(self, trees: Trees, digests: HeaderDigests) -> Verdict:
        return builddeps(trees)


def _add_sources(loader: RepoLoader, pool: solv.Pool, name: str, root: Path) -> solv.XRepo | None:
    """The ``src`` tree of ``root`` in ``pool`` (SRPMs are never installable there)."""
    try:
        src = arch_subtree(root, SOURCE_TREE)
    except MetadataError:
        return None
    if src == root:  # a flat repository: no tree of sources
        return None
    repo = loader.add(pool, name, src)
    finish_pool(pool)
    return repo


def _sources(repo: solv.XRepo | None) -> list[solv.XSolvable]:
    if repo is None:
        return []
    return [s for s in repo.solvables_iter() if s.arch in _SOURCE_ARCHES]


def _build_requires(srpm: solv.XSolvable) -> list[solv.Dep]:
    return [
        dep
        for dep in srpm.lookup_deparray(solv.SOLVABLE_REQUIRES, 0)
        if dep.id != solv.SOLVABLE_PREREQMARKER and not str(dep).startswith("rpmlib(")
    ]


def _problem_words(solver: solv.Solver, pool: solv.Pool, dep: solv.Dep) -> str:
    """libsolv's words for installing what provides ``dep``; "" when it can be."""
    job = pool.Job(solv.Job.SOLVER_INSTALL | solv.Job.SOLVER_SOLVABLE_PROVIDES, dep.id)
    problems: list[solv.Problem] = solver.solve([job])
    words: list[str] = []
    for problem in problems:
        for text in [str(problem), *(r.info().problemstr() for r in problem.findallproblemrules())]:
            if text not in words:
                words.append(text)
    return "; ".join(words)


def builddeps(trees: Trees) -> Verdict:
    """Each BuildRequires of each SRPM the item brings, asked of the solver."""
    verdict = Verdict()
    solver = trees.pool.Solver()
    before = {identity(s) for s in _sources(trees.baseline_sources)}
    # not the item's when the same file is in the baseline
    brought = [s for s in _sources(trees.sources) if identity(s) not in before]
    broken_before = _baseline_problems(trees, {s.name for s in brought})
    for srpm in brought:
        trees.check_stop()
        verdict.checked.add(str(srpm))
        cause = f"introduced by this change ({srpm.name}-{srpm.evr})"
        for dep in _build_requires(srpm):
            words = _problem_words(solver, trees.pool, dep)
            if not words:
                continue
            finding = Finding(
                str(srpm), f"{srpm} BuildRequires {dep}", words, cause, hint(trees.pool, dep)
            )
            if (srpm.name, str(dep)) in broken_before:
                verdict.warnings.append(
                    Finding(finding.package, finding.problem, words, "", finding.hint)
                )
            else:
                verdict.failures.append(finding)
    return verdict


def _baseline_problems(trees: Trees, names: set[str]) -> set[tuple[str, str]]:
    """(source name, requirement) the baseline's SRPMs of ``names`` could not satisfy."""
    pool = trees.baseline_pool
    if pool is None:
        return set()
    solver = pool.Solver()
    broken = set()
    for srpm in _sources(trees.baseline_sources):
        if srpm.name not in names:
            continue
        trees.check_stop()
        for dep in _build_requires(srpm):
            if _problem_words(solver, pool, dep):
                broken.add((srpm.name, str(dep)))
    return broken


def builddeps_job(cfg: BuildDepsJobConfig) -> BuildDeps:
    return BuildDeps(cfg.name)
