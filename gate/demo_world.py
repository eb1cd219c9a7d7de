"""A small distgit world on local disk: bare git remotes, specs, a lookaside.

Used by ``rpmgate demo`` and by the scenario tests.  Projects:

* ``nova`` 12.0.0 (its tarball comes from a Fedora-style lookaside cache)
* ``ceilometer`` 8.0.0, requiring ``nova >= 12.0.0``
* ``horizon`` 9.0.0, requiring ``python-django-compat``
* ``python-django`` 1.8.0, providing ``python-django-compat``

all publishing into one repository ``liberty``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Packager",
    "GIT_AUTHOR_EMAIL": "packager@example.org",
    "GIT_COMMITTER_NAME": "Packager",
    "GIT_COMMITTER_EMAIL": "packager@example.org",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}


@dataclass(frozen=True)
class PackageSpec:
    name: str
    version: str
    release: str = "1"
    requires: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    #: a %build line that fails, to model a broken change
    broken_build: bool = False
    #: take Source0 from the lookaside cache
    lookaside: bool = False
    #: seconds %build sleeps (tests that need builds in flight)
    build_seconds: float = 0
    #: ``BuildArch: noarch``; False: one package per arch the build system builds
    noarch: bool = True
    #: more preamble lines as they are (``Conflicts: ...``, ``Obsoletes: ...``)
    tags: tuple[str, ...] = ()

    def render(self) -> str:
        requires = "".join(f"Requires: {r}\n" for r in self.requires)
        provides = "".join(f"Provides: {p}\n" for p in self.provides)
        provides += "".join(f"{line}\n" for line in self.tags)
        source = "Source0: %{name}-%{version}.tar.gz\n" if self.lookaside else ""
        prep = "%setup -q\n" if self.lookaside else ""
        build = f"sleep {self.build_seconds}\n" if self.build_seconds else ""
        build += (
            "echo 'error: setup.py: No module named pbr' >&2\nexit 1\n"
            if self.broken_build
            else "echo building %{name} %{version}\n"
        )
        payload = (
            "install -m 644 VERSION %{buildroot}/usr/share/%{name}/VERSION\n"
            if self.lookaside
            else "echo %{version} > %{buildroot}/usr/share/%{name}/VERSION\n"
        )
        return textwrap.dedent("""\
            Name: {name}
            Version: {version}
            Release: {release}
            Summary: The {name} package (rpmgate demo)
            License: ASL 2.0
            {buildarch}{source}{requires}{provides}
            %description
            Demo package {name}.

            %prep
            {prep}
            %build
            {build}
            %install
            mkdir -p %{{buildroot}}/usr/share/%{{name}}
            {payload}
            %files
            /usr/share/%{{name}}
            """).format(
            name=self.name,
            version=self.version,
            release=self.release,
            source=source,
            requires=requires,
            provides=provides,
            prep=prep,
            build=build,
            payload=payload,
            buildarch="BuildArch: noarch\n" if self.noarch else "",
        )


INITIAL = {
    "nova": PackageSpec("nova", "12.0.0", lookaside=True),
    "ceilometer": PackageSpec("ceilometer", "8.0.0", requires=("nova >= 12.0.0",)),
    "horizon": PackageSpec("horizon", "9.0.0", requires=("python-django-compat",)),
    "python-django": PackageSpec("python-django", "1.8.0", provides=("python-django-compat",)),
}


#: The classic case the demo and the scenario tests gate, in queue order:
#: (label, project, spec, title)
CLASSIC_CHANGES: tuple[tuple[str, str, PackageSpec, str], ...] = (
    ("A", "nova", PackageSpec("nova", "12.0.1", lookaside=True), "Update to 12.0.1"),
    (
        "B",
        "ceilometer",
        PackageSpec("ceilometer", "8.0.1", requires=("nova >= 12.0.1",)),
        "Update to 8.0.1 (needs nova 12.0.1)",
    ),
    (
        "C",
        "horizon",
        PackageSpec("horizon", "9.0.1", requires=("python-django-compat",), broken_build=True),
        "Update to 9.0.1 (broken build)",
    ),
    (
        "D",
        "python-django",
        PackageSpec("python-django", "1.8.1"),
        "Update to 1.8.1, drop the compat Provides",
    ),
)


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


@dataclass
class World:
    root: Path
    projects: dict[str, PackageSpec] = field(default_factory=lambda: dict(INITIAL))
    _counter: int = 0

    @property
    def remotes(self) -> Path:
        return self.root / "remotes"

    @property
    def lookaside(self) -> Path:
        return self.root / "lookaside"

    def remote(self, project: str) -> Path:
        return self.remotes / f"{project}.git"

    def workdir(self, project: str) -> Path:
        return self.root / "work" / project

    def create(self) -> World:
        for name, spec in self.projects.items():
            bare = self.remote(name)
            bare.mkdir(parents=True, exist_ok=True)
            git(bare, "init", "-q", "--bare", "-b", "main")
            work = self.workdir(name)
            work.mkdir(parents=True, exist_ok=True)
            git(work, "init", "-q", "-b", "main")
            git(work, "remote", "add", "origin", str(bare))
            self._write(name, spec)
            git(work, "add", "-A")
            git(work, "commit", "-q", "-m", f"Import {name} {spec.version}")
            git(work, "push", "-q", "origin", "main")
        return self

    def _write(self, project: str, spec: PackageSpec) -> None:
        work = self.workdir(project)
        (work / f"{project}.spec").write_text(spec.render())
        if spec.lookaside:
            tarball = self._tarball(spec)
            digest = hashlib.sha512(tarball.read_bytes()).hexdigest()
            dest = self.lookaside / spec.name / tarball.name / "sha512" / digest / tarball.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(tarball.read_bytes())
            (work / "sources").write_text(f"SHA512 ({tarball.name}) = {digest}\n")
            (work / ".gitignore").write_text("/*.tar.gz\n")

    def _tarball(self, spec: PackageSpec) -> Path:
        top = f"{spec.name}-{spec.version}"
        src = self.root / "upstream" / top
        src.mkdir(parents=True, exist_ok=True)
        (src / "VERSION").write_text(spec.version + "\n")
        out = self.root / "upstream" / f"{top}.tar.gz"
        # byte-identical for the same version (no gzip timestamp): the sources
        # file of two changes to one version must not differ
        data = (spec.version + "\n").encode()
        with gzip.GzipFile(out, "wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
            info = tarfile.TarInfo(f"{top}/VERSION")
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
        return out

    def propose(self, project: str, spec: PackageSpec, message: str, on: str | None = None) -> str:
        """Commit ``spec`` on a review ref (on top of ``on`` or the branch); return the ref."""
        work = self.workdir(project)
        self._counter += 1
        ref = f"refs/changes/{self._counter:02d}/{self._counter}/1"
        git(work, "fetch", "-q", "origin", "+refs/heads/main:refs/remotes/origin/main")
        if on:
            git(work, "fetch", "-q", "origin", on)
        git(work, "checkout", "-q", "--detach", "FETCH_HEAD" if on else "origin/main")
        self._write(project, spec)
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", message)
        git(work, "push", "-q", "origin", f"HEAD:{ref}")
        return ref

    def push_direct(self, project: str, spec: PackageSpec, message: str) -> str:
        """A commit pushed straight to the branch, bypassing the gate."""
        work = self.workdir(project)
        git(work, "fetch", "-q", "origin", "+refs/heads/main:refs/remotes/origin/main")
        git(work, "checkout", "-q", "--detach", "origin/main")
        self._write(project, spec)
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", message)
        git(work, "push", "-q", "origin", "HEAD:refs/heads/main")
        return git(work, "rev-parse", "HEAD")

    def branch_head(self, project: str) -> str:
        return git(self.remote(project), "rev-parse", "refs/heads/main")

    def config(self, **overrides: Any) -> dict[str, Any]:
        """A config document for this world (YAML-equivalent mapping)."""
        lookaside_url = (
            f"file://{self.lookaside}/{{name}}/{{filename}}/{{hashtype}}/{{hash}}/{{filename}}"
        )
        doc: dict[str, Any] = {
            "state_dir": str(self.root / "state"),
            "listen": {"host": "127.0.0.1", "port": 0},
            "backends": {"local": {"type": "local", "workers": 2}},
            "publishers": {
                "liberty": {
                    "root": str(self.root / "repos" / "liberty"),
                    "arches": ["x86_64"],
                    "keep": 10,
                }
            },
            "projects": {
                name: {
                    "git": str(self.remote(name)),
                    "branch": "main",
                    **({"lookaside": {"url": lookaside_url}} if spec.lookaside else {}),
                }
                for name, spec in self.projects.items()
            },
            "queues": {
                "liberty": {
                    "projects": list(self.projects),
                    "repo": "liberty",
                    "target": "liberty-candidate",
                    "poll_interval": 0,
                    "jobs": ["repoclosure"],
                }
            },
        }
        for key, value in overrides.items():
            doc[key] = value
        return doc
