"""Repoclosure: every Requires of every package in the speculative repo resolves.

For each arch the job reads the speculative repository's metadata
(``<repo_path>/<arch>/repodata``: primary and filelists, with createrepo_c),
reads the base repositories (the distribution the repo is installed on top
of), and checks that each Requires of each *speculative* package is met by

- a Provides of some package (versions compared with :mod:`rpmvercmp`, using
  rpm's range-overlap rules),
- a package's own ``name = [epoch:]version-release`` (rpm adds it to every
  package; it is added here too, in case metadata omits it), or
- for a path (``/usr/bin/foo``), a file or directory some package contains
  (from filelists, so any path resolves, not only primary's ``*/bin/*`` subset).

Packages of the base repositories only provide; their own requires are not
checked (they are somebody else's problem, and a distribution is rarely
closed without its updates repo anyway).

Rich (boolean) dependencies are parsed and evaluated:

- ``and``, ``or``: as written;
- ``with``, ``without``: on provider sets (one package must provide both /
  the first but not the second);
- ``A if B [else C]``, ``A unless B [else C]``: the condition ``B`` counts as
  true when *something in the repositories provides it*.  That is stricter
  than rpm at install time (where ``B`` may simply not be installed), on
  purpose: a package that breaks whenever ``B`` is installed is worth a red
  gate.

Not checked: ``rpmlib(...)`` requires (rpm itself provides them), weak
dependencies (Recommends, Suggests, Supplements, Enhances: they never block
an install), Conflicts and Obsoletes, architecture compatibility, and
whether the newest version of a package would be picked; a rich dependency
that does not parse is reported as unresolved, with the parse error.

Blame: what the item breaks, not what was broken
-------------------------------------------------

With a baseline (the same repository without the item's own build, see
:class:`~gate.jobs.base.JobContext`), an item fails only for problems it
brings; a problem the baseline already had is a *warning* on the item.  The
rule is rpmdeplint's (fedora-ci/rpmdeplint, ``rpmdeplint/analyzer.py``):

- ``DependencyAnalyzer.try_to_install_all`` (``check-sat``): every package
  *under test* must be installable; a problem of one always counts, even when
  the version it replaces had the same problem.  Here: a package the item
  brings (in the speculative repository but not in the baseline as the same
  file: a new package, a new version of one, or a rebuild) fails on each of
  its unresolved requires.  Updating a package does not inherit its
  predecessor's excuses: the item ships the requirement again, and the fix
  (drop it, or queue what provides it first) is in its own hands.
- ``DependencyAnalyzer.find_repoclosure_problems`` (``check-repoclosure``):
  every *other* package of the repositories is checked with the packages
  under test replacing those they update; a package that fails is checked
  again without that replacement, and if it fails there too the problem is
  "pre-existing": logged as a warning, not counted.  Here: a package that is
  in the baseline as the same file fails on a requirement the baseline meets
  (the item removed or changed what provided it), and is only warned about
  for a requirement the baseline leaves unresolved as well.

One deviation, on purpose: rpmdeplint excuses a pre-broken package
altogether, so an item that breaks a second requirement of an already broken
package passes; here the comparison is per requirement (package NEVRA and
requirement), so that second requirement fails the item.

Without a baseline every problem fails the item, as ``check_closure`` says.

The checking logic (:func:`check_closure`, :func:`check_change`,
:class:`Universe`) works on plain :class:`Package` values, so it is tested
without any metadata at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import createrepo_c as cr

from gate.jobs.base import Job, JobConfig, JobContext, JobResult
from gate.jobs.rpmvercmp import EVR, OPERATOR_FLAGS, Dep, satisfies

# --------------------------------------------------------------------------
# Rich dependencies: "(A or (B >= 2 with C))"
# --------------------------------------------------------------------------


class RichDepError(ValueError):
    """A rich dependency this module cannot parse."""


@dataclass(frozen=True)
class Simple:
    dep: Dep


@dataclass(frozen=True)
class BoolOp:
    """``and``, ``or``, ``with`` (any number of operands) or ``without`` (two)."""

    op: str
    args: tuple[RichNode, ...]


@dataclass(frozen=True)
class Conditional:
    """``then if cond [else otherwise]`` or ``then unless cond [else otherwise]``."""

    kind: str
    then: RichNode
    cond: RichNode
    otherwise: RichNode | None = None


RichNode = Simple | BoolOp | Conditional

_CHAINING_OPS = ("and", "or", "with")
_KEYWORDS = frozenset({"and", "or", "if", "else", "unless", "with", "without"})


def is_rich(name: str) -> bool:
    return name.startswith("(")


def _tokenize(text: str) -> list[str]:
    """Split on whitespace and parentheses, keeping ``name(arg)`` words whole.

    As in rpm's parser, a word may contain balanced parentheses
    (``python3dist(requests)``); an unbalanced ``)`` ends it.
    """
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c in "()":
            tokens.append(c)
            i += 1
            continue
        start, depth = i, 0
        while i < n:
            c = text[i]
            if c.isspace() and depth == 0:
                break
            if c == "(":
                depth += 1
            elif c == ")":
                if depth == 0:
                    break
                depth -= 1
            i += 1
        tokens.append(text[start:i])
    return tokens


class _RichParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def parse(self) -> RichNode:
        if self._peek() != "(":
            raise self._error("a rich dependency starts with '('")
        node = self._group()
        if self._peek() is not None:
            raise self._error(f"unexpected {self._peek()!r} after the closing ')'")
        return node

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _next(self) -> str:
        tok = self._peek()
        if tok is None:
            raise self._error("unexpected end")
        self.pos += 1
        return tok

    def _error(self, message: str) -> RichDepError:
        return RichDepError(f"{message} in {self.text!r}")

    def _expect_close(self) -> None:
        if self._next() != ")":
            raise self._error("expected ')'")

    def _group(self) -> RichNode:
        self._next()  # "("
        first = self._operand()
        op = self._next()
        if op == ")":
            return first
        if op in _CHAINING_OPS:
            args = [first, self._operand()]
            while (tok := self._next()) != ")":
                if tok != op:
                    raise self._error(f"cannot mix {op!r} and {tok!r} without parentheses")
                args.append(self._operand())
            return BoolOp(op, tuple(args))
        if op == "without":
            node = BoolOp(op, (first, self._operand()))
            self._expect_close()
            return node
        if op in ("if", "unless"):
            cond = self._operand()
            tok = self._next()
            if tok == ")":
                return Conditional(op, first, cond)
            if tok != "else":
                raise self._error(f"expected 'else' or ')', got {tok!r}")
            otherwise = self._operand()
            self._expect_close()
            return Conditional(op, first, cond, otherwise)
        raise self._error(f"unknown operator {op!r}")

    def _operand(self) -> RichNode:
        tok = self._peek()
        if tok == "(":
            return self._group()
        if tok is None or tok == ")" or tok in _KEYWORDS:
            raise self._error(f"expected a dependency, got {tok!r}")
        name = self._next()
        flags = OPERATOR_FLAGS.get(self._peek() or "")
        if flags is None:
            return Simple(Dep(name))
        self._next()
        evr = self._next()
        if evr in ("(", ")") or evr in _KEYWORDS:
            raise self._error(f"expected a version after {name!r}")
        return Simple(Dep(name, flags, evr))


def parse_rich(text: str) -> RichNode:
    """Parse a rich dependency such as ``(foo >= 2 or bar)``."""
    return _RichParser(text).parse()


def simple_deps(node: RichNode) -> Iterator[Dep]:
    """Every plain ``name [op evr]`` inside a rich dependency."""
    if isinstance(node, Simple):
        yield node.dep
    elif isinstance(node, BoolOp):
        for arg in node.args:
            yield from simple_deps(arg)
    else:
        yield from simple_deps(node.then)
        yield from simple_deps(node.cond)
        if node.otherwise is not None:
            yield from simple_deps(node.otherwise)


# --------------------------------------------------------------------------
# Pure checking
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    """What repoclosure needs to know about one binary package."""

    name: str
    epoch: int
    version: str
    release: str
    arch: str
    requires: tuple[Dep, ...] = ()
    provides: tuple[Dep, ...] = ()
    #: paths of files and directories the package contains
    files: frozenset[str] = frozenset()
    #: where it was read from, for the log
    repo: str = ""
    #: the file's checksum (``pkgId``) when known: a rebuild of the same NEVRA is
    #: another package
    checksum: str = ""

    @property
    def evr(self) -> EVR:
        return EVR(self.epoch, self.version, self.release)

    @property
    def nevra(self) -> str:
        epoch = f"{self.epoch}:" if self.epoch else ""
        return f"{self.name}-{epoch}{self.version}-{self.release}.{self.arch}"

    @property
    def is_source(self) -> bool:
        return self.arch in ("src", "nosrc")


@dataclass(frozen=True)
class Unresolved:
    """A Requires of ``package`` (a NEVRA) that nothing in the repositories meets."""

    package: str
    requirement: str
    #: what the repositories do offer under that name, or why it could not be checked
    hint: str = ""

    def __str__(self) -> str:
        return f"{self.package} requires {self.requirement}"


class Universe:
    """Every package that may be installed: provides indexed by name, files by path."""

    def __init__(self, packages: Iterable[Package] = ()) -> None:
        self.packages: list[Package] = []
        self._provides: dict[str, list[tuple[Dep, int]]] = defaultdict(list)
        self._files: dict[str, set[int]] = defaultdict(set)
        self._met: dict[Dep, bool] = {}
        for pkg in packages:
            self.add(pkg)

    def add(self, pkg: Package) -> None:
        index = len(self.packages)
        self.packages.append(pkg)
        self._provides[pkg.name].append((Dep(pkg.name, "EQ", pkg.evr), index))
        for dep in pkg.provides:
            self._provides[dep.name].append((dep, index))
        for path in pkg.files:
            self._files[path].add(index)
        self._met.clear()

    def providers(self, dep: Dep) -> set[int]:
        """Indexes (into :attr:`packages`) of the packages that meet a simple dependency."""
        found = {i for provide, i in self._provides.get(dep.name, ()) if satisfies(provide, dep)}
        if dep.name.startswith("/"):
            found |= self._files.get(dep.name, set())
        return found

    def meets(self, dep: Dep) -> bool:
        """Whether anything meets a simple dependency (memoised: deps repeat a lot)."""
        met = self._met.get(dep)
        if met is None:
            met = any(satisfies(p, dep) for p, _ in self._provides.get(dep.name, ())) or (
                dep.name.startswith("/") and dep.name in self._files
            )
            self._met[dep] = met
        return met

    def offers(self, name: str, limit: int = 3) -> list[str]:
        """``name = evr`` entries the universe has for ``name``: hints for a human."""
        seen: list[str] = []
        for provide, i in self._provides.get(name, ()):
            text = str(provide)
            owner = self.packages[i].nevra
            entry = text if owner.startswith(f"{name}-") else f"{text} from {owner}"
            if entry not in seen:
                seen.append(entry)
        return seen[:limit]

    # Rich dependencies ---------------------------------------------------

    def rich_met(self, node: RichNode) -> bool:
        if isinstance(node, Simple):
            return self.meets(node.dep)
        if isinstance(node, Conditional):
            # Conditions hold when anything provides them (see the module docstring).
            cond = self.rich_met(node.cond)
            if node.kind == "unless":
                cond = not cond
            if cond:
                return self.rich_met(node.then)
            return node.otherwise is None or self.rich_met(node.otherwise)
        if node.op == "and":
            return all(self.rich_met(arg) for arg in node.args)
        if node.op == "or":
            return any(self.rich_met(arg) for arg in node.args)
        return bool(self.rich_providers(node))

    def rich_providers(self, node: RichNode) -> set[int]:
        """Packages that meet ``node`` on their own (operands of ``with``/``without``)."""
        if isinstance(node, Simple):
            return self.providers(node.dep)
        if isinstance(node, BoolOp):
            sets = [self.rich_providers(arg) for arg in node.args]
            if node.op == "or":
                return set().union(*sets)
            if node.op == "with":
                return set.intersection(*sets)
            if node.op == "without":
                return sets[0] - sets[1]
        raise RichDepError(f"{node!r} cannot be an operand of 'with' or 'without'")


def is_checked(dep: Dep) -> bool:
    """rpm provides ``rpmlib(...)`` itself; nothing in a repository does."""
    return not dep.name.startswith("rpmlib(")


def unresolved_requires(pkg: Package, universe: Universe) -> list[Unresolved]:
    """The requires of ``pkg`` that ``universe`` does not meet."""
    problems: list[Unresolved] = []
    for dep in pkg.requires:
        if not is_checked(dep):
            continue
        if not is_rich(dep.name):
            if not universe.meets(dep):
                offers = universe.offers(dep.name)
                hint = f"available: {', '.join(offers)}" if offers else ""
                problems.append(Unresolved(pkg.nevra, str(dep), hint))
            continue
        try:
            met = universe.rich_met(parse_rich(dep.name))
        except RichDepError as exc:
            problems.append(Unresolved(pkg.nevra, dep.name, f"cannot check: {exc}"))
            continue
        if not met:
            problems.append(Unresolved(pkg.nevra, dep.name))
    return problems


def check_closure(
    candidates: Iterable[Package], available: Iterable[Package] = ()
) -> list[Unresolved]:
    """Unresolved requires of ``candidates``, given ``candidates`` + ``available``.

    Source packages are ignored on both sides (their requires are
    BuildRequires, and they provide nothing installable).
    """
    checked = [p for p in candidates if not p.is_source]
    universe = Universe([*checked, *(p for p in available if not p.is_source)])
    return find_unresolved(checked, universe)


def find_unresolved(candidates: Iterable[Package], universe: Universe) -> list[Unresolved]:
    problems: list[Unresolved] = []
    for pkg in candidates:
        if not pkg.is_source:
            problems.extend(unresolved_requires(pkg, universe))
    return sorted(set(problems), key=lambda u: (u.package, u.requirement))


@dataclass(frozen=True)
class Blame:
    """An item's repoclosure problems, split by whose they are (rpmdeplint's rule)."""

    #: problems the item's packages bring, or that it causes in packages it keeps
    failures: list[Unresolved]
    #: problems the baseline has as well: somebody else's, reported on the item
    warnings: list[Unresolved]


def brought_by_change(speculative: Iterable[Package], baseline: Iterable[Package]) -> set[str]:
    """NEVRAs of the speculative packages that are not in the baseline as the same file.

    Those are the item's own packages (rpmdeplint's "packages under test"):
    new ones, new versions, and rebuilds of a NEVRA the baseline has (told
    apart by checksum when both sides know it).
    """
    before = {(p.nevra, p.checksum) for p in baseline}
    return {p.nevra for p in speculative if (p.nevra, p.checksum) not in before}


def blame(
    problems: Iterable[Unresolved],
    speculative: Iterable[Package],
    baseline: Iterable[Package],
    available: Iterable[Package] = (),
) -> Blame:
    """Split the ``problems`` found in ``speculative`` into failures and warnings.

    ``baseline`` is the same repository without the item's build; ``available``
    (base repositories) satisfies dependencies on both sides.  A problem of a
    package the item brings fails; a problem of a package the baseline has too
    fails unless the baseline (+ ``available``) leaves the same requirement
    unresolved.  See the module docstring for how this follows rpmdeplint.
    """
    problems = list(problems)
    if not problems:
        return Blame([], [])
    speculative = [p for p in speculative if not p.is_source]
    baseline = [p for p in baseline if not p.is_source]
    ours = brought_by_change(speculative, baseline)
    kept = {p.nevra: p for p in speculative if p.nevra not in ours}
    universe = Universe([*baseline, *(p for p in available if not p.is_source)])
    broken_before: dict[str, set[str]] = {}
    failures: list[Unresolved] = []
    warnings: list[Unresolved] = []
    for problem in problems:
        pkg = kept.get(problem.package)
        if pkg is None:
            failures.append(problem)
            continue
        if pkg.nevra not in broken_before:
            # The same file is in the baseline: its requires are the same ones.
            broken_before[pkg.nevra] = {u.requirement for u in unresolved_requires(pkg, universe)}
        if problem.requirement in broken_before[pkg.nevra]:
            warnings.append(problem)
        else:
            failures.append(problem)
    return Blame(failures, warnings)


def check_change(
    speculative: Iterable[Package],
    baseline: Iterable[Package] | None,
    available: Iterable[Package] = (),
) -> Blame:
    """Repoclosure of ``speculative`` blamed against ``baseline`` (all failures if ``None``)."""
    speculative = list(speculative)
    problems = check_closure(speculative, available)
    if baseline is None:
        return Blame(problems, [])
    return blame(problems, speculative, baseline, available)


@dataclass(frozen=True)
class Wanted:
    """The provide names and paths some checked package requires.

    Base repositories are filtered through it while loading: a distribution
    has hundreds of thousands of provides and millions of files, of which a
    gate needs a handful.
    """

    names: frozenset[str] = frozenset()
    files: frozenset[str] = frozenset()

    @classmethod
    def by(cls, packages: Iterable[Package]) -> Wanted:
        names: set[str] = set()
        for pkg in packages:
            for dep in pkg.requires:
                if not is_rich(dep.name):
                    names.add(dep.name)
                    continue
                with contextlib.suppress(RichDepError):
                    names.update(d.name for d in simple_deps(parse_rich(dep.name)))
        return cls(frozenset(names), frozenset(n for n in names if n.startswith("/")))


# --------------------------------------------------------------------------
# Loading metadata with createrepo_c
# --------------------------------------------------------------------------


class MetadataError(Exception):
    """A repository's metadata cannot be found or read."""


