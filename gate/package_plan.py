"""What to build of a multi-package project at a commit (the I/O side of gate/packages.py).

Reads the commit's tree listing and every package's spec through the merger's
clone (real git), then plans: the order, each package's input digest, and
which packages reuse their previous build.  A spec missing at that commit is
the change's fault: :class:`MissingSpec` names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from gate.packages import (
    PackageConfig,
    PackageStep,
    PreviousBuild,
    built_after,
    input_digests,
    package_order,
    plan_packages,
    spec_names,
)


class TreeReader(Protocol):
    """The part of :class:`gate.merger.Merger` a plan reads."""

    async def listing(self, project: str, url: str, commit: str) -> dict[str, str]: ...

    async def file_at(self, project: str, url: str, commit: str, path: str) -> str | None: ...


class MissingSpec(Exception):
    """A package's spec is not in the commit: the change cannot be built."""


async def plan_at(
    git: TreeReader,
    project: str,
    url: str,
    commit: str,
    packages: Mapping[str, PackageConfig],
    previous: Mapping[str, PreviousBuild],
) -> list[PackageStep]:
    """The packages of ``project`` at ``commit``, in build order, each built or reused."""
    listing = await git.listing(project, url, commit)
    specs = {}
    for name, pkg in packages.items():
        if pkg.spec not in listing:
            raise MissingSpec(f"package {name}: {pkg.spec} is not in commit {commit[:12]}")
        text = await git.file_at(project, url, commit, pkg.spec)
        specs[name] = spec_names(text or "")
    after = built_after(packages, specs, where=f"projects.{project}.packages")
    order = package_order(after, f"projects.{project}.packages")
    return plan_packages(order, input_digests(packages, after, listing), previous, after)
