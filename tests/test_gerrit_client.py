"""The REST client against the fake Gerrit, and the fake against what Gerrit does.

The fake holds real bare repositories: submits merge there, uploads land at
refs/changes/NN/N/P, and the client reads what the fake says as Gerrit says it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from gate.config import ProjectConfig
from gate.merger import Merger
from gate.sources.base import SourceParts
from gate.sources.gerrit.approval import equivalent_revisions, evaluate
from gate.sources.gerrit.client import GerritClient, GerritError
from gate.sources.gerrit.config import OPENSTACK_APPROVALS, GerritConfig
from gate.sources.gerrit.source import GerritSource
from tests.fakegerrit import BOT_PASSWORD, accounts, commit_file, push
from tests.fakegerrit.server import FakeGerrit
from tests.fakegerrit.state import GerritState, git

NOVA = "openstack/nova-distgit"


@dataclass
class Gerrit:
    state: GerritState
    fake: FakeGerrit
    client: GerritClient
    repo: Path
    work: Path


def make_repo(root: Path) -> tuple[Path, Path]:
    bare, work = root / "nova.git", root / "nova"
    bare.mkdir(parents=True)
    git(bare, "init", "-q", "--bare", "-b", "main")
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    git(work, "remote", "add", "origin", str(bare))
    (work / "nova.spec").write_text("Name: nova\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "Import nova")
    git(work, "push", "-q", "origin", "main")
    return bare, work


async def start_gerrit(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]], **fake: Any
) -> Gerrit:
    bare, work = make_repo(tmp_path)
    state = GerritState()
    accounts(state)
    state.add_project(NOVA, bare, submit_type=fake.pop("submit_type", "MERGE_IF_NECESSARY"))
    server = FakeGerrit(state, **fake)
    srv = await aiohttp_server(server.app())
    state.url = str(srv.make_url("")).rstrip("/")
    client = GerritClient(
        state.url, "rpmgate", BOT_PASSWORD, "digest" if fake.get("digest") else "basic"
    )
    return Gerrit(state, server, client, bare, work)


@pytest.fixture
async def gerrit(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> AsyncIterator[Gerrit]:
    g = await start_gerrit(tmp_path, aiohttp_server)
    yield g
    await g.client.close()


def approve(g: Gerrit, number: int) -> None:
    g.state.vote(number, "core", **{"Code-Review": 2, "Workflow": 1})


async def test_a_change_reads_as_gerrit_writes_it(gerrit: Gerrit) -> None:
    commit_file(gerrit.work, "a", "1")
    number, ps = push(gerrit.state, gerrit.work, NOVA, "Update nova")
    approve(gerrit, number)
    change = await gerrit.client.get_change(NOVA, number)
    assert change["_number"] == number and change["status"] == "NEW" and change["branch"] == "main"
    current = change["current_revision"]
    assert change["revisions"][current]["ref"] == f"refs/changes/{number:02d}/{number}/{ps}"
    assert git(gerrit.repo, "rev-parse", f"refs/changes/{number:02d}/{number}/{ps}") == current
    assert "Change-Id: I" in change["revisions"][current]["commit"]["message"]
    assert evaluate(change, OPENSTACK_APPROVALS) == (True, "")
    assert change["submittable"] is False  # Verified is the gate's to give
    assert (
        "GET",
        f"/a/changes/openstack%2Fnova-distgit~{number}?o=ALL_REVISIONS&o=CURRENT_COMMIT&o=DETAILED_LABELS&o=DETAILED_ACCOUNTS&o=SUBMITTABLE",
    ) in gerrit.fake.requests


async def test_a_query_reads_every_page(gerrit: Gerrit) -> None:
    for i in range(5):
        commit_file(gerrit.work, f"f{i}", str(i))
        push(gerrit.state, gerrit.work, NOVA, f"change {i}")
    found = await gerrit.client.query_changes(f'project:"{NOVA}" status:open', page=2)
    assert sorted(c["_number"] for c in found) == [1, 2, 3, 4, 5]
    assert len([r for r in gerrit.fake.requests if r[1].startswith("/a/changes/?")]) == 3


async def test_submit_is_refused_until_the_gate_verifies(gerrit: Gerrit) -> None:
    commit_file(gerrit.work, "a", "1")
    number, _ = push(gerrit.state, gerrit.work, NOVA, "Update nova")
    approve(gerrit, number)
    sha = gerrit.state.changes[number].current.revision
    with pytest.raises(GerritError) as refused:
        await gerrit.client.submit_revision(NOVA, number, sha)
    assert refused.value.status == 409
    assert refused.value.message == (
        f"Failed to submit 1 change due to the following problems:\nChange {number}: needs Verified"
    )
    await gerrit.client.set_review(NOVA, number, sha, message="ok", labels={"Verified": 1})
    merged = await gerrit.client.submit_revision(NOVA, number, sha)
    assert merged["status"] == "MERGED"
    assert git(gerrit.repo, "rev-parse", "refs/heads/main") == sha  # a fast-forward
    branch = await gerrit.client.branch(NOVA, "main")
    assert branch == {"ref": "refs/heads/main", "revision": sha}
    types = [e["type"] for e in gerrit.state.events]
    assert types[-3:] == ["ref-updated", "ref-updated", "change-merged"]


async def test_a_moved_change_is_refused_by_the_revision_guard(gerrit: Gerrit) -> None:
    commit_file(gerrit.work, "a", "1")
    number, _ = push(gerrit.state, gerrit.work, NOVA, "Update nova")
    approve(gerrit, number)
    old = gerrit.state.changes[number].current.revision
    change_id = gerrit.state.changes[number].change_id
    commit_file(gerrit.work, "a", "2")
    assert push(gerrit.state, gerrit.work, NOVA, "Update nova", change_id=change_id) == (number, 2)
    await gerrit.client.set_review(NOVA, number, old, labels={"Verified": 1})  # an outdated vote
    with pytest.raises(GerritError) as refused:
        await gerrit.client.submit_revision(NOVA, number, old)
    assert (refused.value.status, refused.value.message) == (
        409,
        f"revision {old} is not current revision",
    )


async def test_a_branch_that_moved_gets_gerrits_merge_commit(gerrit: Gerrit) -> None:
    commit_file(gerrit.work, "a", "1")
    number, _ = push(gerrit.state, gerrit.work, NOVA, "Update nova")
    approve(gerrit, number)
    head = commit_file(gerrit.work, "b", "direct")
    git(gerrit.work, "push", "-q", "origin", "HEAD:refs/heads/main")
    gerrit.state.receive(NOVA, gerrit.state.account("packager"))
    assert gerrit.state.events[-1]["refUpdate"]["refName"] == "refs/heads/main"
    sha = gerrit.state.changes[number].current.revision
    await gerrit.client.set_review(NOVA, number, sha, labels={"Verified": 1})
    await gerrit.client.submit_revision(NOVA, number, sha)
    merge = git(gerrit.repo, "rev-parse", "refs/heads/main")
    assert git(gerrit.repo, "log", "-1", "--format=%P", merge).split() == [head, sha]
    assert gerrit.state.events[-1]["newRev"] == merge


async def test_fast_forward_only_refuses_a_branch_that_moved(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    g = await start_gerrit(tmp_path, aiohttp_server, submit_type="FAST_FORWARD_ONLY")
    try:
        commit_file(g.work, "a", "1")
        number, _ = push(g.state, g.work, NOVA, "Update nova")
        approve(g, number)
        commit_file(g.work, "b", "direct")
        git(g.work, "push", "-q", "origin", "HEAD:refs/heads/main")
        sha = g.state.changes[number].current.revision
        await g.client.set_review(NOVA, number, sha, labels={"Verified": 1})
        with pytest.raises(GerritError, match="requires all submissions to be a fast-forward"):
            await g.client.submit_revision(NOVA, number, sha)
    finally:
        await g.client.close()


async def test_digest_authentication(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    g = await start_gerrit(tmp_path, aiohttp_server, digest=True)
    try:
        commit_file(g.work, "a", "1")
        number, _ = push(g.state, g.work, NOVA, "Update nova")
        sha = g.state.changes[number].current.revision
        await g.client.set_review(NOVA, number, sha, message="hello")
        assert g.state.changes[number].messages[-1]["message"] == "Patch Set 1:\n\nhello"
    finally:
        await g.client.close()


async def test_a_wrong_password_is_an_error_not_a_transient_fault(gerrit: Gerrit) -> None:
    from gate.faults import is_transient

    bad = GerritClient(gerrit.state.url, "rpmgate", "wrong")
    try:
        with pytest.raises(GerritError) as refused:
            await bad.get_change(NOVA, 1)
        assert refused.value.status == 401 and not is_transient(refused.value)
    finally:
        await bad.close()


async def test_votes_the_gate_may_not_give_are_refused(gerrit: Gerrit) -> None:
    commit_file(gerrit.work, "a", "1")
    number, _ = push(gerrit.state, gerrit.work, NOVA, "Update nova")
    sha = gerrit.state.changes[number].current.revision
    with pytest.raises(GerritError) as refused:
        await gerrit.client.set_review(NOVA, number, sha, labels={"Code-Review": 2})
    assert refused.value.status == 403
    with pytest.raises(GerritError) as refused:
        await gerrit.client.set_review(NOVA, number, sha, labels={"Verified": 2})
    assert refused.value.status == 400


async def test_a_trivial_rebase_keeps_the_approval_and_is_the_same_code(gerrit: Gerrit) -> None:
    commit_file(gerrit.work, "a", "1")
    number, _ = push(gerrit.state, gerrit.work, NOVA, "Update nova")
    approve(gerrit, number)
    first = gerrit.state.changes[number].current.revision
    message = git(gerrit.work, "log", "-1", "--format=%B")
    commit_file(gerrit.work, "b", "direct")
    git(gerrit.work, "push", "-q", "origin", "HEAD:refs/heads/main")
    git(gerrit.work, "cherry-pick", first)  # the same diff on the new branch head
    git(gerrit.work, "commit", "-q", "--amend", "-m", message)
    git(gerrit.work, "push", "-q", "origin", "HEAD:refs/for/main")
    gerrit.state.receive(NOVA, gerrit.state.account("packager"))
    change = await gerrit.client.get_change(NOVA, number)
    current = change["current_revision"]
    assert change["revisions"][current]["kind"] == "TRIVIAL_REBASE"
    assert equivalent_revisions(change) == (first,)
    assert evaluate(change, OPENSTACK_APPROVALS) == (True, "")


# -- the source's REST side, against the fake ---------------------------------------


def gerrit_source(g: Gerrit, tmp_path: Path) -> GerritSource:
    from pydantic import SecretStr

    config = GerritConfig(url=g.state.url, user="rpmgate", password=SecretStr(BOT_PASSWORD))
    nova = ProjectConfig(git=str(g.repo), name=NOVA, branch="main")
    return GerritSource.create(
        "review", config, SourceParts({"nova": nova}, Merger(tmp_path / "m"))
    )


async def test_read_review_says_what_gerrit_says_now(gerrit: Gerrit, tmp_path: Path) -> None:
    source = gerrit_source(gerrit, tmp_path)
    try:
        commit_file(gerrit.work, "a", "1")
        number, _ = push(gerrit.state, gerrit.work, NOVA, "Update nova")
        review = await source.read_review("nova", str(number))
        ps = gerrit.state.changes[number].current
        assert (review.revision, review.fetch_ref, review.branch) == (
            ps.revision,
            f"refs/changes/{number:02d}/{number}/1",
            "main",
        )
        assert (review.open, review.approved, review.mergeable) == (True, False, True)
        assert review.why_not == "needs Code-Review +2; needs Workflow +1"
        assert (
            review.url == f"{gerrit.state.url}/c/{NOVA}/+/{number}" and review.owner == "packager"
        )
        approve(gerrit, number)
        assert (await source.read_review("nova", str(number))).approved is True
        gone = await source.read_review("nova", "999")
        assert (gone.open, gone.approved) == (False, False) and "not in review" in gone.why_not
    finally:
        await source.close()


async def test_merge_is_guarded_and_safe_to_repeat(gerrit: Gerrit, tmp_path: Path) -> None:
    source = gerrit_source(gerrit, tmp_path)
    try:
        commit_file(gerrit.work, "a", "1")
        number, _ = push(gerrit.state, gerrit.work, NOVA, "Update nova")
        approve(gerrit, number)
        review = await source.read_review("nova", str(number))
        change_id = gerrit.state.changes[number].change_id
        commit_file(gerrit.work, "a", "2")
        push(gerrit.state, gerrit.work, NOVA, "Update nova", change_id=change_id)
        moved = await source.merge("nova", review.revision, review)
        assert not moved.ok and moved.reason.startswith(f"change {number} moved to ")
        approve(gerrit, number)
        review = await source.read_review("nova", str(number))
        first = await source.merge("nova", review.revision, review)
        again = await source.merge("nova", review.revision, review)  # after a crash
        assert first.ok and again.ok and first.head == again.head == review.revision
        votes = gerrit.state.changes[number].votes
        assert votes[(2, "Verified", gerrit.state.account("rpmgate").id)] == 1
    finally:
        await source.close()
