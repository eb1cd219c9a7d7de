"""One changed package into a 20,000-RPM repository: rpmgate against ``createrepo_c --update``.

The tree comes from :mod:`bench.rpmtree` (real RPMs, cached).  Preparation
(cached too, under the same cache directory): every RPM goes into a
:class:`~repo_state.pool.Pool`, one source package per RPM; generation 1 is
published with all of them; two plain directories hold the same RPM files
with ``createrepo_c`` metadata (one made with ``--no-database``, one with the
default SQLite databases).

Each measured round replaces one package (``bench-b000-p0000`` 1-1 <-> 2-1,
alternating, so every round is "one package changed" against the current
state) and times, each in a fresh child process whose peak RSS is read from
``wait4(2)``:

- ``rpmgate (cold)``: a new process opens the publisher, reads the current
  state from disk, publishes generation N+1 and collects old ones (``keep=5``),
  which is what the daemon does after a restart; the time inside the process
  (after imports) is reported beside the process' wall time;
- ``createrepo_c --update --no-database`` and ``createrepo_c --update``
  on their trees, with the RPM file swapped first.

``rpmgate (warm)`` is the steady state of the daemon: one process publishing
round after round, the previous generation's state in memory (time only: a
process' peak RSS cannot be split between rounds).

    .venv/bin/python -m bench.run publish-large [--rounds N] [--packages N]
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from publishers.createrepo import Publisher
from repo_state.pool import Pool
from repo_state.state import Artifact, BuildEntry, RepoState

CHANGED = "bench-b000-p0000"


def _artifact(path: Path, checksum: str) -> Artifact:
    # <name>-<version>-<release>.noarch.rpm, as rpmtree names them
    stem = path.name.removesuffix(".noarch.rpm")
    name, version, release = stem.rsplit("-", 2)
    batch = name.rsplit("-", 1)[0]
    return Artifact(
        name=name,
        epoch=0,
        version=version,
        release=release,
        arch="noarch",
        sourcerpm=f"{batch}-{version}-{release}.src.rpm",
        checksum=checksum,
        size=path.stat().st_size,
    )


def _entry(artifact: Artifact) -> BuildEntry:
    nvr = f"{artifact.name}-{artifact.version}-{artifact.release}"
    return BuildEntry(artifact.name, nvr, (artifact,), origin="bench")


def prepare(n: int, cache_dir: Path | None = None) -> tuple[Path, dict[str, float]]:
    """The prepared work directory for ``n`` RPMs (under ``cache_dir``, by default
    rpmtree's), and how long each preparation step took."""
    # here, not at the top: the measured child imports this module, and should carry
    # what publishing needs, not the benchmark's own tools (rpmtree's thread pool
    # imports concurrent.futures, and that logging)
    from bench import rpmtree

    cache_dir = rpmtree.DEFAULT_CACHE if cache_dir is None else cache_dir
    tree = rpmtree.generate(n, cache_dir=cache_dir)
    work = cache_dir / f"publish-{n}"
    ready = work / ".ready.json"
    if ready.exists():
        return work, {
            "rpmbuild_s": rpmtree.generation_seconds(tree),
            **json.loads(ready.read_text()),
        }
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pool = Pool(work / "pool")
    timings = {}
    start = time.perf_counter()
    entries = {}
    for path in sorted((tree / "rpms").iterdir()):
        entry = _entry(_artifact(path, pool.add(path)))
        entries[entry.source_name] = entry
    changed_rpm = next((tree / "changed").iterdir())
    changed = _entry(_artifact(changed_rpm, pool.add(changed_rpm)))
    (work / "entries.json").write_text(
        json.dumps(
            {
                "original": entries[CHANGED].to_dict(),
                "changed": changed.to_dict(),
            }
        )
    )
    timings["pool_s"] = time.perf_counter() - start
    start = time.perf_counter()
    Publisher(work / "repo", pool, arches=("x86_64",)).publish(
        1, RepoState(entries), {"kind": "bench"}
    )
    timings["first_generation_s"] = time.perf_counter() - start
    for name, options in (("cr-nodb", ["--no-database"]), ("cr-db", [])):
        directory = work / name
        directory.mkdir()
        for entry in entries.values():
            artifact = entry.artifacts[0]
            os.link(pool.path_for(artifact.checksum), directory / artifact.filename)
        start = time.perf_counter()
        subprocess.run(["createrepo_c", "--quiet", *options, str(directory)], check=True)
        timings[f"createrepo_c_{name}_s"] = time.perf_counter() - start
    ready.write_text(json.dumps(timings))
    return work, {"rpmbuild_s": rpmtree.generation_seconds(tree), **timings}


def _entries(work: Path) -> tuple[BuildEntry, BuildEntry]:
    data = json.loads((work / "entries.json").read_text())
    return BuildEntry.from_dict(data["original"]), BuildEntry.from_dict(data["changed"])


def _other(state: RepoState, original: BuildEntry, changed: BuildEntry) -> BuildEntry:
    return original if state.get(CHANGED) == changed else changed


def _swap_rpm(work: Path, directory: Path) -> None:
    original, changed = _entries(work)
    pool = Pool(work / "pool")
    old, new = original.artifacts[0], changed.artifacts[0]
    if (directory / new.filename).exists():
        old, new = new, old
    (directory / old.filename).unlink()
    os.link(pool.path_for(new.checksum), directory / new.filename)


#: Run by a small interpreter (``-S``: about 8 MiB): fork, exec the command, and write
#: the command's wall seconds and peak RSS (KiB, from wait4(2)) to the file argv[1].
_PEAK = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
code = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as out:
    out.write(f"{time.perf_counter() - start} {usage.ru_maxrss} {code}")
"""


def _measure(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and stdout of one child process.

    Not this process' own child: on Linux a child's ``ru_maxrss`` starts at the RSS
    of the process it was spawned from (``exec`` carries the old address space's
    high-water mark over), and this one holds the benchmark's imports (100 MiB and
    more under ``bench.run``), which every figure would then read.  A small
    interpreter spawns it instead, so that the floor is its 8 MiB, far below any
    figure here.
    """
    with tempfile.NamedTemporaryFile("r", prefix="rpmgate-peak-") as report:
        proc = subprocess.run(
            [sys.executable, "-S", "-c", _PEAK, report.name, *cmd],
            stdout=subprocess.PIPE,
            check=True,
        )
        wall, rss_kib, code = report.read().split()
    if int(code) != 0:
        raise RuntimeError(f"{cmd} exited {code}")
    return float(wall), int(rss_kib) / 1024, proc.stdout.decode()


def child(work: Path) -> None:
    """One cold publish (run in a fresh process by :func:`run`)."""
    rss_imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    publisher = Publisher(work / "repo", Pool(work / "pool"), arches=("x86_64",))
    state = publisher.state()
    original, changed = _entries(work)
    state = state.with_build(_other(state, original, changed))
    loaded = time.perf_counter()
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    current = publisher.current()
    assert current is not None
    generation = publisher.publish(current.number + 1, state, {"kind": "bench"})
    published = time.perf_counter()
    publisher.gc()
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "load_s": loaded - start,
                "publish_s": published - loaded,
                "gc_s": done - published,
                "in_process_s": done - start,
                "rss_imported_mib": rss_imported,
                "rss_loaded_mib": rss_loaded,
                "read": generation.manifest["metadata"]["read"],
                "reused": generation.manifest["metadata"]["reused"],
            }
        )
    )


