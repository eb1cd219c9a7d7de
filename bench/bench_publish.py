"""Publishing a generation: full header reads versus metadata reuse.

Builds N small real RPMs with rpmbuild (once), publishes them as generation 1,
then publishes generation 2 with one package replaced.  Reports wall time,
headers read, and the peak RSS of the process.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from publishers.createrepo import Publisher
from repo_state.pool import Pool
from repo_state.state import RepoState
from tests.rpmfactory import build_entry, build_rpms


def run(n: int = 300) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="rpmgate-bench-publish-"))
    pool = Pool(root / "pool")
    entries = []
    start = time.perf_counter()
    for i in range(n):
        built = build_rpms(
            root / "rpms" / str(i), f"pkg{i:04d}", "1.0", requires=(f"pkg{(i + 1) % n:04d}",)
        )
        entries.append(build_entry(built.binaries, pool))
    made = time.perf_counter() - start
    state = RepoState({e.source_name: e for e in entries})
    publisher = Publisher(root / "repo", pool, arches=("x86_64",))

    start = time.perf_counter()
    publisher.publish(1, state, {"kind": "bench"})
    full = time.perf_counter() - start
    full_read = publisher.current().manifest["metadata"]["read"]  # type: ignore[union-attr]

    new = build_entry(build_rpms(root / "rpms" / "new", "pkg0000", "1.1").binaries, pool)
    start = time.perf_counter()
    publisher.publish(2, state.with_build(new), {"kind": "bench"})
    incremental = time.perf_counter() - start
    meta = publisher.current().manifest["metadata"]  # type: ignore[union-attr]
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "packages": n,
        "rpmbuild_s": made,
        "full_publish_s": full,
        "full_headers_read": full_read,
        "incremental_publish_s": incremental,
        "incremental_headers_read": meta["read"],
        "incremental_reused": meta["reused"],
        "peak_rss_mib": rss_mib,
    }


def markdown(publish: dict[str, Any]) -> list[str]:
    return [
        "## Publishing a generation (bench/bench_publish.py)",
        "",
        f"{publish['packages']} real noarch RPMs made with rpmbuild "
        f"({publish['rpmbuild_s']:.1f} s), published as generation 1, then generation 2 "
        "with one package replaced.",
        "",
        "| step | seconds | RPM headers read | metadata reused |",
        "|---|---:|---:|---:|",
        f"| generation 1 (everything new) | {publish['full_publish_s']:.3f} | "
        f"{publish['full_headers_read']} | 0 |",
        f"| generation 2 (one package new) | {publish['incremental_publish_s']:.3f} | "
        f"{publish['incremental_headers_read']} | {publish['incremental_reused']} |",
        "",
        f"Peak RSS of the benchmark process: {publish['peak_rss_mib']:.0f} MiB.",
        "",
    ]


if __name__ == "__main__":
    print(run())
