"""What the baseline costs an item: one more repository tree, and reading it to blame.

Builds N small real RPMs with rpmbuild (once; each requires the one before, so
any prefix of them is closed), publishes the first ``size`` as generation 1,
and writes one item's trees the way ``gate/checks.py`` does: the item is
tested on generation 1 + two builds ahead (new versions of two packages) + its
own build (a new version of a third).

- *speculative only*: the tree written before the baseline existed, reusing
  generation 1's metadata;
- *baseline + speculative*: ``Checks._write_trees``: the baseline reusing
  generation 1's metadata, then the speculative tree reusing the baseline's.

Then the repoclosure job on that item, without and with the baseline, on a
clean repository and on one where a published package already requires
something missing (the only case in which the job reads the baseline).
Each figure is the median of ``repeats`` runs.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gate.jobs.base import JobContext
from gate.jobs.dependencies import Repoclosure
from publishers.createrepo import Publisher
from publishers.repotree import write_repo_tree
from repo_state.pool import Pool
from repo_state.state import BuildEntry, RepoState
from tests.rpmfactory import build_entry, build_rpms

ARCHES = ("x86_64",)


def _median(repeats: int, run: Callable[[int], float]) -> float:
    return statistics.median(run(i) for i in range(repeats))


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _measure(
    root: Path,
    pool: Pool,
    published: RepoState,
    ahead: list[BuildEntry],
    own: BuildEntry,
    repeats: int,
    *,
    broken: bool = False,
) -> dict[str, float]:
    publisher = Publisher(root / "repo", pool, arches=ARCHES)
    publisher.publish(1, published, {"kind": "bench"})
    current = publisher.current()
    assert current is not None
    baseline = published
    for entry in ahead:
        baseline = baseline.with_build(entry)
    speculative = baseline.with_build(own)
    trees = root / "trees"

    def speculative_only(i: int) -> float:
        return _timed(
            lambda: write_repo_tree(speculative, pool, trees / f"s{i}", ARCHES, current.path)
        )

    def with_baseline(i: int) -> float:
        def write() -> None:
            write_repo_tree(baseline, pool, trees / f"b{i}-baseline", ARCHES, current.path)
            write_repo_tree(speculative, pool, trees / f"b{i}", ARCHES, trees / f"b{i}-baseline")

        return _timed(write)

    def job(with_base: bool) -> Callable[[int], float]:
        def run(i: int) -> float:
            ctx = JobContext(
                item_id=1,
                attempt=i,
                repo_path=trees / "b0",
                repo_url="http://bench.invalid/",
                arches=ARCHES,
                base_repos=(),
                log_path=root / "logs" / f"{with_base}-{i}.log",
                baseline_path=trees / "b0-baseline" if with_base else None,
            )
            start = time.perf_counter()
            result = Repoclosure().run_blocking(ctx)
            elapsed = time.perf_counter() - start
            # the scenario is the one described: only a pre-broken base without a baseline fails
            assert result.passed == (with_base or not broken), result
            return elapsed

        return run

    out = {
        "speculative_only_s": _median(repeats, speculative_only),
        "with_baseline_s": _median(repeats, with_baseline),
        "job_s": _median(repeats, job(False)),
        "job_with_baseline_s": _median(repeats, job(True)),
    }
    shutil.rmtree(trees)
    shutil.rmtree(root / "repo")
    return out


def run(sizes: tuple[int, ...] = (300, 1000), repeats: int = 5) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="rpmgate-bench-baseline-"))
    pool = Pool(root / "pool")
    n = max(sizes)
    start = time.perf_counter()
    entries = [
        build_entry(
            build_rpms(
                root / "rpms" / str(i), f"pkg{i:04d}", "1.0", requires=(f"pkg{i - 1:04d}",)
            ).binaries
            if i
            else build_rpms(root / "rpms" / "0", "pkg0000", "1.0").binaries,
            pool,
        )
        for i in range(n)
    ]
    updates = [
        build_entry(
            build_rpms(
                root / "rpms" / f"u{i}", f"pkg{i:04d}", "1.1", requires=(f"pkg{i - 1:04d}",)
            ).binaries,
            pool,
        )
        for i in (1, 2, 3)
    ]
    broken = build_entry(
        build_rpms(
            root / "rpms" / "broken", "broken", "1.0", requires=("does-not-exist",)
        ).binaries,
        pool,
    )
    made = time.perf_counter() - start
    rows = []
    for size in sizes:
        published = RepoState({e.source_name: e for e in entries[:size]})
        clean = _measure(root / f"clean{size}", pool, published, updates[:2], updates[2], repeats)
        dirty = _measure(
            root / f"broken{size}",
            pool,
            published.with_build(broken),
            updates[:2],
            updates[2],
            repeats,
            broken=True,
        )
        rows.append(
            {
                "packages": size,
                **clean,
                "broken_job_s": dirty["job_s"],
                "broken_job_with_baseline_s": dirty["job_with_baseline_s"],
            }
        )
    shutil.rmtree(root)
    return {"rpmbuild_s": made, "repeats": repeats, "rows": rows}


def markdown(result: dict[str, Any]) -> list[str]:
    """The section of docs/benchmarks.md."""
    return [
        "## The baseline: cost per item (bench/bench_baseline.py)",
        "",
        "An item tested on generation 1 + two builds ahead + its own build; real RPMs "
        f"({result['rpmbuild_s']:.1f} s of rpmbuild), median of {result['repeats']} runs. "
        "Trees: the speculative tree alone (before the baseline) versus the baseline and "
        "the speculative tree on top of its metadata (`Checks._write_trees`). Repoclosure: "
        "on a clean repository, where the baseline is never read, and on one with a "
        "package already broken in the base (the baseline is read to find that out; "
        "without a baseline that run fails the item). "
        "`.venv/bin/python -m bench.bench_baseline` runs only this one.",
        "",
        "| packages | speculative tree s | baseline + speculative s | repoclosure s "
        "| with baseline s | broken base: repoclosure s | with baseline s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {r['packages']} | {r['speculative_only_s']:.3f} | {r['with_baseline_s']:.3f} "
            f"| {r['job_s']:.3f} | {r['job_with_baseline_s']:.3f} | {r['broken_job_s']:.3f} "
            f"| {r['broken_job_with_baseline_s']:.3f} |"
            for r in result["rows"]
        ],
        "",
        "The baseline costs each attempt "
        + ", ".join(
            f"{(r['with_baseline_s'] - r['speculative_only_s']) * 1000:.0f} ms "
            f"at {r['packages']} packages"
            for r in result["rows"]
        )
        + " (one more metadata write and a tree of hard links; no RPM header is read "
        "twice), next to seconds of rpmbuild or minutes of Koji per item.",
        "",
    ]


if __name__ == "__main__":
    print("\n".join(markdown(run())))
