#!/usr/bin/env python3
"""Build rpmgate's wheel on the control host, reproducibly, for the role's install step.

    build_wheel.py SOURCE CACHE_DIR

SOURCE is a source tree or a pip requirement (``rpmgate==0.2.0``).  A tree is
copied first (its git-visible files, or everything but caches and virtualenvs
when it is not a git checkout), because setuptools builds in the tree and a
stale ``build/lib`` would put deleted modules back into the wheel.  With
``SOURCE_DATE_EPOCH`` fixed, the same source gives the same wheel bytes, so
the wheel's sha256 names the code: the role reinstalls only when it changes.

Prints one JSON line: {"path": ..., "sha256": ...}.  The wheel is kept in
CACHE_DIR/<sha256>/ (the newest five builds are kept).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# 1980-01-01: the earliest time a zip file can record
EPOCH = "315532800"
KEEP = 5
NOT_SOURCE = (
    ".git",
    ".venv",
    "venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    ".mypy_cache",
    ".tox",
)


def source_files(tree: Path) -> list[Path] | None:
    """Tracked and untracked-but-not-ignored files, or None outside a git checkout."""
    try:
        out = subprocess.run(
            [
                "git",
                "-C",
                str(tree),
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return [Path(name) for name in out.decode().split("\0") if name]


def stage(tree: Path, into: Path) -> None:
    files = source_files(tree)
    if files is None:
        shutil.copytree(tree, into, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCE))
        return
    for rel in files:
        src = tree / rel
        if not src.is_file():
            continue  # deleted in the work tree
        (into / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, into / rel, follow_symlinks=False)


def build(source: str, out: Path) -> Path:
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    with tempfile.TemporaryDirectory(prefix="rpmgate-wheel-") as tmp:
        target = source
        if Path(source).is_dir():
            target = str(Path(tmp) / "src")
            stage(Path(source).resolve(), Path(target))
        wheels = Path(tmp) / "wheels"
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), target],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if result.returncode != 0:
            sys.exit(f"pip wheel {source} failed:\n{result.stdout}{result.stderr}")
        built = sorted(wheels.glob("*.whl"))
        if len(built) != 1:
            sys.exit(f"pip wheel {source} made {len(built)} wheels, expected one")
        digest = hashlib.sha256(built[0].read_bytes()).hexdigest()
        final = out / digest / built[0].name
        if not final.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(built[0], final)
        os.utime(final.parent)  # the newest use, for pruning
    return final


def prune(out: Path) -> None:
    builds = sorted((d for d in out.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
    for old in builds[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    out = Path(sys.argv[2]).expanduser()
    wheel = build(sys.argv[1], out)
    prune(out)
    print(json.dumps({"path": str(wheel), "sha256": wheel.parent.name}))


if __name__ == "__main__":
    main()
