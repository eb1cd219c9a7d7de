"""``rpmgate demo``: the classic nova/ceilometer case, gated end to end.

Builds a small world in a temporary directory (bare git remotes, a lookaside
cache), runs the real daemon with its HTTP API on 127.0.0.1, bootstraps the
``liberty`` repository from the branch heads, then proposes and approves,
through the API, in order:

A. nova 12.0.1
B. ceilometer 8.0.1, requiring nova >= 12.0.1
C. horizon 9.0.1, whose build is broken
D. python-django 1.8.1, dropping a Provides that published horizon requires

and checks the outcome: A and B merged and published (A first), C and D
rejected with their reasons, and every generation ever published passing
repoclosure.  The queue runs a two-stage pipeline (``DEMO_PIPELINE``): the
dependency checks, then an install test on the arches where they passed (D
fails in stage 1, so its stage 2 never runs).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from gate.config import parse_config
from gate.daemon import Gate
from gate.demo_gerrit import GerritDemo
from gate.demo_world import CLASSIC_CHANGES, World
from gate.jobs.base import JobContext
from gate.jobs.dependencies import Repoclosure
from gate.web.app import make_app
from gate.web.server import limits_of, serve
from repo_state.db import session
from repo_state.models import ChangeRow, ItemRow

_SHOWN = {
    "enqueued": "enqueued",
    "testing": "new attempt {attempt} on generation {generation} + items {base}",
    "building": "scratch build {reused_text}",
    "testing-jobs": "running jobs on a speculative repo of {packages} packages",
    "jobs-passed": "jobs passed; waiting for the tip",
    "jobs-failed": "jobs failed: {reason}",
    "merge-conflict": "{reason}",
    "final-build": "at the tip: final build",
    "final-built": "final build {nvr} done",
    "final-failed": "{reason}",
    "merged": "merged in git ({short_commit})",
    "merge-refused": "merge refused: {reason}",
    "published": "published as generation {generation}",
    "publish-failed": "publish failed, retry in {retry_in:.0f}s: {reason}",
    "rejected": "REJECTED: {reason}",
    "dequeued": "dequeued: {reason}",
}


class Progress:
    """One line per item transition, prefixed with the time since start."""

    def __init__(
        self,
        labels: dict[int, str],
        out: Any = sys.stdout,
        by_project: dict[str, str] | None = None,
    ) -> None:
        self.start = time.monotonic()
        self.labels = labels
        #: a label by project, for items whose id is not known yet (changes from a review system)
        self.by_project = by_project or {}
        self.projects: dict[int, str] = {}
        self.out = out

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("topic") == "job":
            self._job(event)
            return
        if event.get("topic") != "item":
            return
        item = int(event.get("item") or 0)
        if event.get("project"):
            self.projects[item] = event["project"]
        state = event.get("state", "")
        if state == "merged" and "commit" not in event:
            return  # the dequeue report; "published" said it already
        template = _SHOWN.get(state)
        if template is None:
            return
        fields = {
            **event,
            "reused_text": "reused (same key)" if event.get("reused") else "started",
            "short_commit": (event.get("commit") or "")[:12],
            "base": event.get("base") or "(none)",
        }
        try:
            text = template.format(**fields)
        except (KeyError, ValueError):
            text = state
        who = self.labels.get(item) or self.by_project.get(self.projects.get(item, ""), f"#{item}")
        print(
            f"[{time.monotonic() - self.start:6.1f}s] {who:<3} {self.projects.get(item, ''):<14}"
            f" {text}",
            file=self.out,
            flush=True,
        )

    def _job(self, event: dict[str, Any]) -> None:
        item = int(event.get("item") or 0)
        who = self.labels.get(item) or self.by_project.get(self.projects.get(item, ""), f"#{item}")
        print(
            f"[{time.monotonic() - self.start:6.1f}s] {who:<3} {self.projects.get(item, ''):<14}"
            f"   stage {event.get('stage', '?')} {event.get('name')} on {event.get('arch')}: "
            f"{'passed' if event.get('passed') else 'failed'}",
            file=self.out,
            flush=True,
        )


#: the demo's pipeline: the dependency checks, then an install test on what they passed
DEMO_JOBS: list[Any] = [
    "repoclosure",
    "builddeps",
    {
        "name": "install-test",
        # a stand-in for a real install test (dnf in a container): the arch's tree
        # is a repository dnf could install from
        "command": 'test -s "$RPMGATE_ARCH_REPO_PATH/repodata/repomd.xml"',
    },
]
DEMO_PIPELINE = [["repoclosure", "builddeps"], ["install-test"]]


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
    return doc


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
    return doc


async def _wait_delivery(base: str, delivery: int) -> dict[str, Any]:
    while True:
        doc = await asyncio.to_thread(_get, f"{base}/api/deliveries/{delivery}")
        if doc["state"] != "pending":
            return doc
        await asyncio.sleep(0.1)


def _free_port() -> int:
    """A port free now on loopback (the config must name it before the daemon starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_demo(
    directory: Path | None = None,
    keep: bool = False,
    source: str = "git",
    keep_running: asyncio.Event | bool = False,
) -> int:
    """Run the demo; with ``keep_running`` the daemon stays up afterwards for a person to
    look at the status page: until Ctrl-C, or until the event given is set (tests)."""
    root = Path(directory or tempfile.mkdtemp(prefix="rpmgate-demo-"))
    print(f"rpmgate demo: building a world of 4 distgit projects in {root}")
    world = World(root).create()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    doc = world.config(listen={"host": "127.0.0.1", "port": port}, public_url=base)
    doc["queues"]["liberty"].update(jobs=DEMO_JOBS, pipeline=DEMO_PIPELINE)
    print(
        "rpmgate demo: pipeline "
        + " -> ".join(f"stage {n}: {', '.join(st)}" for n, st in enumerate(DEMO_PIPELINE, 1))
    )
    gerrit: GerritDemo | None = None
    if source == "gerrit":
        if not GerritDemo.available():
            print("rpmgate demo: --source gerrit needs a source checkout (tests/fakegerrit)")
            return 2
        gerrit = GerritDemo(world, _free_port())
        await gerrit.start()
        doc["sources"] = {"gerrit": gerrit.source(base)}
        gerrit.use_gerrit(doc)
        print(f"rpmgate demo: a fake Gerrit at {gerrit.url} hosts rpms/<project>")
    config = parse_config(doc)
    gate = Gate(config)
    labels: dict[int, str] = {}
    progress = Progress(labels)
    gate.listeners.append(progress)
    served = await serve(
        make_app(gate.runtime), "127.0.0.1", port, limits_of(config.listen), access_log=None
    )
    print(f"rpmgate demo: status page at {base}/ (API at {base}/api/status)")
    try:
        print("\n== bootstrap: the branch heads become post items and are published")
        await gate.start()
        await gate.wait_idle(600)
        repo = gate.publishers["liberty"]
        print(
            f"liberty generation {repo.current().number}: "  # type: ignore[union-attr]
            f"{', '.join(sorted(repo.state().nvrs().values()))}"
        )

        if gerrit is not None:
            # one classic change per project: items are named by their project
            progress.by_project = {project: label for label, project, _, _ in CLASSIC_CHANGES}
            code = await _through_gerrit(gate, gerrit, base, root, labels)
            if keep_running:
                await _stay_up(base, keep_running)
            return code
        print("\n== proposing and approving A, B, C, D through the HTTP API")
        for label, project, spec, title in CLASSIC_CHANGES:
            ref = world.propose(project, spec, title)
            accepted = await asyncio.to_thread(
                _post,
                f"{base}/api/changes",
                {"project": project, "ref": ref, "title": f"{label}: {title}", "approve": True},
            )
            done = await _wait_delivery(base, accepted["delivery"])
            change = int(done["result"].split()[-1])
            doc = await asyncio.to_thread(_get, f"{base}/api/changes/{change}")
            labels[doc["items"][0]["id"]] = label
            print(
                f"{label}: {project} {spec.version} -> change {change}, "
                f"item {doc['items'][0]['id']} ({ref})"
            )
        print()
        await gate.wait_idle(600)
        code = await _summary(gate, base, root, labels)
        if keep_running:
            await _stay_up(base, keep_running)
        return code
    finally:
        await gate.stop()
        await served.close()
        if gerrit is not None:
            await gerrit.stop()
        if not keep and directory is None:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"(kept {root})")


