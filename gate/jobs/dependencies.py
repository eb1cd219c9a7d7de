"""The dependency jobs: ``installability``, ``repoclosure``, ``conflicts``, ``upgrade``.

Each runs one check of :mod:`gate.jobs.depsolve` on every arch tree of the
speculative repository (``<repo_path>/<arch>/repodata``) with the base
repositories, and on the baseline (``JobContext.baseline_path``) to tell the
item's problems from those it found.  Repositories are loaded by
:mod:`gate.jobs.solvrepo`, through the ``.solv`` cache under
``JobContext.cache_dir``.  The work runs in a thread; a cancelled job stops
between packages (libsolv itself cannot be interrupted).

A finding is reported once, with the arches it is found on when it is not
found on all of them.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, TextIO

import solv
from pydantic import Field

from gate.jobs import depsolve
from gate.jobs.base import Job, JobConfig, JobContext, JobResult
from gate.jobs.depsolve import Finding, Trees, Verdict
from gate.jobs.solvrepo import (
    MetadataError,
    RepoLoader,
    SolvCache,
    Stopped,
    arch_subtree,
    expand_base_repo,
    finish_pool,
    new_pool,
)
from gate.registry import NAME_PATTERN

# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


class DependencyJobConfig(JobConfig):
    """What every dependency job reads."""

    #: extra repositories whose packages satisfy dependencies (paths or URLs)
    base_repos: tuple[str, ...] = ()

    def dependency_repos(self) -> tuple[str, ...]:
        return self.base_repos


class InstallabilityJobConfig(DependencyJobConfig):
    type: Literal["installability"] = "installability"
    name: Annotated[str, Field(pattern=NAME_PATTERN)] = "installability"


class RepoclosureJobConfig(DependencyJobConfig):
    type: Literal["repoclosure"] = "repoclosure"
    name: Annotated[str, Field(pattern=NAME_PATTERN)] = "repoclosure"
    #: check the packages of the base repositories too (they always provide)
    check_base_repos: bool = False


class ConflictsJobConfig(DependencyJobConfig):
    type: Literal["conflicts"] = "conflicts"
    name: Annotated[str, Field(pattern=NAME_PATTERN)] = "conflicts"


class UpgradeJobConfig(DependencyJobConfig):
    type: Literal["upgrade"] = "upgrade"
    name: Annotated[str, Field(pattern=NAME_PATTERN)] = "upgrade"
    #: a lower version than the published one is a warning, not a failure
    allow_downgrade: bool = False


# --------------------------------------------------------------------------
# Reading file digests from RPM headers (for file conflicts)
# --------------------------------------------------------------------------

_QUERY_FORMAT = "[%{FILENAMES}\\t%{FILEDIGESTS}\\n]"


class HeaderDigests:
    """File digests read from the RPM files of local trees, once per package.

    The RPM's place comes from the metadata's ``location href``, which must
    stay inside the tree; the path goes to ``rpm`` after ``--``, as data.
    """

    def __init__(self, roots: dict[str, Path]) -> None:
        #: repository name in the pool -> directory its hrefs are relative to
        self.roots = roots
        self._cache: dict[tuple[str, int], dict[str, str] | None] = {}

    def __call__(self, s: solv.XSolvable, path: str) -> str | None:
        key = (s.repo.name, s.id)
        if key not in self._cache:
            self._cache[key] = self._read(s)
        digests = self._cache[key]
        return None if digests is None else digests.get(path)

    def _read(self, s: solv.XSolvable) -> dict[str, str] | None:
        root = self.roots.get(s.repo.name)
        href = s.lookup_location()[0]
        if root is None or not href:
            return None
        rpm = (root / href).resolve()
        if not rpm.is_relative_to(root.resolve()) or not rpm.is_file():
            return None
        proc = subprocess.run(
            ["rpm", "-qp", "--nosignature", "--nodigest", "--qf", _QUERY_FORMAT, "--", str(rpm)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if proc.returncode != 0:
            return None
        digests: dict[str, str] = {}
        for line in proc.stdout.splitlines():
            name, _, digest = line.rpartition("\t")
            digests[name] = digest
        return digests


# --------------------------------------------------------------------------
# The jobs
# --------------------------------------------------------------------------

Check = Callable[[Trees, HeaderDigests], Verdict]


@dataclass
class ArchOutcome:
    arch: str
    verdict: Verdict = field(default_factory=Verdict)


class DependencyJob(Job):
    """One check of :mod:`gate.jobs.depsolve` on every arch of the speculative repository."""

    #: what the check is about, for the summary ("dependencies", "conflicts", ...)
    noun: str = "problem"
    #: the summary when nothing is found, given the packages checked and where
    clean: str = "{count} {packages} checked{on}"

    def __init__(self, name: str, *, summary_items: int = 3) -> None:
        self.name = name
        #: how many findings the one-sentence summary names
        self.summary_items = summary_items

    def check(self, trees: Trees, digests: HeaderDigests) -> Verdict:
        raise NotImplementedError

    async def run(self, ctx: JobContext) -> JobResult:
        stop = threading.Event()
        try:
            return await asyncio.to_thread(self.run_blocking, ctx, stop)
        except asyncio.CancelledError:
            stop.set()  # the thread notices between packages
            raise

    def run_blocking(self, ctx: JobContext, stop: threading.Event | None = None) -> JobResult:
        """The whole job, synchronously (what :meth:`run` runs in a worker thread)."""
        ctx.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(ctx.log_path, "w") as log:
            _say(log, f"{self.name} of item {ctx.item_id} (attempt {ctx.attempt})")
            try:
                outcomes = self._check(ctx, log, stop)
            except Stopped:
                _say(log, "cancelled")
                raise
            except (MetadataError, OSError, ValueError, RuntimeError) as exc:
                summary = f"cannot read repository metadata: {exc}"
                _say(log, summary)
                return JobResult(self.name, False, summary, str(ctx.log_path))
            result = self._result(ctx, outcomes)
            _say(log, f"result: {result.summary}")
            for line in result.details:
                _say(log, f"  {line}")
        return result

    def _check(
        self, ctx: JobContext, log: TextIO, stop: threading.Event | None
    ) -> list[ArchOutcome]:
        base_repos = ctx.base_repos
        outcomes = []
        with tempfile.TemporaryDirectory(prefix="rpmgate-deps-") as downloads:
            loader = RepoLoader(SolvCache(ctx.cache_dir), Path(downloads), stop)
            for arch in ctx.arches or ("",):
                trees, roots = self._trees(ctx, arch, base_repos, loader, log)
                trees.stop = stop
                verdict = self.check(trees, HeaderDigests(roots))
                where = arch or "repo"
                for finding in verdict.failures:
                    _say(log, f"{where}: PROBLEM {finding.line()}")
                for finding in verdict.warnings:
                    _say(log, f"{where}: already broken in the base: {finding.line()}")
                outcomes.append(ArchOutcome(arch, verdict))
        return outcomes

    def _trees(
        self,
        ctx: JobContext,
        arch: str,
        base_repos: tuple[str, ...],
        loader: RepoLoader,
        log: TextIO,
    ) -> tuple[Trees, dict[str, Path]]:
        pool = new_pool(arch)
        where = arch or "repo"
        repo_dir = arch_subtree(ctx.repo_path, arch)
        speculative = loader.add(pool, "speculative", repo_dir)
        roots = {"speculative": repo_dir}
        count = sum(1 for s in speculative.solvables_iter() if s.arch not in ("src", "nosrc"))
        _say(log, f"{where}: {count} packages in {repo_dir}")
        bases = []
        for n, base in enumerate(base_repos):
            location = expand_base_repo(base, arch)
            repo, root = loader.add_location(pool, f"base{n}:{location}", location, arch)
            bases.append(repo)
            _say(log, f"base repo {location}: {repo.nsolvables} packages")
            if root is not None:
                roots[repo.name] = root
        finish_pool(pool)
        depsolve.set_installonly(pool)
        trees = Trees(arch, pool, speculative, bases)
        if ctx.baseline_path is not None:
            baseline_pool = new_pool(arch)
            baseline_dir = arch_subtree(ctx.baseline_path, arch)
            trees.baseline = loader.add(baseline_pool, "baseline", baseline_dir)
            for n, base in enumerate(base_repos):
                location = expand_base_repo(base, arch)
                loader.add_location(baseline_pool, f"base{n}:{location}", location, arch)
            finish_pool(baseline_pool)
            depsolve.set_installonly(baseline_pool)
            trees.baseline_pool = baseline_pool
            brought = trees.brought()
            _say(
                log,
                f"{where}: baseline {baseline_dir}: {trees.baseline.nsolvables} packages; "
                f"the item brings {len(brought)} of the {count}",
            )
        return trees, roots

    # The result ------------------------------------------------------------

    def _result(self, ctx: JobContext, outcomes: list[ArchOutcome]) -> JobResult:
        arch_names = [o.arch for o in outcomes if o.arch]
        failures = _merge_arches([(o.arch, o.verdict.failures) for o in outcomes])
        warnings = _merge_arches([(o.arch, o.verdict.warnings) for o in outcomes])
        details = _lines(failures, arch_names, len(outcomes))
        warning_lines = _lines(warnings, arch_names, len(outcomes), short=True)
        packages = {p for o in outcomes for p in o.verdict.checked}
        on = f" on {', '.join(arch_names)}" if arch_names else ""
        log_path = str(ctx.log_path)
        if not failures and not warnings:
            if not packages:
                return JobResult(self.name, True, f"no packages to check{on}", log_path)
            noun = "package" if len(packages) == 1 else "packages"
            summary = self.clean.format(count=len(packages), packages=noun, on=on)
            return JobResult(self.name, True, summary, log_path)
        if not failures:
            count = len(warnings)
            summary = (
                f"passed with {count} {'warning' if count == 1 else 'warnings'}: "
                f"already broken in the base: {self._name_some(list(warnings))}"
            )
            return JobResult(self.name, True, summary, log_path, (), tuple(warning_lines))
        summary = f"{self._count(len(failures))}: {self._name_some(list(failures))}"
        if warnings:
            also = "warning" if len(warnings) == 1 else "warnings"
            summary += f" (and {len(warnings)} {also}: already broken in the base)"
        return JobResult(self.name, False, summary, log_path, tuple(details), tuple(warning_lines))

    def _count(self, n: int) -> str:
        return f"{n} {self.noun}{'' if n == 1 else 's'}"

    def _name_some(self, findings: list[Finding]) -> str:
        """The first ``summary_items`` findings, grouped by package, and how many more."""
        shown = findings[: self.summary_items]
        by_package: dict[str, list[str]] = {}
        for f in shown:
            prefix = f"{f.package} requires "
            if f.problem.startswith(prefix):
                by_package.setdefault(prefix, []).append(f.problem.removeprefix(prefix))
            else:
                by_package.setdefault(f.problem, [])
        named = "; ".join(
            head + ", ".join(tails) if tails else head for head, tails in by_package.items()
        )
        more = len(findings) - len(shown)
        return named + (f"; and {more} more" if more > 0 else "")


def _merge_arches(per_arch: list[tuple[str, list[Finding]]]) -> dict[Finding, list[str]]:
    """Each finding once, with the arches it is found on (noarch is in every tree)."""
    where: dict[tuple[str, str], tuple[Finding, list[str]]] = {}
    for arch, findings in per_arch:
        for finding in findings:
            key = (finding.package, finding.problem)
            where.setdefault(key, (finding, []))[1].append(arch)
    return {finding: arches for finding, arches in (where[k] for k in sorted(where))}


def _lines(
    findings: dict[Finding, list[str]], arch_names: list[str], trees: int, *, short: bool = False
) -> list[str]:
    lines = []
    for finding, arches in findings.items():
        line = finding.problem if short else finding.line()
        if arch_names and len(arches) < trees:
            line += f" [on {', '.join(arches)}]"
        lines.append(line)
    return lines


def _say(log: TextIO, line: str) -> None:
    log.write(line + "\n")
    log.flush()


class Installability(DependencyJob):
    """Every package the item brings installs, with its dependencies (check-sat)."""

    noun = "installability problem"
    clean = "{count} {packages} of this change can be installed{on}"

    def check(self, trees: Trees, digests: HeaderDigests) -> Verdict:
        return depsolve.installability(trees)


class Repoclosure(DependencyJob):
    """Every package of the repository stays installable (check-repoclosure)."""

    noun = "unresolved dependenc"
    clean = "all dependencies of {count} {packages} resolve{on}"

    def __init__(
        self,
        name: str = "repoclosure",
        *,
        check_base_repos: bool = False,
        summary_items: int = 3,
    ) -> None:
        super().__init__(name, summary_items=summary_items)
        self.check_base_repos = check_base_repos

    def _count(self, n: int) -> str:
        return f"{n} unresolved {'dependency' if n == 1 else 'dependencies'}"

    def check(self, trees: Trees, digests: HeaderDigests) -> Verdict:
        return depsolve.repoclosure(trees, check_bases=self.check_base_repos)


class Conflicts(DependencyJob):
    """No file or explicit conflict with a package installable alongside (check-conflicts)."""

    noun = "conflict"
    clean = "no conflicts for {count} {packages} of this change{on}"

    def check(self, trees: Trees, digests: HeaderDigests) -> Verdict:
        return depsolve.conflicts(trees, digests)


class Upgrade(DependencyJob):
    """The item's packages upgrade what they replace and stay installed (check-upgrade)."""

    noun = "upgrade problem"
    clean = "{count} {packages} of this change upgrade cleanly{on}"

    def __init__(
        self,
        name: str = "upgrade",
        *,
        allow_downgrade: bool = False,
        summary_items: int = 3,
    ) -> None:
        super().__init__(name, summary_items=summary_items)
        self.allow_downgrade = allow_downgrade

    def check(self, trees: Trees, digests: HeaderDigests) -> Verdict:
        return depsolve.upgrade(trees, allow_downgrade=self.allow_downgrade)


def installability_job(cfg: InstallabilityJobConfig) -> Installability:
    return Installability(cfg.name)


def repoclosure_job(cfg: RepoclosureJobConfig) -> Repoclosure:
    return Repoclosure(cfg.name, check_base_repos=cfg.check_base_repos)


def conflicts_job(cfg: ConflictsJobConfig) -> Conflicts:
    return Conflicts(cfg.name)


def upgrade_job(cfg: UpgradeJobConfig) -> Upgrade:
    return Upgrade(cfg.name, allow_downgrade=cfg.allow_downgrade)
