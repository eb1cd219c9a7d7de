"""How long one planner call takes for queues of growing length, against a baseline.

The daemon re-plans after every event, so this is on the hot path.  Each
size is run through today's planner and through the planner of a baseline
commit (``BASELINE``: main before the planner was made linear), loaded from
git into a private package so both run in the same process on the same
queue shape.

Two shapes:

* ``window 20``: a queue as Zuul's default window leaves it: a post item, the
  first 20 gate items under test (one in seven failing), every item behind
  waiting outside the window (no base yet).  This is the shape a long queue
  has in production.
* ``all inside``: the window wider than the queue, so every item has a base
  naming every non-failing item ahead of it.  The planner's *input* then
  grows with the square of the queue (item k's base lists k items) and any
  planner that reads it does too; measured up to 2,000 items only (10,000
  would mean bases of 50 million entries in all).

    .venv/bin/python -m bench.bench_planner            # markdown table
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gate import model
from gate.planner import plan

#: main before the window and linear-planner changes (issues 13 and 15)
BASELINE = "2610b9061618e7087c03a7af7514619cbcaa52da"
ROOT = Path(__file__).resolve().parent.parent
WINDOW = 20


def _load_baseline(rev: str = BASELINE) -> tuple[types.ModuleType, Callable[[Any], list[Any]]]:
    """gate/model.py and gate/planner.py as they were at ``rev``, as a private package."""
    package = "rpmgate_baseline"
    if f"{package}.planner" in sys.modules:
        old = sys.modules[f"{package}.planner"]
        return sys.modules[f"{package}.model"], old.plan
    sys.modules[package] = types.ModuleType(package)
    loaded = {}
    for name in ("model", "planner"):
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:gate/{name}.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.replace("from gate.model import", f"from {package}.model import")
        module = types.ModuleType(f"{package}.{name}")
        sys.modules[module.__name__] = module
        exec(compile(source, f"{rev[:12]}:gate/{name}.py", "exec"), module.__dict__)
        loaded[name] = module
    return loaded["model"], loaded["planner"].plan


def queue_of(n: int, shape: str, m: Any = model) -> Any:
    """A queue of ``n`` gate items (and one post item) built from model module ``m``."""
    window = WINDOW if shape == "window 20" else n + 10
    items = [
        m.ItemView(
            id=1,
            kind=m.ItemKind.POST,
            project="p0",
            base=m.Base(10, ()),
            tip=m.TipStep.FINAL_BUILD,
            tip_state=m.Step.RUNNING,
        )
    ]
    chain = [1]
    for i in range(2, n + 2):
        if i - 2 >= window:
            items.append(m.ItemView(id=i, kind=m.ItemKind.GATE, project=f"p{i % 40}"))
            continue
        failing = i % 7 == 0
        items.append(
            m.ItemView(
                id=i,
                kind=m.ItemKind.GATE,
                project=f"p{i % 40}",
                base=m.Base(10, tuple(chain)),
                merge=m.Step.PASSED,
                build_key=f"k{i}",
                build=m.Step.PASSED,
                jobs=m.Step.FAILED if failing else m.Step.RUNNING,
                failure="x" if failing else "",
            )
        )
        if not failing:
            chain.append(i)
    return m.QueueState(name="bench", items=tuple(items), generation=10, window=window)


def _time(planner: Callable[[Any], list[Any]], q: Any, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        planner(q)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


SIZES = {"window 20": (500, 2_000, 10_000), "all inside": (500, 2_000)}


def run(sizes: dict[str, tuple[int, ...]] = SIZES, calls: int = 9) -> list[dict[str, Any]]:
    """One row per shape and size: min and median of ``calls`` plan() calls, each planner."""
    old_model, old_plan = _load_baseline()
    rows: list[dict[str, Any]] = []
    for shape, ns in sizes.items():
        for n in ns:
            new_q, old_q = queue_of(n, shape), queue_of(n, shape, old_model)
            same = [repr(a) for a in plan(new_q)] == [repr(a) for a in old_plan(old_q)]
            new, old = _time(plan, new_q, calls), _time(old_plan, old_q, calls)
            rows.append(
                {
                    "shape": shape,
                    "items": n,
                    "calls": calls,
                    "new_min_ms": min(new),
                    "new_median_ms": statistics.median(new),
                    "old_min_ms": min(old),
                    "old_median_ms": statistics.median(old),
                    "ratio": statistics.median(old) / statistics.median(new),
                    "same_actions": same,
                }
            )
    return rows


def markdown(rows: list[dict[str, Any]]) -> list[str]:
    return [
        "## Planner: one `plan()` call (bench/bench_planner.py)",
        "",
        f"Today's planner against the baseline (main at {BASELINE[:12]}, loaded from git "
        "in the same process), on the same queue; min and median of "
        f"{rows[0]['calls'] if rows else 0} calls each "
        "(`.venv/bin/python -m bench.bench_planner` prints this table alone).",
        "",
        "- *window 20*: Zuul's default window: a post item, the first 20 gate items "
        "under test (one in seven failing), the rest waiting outside the window. "
        "The baseline built every waiting item's desired base (a copy of the chain "
        "ahead), so its time grew with the square of the queue; now a waiting item "
        "costs one step.",
        "- *all inside*: a window wider than the queue, so every item's base lists "
        "every item ahead: the planner's input itself grows with the square of the "
        "queue, and so does any planner reading it (not run at 10,000 items: "
        "bases of 50 million entries in all).",
        "- *same actions*: both planners return the same actions on that queue.",
        "",
        "| shape | gate items | baseline min / median ms | now min / median ms | "
        "speed-up (median) | same actions |",
        "|---|---:|---:|---:|---:|---|",
        *[
            f"| {r['shape']} | {r['items']:,} | {r['old_min_ms']:.3f} / {r['old_median_ms']:.3f} "
            f"| {r['new_min_ms']:.3f} / {r['new_median_ms']:.3f} | {r['ratio']:.1f}x "
            f"| {'yes' if r['same_actions'] else 'no'} |"
            for r in rows
        ],
        "",
    ]


if __name__ == "__main__":
    print("\n".join(markdown(run())))