async def _stay_up(base: str, until: asyncio.Event | bool) -> None:
    """Leave the daemon serving until Ctrl-C (or ``until`` is set)."""
    print(f"\nrpmgate demo: the daemon stays up: open {base}/ (Ctrl-C to stop)", flush=True)
    stop = until if isinstance(until, asyncio.Event) else asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)
    print("rpmgate demo: stopping the daemon")


async def _through_gerrit(
    gate: Gate, gerrit: GerritDemo, base: str, root: Path, labels: dict[int, str]
) -> int:
    """Upload and approve A-D on Gerrit; the webhooks plugin tells the gate."""
    print("\n== uploading A, B, C, D to Gerrit; a core reviewer gives +2 and Workflow +1")
    for label, project, spec, title in CLASSIC_CHANGES:
        gerrit.propose(label, project, spec, title)
    print()
    await gerrit.delivered()
    await gate.wait_idle(600)
    await gerrit.delivered()  # the gate's last comments
    with session(gate.engine) as s:
        for label, number in gerrit.changes.items():
            rows = s.exec(
                select(ItemRow)
                .join(ChangeRow, col(ChangeRow.id) == col(ItemRow.change_id))
                .where(ChangeRow.source == "gerrit", ChangeRow.review == str(number))
            ).all()
            labels.update({row.id: label for row in rows if row.id is not None})
    code = await _summary(gate, base, root, labels)
    print("== on Gerrit")
    for line in gerrit.summary():
        print(line)
    return code


