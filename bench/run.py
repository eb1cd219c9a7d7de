"""Run the benchmarks and write their sections of docs/benchmarks.md.

.venv/bin/python -m bench.run                    every benchmark, each section rewritten
.venv/bin/python -m bench.run NAME [NAME ...]    only these (names: see SECTIONS)
.venv/bin/python -m bench.run publish-large [--rounds N] [--packages N]
                                                 the 20,000-RPM publishing benchmark
.venv/bin/python -m bench.run ingest [--runs N]  the ingestion benchmark (group commit;
                                                 PostgreSQL too when
                                                 RPMGATE_TEST_DATABASE_URL is set)

Each benchmark owns one ``## `` section of docs/benchmarks.md, found by its
heading: a run replaces that section (stamped with the date, the machine, its
load and the command) and leaves every other line of the file as it is, so the
hand-written sections between them (measurements made once, the reasons behind
a default) survive a run.
"""

from __future__ import annotations

import argparse
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
    bench_publish_large,
    bench_status,
    bench_throughput,
)

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"

HEADER = [
    "# Benchmarks",
    "",
    "Each section below says when, on what and with which command it was measured. "
    "`.venv/bin/python -m bench.run` measures every benchmark again and "
    "`.venv/bin/python -m bench.run NAME` one of them (`planner`, `publish`, `throughput`, "
    "`baseline`, `deps`, `status`, `ingest`, `demo`, `publish-large`); a run rewrites "
    "only the sections it measured and keeps the rest of this file, such as the "
    "hand-written sections.",
    "",
]


def _publish_large(argv: list[str]) -> list[str]:
    parser = argparse.ArgumentParser(prog="python -m bench.run publish-large")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--packages", type=int, default=20_000)
    args = parser.parse_args(argv)
    return bench_publish_large.markdown(bench_publish_large.run(args.packages, args.rounds))


def _ingest(argv: list[str]) -> list[str]:
    parser = argparse.ArgumentParser(prog="python -m bench.run ingest")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    return bench_ingest.markdown(bench_ingest.run(args.runs))


def _no_options(measure: Callable[[], list[str]]) -> Callable[[list[str]], list[str]]:
    def section(argv: list[str]) -> list[str]:
        if argv:
            raise SystemExit(f"unexpected arguments: {' '.join(argv)}")
        return measure()

    return section


#: name -> the benchmark's section (its lines, heading first), in the file's order
SECTIONS: dict[str, Callable[[list[str]], list[str]]] = {
    "planner": _no_options(lambda: bench_planner.markdown(bench_planner.run())),
    "publish": _no_options(lambda: bench_publish.markdown(bench_publish.run())),
    "throughput": _no_options(lambda: bench_throughput.markdown(bench_throughput.run())),
    "baseline": _no_options(lambda: bench_baseline.markdown(bench_baseline.run())),
    "deps": _no_options(lambda: bench_deps.markdown(bench_deps.run())),
    "status": _no_options(lambda: bench_status.markdown(bench_status.run())),
    "demo": _no_options(lambda: bench_demo.markdown(bench_demo.run())),
    "ingest": _ingest,
    "publish-large": _publish_large,
}


def stamped(section: list[str], name: str, argv: list[str]) -> list[str]:
    """The section with a line saying when, where and how it was measured."""
    command = " ".join([".venv/bin/python -m bench.run", name, *argv])
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    tools = f", createrepo_c {_createrepo_c_version()}" if name == "publish-large" else ""
    stamp = (
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.platform()}, {cpu} "
        f"cores, Python {platform.python_version()}{tools} (load average "
        f"{os.getloadavg()[0]:.1f} at the end), with `{command}`."
    )
    return [section[0], "", stamp, *section[1:]]


def write_section(section: list[str], out: Path = OUT) -> None:
    """Replace the section of ``out`` titled ``section[0]`` (or append it); keep the rest."""
    text = out.read_text() if out.exists() else "\n".join(HEADER)
    lines = text.splitlines()
    start, end = _bounds(lines, section[0])
    body = [*section]
    while body and body[-1] == "":
        body.pop()
    if start is None:
        lines += ["", *body]
    else:
        follows = [""] if end < len(lines) else []
        lines[start:end] = [*body, *follows]
    out.write_text("\n".join(lines).rstrip("\n") + "\n")


def _bounds(lines: list[str], heading: str) -> tuple[int | None, int]:
    """Where the section titled ``heading`` starts, and where the next ``## `` one does."""
    start = next((i for i, line in enumerate(lines) if line == heading), None)
    if start is None:
        return None, len(lines)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return start, end


def main(argv: list[str]) -> None:
    if argv and argv[0] in SECTIONS:
        runs = [(argv[0], argv[1:])]
    elif argv:
        raise SystemExit(f"unknown benchmark {argv[0]!r}; one of: {', '.join(SECTIONS)}")
    else:
        runs = [(name, []) for name in SECTIONS]
    for name, args in runs:
        section = stamped(SECTIONS[name](args), name, args)
        write_section(section)
        print("\n".join(section))


def _createrepo_c_version() -> str:
    out = subprocess.run(["createrepo_c", "--version"], capture_output=True, text=True).stdout
    return out.split()[1] if out.startswith("Version:") else out.strip()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main(sys.argv[1:])