class _Stopped(Exception):
    """The job was cancelled while its worker thread was still loading."""


def _deps(
    entries: Sequence[tuple[Any, ...]], keep: Callable[[str], bool] | None = None
) -> tuple[Dep, ...]:
    # createrepo_c gives (name, flags, epoch, version, release, pre)
    deps = []
    for name, flags, epoch, version, release, *_ in entries:
        if keep is not None and not keep(name):
            continue
        evr: EVR | str = EVR(int(epoch or 0), version, release or "") if version else ""
        deps.append(Dep(name, flags or "", evr))
    return tuple(deps)


def _paths(files: Sequence[tuple[object, str, str]]) -> Iterator[str]:
    for _type, dirname, basename in files:
        yield f"{dirname}{basename}"


def repodata_paths(repo_dir: Path) -> tuple[Path, Path | None]:
    """(primary, filelists) of the repository at ``repo_dir`` (which holds ``repodata/``)."""
    repomd = repo_dir / "repodata" / "repomd.xml"
    if not repomd.is_file():
        raise MetadataError(f"no repository metadata at {repomd}")
    records = {r.type: r.location_href for r in cr.Repomd(str(repomd)).records}
    if "primary" not in records:
        raise MetadataError(f"{repomd} lists no primary metadata")
    filelists = records.get("filelists")
    return repo_dir / records["primary"], (repo_dir / filelists) if filelists else None


