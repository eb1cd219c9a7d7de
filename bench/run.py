"""Run every benchmark and write docs/benchmarks.md.

.venv/bin/python -m bench.run                    everything (keeps the publish-large section)
.venv/bin/python -m bench.run publish-large [--rounds N] [--packages N]
                                                 only the 20,000-RPM publishing benchmark,
                                                 its section of docs/benchmarks.md rewritten
.venv/bin/python -m bench.run ingest [--runs N]  only the ingestion benchmark (group commit),
                                                 its section rewritten (PostgreSQL too when
                                                 RPMGATE_TEST_DATABASE_URL is set)
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench import (
    bench_baseline,
    bench_demo,
    bench_deps,
    bench_ingest,
    bench_planner,
    bench_publish,
    bench_publish_large,
    bench_status,
    bench_throughput,
)

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def main() -> None:
    planner = bench_planner.run()
    publish = bench_publish.run()
    baseline = bench_baseline.run()
    deps = bench_deps.run()
    demo = bench_demo.run()
    status = bench_status.run()
    ingest = bench_ingest.run()
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
        *bench_status.markdown(status),
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
    kept = _section(OUT.read_text(), LARGE_HEADING) if OUT.exists() else []
    OUT.write_text("\n".join(lines + kept))
    print(OUT.read_text())


#: the section ``publish-large`` owns in docs/benchmarks.md
LARGE_HEADING = "## One changed package in a 20,000-RPM repository"


def _section(text: str, heading: str) -> list[str]:
    """The lines of the section that starts with ``heading`` (up to the next ``## ``)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    if start is None:
        return []
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return [*lines[start:end], ""] if lines[end - 1 : end] != [""] else lines[start:end]


def publish_large(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run publish-large")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--packages", type=int, default=20_000)
    args = parser.parse_args(argv)
    result = bench_publish_large.run(args.packages, args.rounds)
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    section = [
        *bench_publish_large.markdown(result)[:1],
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {platform.platform()}, {cpu} cores "
        f"(shared with other work: load average {os.getloadavg()[0]:.1f} at the end), "
        f"createrepo_c {_createrepo_c_version()}.",
        *bench_publish_large.markdown(result)[1:],
    ]
    write_section(section)


def ingest_only(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run ingest")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    write_section(bench_ingest.markdown(bench_ingest.run(args.runs)))


def write_section(section: list[str]) -> None:
    """Replace the section of docs/benchmarks.md titled ``section[0]`` (or append it)."""
    text = OUT.read_text() if OUT.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    old = _section(text, section[0])
    if old:
        start = lines.index(old[0])
        lines[start : start + len(old)] = section
    else:
        lines += ["", *section]
    OUT.write_text("\n".join(lines).rstrip("\n") + "\n")
    print("\n".join(section))


def _createrepo_c_version() -> str:
    out = subprocess.run(["createrepo_c", "--version"], capture_output=True, text=True).stdout
    return out.split()[1] if out.startswith("Version:") else out.strip()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    if sys.argv[1:2] == ["publish-large"]:
        publish_large(sys.argv[2:])
    elif sys.argv[1:2] == ["ingest"]:
        ingest_only(sys.argv[2:])
    else:
        main()
