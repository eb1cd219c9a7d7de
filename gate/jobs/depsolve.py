"""The dependency checks, asked of libsolv: rpmdeplint's four questions about a change.

Each check takes :class:`Trees` (one arch: the speculative repository and the
base repositories in one pool, the baseline and the same base repositories in
another) and returns a :class:`Verdict`: findings that fail the item and
findings that are somebody else's (warnings).  The questions and the blame
rules are rpmdeplint's (fedora-ci/rpmdeplint, ``rpmdeplint/analyzer.py``),
asked of the same solver:

- :func:`installability` (``check-sat``): each package the item brings can be
  installed, with its dependencies, on an empty system, by the solver dnf
  uses (arch policy, best versions, Conflicts, Obsoletes, rich deps).  A
  problem of a package the item brings is the item's, even when the version
  it replaces had it too: the item ships the requirement again.
- :func:`repoclosure` (``check-repoclosure``): every package of the
  speculative repository (the base repositories' too, if asked) can be
  installed; of the packages the item brings, only the requirements nothing
  provides are its business (the rest is ``check-sat``'s, as in rpmdeplint,
  which leaves the packages under test to it altogether).  A package the
  baseline has as the same file and that fails there with the same problem
  was broken already: a warning.  The comparison
  is per problem, not per package (rpmdeplint excuses a pre-broken package
  altogether): an item that breaks a second requirement of an already broken
  package fails.
- :func:`conflicts` (``check-conflicts``): no file of a package the item
  brings is also a file of another package that can be installed alongside
  it, unless rpm would share it (same digest); no explicit ``Conflicts``
  between a package the item brings and another package of the repositories,
  unless the baseline had the same pair (an intended conflict, e.g. between
  alternatives, is not the item's fault).
- :func:`upgrade` (``check-upgrade``): each package the item brings is newer
  than the one of the same name and arch it replaces in the baseline, and no
  other package would upgrade or obsolete it (a dist-upgrade with it
  installed keeps it).

The packages the item *brings* are those of the speculative repository that
are not in the baseline as the same file (by NEVRA and checksum): new
packages, new versions, rebuilds.  Without a baseline, every package is the
item's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import solv

from gate.jobs.solvrepo import Stopped

#: names dnf installs side by side (its default ``installonlypkgs``)
INSTALLONLY = (
    "kernel",
    "kernel-PAE",
    "installonlypkg(kernel)",
    "installonlypkg(kernel-module)",
    "installonlypkg(vm)",
    "multiversion(kernel)",
)

_SOURCE_ARCHES = frozenset({"src", "nosrc"})


@dataclass(frozen=True)
class Finding:
    """One problem of one package."""

    #: the package's NEVRA, as libsolv prints it (``c-3:1-1.noarch``)
    package: str
    #: the short form: ``<nevra> requires <dep>`` for an unresolved requirement,
    #: else libsolv's sentence for the problem
    problem: str
    #: the problem in libsolv's words, every rule that leads to it
    words: str = ""
    #: which change brought it: ``this change (<source rpm>)`` or where it was before
    cause: str = ""
    #: what the repositories offer instead, for a human
    hint: str = ""

    def line(self) -> str:
        """The report line: the short form, then what else is known."""
        extra = [x for x in (self.hint, self.words, self.cause) if x and x != self.problem]
        return f"{self.problem} ({'; '.join(extra)})" if extra else self.problem


@dataclass
class Verdict:
    """Findings split by whose they are."""

    failures: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    #: NEVRAs of the packages the check looked at
    checked: set[str] = field(default_factory=set)


@dataclass
class Trees:
    """One arch: the speculative repository with the base repositories, and the baseline."""

    arch: str
    pool: solv.Pool
    speculative: solv.XRepo
    bases: list[solv.XRepo]
    baseline_pool: solv.Pool | None = None
    baseline: solv.XRepo | None = None
    stop: threading.Event | None = None
    #: the SRPMs of the speculative repository and of the baseline, when a job
    #: loads them (``builddeps``); in ``pool`` and ``baseline_pool``
    sources: solv.XRepo | None = None
    baseline_sources: solv.XRepo | None = None
    _brought: list[solv.XSolvable] | None = field(default=None, repr=False)
    _twins: dict[str, solv.XSolvable] | None = field(default=None, repr=False)
    _files: dict[int, str] | None = field(default=None, repr=False)

    def check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise Stopped

    def binaries(self, repo: solv.XRepo) -> Iterator[solv.XSolvable]:
        """The repository's packages of an arch this pool installs (no sources)."""
        pool = repo.pool
        for s in repo.solvables_iter():
            if s.arch not in _SOURCE_ARCHES and pool.isknownarch(s.archid):
                yield s

    def brought(self) -> list[solv.XSolvable]:
        """The speculative packages that are not in the baseline as the same file."""
        if self._brought is None:
            before = self._baseline_files()
            ids = self._speculative_files()
            self._brought = [s for s in self.binaries(self.speculative) if ids[s.id] not in before]
        return self._brought

    def is_brought(self, s: solv.XSolvable) -> bool:
        """Whether ``s`` (of the speculative repository) is one of :meth:`brought`."""
        return self._speculative_files().get(s.id) not in self._baseline_files()

    def replaced_provides(self) -> list[str]:
        """Names the baseline's packages that are gone (removed or replaced) provided.

        A package that needed one of them may now get it elsewhere, or not at all.
        """
        now = set(self._speculative_files().values())
        names: set[str] = set()
        for key, old in self._baseline_files().items():
            if key not in now:
                deps = old.lookup_deparray(solv.SOLVABLE_PROVIDES)
                names |= {str(d).split(" ", 1)[0] for d in deps}
        return sorted(names)

    def baseline_twin(self, s: solv.XSolvable) -> solv.XSolvable | None:
        """The same file in the baseline (ids are each pool's own: found by checksum)."""
        return self._baseline_files().get(identity(s))

    def _baseline_files(self) -> dict[str, solv.XSolvable]:
        if self._twins is None:
            repo = self.baseline
            self._twins = {} if repo is None else {identity(s): s for s in repo.solvables_iter()}
        return self._twins

    def _speculative_files(self) -> dict[int, str]:
        if self._files is None:
            self._files = {s.id: identity(s) for s in self.speculative.solvables_iter()}
        return self._files