def load_repo(
    repo_dir: Path,
    *,
    wanted: Wanted | None = None,
    with_requires: bool = True,
    label: str = "",
    stop: threading.Event | None = None,
) -> list[Package]:
    """Read primary and filelists of the repository at ``repo_dir``.

    With ``wanted``, only the provides and files it names are kept (enough to
    decide every requirement it was made from).
    """
    primary, filelists = repodata_paths(repo_dir)
    keep_name = None if wanted is None else wanted.names.__contains__
    keep_file = None if wanted is None else wanted.files.__contains__
    if wanted is not None and not wanted.files:
        filelists = None  # no path is wanted: skip the biggest file of the repository
    packages: list[Package] = []
    iterator = cr.PackageIterator(str(primary), str(filelists) if filelists else None, None)
    for pkg in iterator:
        if stop is not None and stop.is_set():
            raise _Stopped
        packages.append(
            Package(
                name=pkg.name,
                epoch=int(pkg.epoch or 0),
                version=pkg.version,
                release=pkg.release,
                arch=pkg.arch,
                requires=_deps(pkg.requires) if with_requires else (),
                provides=_deps(pkg.provides, keep_name),
                files=frozenset(p for p in _paths(pkg.files) if keep_file is None or keep_file(p)),
                repo=label or str(repo_dir),
                checksum=pkg.pkgId or "",
            )
        )
    return packages


