"""Changes from review systems, through the framework every driver plugs into.

The review system here is a toy kept in the test (reviews are refs of the
world's real bare repositories plus a state the test sets), registered as a
source driver: what is under test is the gate's side -- events are hints and
the review is read again; new revisions, closes and withdrawn approvals
dequeue; ``Depends-On:`` enqueues and dequeues together; the review is read
again before merging; a merge the review system made with another tree is not
published as tested; reports at each step.  Each real review system's driver
is tested against a fake of that system in its own test module.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlmodel import col, select

from gate.config import parse_config
from gate.daemon import Gate
from gate.deliveries import store_delivery
from gate.demo_world import PackageSpec, World
from gate.events import Event, Refused, ReviewUpdated
from gate.registry import SOURCES, DriverConfig, SourceDriver
from gate.sources.base import MergeOutcome, Report, Review, SourceParts
from gate.sources.plaingit import PlainGitSource
from repo_state.db import session
from repo_state.models import ChangeRow, Delivery, ItemRow
from tests.conftest import CEILO_801, DJANGO_NO_COMPAT, HORIZON_BROKEN, NOVA_1201
from tests.invariants import check_invariants, results

pytestmark = pytest.mark.slow


@dataclass
class ToyReview:
    project: str
    ref: str
    title: str
    approved: bool = False
    open: bool = True
    merged: bool = False


@dataclass
class ToyState:
    reviews: dict[str, ToyReview] = field(default_factory=dict)
    reports: list[Report] = field(default_factory=list)
    #: how the toy merges: push the tested commit, or make its own merge commit
    merge_mode: Literal["push", "own-merge"] = "push"
    reads: int = 0


STATE = ToyState()


class ToyConfig(DriverConfig):
    type: Literal["toyreview"] = "toyreview"


class ToyReviews(PlainGitSource):
    """Reviews are refs of plain git repositories; their state is :data:`STATE`."""

    @classmethod
    def make(cls, name: str, config: ToyConfig, parts: SourceParts) -> ToyReviews:
        return cls(parts.projects, parts.merger, name)

    def parse_event(self, event_type: str, payload: dict[str, Any]) -> Event | None:
        return ReviewUpdated.model_validate(payload)

    async def read_review(self, project: str, review: str) -> Review:
        STATE.reads += 1
        toy = STATE.reviews.get(review)
        if toy is None or toy.project != project:
            raise Refused(f"no review {review} of {project}")
        url, _ = self._project(project)
        revision = _git(url, "rev-parse", toy.ref)
        return Review(
            id=review,
            project=project,
            revision=revision,
            fetch_ref=toy.ref,
            branch="main",
            title=toy.title,
            url=f"toy://{project}/{review}",
            open=toy.open,
            merged=toy.merged,
            approved=toy.approved,
            why_not="" if toy.approved else "needs a +2",
        )

    def review_for_url(self, url: str) -> tuple[str, str] | None:
        if not url.startswith("toy://"):
            return None
        project, _, review = url.removeprefix("toy://").partition("/")
        return (project, review) if project in self.projects else None

    async def merge(self, project: str, commit: str, review: Review | None = None) -> MergeOutcome:
        assert review is not None, "a review is merged through the review system"
        if STATE.merge_mode == "push":
            outcome = await super().merge(project, commit)
        else:  # the review system merges the revision itself, with a tree of its own
            url, _ = self._project(project)
            head = _own_merge(url, review.revision)
            outcome = MergeOutcome(True, head=head)
        if outcome.ok:
            STATE.reviews[review.id].open = False
            STATE.reviews[review.id].merged = True
        return outcome

    async def report(self, project: str, report: Report) -> None:
        STATE.reports.append(report)


def _git(repo: object, *args: str) -> str:
    return subprocess.run(
        ["git", f"--git-dir={repo}", *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def _own_merge(bare: str, revision: str) -> str:
    """A merge commit of ``revision`` onto main whose tree also has a file the
    review system added (as a forge's merge can differ from the tested one)."""
    blob = subprocess.run(
        ["git", f"--git-dir={bare}", "hash-object", "-w", "--stdin"],
        input="added by the review system\n",
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    entries = _git(bare, "ls-tree", revision)
    tree = subprocess.run(
        ["git", f"--git-dir={bare}", "mktree"],
        input=f"{entries}\n100644 blob {blob}\tMERGED-BY-TOY\n",
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    main = _git(bare, "rev-parse", "refs/heads/main")
    env = {"GIT_AUTHOR_NAME": "toy", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "toy"}
    head = subprocess.run(
        ["git", f"--git-dir={bare}", "commit-tree", tree, "-p", main, "-p", revision, "-m", "M"],
        check=True,
        capture_output=True,
        text=True,
        env={**env, "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"},
    ).stdout.strip()
    _git(bare, "update-ref", "refs/heads/main", head)
    return head


@pytest.fixture(autouse=True)
def toy_driver() -> Iterator[None]:
    global STATE
    STATE = ToyState()
    with SOURCES.registered(SourceDriver("toyreview", ToyConfig, ToyReviews.make)):
        yield


@asynccontextmanager
async def gate_on(
    world: World, hold: Path | None = None, queues: dict[str, list[str]] | None = None
) -> AsyncIterator[Gate]:
    """A gate whose projects are the toy's.  ``hold``: a job waits while that file
    is missing, so items stay in the queue while the test sends events.  ``queues``:
    more queues (each with a repository of its own), by the projects they take."""
    doc = world.config()
    for name, projects in (queues or {}).items():
        doc["publishers"][name] = {**doc["publishers"]["liberty"], "root": str(world.root / name)}
        doc["queues"][name] = {**doc["queues"]["liberty"], "projects": projects, "repo": name}
        doc["queues"]["liberty"]["projects"] = [
            p for p in doc["queues"]["liberty"]["projects"] if p not in projects
        ]
    doc["sources"] = {"toy": {"type": "toyreview"}}
    for project in doc["projects"].values():
        project["source"] = "toy"
    if hold is not None:
        hold.touch()  # the bootstrap goes through
        wait = f"while [ ! -e {hold} ]; do sleep 0.05; done"
        doc["queues"]["liberty"]["jobs"] = [
            "repoclosure",
            {"type": "command", "name": "hold", "command": wait},
        ]
    gate = Gate(parse_config(doc))
    await gate.start()
    try:
        await gate.wait_idle(120)
        if hold is not None:
            hold.unlink()
        yield gate
    finally:
        await gate.stop()


_reviews = 0


def review(world: World, project: str, spec: PackageSpec, title: str, depends: str = "") -> str:
    """A review of ``spec`` (not approved yet); returns its id."""
    global _reviews
    _reviews += 1
    message = title + (f"\n\nDepends-On: {depends}\n" if depends else "")
    ref = world.propose(project, spec, message)
    STATE.reviews[str(_reviews)] = ToyReview(project, ref, title)
    return str(_reviews)


def revision(world: World, review_id: str) -> str:
    toy = STATE.reviews[review_id]
    return _git(str(world.remote(toy.project)), "rev-parse", toy.ref)


async def until(check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def delivery(gate: Gate, delivery_id: int | None) -> Delivery:
    with session(gate.engine) as s:
        row = s.get(Delivery, delivery_id)
    assert row is not None
    return row


async def event(gate: Gate, review_id: str, key: str | None = None, idle: bool = True) -> Delivery:
    """The toy's webhook: review ``review_id`` changed; waits until it is processed."""
    toy = STATE.reviews[review_id]
    payload = {"source": "toy", "project": toy.project, "review": review_id}
    stored, _ = store_delivery(gate, "toy", "review.updated", payload, key)
    gate.wake()
    if idle:
        await gate.wait_idle(180)
    await until(lambda: delivery(gate, stored.id).processed_at is not None)
    return delivery(gate, stored.id)


def items_of(gate: Gate, review_id: str) -> list[ItemRow]:
    with session(gate.engine) as s:
        return list(
            s.exec(
                select(ItemRow)
                .join(ChangeRow, col(ChangeRow.id) == col(ItemRow.change_id))
                .where(ChangeRow.review == review_id)
                .order_by(col(ItemRow.id))
            ).all()
        )


def reports(review_id: str) -> list[tuple[str, str]]:
    return [(r.phase, r.message) for r in STATE.reports if r.review == review_id]


async def test_events_are_hints_the_review_decides_and_owners_hear_each_step(
    world: World,
) -> None:
    async with gate_on(world) as gate:
        a = review(world, "nova", NOVA_1201, "A")
        not_yet = await event(gate, a)
        assert not_yet.result == f"review {a} at {revision(world, a)[:12]}: needs a +2"
        assert items_of(gate, a) == []

        STATE.reviews[a].approved = True
        first = await event(gate, a, key="hook-1")
        again, created = store_delivery(
            gate,
            "toy",
            "review.updated",
            {"source": "toy", "project": "nova", "review": a},
            "hook-1",
        )
        assert not created and again.id == first.id  # a redelivery is stored once
        late = await event(gate, a)  # a late event for the same review changes nothing
        assert late.result == f"review {a} is closed: nothing queued"
        assert results(gate) == {"merged": ["A"]}
        [item] = items_of(gate, a)
        assert [phase for phase, _ in reports(a)] == ["enqueued", "merged"]
        merged = STATE.reports[-1]
        assert (merged.generation, merged.revision) == (item.generation, revision(world, a))
        assert merged.links["repository"].endswith("/repos/liberty/")
        assert merged.message == (
            f"rpmgate: {revision(world, a)[:12]} merged and published in liberty as "
            f"generation {item.generation} (item {item.id})."
        )
        check_invariants(gate)


async def test_a_new_revision_a_withdrawn_approval_and_a_close_dequeue(
    world: World, tmp_path: Path
) -> None:
    hold = tmp_path / "go"
    async with gate_on(world, hold) as gate:
        b = review(world, "nova", NOVA_1201, "B")
        STATE.reviews[b].approved = True
        await event(gate, b, idle=False)
        [first] = items_of(gate, b)

        STATE.reviews[b].ref = world.propose("nova", NOVA_1201, "B, second revision")
        moved = await event(gate, b, idle=False)
        old, new = items_of(gate, b)
        assert (old.id, old.result) == (first.id, "dequeued")
        assert old.failure == f"review {b} has a new revision {revision(world, b)[:12]}"
        assert moved.result.startswith(f"item {old.id} dequeued: review {b} has a new revision")
        assert new.active

        STATE.reviews[b].approved = False
        await event(gate, b, idle=False)
        assert items_of(gate, b)[-1].failure == f"review {b} is no longer approved: needs a +2"

        STATE.reviews[b].approved = True
        await event(gate, b, idle=False)
        STATE.reviews[b].open = False
        await event(gate, b, idle=False)
        last = items_of(gate, b)[-1]
        assert (last.result, last.failure) == (
            "dequeued",
            f"review {b} was closed outside the gate",
        )
        assert [p for p, _ in reports(b)] == ["enqueued", "dequeued"] * 3
        hold.touch()
        await gate.wait_idle(120)
        assert results(gate) == {"dequeued": ["B", "B", "B"]}  # titled as the review is
        check_invariants(gate)


async def test_the_review_is_read_again_before_merging(world: World, tmp_path: Path) -> None:
    hold = tmp_path / "go"
    async with gate_on(world, hold) as gate:
        a = review(world, "nova", NOVA_1201, "A")
        STATE.reviews[a].approved = True
        await event(gate, a, idle=False)
        tested = revision(world, a)
        # a new revision whose event is lost: the gate finds out before merging
        STATE.reviews[a].ref = world.propose("nova", NOVA_1201, "A, second revision")
        hold.touch()
        await gate.wait_idle(120)
        [item] = items_of(gate, a)
        assert (item.result, item.failure) == (
            "rejected",
            f"merge refused: review {a} moved to {revision(world, a)[:12]} since "
            f"{tested[:12]} was tested",
        )
        assert world.branch_head("nova") != revision(world, a)
        assert [p for p, _ in reports(a)] == ["enqueued", "failed"]
        check_invariants(gate)


async def test_depends_on_enqueues_the_dependency_first_and_dequeues_with_it(
    world: World,
) -> None:
    async with gate_on(world) as gate:
        a = review(world, "nova", NOVA_1201, "A")
        b = review(world, "ceilometer", CEILO_801, "B", depends=f"toy://nova/{a}")
        STATE.reviews[b].approved = True
        refused = await event(gate, b)
        assert refused.error == f"depends on toy://nova/{a}, which is not approved: needs a +2"
        assert items_of(gate, b) == []

        STATE.reviews[a].approved = True
        await event(gate, b)  # B's approval brings A in, ahead of it
        assert results(gate) == {"merged": ["A", "B"]}
        check_invariants(gate)

        # a dependency that fails takes its dependents out with it
        c = review(world, "horizon", HORIZON_BROKEN, "C")
        d = review(world, "python-django", DJANGO_NO_COMPAT, "D", depends=f"toy://horizon/{c}")
        STATE.reviews[c].approved = STATE.reviews[d].approved = True
        await event(gate, d)
        [c_item] = items_of(gate, c)
        [d_item] = items_of(gate, d)
        assert c_item.result == "rejected"
        assert (d_item.result, d_item.failure) == (
            "dequeued",
            f"depends on item {c_item.id} (horizon), which was rejected",
        )

        # a cycle is refused, naming it
        e = review(world, "horizon", HORIZON_BROKEN, "E", depends="toy://ceilometer/99")
        STATE.reviews["99"] = ToyReview(
            "ceilometer",
            world.propose(
                "ceilometer",
                replace(CEILO_801, release="2"),
                f"F\n\nDepends-On: toy://horizon/{e}\n",
            ),
            "F",
            approved=True,
        )
        STATE.reviews[e].approved = True
        cycle = await event(gate, e)
        assert cycle.error == (
            f"dependency cycle: toy://horizon/{e} -> toy://ceilometer/99 -> toy://horizon/{e}"
        )
        check_invariants(gate)


async def test_a_merge_the_review_system_made_with_another_tree_is_not_published_as_tested(
    world: World,
) -> None:
    async with gate_on(world) as gate:
        STATE.merge_mode = "own-merge"
        a = review(world, "nova", NOVA_1201, "A")
        STATE.reviews[a].approved = True
        await event(gate, a)
        [item] = items_of(gate, a)
        head = world.branch_head("nova")
        assert item.result == "superseded"  # by the post item of the head the toy made
        assert item.failure.startswith(f"merged by toy as {head[:12]}, whose tree ")
        assert item.failure.endswith("published as a post item instead")
        # the head the toy made went through the post-item rules: built, tested, published
        with session(gate.engine) as s:
            post = s.exec(
                select(ItemRow).where(ItemRow.kind == "post", col(ItemRow.bootstrap).is_(False))
            ).all()
            [change] = [s.get(ChangeRow, p.change_id) for p in post]
        assert change is not None and change.sha == head
        # and its final build cannot reuse the NVR built from the tested tree: the
        # packager bumps the release (docs/sources: pick merge settings that keep trees)
        [post_item] = post
        assert post_item.result == "rejected"
        assert "nova-12.0.1-1" in post_item.failure, post_item.failure
        check_invariants(gate)


async def test_a_dependency_in_another_queue_is_refused_and_nothing_is_enqueued(
    world: World,
) -> None:
    """Two queues publish two repositories: a change of one cannot wait for a change
    of the other (their tips are not ordered), so the gate refuses it, naming both."""
    async with gate_on(world, queues={"mitaka": ["horizon", "python-django"]}) as gate:
        a = review(world, "python-django", DJANGO_NO_COMPAT, "A")
        b = review(world, "nova", NOVA_1201, "B", depends=f"toy://python-django/{a}")
        STATE.reviews[a].approved = STATE.reviews[b].approved = True
        refused = await event(gate, b)
        assert refused.error == (
            f"depends on toy://python-django/{a}, which is in queue mitaka; a change can "
            "depend only on changes of its own queue (liberty)"
        )
        assert items_of(gate, a) == items_of(gate, b) == []
        check_invariants(gate)