def identity(s: solv.XSolvable) -> str:
    """What tells one package file from another: its checksum (else its NEVRA)."""
    checksum = s.lookup_checksum(solv.SOLVABLE_CHECKSUM)
    return checksum.hex() if checksum is not None else str(s)


def source_of(s: solv.XSolvable) -> str:
    """The source RPM's NVR a package was built from (``python-django-1.8.1-1``)."""
    srpm = s.lookup_sourcepkg() or ""
    return srpm.removesuffix(".rpm").removesuffix(".src").removesuffix(".nosrc") or str(s)


def change_cause(brought: Iterable[solv.XSolvable]) -> str:
    sources = sorted({source_of(s) for s in brought})
    return f"introduced by this change ({', '.join(sources)})" if sources else "this change"


def set_installonly(pool: solv.Pool) -> None:
    """Let installonly packages (kernels) be installed side by side, as dnf does."""
    jobs: list[solv.Job] = []
    for name in INSTALLONLY:
        jobs += pool.select(name, solv.Selection.SELECTION_PROVIDES).jobs(
            solv.Job.SOLVER_MULTIVERSION
        )
    pool.setpooljobs(jobs)


# --------------------------------------------------------------------------
# libsolv's problems as findings
# --------------------------------------------------------------------------


def hint(pool: solv.Pool, dep: solv.Dep | None) -> str:
    """What the repositories offer under the name ``dep`` asks for, for a human."""
    return _hint(pool, dep)


def _hint(pool: solv.Pool, dep: solv.Dep | None) -> str:
    if dep is None:
        return ""
    text = str(dep)
    if text.startswith("("):
        return ""
    offered = pool.whatprovides(pool.str2id(text.split(" ", 1)[0]))
    names = sorted({str(s) for s in offered})
    if not names:
        return ""
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"available: {', '.join(names[:3])}{more}"