def _download(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=120) as response, open(dest, "wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)


def fetch_repodata(url: str, dest: Path) -> Path:
    """Download repomd, primary and filelists of an HTTP repository into ``dest``."""
    base = url.rstrip("/") + "/"
    repomd = dest / "repodata" / "repomd.xml"
    _download(urllib.parse.urljoin(base, "repodata/repomd.xml"), repomd)
    for record in cr.Repomd(str(repomd)).records:
        if record.type in ("primary", "filelists"):
            href = record.location_href
            target = (dest / href).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise MetadataError(f"{url}: refusing metadata location {href!r}")
            _download(urllib.parse.urljoin(base, href), target)
    return dest


def _arch_subtree(root: Path, arch: str) -> Path:
    """``root/<arch>`` when it holds repodata, else ``root`` itself (a flat repo)."""
    if arch and (root / arch / "repodata" / "repomd.xml").is_file():
        return root / arch
    if (root / "repodata" / "repomd.xml").is_file():
        return root
    where = f"{root}/{arch}/repodata" if arch else f"{root}/repodata"
    raise MetadataError(f"no repository metadata at {where}")


def expand_base_repo(base: str, arch: str) -> str:
    """Substitute ``$basearch`` / ``{arch}`` in a base repository location."""
    return base.replace("$basearch", arch).replace("{arch}", arch)


# --------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------


@dataclass
class ArchReport:
    arch: str
    checked: list[Package] = field(default_factory=list)
    #: problems that fail the item
    unresolved: list[Unresolved] = field(default_factory=list)
    #: problems the baseline has too
    warnings: list[Unresolved] = field(default_factory=list)


class RepoclosureJobConfig(JobConfig):
    type: Literal["repoclosure"] = "repoclosure"
    name: Literal["repoclosure"] = "repoclosure"
    #: extra repositories whose packages satisfy dependencies (paths or URLs)
    base_repos: tuple[str, ...] = ()

    def dependency_repos(self) -> tuple[str, ...]:
        return self.base_repos


class Repoclosure(Job):
    """Fail when a package of the speculative repo has a Requires nothing provides.

    With ``ctx.baseline_path``, only for the problems the item brings (:func:`blame`);
    the others are the result's ``warnings``.
    """

    name = "repoclosure"

    def __init__(self, *, name: str = "repoclosure", summary_items: int = 3) -> None:
        self.name = name
        #: how many unresolved dependencies the one-sentence summary names
        self.summary_items = summary_items

    async def run(self, ctx: JobContext) -> JobResult:
        stop = threading.Event()
        try:
            return await asyncio.to_thread(self.run_blocking, ctx, stop)
        except asyncio.CancelledError:
            # The thread cannot be interrupted; it notices this between packages.
            stop.set()
            raise

    def run_blocking(self, ctx: JobContext, stop: threading.Event | None = None) -> JobResult:
        """The whole job, synchronously (what :meth:`run` runs in a worker thread)."""
        ctx.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(ctx.log_path, "w") as log:
            _say(log, f"repoclosure of item {ctx.item_id} (attempt {ctx.attempt})")
            try:
                reports = self._check(ctx, log, stop)
            except _Stopped:
                _say(log, "cancelled")
                raise
            except (MetadataError, OSError, cr.CreaterepoCError, ValueError) as exc:
                summary = f"cannot read repository metadata: {exc}"
                _say(log, summary)
                return JobResult(self.name, False, summary, str(ctx.log_path))
            result = self._result(ctx, reports)
            _say(log, f"result: {result.summary}")
            for line in result.details:
                _say(log, f"  {line}")
        return result

    def _check(
        self, ctx: JobContext, log: TextIO, stop: threading.Event | None
    ) -> list[ArchReport]:
        arches = ctx.arches or ("",)
        speculative: dict[str, list[Package]] = {}
        for arch in arches:
            repo_dir = _arch_subtree(ctx.repo_path, arch)
            packages = load_repo(repo_dir, label="speculative", stop=stop)
            speculative[arch] = [p for p in packages if not p.is_source]
            _say(log, f"{arch or 'repo'}: {len(speculative[arch])} packages in {repo_dir}")

        wanted = Wanted.by(p for pkgs in speculative.values() for p in pkgs)
        loaded: dict[str, list[Package]] = {}
        reports: list[ArchReport] = []
        with tempfile.TemporaryDirectory(prefix="rpmgate-repoclosure-") as downloads:
            for arch in arches:
                available: list[Package] = []
                for base in ctx.base_repos:
                    location = expand_base_repo(base, arch)
                    if location not in loaded:
                        repo_dir = self._locate_base(location, arch, Path(downloads), len(loaded))
                        loaded[location] = load_repo(
                            repo_dir, wanted=wanted, with_requires=False, label=location, stop=stop
                        )
                        _say(log, f"base repo {location}: {len(loaded[location])} packages")
                    available.extend(loaded[location])
                available = [p for p in available if not p.is_source]
                problems = find_unresolved(
                    speculative[arch], Universe([*speculative[arch], *available])
                )
                report = ArchReport(arch, speculative[arch], problems)
                if problems and ctx.baseline_path is not None:
                    self._blame(ctx.baseline_path, report, available, log, stop)
                for problem in report.unresolved:
                    hint = f" ({problem.hint})" if problem.hint else ""
                    _say(log, f"{arch or 'repo'}: UNRESOLVED {problem}{hint}")
                for problem in report.warnings:
                    _say(log, f"{arch or 'repo'}: already broken in the base: {problem}")
                reports.append(report)
        return reports

    @staticmethod
    def _blame(
        baseline_root: Path,
        report: ArchReport,
        available: list[Package],
        log: TextIO,
        stop: threading.Event | None,
    ) -> None:
        """Move the problems the baseline has too from ``unresolved`` to ``warnings``.

        Only read when something is unresolved (the usual clean run never
        opens the baseline), and then only the provides and paths that the
        problem packages' requires name: enough to decide each of them.
        """
        repo_dir = _arch_subtree(baseline_root, report.arch)
        suspects = {u.package for u in report.unresolved}
        wanted = Wanted.by(p for p in report.checked if p.nevra in suspects)
        baseline = load_repo(
            repo_dir, wanted=wanted, with_requires=False, label="baseline", stop=stop
        )
        verdict = blame(report.unresolved, report.checked, baseline, available)
        brought = brought_by_change(report.checked, baseline)
        _say(
            log,
            f"{report.arch or 'repo'}: baseline {repo_dir}: {len(baseline)} packages; "
            f"the item brings {len(brought)} of the {len(report.checked)}",
        )
        report.unresolved, report.warnings = verdict.failures, verdict.warnings

    @staticmethod
    def _locate_base(location: str, arch: str, downloads: Path, n: int) -> Path:
        parsed = urllib.parse.urlparse(location)
        if parsed.scheme in ("http", "https"):
            return fetch_repodata(location, downloads / f"base{n}")
        if parsed.scheme == "file":
            return _arch_subtree(Path(urllib.parse.unquote(parsed.path)), arch)
        if parsed.scheme:
            raise MetadataError(f"unsupported base repository URL {location!r}")
        return _arch_subtree(Path(location), arch)

    def _result(self, ctx: JobContext, reports: list[ArchReport]) -> JobResult:
        arch_names = [r.arch for r in reports if r.arch]
        failures = _merge_arches([(r.arch, r.unresolved) for r in reports])
        warnings = _merge_arches([(r.arch, r.warnings) for r in reports])
        details = _lines(failures, arch_names, len(reports))
        warning_lines = _lines(warnings, arch_names, len(reports))
        packages = {p.nevra for r in reports for p in r.checked}
        on = f" on {', '.join(arch_names)}" if arch_names else ""
        if not failures and not warnings:
            noun = "package" if len(packages) == 1 else "packages"
            summary = (
                f"all dependencies of {len(packages)} {noun} resolve{on}"
                if packages
                else f"no packages to check{on}"
            )
            return JobResult(self.name, True, summary, str(ctx.log_path), ())
        if not failures:
            count = len(warnings)
            summary = (
                f"passed with {count} {'warning' if count == 1 else 'warnings'}: "
                f"already broken in the base: {self._name_some(list(warnings))}"
            )
            return JobResult(self.name, True, summary, str(ctx.log_path), (), tuple(warning_lines))
        count = len(failures)
        noun = "dependency" if count == 1 else "dependencies"
        summary = f"{count} unresolved {noun}: {self._name_some(list(failures))}"
        if warnings:
            also = "warning" if len(warnings) == 1 else "warnings"
            summary += f" (and {len(warnings)} {also}: already broken in the base)"
        return JobResult(
            self.name, False, summary, str(ctx.log_path), tuple(details), tuple(warning_lines)
        )

    def _name_some(self, problems: list[Unresolved]) -> str:
        """The first ``summary_items`` problems, grouped by package, and how many more."""
        by_package: dict[str, list[str]] = {}
        for problem in problems[: self.summary_items]:
            by_package.setdefault(problem.package, []).append(problem.requirement)
        named = "; ".join(
            f"{nevra} requires {', '.join(reqs)}" for nevra, reqs in by_package.items()
        )
        more = len(problems) - self.summary_items
        return named + (f"; and {more} more" if more > 0 else "")


def _merge_arches(
    per_arch: list[tuple[str, list[Unresolved]]],
) -> dict[Unresolved, list[str]]:
    """Each problem once, with the arches it is found on (noarch packages are in every tree)."""
    where: dict[tuple[str, str], tuple[Unresolved, list[str]]] = {}
    for arch, problems in per_arch:
        for problem in problems:
            key = (problem.package, problem.requirement)
            where.setdefault(key, (problem, []))[1].append(arch)
    return {problem: arches for problem, arches in (where[k] for k in sorted(where))}


def _lines(problems: dict[Unresolved, list[str]], arch_names: list[str], trees: int) -> list[str]:
    lines = []
    for problem, arches in problems.items():
        line = str(problem)
        if problem.hint:
            line += f" ({problem.hint})"
        if arch_names and len(arches) < trees:
            line += f" [on {', '.join(arches)}]"
        lines.append(line)
    return lines


def _say(log: TextIO, line: str) -> None:
    log.write(line + "\n")
    log.flush()