def _stats(values: list[float]) -> dict[str, float]:
    import statistics  # not at the top, for the child's sake (see prepare)

    return {"min": min(values), "median": statistics.median(values)}


def run(n: int = 20_000, rounds: int = 3) -> dict[str, Any]:
    work, prep = prepare(n)
    python = sys.executable
    cold_wall: list[float] = []
    cold_rss: list[float] = []
    cold_inside: list[float] = []
    cold_loaded_rss: list[float] = []
    cold_imported_rss: list[float] = []
    details: list[dict[str, float]] = []
    cr: dict[str, tuple[list[float], list[float]]] = {"cr-nodb": ([], []), "cr-db": ([], [])}
    for _ in range(rounds):
        wall, rss, out = _measure([python, "-m", "bench.bench_publish_large", "child", str(work)])
        detail = json.loads(out)
        cold_wall.append(wall)
        cold_rss.append(rss)
        cold_inside.append(detail["in_process_s"])
        cold_loaded_rss.append(detail["rss_loaded_mib"])
        cold_imported_rss.append(detail["rss_imported_mib"])
        details.append(detail)
        for name, options in (("cr-nodb", ["--no-database"]), ("cr-db", [])):
            _swap_rpm(work, work / name)
            wall, rss, _ = _measure(
                ["createrepo_c", "--quiet", "--update", *options, str(work / name)]
            )
            cr[name][0].append(wall)
            cr[name][1].append(rss)
    # the daemon's steady state: one process, the previous state in memory
    publisher = Publisher(work / "repo", Pool(work / "pool"), arches=("x86_64",))
    original, changed = _entries(work)
    publisher.state()
    warm: list[float] = []
    for _ in range(rounds):
        current = publisher.current()
        assert current is not None
        start = time.perf_counter()
        state = publisher.state()
        state = state.with_build(_other(state, original, changed))
        publisher.publish(current.number + 1, state, {"kind": "bench"})
        publisher.gc()
        warm.append(time.perf_counter() - start)
    return {
        "packages": n,
        "rounds": rounds,
        "prepare": prep,
        "rpmgate_cold_wall": _stats(cold_wall),
        "rpmgate_cold_inside": _stats(cold_inside),
        "rpmgate_cold_rss": _stats(cold_rss),
        "rpmgate_cold_loaded_rss": _stats(cold_loaded_rss),
        "rpmgate_cold_imported_rss": _stats(cold_imported_rss),
        "rpmgate_warm": _stats(warm),
        "rpmgate_details": details,
        "cr_nodb_wall": _stats(cr["cr-nodb"][0]),
        "cr_nodb_rss": _stats(cr["cr-nodb"][1]),
        "cr_db_wall": _stats(cr["cr-db"][0]),
        "cr_db_rss": _stats(cr["cr-db"][1]),
    }


