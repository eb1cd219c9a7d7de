"""Run every benchmark and write docs/benchmarks.md.

.venv/bin/python -m bench.run            every benchmark; rewrites the file
.venv/bin/python -m bench.run ingest     one of them (see SUBCOMMANDS); rewrites its section
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import (
    bench_baseline,
    bench_demo,
    bench_deps,
    bench_ingest,
    bench_planner,
    bench_publish,
)

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"

#: ``python -m bench.run <name>``: one benchmark, its section of the file rewritten
SUBCOMMANDS: dict[str, Callable[[], list[str]]] = {
    "ingest": lambda: bench_ingest.markdown(bench_ingest.run()),
}


def replace_section(text: str, section: list[str]) -> str:
    """``text`` with the ``## `` section titled as ``section[0]`` replaced (or appended)."""
    lines = text.splitlines()
    if section[0] not in lines:
        return "\n".join([*lines, "", *section]).rstrip("\n") + "\n"
    start = lines.index(section[0])
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join([*lines[:start], *section, *lines[end:]]).rstrip("\n") + "\n"


def run_one(name: str) -> None:
    OUT.write_text(replace_section(OUT.read_text(), SUBCOMMANDS[name]()))
    print(OUT.read_text())


def main() -> None:
    planner = bench_planner.run()
    publish = bench_publish.run()
    baseline = bench_baseline.run()
    deps = bench_deps.run()
    demo = bench_demo.run()
    ingest = bench_ingest.run()
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
        *bench_baseline.markdown(baseline),
        *bench_deps.markdown(deps),
        *bench_ingest.markdown(ingest),
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
    if len(sys.argv) > 1:
        if sys.argv[1] not in SUBCOMMANDS:
            sys.exit(f"usage: python -m bench.run [{' | '.join(SUBCOMMANDS)}]")
        run_one(sys.argv[1])
    else:
        main()
