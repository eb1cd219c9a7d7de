"""Run every benchmark and write docs/benchmarks.md.

.venv/bin/python -m bench.run
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from bench import (
    bench_baseline,
    bench_demo,
    bench_deps,
    bench_planner,
    bench_publish,
    bench_throughput,
)

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def main() -> None:
    planner = bench_planner.run()
    publish = bench_publish.run()
    baseline = bench_baseline.run()
    deps = bench_deps.run()
    demo = bench_demo.run()
    throughput = bench_throughput.run()
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# Benchmarks",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {platform.platform()}, {cpu} cores, "
        f"Python {platform.python_version()}, with `.venv/bin/python -m bench.run` "
        "(which rewrites this file).",
        "",
        *bench_planner.markdown(planner),
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
        *bench_throughput.markdown(throughput),
        *bench_baseline.markdown(baseline),
        *bench_deps.markdown(deps),
        "## `rpmgate demo` wall time (bench/bench_demo.py)",
        "",
        f"{demo['runs']} runs: {demo['min_s']:.1f} s to {demo['max_s']:.1f} s "
        "(bootstrap of 4 projects and the A-D scenario, real rpmbuild and createrepo_c).",
        "",
        "## Koji: HTTP requests per poll cycle",
        "",
        "Measured by `tests/test_koji_backend.py -k flat` against the fake hub: one "
        "`multiCall` request per steady poll cycle at 1, 50 and 200 tasks in flight.",
        "",
    ]
    OUT.write_text("\n".join(lines))
    print(OUT.read_text())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
