"""Wall time of `rpmgate demo` (the issue asks for well under five minutes)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def run(repeat: int = 3) -> dict[str, float]:
    rpmgate = Path(sys.executable).with_name("rpmgate")
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = subprocess.run([str(rpmgate), "demo"], capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if out.returncode != 0:
            raise SystemExit(f"demo failed:\n{out.stdout}\n{out.stderr}")
    return {"runs": repeat, "min_s": min(times), "max_s": max(times)}


def markdown(demo: dict[str, float]) -> list[str]:
    return [
        "## `rpmgate demo` wall time (bench/bench_demo.py)",
        "",
        f"{demo['runs']:.0f} runs: {demo['min_s']:.1f} s to {demo['max_s']:.1f} s "
        "(bootstrap of 4 projects and the A-D scenario, real rpmbuild and createrepo_c).",
        "",
    ]


if __name__ == "__main__":
    print(run())