def markdown(r: dict[str, Any]) -> list[str]:
    base = r["cr_nodb_wall"]["median"]
    rows = [
        ("rpmgate, warm (daemon steady state, in process)", r["rpmgate_warm"], None),
        ("rpmgate, cold: inside the process (after imports)", r["rpmgate_cold_inside"], None),
        ("rpmgate, cold: whole process", r["rpmgate_cold_wall"], r["rpmgate_cold_rss"]),
        ("`createrepo_c --update --no-database`", r["cr_nodb_wall"], r["cr_nodb_rss"]),
        ("`createrepo_c --update` (default, with SQLite)", r["cr_db_wall"], r["cr_db_rss"]),
    ]
    prep = r["prepare"]
    d = r["rpmgate_details"][-1]
    lines = [
        "## One changed package in a 20,000-RPM repository (bench/bench_publish_large.py)",
        "",
        f"`.venv/bin/python -m bench.run publish-large` ({r['packages']} real noarch RPMs from "
        f"bench/rpmtree.py: rpmbuild of {r['packages'] // 500} batch specs took "
        f"{prep['rpmbuild_s']:.0f} s once, cached; pooling them {prep['pool_s']:.0f} s, "
        f"generation 1 {prep['first_generation_s']:.0f} s, the two createrepo_c trees "
        f"{prep['createrepo_c_cr-nodb_s']:.0f} s and {prep['createrepo_c_cr-db_s']:.0f} s). "
        f"{r['rounds']} rounds, each replacing one package; every figure is min / median over "
        "the rounds; RSS is the child process' peak from wait4(2), read by a small "
        "interpreter that spawns it (`_measure`: spawned from the benchmark's process, a "
        "child's peak would start at that process' RSS).",
        "",
        "| what | wall min s | wall median s | ratio to `--no-database` (median) "
        "| peak RSS median MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, wall, rss in rows:
        rss_text = f"{rss['median']:.1f}" if rss else "-"
        lines.append(
            f"| {label} | {wall['min']:.3f} | {wall['median']:.3f} | "
            f"{wall['median'] / base:.2f} | {rss_text} |"
        )
    lines += [
        "",
        f"Inside the last cold round: reading the current state {d['load_s']:.3f} s, "
        f"publishing {d['publish_s']:.3f} s ({d['read']} header read, {d['reused']} packages' "
        f"metadata reused), gc {d['gc_s']:.3f} s.",
        "",
        "Peak RSS of the cold process (medians): "
        f"{r['rpmgate_cold_imported_rss']['median']:.1f} MiB once its modules are imported "
        "(the interpreter, createrepo_c's bindings with the libraries they bundle, the "
        "publisher), "
        f"{r['rpmgate_cold_loaded_rss']['median']:.1f} MiB once the repo state of "
        f"{r['packages']} builds is read (which the daemon holds in memory anyway), "
        f"{r['rpmgate_cold_rss']['median']:.1f} MiB at the end: publishing and collecting "
        f"added {r['rpmgate_cold_rss']['median'] - r['rpmgate_cold_loaded_rss']['median']:.1f}"
        " MiB.",
        "",
    ]
    return lines


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        child(Path(sys.argv[2]))
    else:
        print(json.dumps(run(), indent=2))
