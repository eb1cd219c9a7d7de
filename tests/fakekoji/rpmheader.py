"""RPM headers read with ``rpm -qp`` (the fake has no rpm Python bindings)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

_HEADER_QF = (
    "%{NAME}\\n%{VERSION}\\n%{RELEASE}\\n%{EPOCH}\\n%{ARCH}\\n%{SIGMD5}\\n%{BUILDTIME}\\n"
    "%{SOURCERPM}\\n[%{BUILDARCHS} ]\\n[%{EXCLUSIVEARCH} ]\\n[%{EXCLUDEARCH} ]\\n"
    "%{PACKAGER}\\n%{VENDOR}\\n%{DISTRIBUTION}\\n"
)


def read_header(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["rpm", "-qp", "--nosignature", "--qf", _HEADER_QF, str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    (name, version, release, epoch, arch, sigmd5, buildtime, sourcerpm) = out[:8]
    buildarchs, exclusivearch, excludearch, packager, vendor, distribution = out[8:14]

    def field(value: str) -> str | None:
        return None if value == "(none)" else value

    return {
        "name": name,
        "version": version,
        "release": release,
        "epoch": None if epoch == "(none)" else int(epoch),
        "arch": arch,
        "sigmd5": sigmd5,
        "buildtime": int(buildtime),
        "sourcerpm": sourcerpm,
        # koji.get_header_field: the SRPM header has no SOURCERPM
        "sourcepackage": sourcerpm == "(none)",
        "buildarchs": buildarchs.split(),
        "exclusivearch": exclusivearch.split(),
        "excludearch": excludearch.split(),
        "packager": field(packager),
        "vendor": field(vendor),
        "distribution": field(distribution),
    }


# what koji.rpmdiff.Rpmdiff(ignore='S5TN') compares, as far as rpm -q prints it
_DIFF_QF = (
    "%{NAME} %{EPOCH} %{VERSION} %{RELEASE} %{ARCH}\\n"
    "[R %{REQUIRENEVRS}\\n][P %{PROVIDENEVRS}\\n][C %{CONFLICTNEVRS}\\n][O %{OBSOLETENEVRS}\\n]"
    "[F %{FILENAMES} %{FILEMODES} %{FILEFLAGS} %{FILEUSERNAME} %{FILEGROUPNAME}\\n]"
)


def noarch_hash(path: Path) -> str:
    """Stand-in for koji.rpmdiff.Rpmdiff(f, f, ignore='S5TN').kojihash()."""
    out = subprocess.run(
        ["rpm", "-qp", "--nosignature", "--qf", _DIFF_QF, str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return hashlib.sha256(json.dumps(sorted(out.splitlines())).encode()).hexdigest()
