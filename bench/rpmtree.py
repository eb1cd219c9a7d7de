"""A large tree of real RPMs for the publishing benchmark, cached between runs.

rpmbuild takes a fraction of a second per invocation, so 20,000 spec files
would take hours.  One spec file can produce many binary packages instead:
each batch spec declares ``per_spec`` subpackages (``bench-b<batch>-p<i>``),
each owning one file and requiring its neighbour, so every RPM is a real one
with its own header, NEVRA, file list and dependency; rpmbuild runs once per
batch.  The tree is cached under ``cache_dir`` (``RPMGATE_BENCH_CACHE``, by
default ``~/.cache/rpmgate-bench``) keyed by its size, so only the first run
pays for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DEFAULT_CACHE = Path(os.environ.get("RPMGATE_BENCH_CACHE", Path.home() / ".cache/rpmgate-bench"))


def _spec(batch: int, per_spec: int, version: str, only: int | None = None) -> str:
    numbers = range(per_spec) if only is None else (only,)
    lines = [
        f"Name: bench-b{batch:03d}",
        f"Version: {version}",
        "Release: 1",
        "Summary: rpmgate publishing benchmark batch",
        "License: MIT",
        "BuildArch: noarch",
        "",
        "%description",
        "A batch of generated packages.",
        "",
    ]
    for i in numbers:
        name = f"bench-b{batch:03d}-p{i:04d}"
        lines += [
            f"%package -n {name}",
            f"Summary: generated package {i} of batch {batch}",
            f"Requires: bench-b{batch:03d}-p{(i + 1) % per_spec:04d}",
            f"Provides: bench-cap-{batch}-{i} = {version}",
            "",
            f"%description -n {name}",
            f"Generated package {i} of batch {batch}.",
            "",
            f"%files -n {name}",
            f"/usr/share/bench/b{batch:03d}/p{i:04d}.txt",
            "",
        ]
    install = [
        "%install",
        f"mkdir -p %{{buildroot}}/usr/share/bench/b{batch:03d}",
        *(
            f"echo {batch}-{i}-{version} > %{{buildroot}}/usr/share/bench/b{batch:03d}/p{i:04d}.txt"
            for i in numbers
        ),
        "",
    ]
    return "\n".join(lines[:10] + install + lines[10:])


def _rpmbuild(spec_text: str, workdir: Path, out: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    spec = workdir / "bench.spec"
    spec.write_text(spec_text)
    subprocess.run(
        [
            "rpmbuild",
            "-bb",
            "--quiet",
            "--define",
            f"_topdir {workdir}",
            "--define",
            f"_rpmdir {out}",
            "--define",
            "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm",
            "--define",
            "_binary_payloadio w.ufdio",  # no payload compression: fast, still real
            str(spec),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    shutil.rmtree(workdir)


def generate(n: int = 20_000, per_spec: int = 500, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """A directory of ``n`` real noarch RPMs plus ``changed/`` (one of them, version 2)."""
    top = cache_dir / f"rpms-{n}-{per_spec}"
    done = top / ".complete"
    if done.exists():
        return top
    shutil.rmtree(top, ignore_errors=True)
    (top / "rpms").mkdir(parents=True)
    start = time.perf_counter()
    batches = (n + per_spec - 1) // per_spec

    def one(batch: int) -> None:
        count = min(per_spec, n - batch * per_spec)
        _rpmbuild(_spec(batch, count, "1"), top / f"work-{batch}", top / "rpms")

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(one, range(batches)))
    _rpmbuild(_spec(0, per_spec, "2", only=0), top / "work-changed", top / "changed")
    done.write_text(f"{time.perf_counter() - start:.1f}\n")
    return top


def generation_seconds(top: Path) -> float:
    return float((top / ".complete").read_text())


if __name__ == "__main__":
    import sys

    tree = generate(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
    print(tree, generation_seconds(tree), "s")