def describe(s: solv.XSolvable, problem: solv.Problem, cause: str) -> Finding:
    """A solver problem of installing ``s`` as a finding, in libsolv's words."""
    rules = [r.info() for r in problem.findallproblemrules()]
    words: list[str] = []
    for text in [str(problem), *(r.problemstr() for r in rules)]:
        if text not in words:
            words.append(text)
    for info in rules:
        if (
            info.type == solv.Solver.SOLVER_RULE_PKG_NOTHING_PROVIDES_DEP
            and info.solvable is not None
            and info.solvable.id == s.id
        ):
            short = f"{s} requires {info.dep}"
            return Finding(str(s), short, "; ".join(words), cause, _hint(s.pool, info.dep))
    short = words[0] if str(s) in words[0] else f"{s} cannot be installed: {words[0]}"
    return Finding(str(s), short, "; ".join(words[1:]), cause)


def _obsoleted(pool: solv.Pool, packages: Iterable[solv.XSolvable]) -> solv.Selection:
    """What ``packages`` obsolete, by name (rpm's rule), or replace by a higher EVR."""
    sel = pool.Selection()
    for s in packages:
        sel.add(
            pool.select(
                f"{s.name}.{s.arch} < {s.evr}",
                solv.Selection.SELECTION_NAME
                | solv.Selection.SELECTION_DOTARCH
                | solv.Selection.SELECTION_REL,
            )
        )
        for dep in s.lookup_deparray(solv.SOLVABLE_OBSOLETES):
            sel.add(dep.Selection_name())
    return sel


def unmet_requires(s: solv.XSolvable) -> list[Finding]:
    """The plain requirements of ``s`` that nothing provides at all.

    The solver stops at the first problem of a package; these are all the
    others of the most common kind, so that blame is per requirement.  Rich
    dependencies are left to the solver (``(a if b)`` has no provider and
    still holds when ``b`` is not installed).
    """
    pool = s.pool
    found = []
    for dep in s.lookup_deparray(solv.SOLVABLE_REQUIRES, 0):
        if dep.id == solv.SOLVABLE_PREREQMARKER:
            continue
        text = str(dep)
        if text.startswith(("(", "rpmlib(")) or pool.whatprovides(dep):
            continue
        words = f"nothing provides {text} needed by {s}"
        found.append(Finding(str(s), f"{s} requires {text}", words, "", _hint(pool, dep)))
    return found


def findings_of(solver: solv.Solver, s: solv.XSolvable) -> list[Finding]:
    """Why ``s`` cannot be installed: the solver's problems, then every unmet requirement."""
    problems = install_problems(solver, s)
    if not problems:
        return []
    findings = [describe(s, p, "") for p in problems]
    known = {f.problem for f in findings}
    findings += [f for f in unmet_requires(s) if f.problem not in known]
    return findings


def install_problems(
    solver: solv.Solver, s: solv.XSolvable, erase: solv.Selection | None = None
) -> list[solv.Problem]:
    jobs = s.Selection().jobs(solv.Job.SOLVER_INSTALL)
    if erase is not None and not erase.isempty():
        jobs += erase.jobs(solv.Job.SOLVER_ERASE)
    problems: list[solv.Problem] = solver.solve(jobs)
    return problems


# --------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------


def installability(trees: Trees) -> Verdict:
    """check-sat: every package the item brings can be installed."""
    verdict = Verdict()
    solver = trees.pool.Solver()
    for s in trees.brought():
        trees.check_stop()
        verdict.checked.add(str(s))
        cause = change_cause([s])
        verdict.failures += [_caused(f, cause) for f in findings_of(solver, s)]
    return verdict


