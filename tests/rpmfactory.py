"""Make real, tiny RPMs with ``rpmbuild`` for tests.

Tests of anything that reads RPM headers or writes repodata should run on RPMs
that rpm itself produced, not on hand-made XML: the factory writes a minimal
spec (one small text file per package, so filelists has content; one
changelog entry, so other.xml has content) and runs ``rpmbuild`` in a private
``_topdir``.  A build takes well under a second.

Typical use::

    foo = build_rpm(tmp_path, "foo", "1.0", requires=["bar >= 1"])
    entry = build_entry([foo], pool)          # adds to the pool, reads headers
    state = RepoState().with_build(entry)

Each call is a fresh ``rpmbuild``, so two builds of the same NVR have different
checksums (the build time differs) -- just as two real rebuilds would.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from repo_state.pool import Pool
from repo_state.state import Artifact, BuildEntry

# Everything that makes rpmbuild slow or host-dependent is switched off: no
# debuginfo, no brp scripts (strip, bytecompile, ...), no build-id links, and
# cheap payload compression.
FAST_RPMBUILD_DEFINES = {
    "debug_package": "%{nil}",
    "__os_install_post": "%{nil}",
    "_build_id_links": "none",
    "_binary_payload": "w1.gzdio",
    "_source_payload": "w1.gzdio",
}


@dataclass(frozen=True)
class Subpackage:
    """A subpackage of the built spec (``%package -n name``)."""

    name: str
    requires: Sequence[str] = ()
    provides: Sequence[str] = ()


@dataclass(frozen=True)
class BuiltRpms:
    """What one ``rpmbuild`` run produced."""

    binaries: tuple[Path, ...]  # the main package first, then subpackages in order
    source: Path | None  # the SRPM, when asked for

    @property
    def all(self) -> tuple[Path, ...]:
        return self.binaries + ((self.source,) if self.source else ())


def _spec_text(
    name: str,
    version: str,
    release: str,
    requires: Iterable[str],
    provides: Iterable[str],
    arch: str,
    epoch: int | None,
    subpackages: Sequence[Subpackage],
    tags: Iterable[str] = (),
    files: Mapping[str, str] | None = None,
) -> str:
    lines = [
        f"Name: {name}",
        f"Version: {version}",
        f"Release: {release}",
        "Summary: rpmgate test package",
        "License: MIT",
    ]
    if epoch is not None:
        lines.append(f"Epoch: {epoch}")
    if arch == "noarch":
        # other arches are chosen with --target, which works without a cross
        # toolchain because nothing is compiled
        lines.append("BuildArch: noarch")
    lines += [f"Requires: {r}" for r in requires]
    lines += [f"Provides: {p}" for p in provides]
    lines += list(tags)
    lines += ["", "%description", f"{name} test package.", ""]
    for sub in subpackages:
        lines += [f"%package -n {sub.name}", f"Summary: {sub.name} subpackage"]
        lines += [f"Requires: {r}" for r in sub.requires]
        lines += [f"Provides: {p}" for p in sub.provides]
        lines += ["", f"%description -n {sub.name}", f"{sub.name} subpackage.", ""]
    lines.append("%install")
    for pkg in [name, *(s.name for s in subpackages)]:
        lines.append(f"mkdir -p %{{buildroot}}/usr/share/{pkg}")
        lines.append(f"echo '{pkg} {version}-{release}' > %{{buildroot}}/usr/share/{pkg}/{pkg}.txt")
    for path, content in (files or {}).items():
        lines.append(f"mkdir -p %{{buildroot}}{path.rpartition('/')[0]}")
        lines.append(f"echo '{content}' > %{{buildroot}}{path}")
    lines += ["", "%files", f"/usr/share/{name}/{name}.txt", *(files or {}), ""]
    for sub in subpackages:
        lines += [f"%files -n {sub.name}", f"/usr/share/{sub.name}/{sub.name}.txt", ""]
    lines += [
        "%changelog",
        f"* Mon Jan 01 2024 rpmgate tests <tests@example.invalid> - {version}-{release}",
        f"- build {version}-{release}",
        "",
    ]
    return "\n".join(lines)


def build_rpms(
    outdir: Path,
    name: str,
    version: str,
    release: str = "1",
    requires: Iterable[str] = (),
    provides: Iterable[str] = (),
    arch: str = "noarch",
    epoch: int | None = None,
    subpackages: Sequence[Subpackage | str] = (),
    *,
    srpm: bool = False,
    tags: Iterable[str] = (),
    files: Mapping[str, str] | None = None,
) -> BuiltRpms:
    """Run ``rpmbuild`` for a generated spec and move its RPMs into ``outdir``.

    ``subpackages`` are :class:`Subpackage` or plain names.  With ``srpm`` the
    source RPM is built too (``-ba`` instead of ``-bb``).  ``tags`` are spec
    lines added as they are (``Conflicts: foo``, ``Recommends: bar``);
    ``files`` maps extra paths the package ships to their one line of content.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    subs = [Subpackage(s) if isinstance(s, str) else s for s in subpackages]
    spec = _spec_text(name, version, release, requires, provides, arch, epoch, subs, tags, files)
    with tempfile.TemporaryDirectory(prefix="rpmfactory-") as top:
        topdir = Path(top)
        spec_path = topdir / f"{name}.spec"
        spec_path.write_text(spec)
        cmd = ["rpmbuild", "-ba" if srpm else "-bb", "--quiet"]
        if arch != "noarch":
            cmd += ["--target", arch]
        for key, value in {**FAST_RPMBUILD_DEFINES, "_topdir": str(topdir)}.items():
            cmd += ["--define", f"{key} {value}"]
        cmd.append(str(spec_path))
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"rpmbuild failed for {name}:\n{proc.stderr}\n--- spec ---\n{spec}")

        def take(found: Path) -> Path:
            dest = outdir / found.name
            shutil.move(found, dest)
            return dest

        evr = f"{version}-{release}"
        binaries = tuple(
            take(topdir / "RPMS" / arch / f"{pkg}-{evr}.{arch}.rpm")
            for pkg in [name, *(s.name for s in subs)]
        )
        source = take(topdir / "SRPMS" / f"{name}-{evr}.src.rpm") if srpm else None
    return BuiltRpms(binaries, source)