#: how the demo's rejected changes must be rejected (the start of C's reason, the end of D's)
EXPECTED_REASONS = {
    "C": "rpmbuild failed in %build: setup.py: No module named pbr",
    "D": "horizon-9.0.0-1.noarch requires python-django-compat",
}


async def _summary(gate: Gate, base: str, root: Path, labels: dict[int, str]) -> int:
    status = await asyncio.to_thread(_get, f"{base}/api/status")
    recent = {i["id"]: i for i in status["queues"][0]["recent"]}
    repo = gate.publishers["liberty"]
    print("== summary")
    merged, rejected = [], []
    reasons: dict[str, str] = {}
    for item_id, label in sorted(labels.items()):
        item = recent[item_id]
        if item["result"] == "merged":
            merged.append(label)
            print(
                f"  {label} merged    {item['final_build']['nvr']:<26} generation "
                f"{item['generation']}"
            )
        else:
            rejected.append(label)
            reasons[label] = str(item["failure"])
            print(f"  {label} rejected  {item['failure']}")
    generations = repo.generations()
    print(
        f"  repository: {repo.root / 'current'} -> generation {repo.current().number}"  # type: ignore[union-attr]
        f" ({len(generations)} generations kept)"
    )
    broken = await _check_generations(gate, root)
    if broken:
        print(f"  BROKEN generations: {broken}")
    else:
        print(
            f"  every published generation ({generations[0]}..{generations[-1]}) passes "
            "repoclosure: the repository never served a broken state"
        )
    order = [recent[i]["generation"] for i, lbl in sorted(labels.items()) if lbl in "AB"]
    # each rejected for its own reason: C's build log's error, D's broken dependency
    why = reasons.get("C", "").startswith(EXPECTED_REASONS["C"]) and reasons.get("D", "").endswith(
        EXPECTED_REASONS["D"]
    )
    ok = (
        merged == ["A", "B"]
        and rejected == ["C", "D"]
        and why
        and not broken
        and order == sorted(order)
    )
    print(
        "  outcome: "
        + (
            "as expected (A, B merged in order; C, D rejected, each for its own reason)"
            if ok
            else "NOT as expected"
        )
    )
    return 0 if ok else 1


async def _check_generations(gate: Gate, root: Path) -> list[int]:
    repo = gate.publishers["liberty"]
    broken = []
    for number in repo.generations():
        generation = repo.generation(number)
        assert generation is not None
        ctx = JobContext(
            item_id=0,
            attempt=number,
            repo_path=generation.path,
            repo_url="",
            arches=("x86_64",),
            base_repos=(),
            log_path=root / "checks" / f"generation-{number}.log",
        )
        result = await Repoclosure().run(ctx)
        if not result.passed:
            broken.append(number)
    return broken


def main(
    directory: str | None = None,
    keep: bool = False,
    verbose: bool = False,
    source: str = "git",
    keep_running: bool = False,
) -> int:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(run_demo(Path(directory) if directory else None, keep, source, keep_running))