def repoclosure(trees: Trees, *, check_bases: bool = False) -> Verdict:
    """check-repoclosure: every package can be installed; the baseline's problems are warnings.

    Every package's requirements are looked up (cheap); the solver is asked
    only about the packages the change can affect: its own, and those that
    need them or what they replaced, transitively.  The others install as
    they did in the baseline, since nothing they can pull in changed.
    Without a baseline every package is affected.
    """
    verdict = Verdict()
    pool = trees.pool
    brought = trees.brought()
    cause = change_cause(brought)
    everything = [s for repo in [trees.speculative, *trees.bases] for s in trees.binaries(repo)]
    # Packages something else obsoletes or supersedes are not installed by dnf: not checked.
    obsoleted = {s.id for s in _obsoleted(pool, everything).solvables()}
    checked = [s for s in trees.binaries(trees.speculative) if s.id not in obsoleted]
    if check_bases:
        checked += [s for r in trees.bases for s in trees.binaries(r) if s.id not in obsoleted]
    unmet, needed_by = _requirements(trees, checked)
    affected = _affected(trees, brought, needed_by) if trees.baseline is not None else None
    solver = pool.Solver()
    baseline_solver = trees.baseline_pool.Solver() if trees.baseline_pool is not None else None
    for s in checked:
        trees.check_stop()
        verdict.checked.add(str(s))
        if affected is None or s.id in affected:
            findings = findings_of(solver, s)
        else:
            findings = unmet.get(s.id, [])
        mine = s.repo.id == trees.speculative.id and trees.is_brought(s)
        if mine:
            # The item's own packages: a requirement nothing provides is a hole in
            # the repository; any other reason they cannot be installed (a
            # conflict, a provider that cannot be installed) is installability's.
            findings = [f for f in findings if f.problem.startswith(f"{s} requires ")]
        if not findings:
            continue
        twin = None if mine else trees.baseline_twin(s)
        if twin is None or baseline_solver is None:
            own = change_cause([s]) if mine else cause
            verdict.failures += [_caused(f, own) for f in findings]
            continue
        before = {f.problem for f in findings_of(baseline_solver, twin)}
        for finding in findings:
            if finding.problem in before:
                verdict.warnings.append(_caused(finding, "already broken in the base"))
            else:
                verdict.failures.append(_caused(finding, cause))
    return verdict


def _requirements(
    trees: Trees, packages: list[solv.XSolvable]
) -> tuple[dict[int, list[Finding]], dict[int, list[solv.XSolvable]]]:
    """One pass over every requirement: what nothing provides, and who needs whom."""
    pool = trees.pool
    unmet: dict[int, list[Finding]] = {}
    needed_by: dict[int, list[solv.XSolvable]] = {}
    for s in packages:
        trees.check_stop()
        for dep in s.lookup_deparray(solv.SOLVABLE_REQUIRES, 0):
            if dep.id == solv.SOLVABLE_PREREQMARKER:
                continue
            providers = pool.whatprovides(dep)
            for p in providers:
                needed_by.setdefault(p.id, []).append(s)
            text = str(dep)
            if not providers and not text.startswith(("(", "rpmlib(")):
                words = f"nothing provides {text} needed by {s}"
                finding = Finding(str(s), f"{s} requires {text}", words, "", _hint(pool, dep))
                unmet.setdefault(s.id, []).append(finding)
    return unmet, needed_by


def _affected(
    trees: Trees, brought: list[solv.XSolvable], needed_by: dict[int, list[solv.XSolvable]]
) -> set[int]:
    """Ids of the packages whose installation can differ from the baseline's.

    The change's packages, the packages that conflict with or obsolete them,
    the packages that require what the packages it replaced or removed
    provided (file provides aside: a file rarely moves), and everything that
    requires any of those, transitively.
    """
    pool = trees.pool
    frontier = list(brought)
    for s in brought:
        frontier += pool.whatmatchessolvable(solv.SOLVABLE_CONFLICTS, s)
        frontier += pool.whatmatchessolvable(solv.SOLVABLE_OBSOLETES, s)
    for name in trees.replaced_provides():
        frontier += pool.whatmatchesdep(solv.SOLVABLE_REQUIRES, pool.Dep(name))
    affected: set[int] = set()
    while frontier:
        s = frontier.pop()
        if s.id not in affected:
            affected.add(s.id)
            frontier += needed_by.get(s.id, ())
    return affected


def _caused(finding: Finding, cause: str) -> Finding:
    return Finding(finding.package, finding.problem, finding.words, cause, finding.hint)


