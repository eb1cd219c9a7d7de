"""Random repositories of dependency edge cases, from a seed, built with rpmbuild.

A *world* is a list of :class:`Package` drawn by :func:`draw` from a seeded
:class:`random.Random`; :func:`build` turns it into real RPMs and runs
``createrepo_c`` on them.  What a world holds, in small numbers so that
dnf can be asked about every package:

- names in one or two versions (the newest-version choice), with epochs,
  tildes (``1.0~rc1``), carets (``1.0^git2``) and releases that compare
  numerically (``2`` < ``10``) and by segment (``1`` < ``1.el9``);
- versioned requirements (``=``, ``<``, ``<=``, ``>``, ``>=``) on real names,
  on virtual provides, and on names nothing provides, with EVRs taken from
  the world so that some hold and some do not;
- file requirements on paths primary lists (``/usr/bin``, ``/etc``) and on
  paths only filelists has (``/usr/share``, ``/usr/lib``), present or not;
- rich dependencies (``and``, ``or``, ``if``, ``if ... else``, ``with``,
  ``unless``, ``unless ... else``), nested once;
- Obsoletes, Conflicts, and weak dependencies (which never block);
- arches: noarch, x86_64, i686+x86_64 multilib pairs whose ``-devel``
  requires the base of its own arch (``name(x86-64) = V-R``,
  ``name(x86-32) = V-R``), sometimes with the i686 base missing, and aarch64
  packages, which must not satisfy anything on x86_64.

rpmbuild runs once per (arch, version slot): every package of a slot is a
subpackage of one spec (subpackages may set their own Epoch, Version and
Release), so a world of ~40 packages costs 4 to 6 rpmbuild runs.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tests.rpmfactory import FAST_RPMBUILD_DEFINES

VERSIONS = ("0.9", "1.0~rc1", "1.0", "1.0^git2", "1.2", "2", "10")
RELEASES = ("1", "2", "10", "1.el9")
#: the rpm ISA suffix of an arch's automatic ``name(isa)`` provide
ISA = {"x86_64": "x86-64", "i686": "x86-32", "aarch64": "aarch-64"}
OPERATORS = ("=", "<", "<=", ">", ">=")
#: rich operators rpm accepts in Requires (``unless`` only in Conflicts and reverse deps)
RICH_OPERATORS = ("and", "or", "if", "if-else", "with")


@dataclass
class Package:
    name: str
    version: str
    release: str
    arch: str
    epoch: int | None = None
    #: which version of its name this is (0 or 1): one spec per (arch, slot)
    slot: int = 0
    requires: list[str] = field(default_factory=list)
    provides: list[str] = field(default_factory=list)
    obsoletes: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    weak: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def evr(self) -> str:
        epoch = f"{self.epoch}:" if self.epoch is not None else ""
        return f"{epoch}{self.version}-{self.release}"

    @property
    def nevra(self) -> str:
        """As dnf and libsolv print it: the epoch only when it is not 0."""
        epoch = f"{self.epoch}:" if self.epoch else ""
        return f"{self.name}-{epoch}{self.version}-{self.release}.{self.arch}"


def _files_for(rng: random.Random, name: str) -> list[str]:
    kinds = [
        f"/usr/bin/{name}",  # primary.xml lists it
        f"/etc/{name}.conf",  # primary.xml lists it
        f"/usr/share/{name}/data.txt",  # filelists only
        f"/usr/lib/{name}/plugin.so",  # filelists only
    ]
    return rng.sample(kinds, rng.randint(1, 2))


def draw(seed: int) -> list[Package]:
    """The packages of world ``seed`` (same seed, same world)."""
    rng = random.Random(seed)
    packages: list[Package] = []

    def evr_of() -> tuple[str, str]:
        return rng.choice(VERSIONS), rng.choice(RELEASES)

    # plain names, in one or two versions, noarch or x86_64
    for i in range(rng.randint(9, 13)):
        name = f"p{i}"
        arch = rng.choice(("noarch", "noarch", "x86_64"))
        seen: set[tuple[int | None, str, str]] = set()
        for slot in range(rng.choice((1, 1, 2))):
            epoch = rng.choice((None, None, None, 0, 1, 2))
            version, release = evr_of()
            if (epoch or 0, version, release) in {(e or 0, v, r) for e, v, r in seen}:
                continue
            seen.add((epoch, version, release))
            pkg = Package(name, version, release, arch, epoch, slot)
            pkg.files = _files_for(rng, name)
            if rng.random() < 0.5:
                cap = f"cap{rng.randint(0, 4)}"
                pkg.provides.append(
                    cap if rng.random() < 0.3 else f"{cap} = {rng.choice(VERSIONS)}"
                )
            packages.append(pkg)
    # multilib pairs: the base on x86_64 and (mostly) i686, a -devel on both
    # that requires the base of its own arch, at its own version (mostly)
    for i in range(2):
        version, release = evr_of()
        arches = ["x86_64", "i686"] if rng.random() < 0.75 else ["x86_64"]
        for arch in arches:
            base = Package(f"ml{i}", version, release, arch)
            base.files = [f"/usr/lib/ml{i}/lib{arch}.so.1"]
            packages.append(base)
        for arch in ("x86_64", "i686"):
            wanted = f"{version}-{release}" if rng.random() < 0.8 else f"{version}-{release}9"
            devel = Package(f"ml{i}-devel", version, release, arch)
            devel.requires.append(f"ml{i}({ISA[arch]}) = {wanted}")
            devel.files = [f"/usr/share/ml{i}-devel/{arch}.h"]
            packages.append(devel)
    # another arch: installable on aarch64 only, a provider of nothing on x86_64
    arm = Package("arm0", "1.0", "1", "aarch64")
    arm.provides.append("cap9")
    arm.files = ["/usr/bin/arm0"]
    arm.requires.append("ghost-arm")  # not checked on x86_64, by either side
    packages.append(arm)
    user = Package("uses-arm0", "1.0", "1", rng.choice(("noarch", "x86_64")))
    user.requires.append(rng.choice(("arm0", "cap9", "/usr/bin/arm0")))
    packages.append(user)

    names = sorted({p.name for p in packages})
    by_name: dict[str, list[Package]] = defaultdict(list)
    for p in packages:
        by_name[p.name].append(p)
    paths = sorted({f for p in packages for f in p.files})

    def versioned(name: str) -> str:
        """``name``, or ``name OP EVR`` with an EVR near one the world has."""
        if rng.random() < 0.35:
            return name
        target = rng.choice(by_name.get(name) or packages)
        shape = rng.random()
        if shape < 0.4:
            evr = target.evr
        elif shape < 0.7:
            evr = target.version if target.epoch is None else f"{target.epoch}:{target.version}"
        elif shape < 0.85:
            evr = f"{rng.choice((1, 2, 3))}:{rng.choice(VERSIONS)}"
        else:
            evr = rng.choice(VERSIONS)
        return f"{name} {rng.choice(OPERATORS)} {evr}"

    def simple() -> str:
        r = rng.random()
        if r < 0.45:
            return versioned(rng.choice(names))
        if r < 0.6:
            return versioned(f"cap{rng.randint(0, 5)}")
        if r < 0.7:
            return f"ghost{rng.randint(0, 3)}"
        if r < 0.9:
            return rng.choice(paths)
        return rng.choice(("/usr/bin/nope", "/etc/nope.conf", "/usr/share/nope/x", "/usr/lib/nope"))

    def rich(nested: bool = False) -> str:
        def part() -> str:
            # rpm allows only some nestings (no ``unless`` or ``if`` inside another
            # operator): and/or/with, inside and/or
            return rich(nested=True) if nested_ok and rng.random() < 0.25 else simple()

        ops = ("and", "or", "with") if nested else RICH_OPERATORS
        op = rng.choice(ops)
        nested_ok = not nested and op in ("and", "or")
        if op in ("if-else", "unless-else"):
            word = op.split("-")[0]
            return f"({part()} {word} {part()} else {part()})"
        if op == "with":
            # both sides on one name: "a version in a range"
            name = rng.choice(names)
            return f"({versioned(name)} with {versioned(name)})"
        return f"({part()} {op} {part()})"

    def dependency() -> str:
        return rich() if rng.random() < 0.3 else simple()

    for pkg in packages:
        if pkg.name.startswith(("ml", "arm", "uses-")):
            continue
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            pkg.requires.append(dependency())
        if rng.random() < 0.15:
            pkg.obsoletes.append(versioned(rng.choice([n for n in names if n != pkg.name])))
        if rng.random() < 0.15:
            other = versioned(rng.choice([n for n in names if n != pkg.name]))
            if rng.random() < 0.3:
                other = f"({other} unless {simple()})"
            pkg.conflicts.append(other)
        if rng.random() < 0.2:
            kind = rng.choice(("Recommends", "Suggests", "Supplements"))
            wanted = f"({simple()} unless {simple()})" if kind == "Supplements" else simple()
            pkg.weak.append(f"{kind}: {wanted}")
    return packages


def _spec(packages: list[Package]) -> str:
    lines = [
        "Name: depworld",
        "Version: 0",
        "Release: 0",
        "Summary: generated dependency world",
        "License: MIT",
        "",
        "%description",
        "Generated.",
        "",
    ]
    for p in packages:
        lines += [f"%package -n {p.name}", f"Summary: {p.name}"]
        lines += [f"Version: {p.version}", f"Release: {p.release}"]
        if p.epoch is not None:
            lines.append(f"Epoch: {p.epoch}")
        if p.arch == "noarch":
            lines.append("BuildArch: noarch")
        lines += [f"Requires: {d}" for d in p.requires]
        lines += [f"Provides: {d}" for d in p.provides]
        lines += [f"Obsoletes: {d}" for d in p.obsoletes]
        lines += [f"Conflicts: {d}" for d in p.conflicts]
        lines += list(p.weak)
        lines += ["", f"%description -n {p.name}", "Generated.", ""]
    lines.append("%install")
    for p in packages:
        for path in p.files:
            lines.append(f"mkdir -p %{{buildroot}}{path.rpartition('/')[0]}")
            lines.append(f"echo '{p.nevra} {path}' > %{{buildroot}}{path}")
    lines.append("")
    for p in packages:
        lines += [f"%files -n {p.name}", *p.files, ""]
    return "\n".join(lines)


def build(packages: list[Package], repo: Path) -> None:
    """rpmbuild the packages into ``repo`` and run createrepo_c on it."""
    repo.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, int], list[Package]] = defaultdict(list)
    for p in packages:
        # noarch packages ride in the x86_64 spec (one BuildArch per subpackage)
        groups[("x86_64" if p.arch == "noarch" else p.arch, p.slot)].append(p)
    for (target, slot), group in sorted(groups.items()):
        _rpmbuild(_spec(group), target, repo, f"{target}-{slot}")
    subprocess.run(["createrepo_c", "--quiet", str(repo)], check=True)


def _rpmbuild(spec_text: str, target: str, out: Path, label: str) -> None:
    with tempfile.TemporaryDirectory(prefix=f"depworld-{label}-") as top:
        topdir = Path(top)
        spec = topdir / "depworld.spec"
        spec.write_text(spec_text)
        cmd = ["rpmbuild", "-bb", "--quiet", "--target", target]
        for key, value in {**FAST_RPMBUILD_DEFINES, "_topdir": str(topdir)}.items():
            cmd += ["--define", f"{key} {value}"]
        proc = subprocess.run([*cmd, str(spec)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"rpmbuild failed:\n{proc.stderr}\n--- spec ---\n{spec_text}")
        for rpm in (topdir / "RPMS").rglob("*.rpm"):
            shutil.move(rpm, out / rpm.name)


def world(seed: int, repo: Path) -> list[Package]:
    """Draw world ``seed`` and build it into ``repo``."""
    packages = draw(seed)
    build(packages, repo)
    return packages