def build_rpm(
    outdir: Path,
    name: str,
    version: str,
    release: str = "1",
    requires: Iterable[str] = (),
    provides: Iterable[str] = (),
    arch: str = "noarch",
    epoch: int | None = None,
    subpackages: Sequence[Subpackage | str] = (),
    *,
    tags: Iterable[str] = (),
    files: Mapping[str, str] | None = None,
) -> Path:
    """Build one package and return the path of its main binary RPM.

    Subpackage RPMs land next to it in ``outdir``; use :func:`build_rpms` to
    get their paths (and an SRPM).
    """
    built = build_rpms(
        outdir,
        name,
        version,
        release,
        requires,
        provides,
        arch,
        epoch,
        subpackages,
        tags=tags,
        files=files,
    )
    return built.binaries[0]


def artifact_for(path: Path, pool: Pool) -> Artifact:
    """Add ``path`` to ``pool`` and describe it as an :class:`Artifact` from its header."""
    return pool.add_rpm(Path(path))


def build_entry(paths: Iterable[Path], pool: Pool, origin: str = "") -> BuildEntry:
    """Pool ``paths`` (one build's RPMs) and make the :class:`BuildEntry` for them.

    The source package name and NVR come from the SRPM if present, else from
    the binaries' ``sourcerpm`` header.
    """
    artifacts = tuple(artifact_for(p, pool) for p in paths)
    if not artifacts:
        raise ValueError("a build needs at least one RPM")
    src = next((a for a in artifacts if a.is_source), None)
    if src is not None:
        source_name, nvr = src.name, f"{src.name}-{src.version}-{src.release}"
    else:
        nvr = artifacts[0].sourcerpm.removesuffix(".src.rpm")
        source_name = nvr.rsplit("-", 2)[0]
    return BuildEntry(source_name=source_name, nvr=nvr, artifacts=artifacts, origin=origin)