#: given a package and one of its paths, the file's digest; None when unknown
FileDigest = Callable[[solv.XSolvable, str], str | None]


def files_of(s: solv.XSolvable) -> set[str]:
    it = s.Dataiterator(
        solv.SOLVABLE_FILELIST,
        None,
        solv.Dataiterator.SEARCH_FILES | solv.Dataiterator.SEARCH_COMPLETE_FILELIST,
    )
    return {match.str for match in it}


def _directories(*file_sets: set[str]) -> set[str]:
    """Paths that are a parent of another path: directories, which packages share."""
    parents: set[str] = set()
    for files in file_sets:
        for path in files:
            head = path.rpartition("/")[0]
            while head and head not in parents:
                parents.add(head)
                head = head.rpartition("/")[0]
    return parents


def conflicts(trees: Trees, digest: FileDigest) -> Verdict:
    """check-conflicts: file conflicts and explicit Conflicts of the item's packages."""
    verdict = Verdict()
    brought = trees.brought()
    own_files = {s: files_of(s) for s in brought}
    wanted = set().union(*own_files.values()) if own_files else set()
    overlapping: dict[solv.XSolvable, set[str]] = {}
    for repo in [trees.speculative, *trees.bases]:
        for other in trees.binaries(repo):
            trees.check_stop()
            common = files_of(other) & wanted if wanted else set()
            if common:
                overlapping[other] = common
    solver = trees.pool.Solver()
    for s in brought:
        verdict.checked.add(str(s))
        cause = change_cause([s])
        for other, common in overlapping.items():
            shared = own_files[s] & common
            if other.name == s.name or not shared:
                continue
            trees.check_stop()
            if not _installable_together(solver, s, other):
                continue
            dirs = _directories(own_files[s], files_of(other))
            for path in sorted(shared - dirs):
                ours, theirs = digest(s, path), digest(other, path)
                if ours is not None and ours == theirs:
                    continue  # rpm shares identical files
                unknown = "" if ours and theirs else "contents not compared: no header at hand"
                verdict.failures.append(
                    Finding(
                        str(s),
                        f"{s} provides {path} which is also provided by {other}",
                        unknown,
                        cause,
                    )
                )
        _explicit_conflicts(trees, s, cause, verdict)
    return verdict


def _installable_together(solver: solv.Solver, a: solv.XSolvable, b: solv.XSolvable) -> bool:
    jobs = a.Selection().jobs(solv.Job.SOLVER_INSTALL) + b.Selection().jobs(solv.Job.SOLVER_INSTALL)
    return not solver.solve(jobs)


def _conflict_pairs(pool: solv.Pool, s: solv.XSolvable) -> dict[tuple[str, str], str]:
    """Explicit Conflicts between ``s`` and other packages: (its name, other's name) -> sentence."""
    pairs: dict[tuple[str, str], str] = {}
    for dep in s.lookup_deparray(solv.SOLVABLE_CONFLICTS):
        for other in pool.whatprovides(dep):
            if other.id != s.id and other.name != s.name and other.arch not in _SOURCE_ARCHES:
                pairs.setdefault(
                    (s.name, other.name), f"package {s} conflicts with {dep} provided by {other}"
                )
    for provide in s.lookup_deparray(solv.SOLVABLE_PROVIDES):
        for other in pool.whatmatchesdep(solv.SOLVABLE_CONFLICTS, provide):
            if other.id == s.id or other.name == s.name or other.arch in _SOURCE_ARCHES:
                continue
            for dep in other.lookup_deparray(solv.SOLVABLE_CONFLICTS):
                if s.matchesdep(solv.SOLVABLE_PROVIDES, dep):
                    pairs.setdefault(
                        (s.name, other.name),
                        f"package {other} conflicts with {dep} provided by {s}",
                    )
                    break
    return pairs


