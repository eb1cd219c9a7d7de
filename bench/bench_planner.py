"""How long one planner call takes for queues of growing length.

The daemon re-plans after every event, so this is on the hot path.  Each
queue has a realistic mix: a post item, items under test, a failing item,
items waiting outside the window.
"""

from __future__ import annotations

import statistics
import time

from gate.model import Base, ItemKind, ItemView, QueueState, Step, TipStep
from gate.planner import plan


def queue_of(n: int) -> QueueState:
    items = [
        ItemView(
            id=1, kind=ItemKind.POST, project="p0", tip=TipStep.FINAL_BUILD, tip_state=Step.RUNNING
        )
    ]
    chain = [1]
    for i in range(2, n + 2):
        failing = i % 7 == 0
        items.append(
            ItemView(
                id=i,
                kind=ItemKind.GATE,
                project=f"p{i % 40}",
                base=Base(10, tuple(chain)),
                merge=Step.PASSED,
                build_key=f"k{i}",
                build=Step.PASSED,
                jobs=Step.FAILED if failing else Step.RUNNING,
                failure="x" if failing else "",
            )
        )
        if not failing:
            chain.append(i)
    return QueueState(name="bench", items=tuple(items), generation=10, window=n + 10)


def run(sizes: tuple[int, ...] = (10, 100, 500, 1000)) -> list[dict[str, float]]:
    rows = []
    for n in sizes:
        q = queue_of(n)
        repeat = max(5, 2000 // n)
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            plan(q)
            samples.append(time.perf_counter() - start)
        rows.append(
            {
                "items": n,
                "median_ms": statistics.median(samples) * 1000,
                "max_ms": max(samples) * 1000,
                "calls": repeat,
            }
        )
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
