"""The GitLab source against the fake GitLab: re-reading, approving, merging, reporting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gate.events import Refused
from gate.faults import is_transient
from gate.sources.base import Report
from gate.sources.gitlab.client import GitLabError
from tests.fakegitlab import DEVELOPER, REPORTER, FakeGitLab
from tests.gitlab_world import PATH, commit_on_branch, git, gitlab_source, make_repo


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitLab]:
    gl = await FakeGitLab().start()
    yield gl
    await gl.stop()


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, Path]:
    return make_repo(tmp_path / "repos", "nova")


async def test_a_merge_request_is_read_again_through_the_encoded_path(
    fake: FakeGitLab, repo: tuple[Path, Path], tmp_path: Path
) -> None:
    bare, work = repo
    fake.add_project(PATH, bare, approvals_required=1)
    alice, bob = fake.add_user("alice"), fake.add_user("bob")
    sha = commit_on_branch(work, "update", "Version: 12.0.1\n", "Update to 12.0.1")
    await fake.open_mr(PATH, "update", "Update to 12.0.1", alice)
    source = gitlab_source(fake, bare, tmp_path)
    try:
        review = await source.read_review("nova", "1")
        assert (review.revision, review.fetch_ref, review.branch) == (
            sha,
            "refs/merge-requests/1/head",
            "main",
        )
        assert review.open and not review.approved and review.owner == "alice"
        assert "approval rules are not met" in review.why_not
        assert review.url.endswith("/redhat/centos-stream/rpms/nova/-/merge_requests/1")
        assert (
            "GET",
            "/api/v4/projects/redhat%2Fcentos-stream%2Frpms%2Fnova/merge_requests/1",
        ) in fake.calls
        await fake.approve(fake.mr(PATH, 1), bob)
        assert (await source.read_review("nova", "1")).approved
        with pytest.raises(Refused, match="no merge request !7"):
            await source.read_review("nova", "7")
        with pytest.raises(Refused):
            await source.read_review("nova", "1/../2")
    finally:
        await source.close()


async def test_a_merge_request_from_a_fork_is_fetched_from_the_target_project(
    fake: FakeGitLab, repo: tuple[Path, Path], tmp_path: Path
) -> None:
    bare, _ = repo
    fake.add_project(PATH, bare)
    fork = fake.fork(PATH, "jdoe/nova", tmp_path / "fork.git")
    work = tmp_path / "fork-work"
    git(tmp_path, "clone", "-q", str(fork.repo), str(work))
    git(work, "config", "user.email", "j@example.com")
    git(work, "config", "user.name", "J")
    (work / "nova.spec").write_text("Version: 12.0.2\n")
    git(work, "commit", "-q", "-am", "Update to 12.0.2")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/fix")
    sha = git(work, "rev-parse", "HEAD")
    await fake.open_mr(PATH, "fix", "Update to 12.0.2", fake.add_user("jdoe"), source="jdoe/nova")
    source = gitlab_source(fake, bare, tmp_path, approval={"min_approvals": 0})
    try:
        review = await source.read_review("nova", "1")
        assert review.revision == sha and review.approved
        # the gate's clone fetches the head from the distgit itself, not from the fork
        assert await source.resolve("nova", review.fetch_ref) == sha
    finally:
        await source.close()


async def test_merge_is_refused_when_the_merge_request_moved_since_it_was_tested(
    fake: FakeGitLab, repo: tuple[Path, Path], tmp_path: Path
) -> None:
    bare, work = repo
    fake.add_project(PATH, bare)
    alice = fake.add_user("alice")
    commit_on_branch(work, "update", "Version: 12.0.1\n", "Update to 12.0.1")
    mr = await fake.open_mr(PATH, "update", "Update to 12.0.1", alice)
    source = gitlab_source(fake, bare, tmp_path, approval={"min_approvals": 0})
    try:
        tested = await source.read_review("nova", "1")
        commit_on_branch(work, "update", "Version: 12.0.1\nRelease: 2\n", "Release 2")
        await fake.push_mr(mr, alice)
        outcome = await source.merge("nova", "0" * 40, tested)
        assert not outcome.ok
        assert "moved since" in outcome.reason and "SHA does not match HEAD" in outcome.reason
        assert mr.state == "opened"
        fresh = await source.read_review("nova", "1")
        outcome = await source.merge("nova", "0" * 40, fresh)
        assert outcome.ok and mr.state == "merged"
        head = git(bare, "rev-parse", "refs/heads/main")
        assert outcome.head == head == mr.merge_commit_sha
        assert git(bare, "rev-parse", f"{head}^2") == fresh.revision
        # the tested revision was marked passed before GitLab was asked to merge it
        assert [s.status for s in fake.statuses if s.sha == fresh.revision] == ["success"]
        again = await source.merge("nova", "0" * 40, fresh)
        assert again.ok and again.head == head and again.reason == "merged already"
    finally:
        await source.close()


async def test_merge_refusals_carry_gitlabs_reason(
    fake: FakeGitLab, repo: tuple[Path, Path], tmp_path: Path
) -> None:
    bare, work = repo
    project = fake.add_project(PATH, bare, merge_method="ff")
    alice = fake.add_user("alice")
    commit_on_branch(work, "update", "Version: 12.0.1\n", "Update to 12.0.1")
    await fake.open_mr(PATH, "update", "Update to 12.0.1", alice)
    commit_on_branch(work, "main", "fix\n", "Add a patch", file="fix.patch")  # main moved
    source = gitlab_source(fake, bare, tmp_path, approval={"min_approvals": 0})
    try:
        review = await source.read_review("nova", "1")
        assert not review.mergeable and "rebase" in review.why_not
        outcome = await source.merge("nova", "0" * 40, review)
        assert not outcome.ok and "HTTP 406" in outcome.reason
        project.members[fake.bot.id] = REPORTER
        outcome = await source.merge("nova", "0" * 40, review)
        assert not outcome.ok and "HTTP 401" in outcome.reason
    finally:
        await source.close()


async def test_pipelines_must_succeed_is_met_by_the_gates_own_status(
    fake: FakeGitLab, repo: tuple[Path, Path], tmp_path: Path
) -> None:
    bare, work = repo
    fake.add_project(PATH, bare, only_allow_merge_if_pipeline_succeeds=True)
    commit_on_branch(work, "update", "Version: 12.0.1\n", "Update to 12.0.1")
    await fake.open_mr(PATH, "update", "Update to 12.0.1", fake.add_user("alice"))
    source = gitlab_source(fake, bare, tmp_path, approval={"min_approvals": 0})
    try:
        review = await source.read_review("nova", "1")
        report = Report(
            phase="enqueued",
            project="nova",
            review="1",
            revision=review.revision,
            ref=review.fetch_ref,
            message="queued",
            queue="c10s",
            position=0,
        )
        await source.report("nova", report)
        assert (await source.read_review("nova", "1")).mergeable  # ci_must_pass is ours
        assert (await source.merge("nova", "0" * 40, review)).ok
    finally:
        await source.close()


async def test_reports_set_a_status_and_write_a_defused_note(
    fake: FakeGitLab, repo: tuple[Path, Path], tmp_path: Path
) -> None:
    bare, work = repo
    fake.add_project(PATH, bare)
    sha = commit_on_branch(work, "update", "Version: 12.0.1\n", "Update to 12.0.1")
    mr = await fake.open_mr(PATH, "update", "Update", fake.add_user("alice"))
    source = gitlab_source(fake, bare, tmp_path)
    try:
        enqueued = Report(
            phase="enqueued",
            project="nova",
            review="1",
            revision=sha,
            ref="refs/merge-requests/1/head",
            message="queued in c10s at position 2",
            queue="c10s",
            position=2,
            links={"status": "http://gate.example/items/4"},
        )
        await source.report("nova", enqueued)
        await source.report("nova", enqueued)  # again, after a reset: GitLab says 400, no harm
        failed = Report(
            phase="failed",
            project="nova",
            review="1",
            revision=sha,
            ref="refs/merge-requests/1/head",
            message="build failed:\n/merge\n/label ~approved\ncc @all",
            links={"log": "http://gate.example/logs/4/build.log"},
        )
        await source.report("nova", failed)
        states = [(s.status, s.name, s.target_url) for s in fake.statuses]
        assert states == [
            ("failed", "rpmgate", "http://gate.example/logs/4/build.log"),
        ]
        assert fake.statuses[0].description == "build failed:"
        bodies = [n.body for n in mr.notes]
        assert len(bodies) == 3 and all(n.author is fake.bot for n in mr.notes)
        assert "queued in c10s at position 2" in bodies[0]
        assert "\n/merge" not in bodies[2] and "\n/label" not in bodies[2]
        assert "@all" not in bodies[2] and "build.log" in bodies[2]
    finally:
        await source.close()


async def test_label_rule(fake: FakeGitLab, repo: tuple[Path, Path], tmp_path: Path) -> None:
    bare, work = repo
    fake.add_project(PATH, bare)
    commit_on_branch(work, "update", "Version: 12.0.1\n", "Update")
    mr = await fake.open_mr(PATH, "update", "Update", fake.add_user("alice"))
    source = gitlab_source(fake, bare, tmp_path, approval={"mode": "label", "label": "gate"})
    try:
        assert not (await source.read_review("nova", "1")).approved
        mr.labels.append("gate")
        assert (await source.read_review("nova", "1")).approved
        # the label approves for the gate; GitLab's own rules still decide what it merges
        mr.project.approvals_required = 1
        review = await source.read_review("nova", "1")
        assert review.approved and not review.mergeable and "approvals" in review.why_not
    finally:
        await source.close()


async def test_command_rule_needs_a_developer_and_a_command_after_the_last_push(
    fake: FakeGitLab, repo: tuple[Path, Path], tmp_path: Path
) -> None:
    bare, work = repo
    project = fake.add_project(PATH, bare)
    alice, rita, dave = fake.add_user("alice"), fake.add_user("rita"), fake.add_user("dave")
    project.members |= {rita.id: REPORTER, dave.id: DEVELOPER}
    commit_on_branch(work, "update", "Version: 12.0.1\n", "Update")
    mr = await fake.open_mr(PATH, "update", "Update", alice)
    source = gitlab_source(fake, bare, tmp_path, approval={"mode": "command"})
    try:
        await fake.comment(mr, alice, "/gate")  # the author, not a member
        await fake.comment(mr, rita, "/gate")  # a Reporter
        assert not (await source.read_review("nova", "1")).approved
        await fake.comment(mr, dave, "/gate")
        assert (await source.read_review("nova", "1")).approved
        commit_on_branch(work, "update", "Version: 12.0.1\nRelease: 2\n", "Release 2")
        await fake.push_mr(mr, alice)
        review = await source.read_review("nova", "1")
        assert not review.approved and "since the last push" in review.why_not
    finally:
        await source.close()


async def test_faults_are_transient_and_errors_are_not(
    fake: FakeGitLab, repo: tuple[Path, Path], tmp_path: Path
) -> None:
    bare, work = repo
    fake.add_project(PATH, bare)
    commit_on_branch(work, "update", "Version: 12.0.1\n", "Update")
    await fake.open_mr(PATH, "update", "Update", fake.add_user("alice"))
    source = gitlab_source(fake, bare, tmp_path)
    try:
        fake.faults.append(502)
        with pytest.raises(aiohttp.ClientResponseError) as fault:
            await source.read_review("nova", "1")
        assert is_transient(fault.value)
        fake.bot_token = "rotated"
        with pytest.raises(GitLabError) as error:
            await source.read_review("nova", "1")
        assert error.value.status == 401 and not is_transient(error.value)
        assert "glpat" not in str(error.value)
    finally:
        await source.close()