def _explicit_conflicts(trees: Trees, s: solv.XSolvable, cause: str, verdict: Verdict) -> None:
    pairs = _conflict_pairs(trees.pool, s)
    if not pairs:
        return
    before: set[tuple[str, str]] = set()
    if trees.baseline is not None and trees.baseline_pool is not None:
        for old in trees.baseline.solvables_iter():
            if old.name == s.name:
                before |= set(_conflict_pairs(trees.baseline_pool, old))
    for pair, sentence in sorted(pairs.items()):
        if pair in before:
            verdict.warnings.append(Finding(str(s), sentence, "", "the base had the same conflict"))
        else:
            verdict.failures.append(Finding(str(s), sentence, "", cause))


def upgrade(trees: Trees, *, allow_downgrade: bool = False) -> Verdict:
    """check-upgrade: the item's packages are newer than what they replace, and stay."""
    verdict = Verdict()
    brought = trees.brought()
    if trees.baseline is not None:
        compare = EvrComparison()
        for s in brought:
            trees.check_stop()
            verdict.checked.add(str(s))
            for old in trees.baseline.solvables_iter():
                if old.name != s.name or not _same_arch_slot(s, old):
                    continue
                order = compare(s.evr, old.evr)
                if order > 0 or (order == 0 and identity(old) == identity(s)):
                    continue
                what = "downgrades" if order < 0 else "is not newer than"
                finding = Finding(str(s), f"{s} {what} {old}", "", change_cause([s]))
                (verdict.warnings if allow_downgrade else verdict.failures).append(finding)
    _replaced_by_others(trees, brought, verdict)
    return verdict


class EvrComparison:
    """rpm's version order, by libsolv's ``evrcmp``, for EVRs from any pool.

    Solvables of two pools cannot be compared directly (their ids are each
    pool's own), so both EVRs are put into a scratch pool of this object.
    """

    def __init__(self) -> None:
        self._pool = solv.Pool()
        self._pool.setdisttype(solv.Pool.DISTTYPE_RPM)
        self._repo = self._pool.add_repo("evr")
        self._a, self._b = self._repo.add_solvable(), self._repo.add_solvable()

    def __call__(self, a: str, b: str) -> int:
        """-1, 0 or 1 as ``a`` is older than, the same as or newer than ``b``."""
        self._a.evr, self._b.evr = a, b
        order: int = self._a.evrcmp(self._b)
        return order


def _same_arch_slot(a: solv.XSolvable, b: solv.XSolvable) -> bool:
    return a.arch == b.arch or "noarch" in (a.arch, b.arch)


def _replaced_by_others(trees: Trees, brought: list[solv.XSolvable], verdict: Verdict) -> None:
    """rpmdeplint's way: with the item's packages installed, would a dist-upgrade remove them?"""
    if not brought:
        return
    pool = trees.pool
    installed = pool.add_repo("@installed-under-test")
    for s in brought:
        twin = installed.add_solvable()
        twin.name, twin.evr, twin.arch = s.name, s.evr, s.arch
        for key in (solv.SOLVABLE_PROVIDES, solv.SOLVABLE_OBSOLETES, solv.SOLVABLE_CONFLICTS):
            for dep in s.lookup_deparray(key):
                twin.add_deparray(key, dep.id)
    installed.internalize()
    pool.installed = installed
    try:
        pool.createwhatprovides()
        solver = pool.Solver()
        solver.set_flag(solv.Solver.SOLVER_FLAG_ALLOW_UNINSTALL, 1)
        solver.solve(pool.Selection_all().jobs(solv.Job.SOLVER_UPDATE))
        transaction = solver.transaction()
        by_twin = dict(zip(installed.solvables_iter(), brought, strict=True))
        for twin, s in by_twin.items():
            step = transaction.steptype(twin, transaction.SOLVER_TRANSACTION_SHOW_OBSOLETES)
            other = transaction.othersolvable(twin)
            if step == transaction.SOLVER_TRANSACTION_UPGRADED:
                sentence = f"{s} would be upgraded by {other} from repo {other.repo.name}"
            elif step == transaction.SOLVER_TRANSACTION_OBSOLETED:
                sentence = f"{s} would be obsoleted by {other} from repo {other.repo.name}"
            else:
                continue
            verdict.checked.add(str(s))
            verdict.failures.append(Finding(str(s), sentence, "", change_cause([s])))
    finally:
        pool.installed = None
        installed.free(True)
        pool.createwhatprovides()
