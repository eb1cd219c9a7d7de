"""``rpmgate check-config`` for a local backend's section (registered in gate/drivers.py)."""

from __future__ import annotations

import platform

from gate.config import Config
from gate.config_check import Finding
from gate.registry import DriverConfig


def offline(config: Config, name: str, backend: DriverConfig) -> list[Finding]:
    """Queue arches this backend does not build arch-specific packages for.

    ``rpmbuild`` on this host builds its own arch (and noarch, which is in every
    tree); a job on another arch tests a tree without the arch-specific
    packages (docs/pipelines.md).
    """
    host = platform.machine()
    findings = []
    for qname, queue in config.queues.items():
        if queue.backend != name:
            continue
        for i, arch in enumerate(queue.arches or ()):
            if arch != host:
                findings.append(
                    Finding(
                        f"queues.{qname}.arches.{i}",
                        f"the local backend builds on this host ({host}): the {arch} tree "
                        "gets the noarch packages only, not arch-specific ones",
                        "build with a Koji backend, or gate only noarch packages on "
                        "this arch (docs/pipelines.md)",
                        warning=True,
                        host=True,
                    )
                )
    return findings
