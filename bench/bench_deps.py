"""The dependency jobs on a 20,000-package repository, cold and with the ``.solv`` cache.

No RPM is built: primary.xml and filelists.xml are written directly (the jobs
read nothing else, except the headers of RPMs whose files conflict, and this
repository has no file conflict).  The first 100 packages are libraries that
require nothing; every other package requires two of them (one with a
version), a file of a third (``/usr/bin/pkgNNNNN``, in primary) and a file of
a fourth under ``/usr/share`` (only in filelists); every 50th has a rich
``or`` requirement on its predecessor, every 100th a ``Conflicts``, every
200th an ``Obsoletes``; each ships five files.

The item updates one library (some 800 packages need it), so the baseline is
the same 20,000 packages with its old version.  Each job runs

- *cold*: an empty cache: both trees are parsed from XML;
- *cached base*: the baseline's ``.solv`` is in the cache (the speculative
  tree, new for every item, is parsed);
- *all cached*: the same item again (a restarted job).

.venv/bin/python -m bench.bench_deps [packages]
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import createrepo_c as cr

from gate.jobs.base import JobContext
from gate.jobs.dependencies import Conflicts, DependencyJob, Installability, Repoclosure, Upgrade

PACKAGES = 20_000
ARCH = "x86_64"
#: packages 0..LIBRARIES-1 require nothing; every other one needs a few of them
LIBRARIES = 100
#: the item updates a library: some 400 packages need it
ITEM = 42


def _evr(i: int, bump: int = 0) -> tuple[str, str, str]:
    return ("1" if i % 97 == 0 else "0", f"1.{i % 7}", str(1 + bump))


def _entry(i: int, bump: int = 0) -> tuple[str, str]:
    """The primary and filelists XML of package ``i``."""
    name = f"pkg{i:05d}"
    epoch, version, release = _evr(i, bump)
    arch = "noarch" if i % 3 else ARCH
    pkgid = hashlib.sha256(f"{name}-{bump}".encode()).hexdigest()
    requires = []
    if i >= LIBRARIES:
        requires.append(
            f'<rpm:entry name="pkg{i % LIBRARIES:05d}" flags="GE" epoch="0" ver="1.0"/>'
        )
        requires.append(f'<rpm:entry name="pkg{i * 7 % LIBRARIES:05d}"/>')
        requires.append(f'<rpm:entry name="/usr/bin/pkg{i * 13 % LIBRARIES:05d}"/>')
        requires.append(f'<rpm:entry name="/usr/share/pkg{i * 17 % LIBRARIES:05d}/data2"/>')
    if i > LIBRARIES and i % 50 == 0:
        rich = escape(f"(pkg{i - 1:05d} or missing{i})")
        requires.append(f'<rpm:entry name="{rich}"/>')
    provides = [
        f'<rpm:entry name="{name}" flags="EQ" epoch="{epoch}" ver="{version}" rel="{release}"/>',
        f'<rpm:entry name="virtual{i % 1000}"/>',
    ]
    extra = ""
    if i % 100 == 1:
        extra += f'<rpm:conflicts><rpm:entry name="gone{i}"/></rpm:conflicts>'
    if i % 200 == 7:
        extra += f'<rpm:obsoletes><rpm:entry name="old-{name}"/></rpm:obsoletes>'
    files = [f"/usr/bin/{name}", *(f"/usr/share/{name}/data{k}" for k in range(4))]
    primary = (
        f'<package type="rpm"><name>{name}</name><arch>{arch}</arch>'
        f'<version epoch="{epoch}" ver="{version}" rel="{release}"/>'
        f'<checksum type="sha256" pkgid="YES">{pkgid}</checksum>'
        f"<summary>s</summary><description>d</description><packager/><url/>"
        f'<time file="1" build="1"/><size package="1" installed="1" archive="1"/>'
        f'<location href="Packages/{name}-{version}-{release}.{arch}.rpm"/>'
        f"<format><rpm:license>MIT</rpm:license>"
        f"<rpm:sourcerpm>{name}-{version}-{release}.src.rpm</rpm:sourcerpm>"
        f"<rpm:provides>{''.join(provides)}</rpm:provides>"
        f"<rpm:requires>{''.join(requires)}</rpm:requires>{extra}"
        f"<file>/usr/bin/{name}</file></format></package>\n"
    )
    filelists = (
        f'<package pkgid="{pkgid}" name="{name}" arch="{arch}">'
        f'<version epoch="{epoch}" ver="{version}" rel="{release}"/>'
        + "".join(f"<file>{f}</file>" for f in files)
        + f'<file type="dir">/usr/share/{name}</file></package>\n'
    )
    return primary, filelists


def write_repo(root: Path, packages: int, bumped: int | None = None) -> Path:
    """A repository of ``packages`` generated packages at ``root/<arch>``."""
    repo = root / ARCH
    repodata = repo / "repodata"
    repodata.mkdir(parents=True)
    entries = [_entry(i, 1 if i == bumped else 0) for i in range(packages)]
    ns = 'xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm"'
    docs = {
        "primary": f'<?xml version="1.0"?>\n<metadata {ns} packages="{packages}">\n'
        + "".join(p for p, _ in entries)
        + "</metadata>\n",
        "filelists": '<?xml version="1.0"?>\n<filelists xmlns="http://linux.duke.edu/metadata/'
        f'filelists" packages="{packages}">\n' + "".join(f for _, f in entries) + "</filelists>\n",
    }
    repomd = cr.Repomd()
    for kind, text in docs.items():
        path = repodata / f"{kind}.xml.gz"
        with gzip.open(path, "wt", compresslevel=1) as out:
            out.write(text)
        record = cr.RepomdRecord(kind, str(path))
        record.fill(cr.SHA256)
        repomd.set_record(record)
    (repodata / "repomd.xml").write_text(repomd.xml_dump())
    return repo


def _ctx(root: Path, name: str, cache: Path) -> JobContext:
    return JobContext(
        item_id=1,
        attempt=1,
        repo_path=root / "speculative",
        repo_url="http://bench.invalid/",
        arches=(ARCH,),
        base_repos=(),
        log_path=root / "logs" / f"{name}.log",
        baseline_path=root / "baseline",
        cache_dir=cache,
    )


def _timed(job: DependencyJob, ctx: JobContext) -> tuple[float, str]:
    """CPU seconds of one run (the work is one thread; wall time on a shared machine
    says more about the neighbours), and its summary."""
    start = time.process_time()
    result = job.run_blocking(ctx)
    return time.process_time() - start, result.summary


def run(packages: int = PACKAGES, repeats: int = 3) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="rpmgate-bench-deps-"))
    try:
        start = time.perf_counter()
        write_repo(root / "baseline", packages)
        write_repo(root / "speculative", packages, bumped=ITEM)
        generate_s = time.perf_counter() - start
        jobs: list[DependencyJob] = [
            Installability("installability"),
            Repoclosure("repoclosure"),
            Conflicts("conflicts"),
            Upgrade("upgrade"),
        ]
        rows = []
        for job in jobs:
            cold, cached_base, all_cached = [], [], []
            summary = ""
            for n in range(repeats):
                cache = root / "cache" / f"{job.name}-{n}"
                ctx = _ctx(root, job.name, cache)
                cold.append(_timed(job, ctx)[0])
                for solv_file in cache.glob("*.solv"):  # keep the baseline's only
                    solv_file.unlink()
                _timed(job, dataclasses.replace(ctx, repo_path=root / "baseline"))
                cached_base.append(_timed(job, ctx)[0])
                seconds, summary = _timed(job, ctx)
                all_cached.append(seconds)
            rows.append(
                {
                    "job": job.name,
                    "cold_s": statistics.median(cold),
                    "cached_base_s": statistics.median(cached_base),
                    "all_cached_s": statistics.median(all_cached),
                    "summary": summary,
                }
            )
        cache_bytes = sum(p.stat().st_size for p in (root / "cache").rglob("*.solv"))
        return {
            "packages": packages,
            "generate_s": generate_s,
            "rows": rows,
            "repeats": repeats,
            "solv_mib": cache_bytes / (1 << 20) / (2 * repeats * len(jobs)),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def markdown(result: dict[str, Any]) -> list[str]:
    return [
        "## Dependency jobs on libsolv (bench/bench_deps.py)",
        "",
        f"A generated repository of {result['packages']} packages (primary and filelists "
        f"written directly, {result['generate_s']:.1f} s for both trees; rich, file, "
        "versioned requires, Conflicts, Obsoletes, 5 files each); the item replaces one "
        "package (a library some 800 packages need), so the baseline has as many. Median of "
        f"{result['repeats']} runs, CPU seconds per job run (one thread), both trees loaded:",
        "",
        "| job | cold (no cache) | cached base (baseline .solv) | all cached | result |",
        "|---|---:|---:|---:|---|",
        *[
            f"| {r['job']} | {r['cold_s']:.2f} | {r['cached_base_s']:.2f} | "
            f"{r['all_cached_s']:.2f} | {r['summary']} |"
            for r in result["rows"]
        ],
        "",
        f"A `.solv` file of one tree: {result['solv_mib']:.1f} MiB. Peak RSS of the "
        f"benchmark process: {result['peak_rss_mib']:.0f} MiB.",
        "",
    ]


def main() -> None:
    packages = int(sys.argv[1]) if len(sys.argv) > 1 else PACKAGES
    print("\n".join(markdown(run(packages))))


if __name__ == "__main__":
    main()
