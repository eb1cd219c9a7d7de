"""Several packages in one project (Packit's monorepo): their order and what is rebuilt.

``projects.<p>.packages: {python-foo: {spec: python-foo.spec}, foo-doc:
{spec: foo-doc.spec, after: [python-foo]}}``.  Without ``packages`` a project
is one package (``package``/``spec``), as before.

- **Order.**  A package is built after those in its ``after``; a package with
  no ``after`` is built after the packages of the project that provide one of
  its ``BuildRequires`` (read from the spec's text: ``Name``, ``%package``
  and ``Provides`` lines; a name with an unexpanded macro, or a rich
  dependency, is not matched).
  Ties keep the config's order; a cycle is refused, naming it.
- **Inputs.**  A package's inputs are the files under its ``paths`` (default:
  the directory of its spec, the whole tree when the spec is at the top) and
  its spec, at the commit being built, plus the inputs of every package it is
  built after (it is built against them).  Equal inputs give an equal digest
  (:func:`input_digest`, over git blob ids: no file is read).
- **Reuse.**  A package whose digest equals that of its previous build is not
  built again: :func:`plan_packages` says which previous build serves it, and
  that is recorded as a reuse.

Pure: no I/O.  The caller lists the tree (``git ls-tree -r -z <commit>``,
:func:`parse_ls_tree`) and reads the specs.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: a package's name (an RPM Name)
PACKAGE_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _relative(value: str) -> str:
    parts = value.split("/")
    if not value or value.startswith(("/", "-")) or ".." in parts or "" in parts[:-1]:
        raise ValueError(f"{value!r} is not a path inside the repository")
    return value


class PackageConfig(_Strict):
    """One package of a project."""

    #: its spec file, a path inside the repository
    spec: str
    #: packages of the same project it is built after (default: those providing
    #: one of its BuildRequires)
    after: tuple[Annotated[str, Field(pattern=PACKAGE_PATTERN)], ...] | None = None
    #: what its inputs are (default: the spec's directory; the whole tree for a top-level spec)
    paths: tuple[str, ...] | None = None

    @field_validator("spec")
    @classmethod
    def _spec_path(cls, value: str) -> str:
        return _relative(value)

    @field_validator("paths")
    @classmethod
    def _paths(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for path in value or ():
            if path != ".":
                _relative(path.rstrip("/"))
        return value

    def input_paths(self) -> tuple[str, ...]:
        if self.paths is not None:
            return tuple("." if p == "." else p.rstrip("/") for p in self.paths)
        return (posixpath.dirname(self.spec) or ".",)


class PackageOrderError(ValueError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class SpecNames:
    """What a spec's text says about names (no macro is expanded)."""

    provides: frozenset[str]
    build_requires: frozenset[str]


_TAG = re.compile(r"^(Name|Provides|BuildRequires)\s*:\s*(.+?)\s*$", re.IGNORECASE)
_PACKAGE = re.compile(r"^%package\s+(-n\s+)?(\S+)\s*$")
_MACRO = re.compile(r"%(\{[^}]*\}|\([^)]*\)|[A-Za-z_]\w*)")
_OPERATORS = frozenset({"<", ">", "=", "<=", ">=", "<>"})


def _names(value: str) -> list[str]:
    """The names of a dependency list (``a >= 1, b``), versions dropped."""
    names: list[str] = []
    skip_version = False
    if value.lstrip().startswith("("):
        return []  # a rich dependency (``(a or b)``) names no one package
    # a macro (``%{py3_dist sphinx}``) is not expanded: its words are no name
    value = _MACRO.sub(" % ", value)
    for token in value.replace(",", " ").split():
        if skip_version:
            skip_version = False
            continue
        if token in _OPERATORS:
            skip_version = True
            continue
        if token != "%":  # a macro where a name is
            names.append(token)
    return names


def spec_names(text: str) -> SpecNames:
    """``Name``, ``%package`` and ``Provides`` names, and ``BuildRequires`` names."""
    name = ""
    provides: set[str] = set()
    requires: set[str] = set()
    for raw in text.splitlines():
        line = raw.strip()
        match = _TAG.match(line)
        if match:
            tag, value = match.group(1).lower(), match.group(2)
            if tag == "name":
                name = value
                provides.add(value)
            elif tag == "provides":
                provides.update(_names(value))
            else:
                requires.update(_names(value))
            continue
        match = _PACKAGE.match(line)
        if match:
            provides.add(match.group(2) if match.group(1) else f"{name}-{match.group(2)}")
    unexpanded = {n for n in provides | requires if "%" in n}
    return SpecNames(frozenset(provides - unexpanded), frozenset(requires - unexpanded))


def built_after(
    packages: Mapping[str, PackageConfig],
    specs: Mapping[str, SpecNames] | None = None,
    where: str = "packages",
) -> dict[str, set[str]]:
    """package -> the packages it is built after: its ``after``, else those whose
    spec provides one of its BuildRequires (``specs``: package -> its spec's names)."""
    names = list(packages)
    after: dict[str, set[str]] = {}
    for name, pkg in packages.items():
        if pkg.after is not None:
            for k, other in enumerate(pkg.after):
                if other not in packages or other == name:
                    known = ", ".join(n for n in names if n != name) or "none"
                    raise PackageOrderError(
                        f"{where}.{name}.after.{k}",
                        f"package {name} is after unknown package {other!r} "
                        f"(the project's other packages: {known})",
                    )
            after[name] = set(pkg.after)
        else:
            wanted = specs[name].build_requires if specs and name in specs else frozenset()
            after[name] = {
                other
                for other in names
                if other != name and specs and other in specs and wanted & specs[other].provides
            }
    return after


def package_order(after: Mapping[str, set[str]], where: str = "packages") -> list[str]:
    """The packages in build order (given order among those free to go); a cycle is refused."""
    names = list(after)
    order: list[str] = []
    while len(order) < len(names):
        ready = [n for n in names if n not in order and after[n] <= set(order)]
        if not ready:
            stuck = [n for n in names if n not in order]
            raise PackageOrderError(
                f"{where}.{stuck[0]}.after",
                "the packages' build order has a cycle: "
                + ", ".join(f"{n} after {', '.join(sorted(after[n] - set(order)))}" for n in stuck),
            )
        order.append(ready[0])
    return order


def parse_ls_tree(output: bytes | str) -> dict[str, str]:
    """path -> object id from ``git ls-tree -r -z <commit>``."""
    text = output.decode("utf-8", "surrogateescape") if isinstance(output, bytes) else output
    listing: dict[str, str] = {}
    for entry in text.split("\0"):
        if not entry:
            continue
        meta, _, path = entry.partition("\t")
        listing[path] = meta.split()[2]
    return listing


def _under(path: str, root: str) -> bool:
    return root == "." or path == root or path.startswith(root + "/")


def input_digests(
    packages: Mapping[str, PackageConfig],
    after: Mapping[str, set[str]],
    listing: Mapping[str, str],
) -> dict[str, str]:
    """package -> digest of its inputs (its paths, its spec, and the digests of what it
    is built after: :func:`built_after`) in the tree ``listing`` (:func:`parse_ls_tree`)."""
    order = package_order(after)
    digests: dict[str, str] = {}
    for name in order:
        pkg = packages[name]
        roots = (*pkg.input_paths(), pkg.spec)
        files = sorted((p, oid) for p, oid in listing.items() if any(_under(p, r) for r in roots))
        h = hashlib.sha256(f"package\0{name}\0{pkg.spec}\0".encode())
        for path, oid in files:
            h.update(f"{path}\0{oid}\0".encode("utf-8", "surrogateescape"))
        for other in sorted(after[name]):
            h.update(f"after\0{other}\0{digests[other]}\0".encode())
        digests[name] = h.hexdigest()
    return digests


@dataclass(frozen=True)
class PreviousBuild:
    """A package's last build that passed, with the digest of its inputs."""

    build_id: int
    digest: str
    nvr: str


@dataclass(frozen=True)
class PackageStep:
    package: str
    digest: str
    action: Literal["build", "reuse"]
    #: the build that serves a reuse
    reused: PreviousBuild | None = None
    #: the packages it is built after (:func:`built_after`), in build order
    after: tuple[str, ...] = ()


def plan_packages(
    order: Sequence[str],
    digests: Mapping[str, str],
    previous: Mapping[str, PreviousBuild],
    after: Mapping[str, set[str]] | None = None,
) -> list[PackageStep]:
    """In order, for each package: build it, or reuse its previous build (same inputs)."""
    steps: list[PackageStep] = []
    for name in order:
        last = previous.get(name)
        before = tuple(n for n in order if n in (after or {}).get(name, set()))
        if last is not None and last.digest == digests[name]:
            steps.append(PackageStep(name, digests[name], "reuse", last, before))
        else:
            steps.append(PackageStep(name, digests[name], "build", after=before))
    return steps
