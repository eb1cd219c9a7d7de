"""Koji draft builds (Koji >= 1.34) through the real ``koji.ClientSession`` against
the fake hub, which implements them as kojihub does (``build(..., {'draft':
True})``, release ``<release>,draft_<build id>``, ``promoteBuild``, policy
``draft_promotion``, the ``draft`` and promoter fields of ``getBuild`` and
``listBuilds``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import koji
import pytest

from gate.builders.base import Draft
from gate.builders.koji import KojiBackend
from gate.builders.koji_journal import Submission
from gate.draft_gc import DraftSweep
from gate.model import BuildState
from gate.plumbing import Plumbing
from repo_state.db import make_engine, migrate, session
from repo_state.models import BuildRow, ChangeRow, ItemRow
from tests.fakekoji import FakeKoji
from tests.fakekoji.distgit import Distgit, spec
from tests.test_koji_backend import DIST, backends, fake_koji, repo  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def _draft(outcome) -> Draft:  # type: ignore[no-untyped-def]
    return Draft(nvr=outcome.nvr, task_ref=outcome.extra["task_id"], artifacts=outcome.artifacts)


async def test_two_drafts_of_one_nvr_one_promoted_the_other_refused(
    fake_koji: FakeKoji,  # noqa: F811
    repo: Distgit,  # noqa: F811
    backends: Callable[..., KojiBackend],  # noqa: F811
) -> None:
    fake_koji.hub.builder.allow_srpm_final = True
    backend = backends()
    assert await backend.draft_support() is None
    assert backend.status()["drafts"] == "on"
    first_request = repo.request(repo.commit(spec()), purpose="draft", key="d1" * 10)
    # the same NVR from another tree (the release was not bumped)
    second_request = repo.request(
        repo.commit(spec(content="other")), purpose="draft", key="d2" * 10
    )

    first = await backend.wait(await backend.submit(first_request))
    second = await backend.wait(await backend.submit(second_request))
    assert first.ok and second.ok, (first.reason, second.reason)
    builds = [c for c in fake_koji.hub.calls if c.method == "build"]
    # skip_tag: kojid leaves the drafts out of the destination tag
    assert [c.args[2] for c in builds] == [{"draft": True, "skip_tag": True}] * 2
    first_id, second_id = int(first.extra["build_id"]), int(second.extra["build_id"])
    assert first.nvr == f"hello-1.0-1{DIST},draft_{first_id}"
    assert second.nvr == f"hello-1.0-1{DIST},draft_{second_id}"
    # neither claims the NVR
    assert await backend.find_final(f"hello-1.0-1{DIST}") is None

    promoted = await backend.promote(first_request, _draft(first))
    assert promoted.ok, promoted.reason
    assert promoted.nvr == f"hello-1.0-1{DIST}" and promoted.artifacts == first.artifacts
    info = fake_koji.run(lambda: fake_koji.hub.state.builds[first_id].info())
    assert (info["draft"], info["release"], info["promoter_name"]) == (False, f"1{DIST}", "rpmgate")
    # the RPMs moved to the promoted build's directory; the draft path links there
    moved = fake_koji.hub.topdir / f"packages/hello/1.0/1{DIST}"
    assert moved.is_dir() and (moved.parent / f"1{DIST},draft_{first_id}").is_symlink()

    refused = await backend.promote(second_request, _draft(second))
    assert not refused.ok
    assert refused.reason.startswith(
        f"Koji refused to promote: GenericError: Cannot promote build "
        f"hello-1.0-1{DIST},draft_{second_id}. "
        f"Reason: Target build exists: hello-1.0-1{DIST}(#{first_id})"
    ), refused.reason
    # a daemon killed after promoteBuild, before recording it: promoting again is that build
    calls = fake_koji.hub.count("promoteBuild")
    again = await backend.promote(first_request, _draft(first))
    assert again.ok and again.nvr == f"hello-1.0-1{DIST}"
    assert fake_koji.hub.count("promoteBuild") == calls  # looked up, not promoted again

    # listBuilds: the unpromoted draft is still a draft; the promoted one has a promoter
    session = koji.ClientSession(fake_koji.url)
    drafts = session.listBuilds(draft=True)
    assert [b["build_id"] for b in drafts] == [second_id]
    assert [b["build_id"] for b in session.listBuilds(promoter="rpmgate")] == [first_id]


async def test_a_hub_policy_that_refuses_promotion_fails_the_promotion(
    fake_koji: FakeKoji,  # noqa: F811
    repo: Distgit,  # noqa: F811
    backends: Callable[..., KojiBackend],  # noqa: F811
) -> None:
    fake_koji.hub.builder.allow_srpm_final = True
    fake_koji.run(lambda: fake_koji.hub.policies.__setitem__("draft_promotion", "all :: deny"))
    backend = backends()
    request = repo.request(repo.commit(spec()), purpose="draft", key="d3" * 10)
    draft = await backend.wait(await backend.submit(request))
    assert draft.ok
    refused = await backend.promote(request, _draft(draft))
    assert not refused.ok and "draft_promotion" in refused.reason, refused.reason
    build = fake_koji.run(lambda: fake_koji.hub.state.builds[int(draft.extra["build_id"])])
    assert build.draft  # still a draft: no NVR claimed


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        ("1.35.3", None),
        ("1.34.0", None),
        ("1.33.1", "Koji hub 1.33.1 has no draft builds (Koji 1.34 added them): serial tip"),
        (None, "the hub predates getKojiVersion (Koji < 1.23): no draft builds, serial tip"),
    ],
)
async def test_drafts_only_on_hubs_that_have_them(
    fake_koji: FakeKoji,  # noqa: F811
    backends: Callable[..., KojiBackend],  # noqa: F811
    version: str | None,
    reason: str | None,
) -> None:
    fake_koji.hub.koji_version = version  # type: ignore[attr-defined]
    backend = backends()
    assert await backend.draft_support() == reason
    assert backend.status()["drafts"] == ("on" if reason is None else f"off: {reason}")


async def test_drafts_off_in_the_config(
    fake_koji: FakeKoji,  # noqa: F811
    backends: Callable[..., KojiBackend],  # noqa: F811
) -> None:
    backend = backends(drafts="off")
    assert await backend.draft_support() == (
        "drafts: off in the backend's configuration (serial tip)"
    )
    assert fake_koji.hub.count("getKojiVersion") == 0


async def test_recovery_from_scm_tells_a_draft_task_from_a_final_task(
    fake_koji: FakeKoji,  # noqa: F811
    repo: Distgit,  # noqa: F811
    backends: Callable[..., KojiBackend],  # noqa: F811
) -> None:
    """A draft and a final build of one commit from SCM have the same source, target
    and scratch flag: a restart that lost a task id must not adopt the other's task."""
    commit = repo.commit(spec())
    draft_request = repo.request(commit, purpose="draft", key="d4" * 10)
    final_request = repo.request(commit, purpose="final", key="d4" * 10)
    backend = backends(final_source="scm")
    draft_ref = await backend.submit(draft_request)
    assert fake_koji.run(lambda: fake_koji.hub.state.tasks[int(draft_ref)].request[2]) == {
        "draft": True,
        "skip_tag": True,
    }

    # a final build of the same tree was about to be submitted when the daemon died:
    # its intent is journaled (after the draft's task was made), its task id is not
    journal = backend.journal
    final_intent = Submission(
        purpose="final",
        key=final_request.key,
        project=final_request.project,
        target=final_request.target,
        source=f"{final_request.scm_url}",
        scratch=False,
        commit=final_request.commit,
        tree=final_request.tree,
        intent_at=time.time(),
    )
    assert not final_intent.draft
    journal.save(final_intent)
    assert await backends("state", final_source="scm").recover(final_request) is None

    # and the other way round: a draft whose task id was lost never adopts the final
    # task of its tree (here the only task of that commit on the hub)
    other = repo.commit(spec(content="other"))
    other_final = repo.request(other, purpose="final", key="d5" * 10)
    other_draft = repo.request(other, purpose="draft", key="d5" * 10)
    final_ref = await backend.submit(other_final)
    journal.save(
        Submission(
            purpose="draft",
            key=other_draft.key,
            project=other_draft.project,
            target=other_draft.target,
            source=f"{other_draft.scm_url}",
            scratch=False,
            commit=other_draft.commit,
            tree=other_draft.tree,
            intent_at=time.time(),
        )
    )
    assert await backends("state", final_source="scm").recover(other_draft) is None
    # each finds its own task
    lost = journal.load("draft", draft_request.key)
    assert lost is not None and lost.draft and lost.task_id == int(draft_ref)
    lost.task_id = None
    journal.save(lost)
    assert await backends("state", final_source="scm").recover(draft_request) == draft_ref
    assert await backends("state", final_source="scm").recover(other_final) == final_ref


def test_journals_written_before_the_draft_field_read_it_from_the_purpose() -> None:
    fields = {
        "key": "k",
        "project": "p",
        "target": "t",
        "source": "git+https://h/p.git#0",
        "scratch": False,
        "commit": "0",
        "tree": "1",
        "intent_at": 0.0,
    }
    assert Submission(purpose="draft", **fields).draft
    assert not Submission(purpose="final", **fields).draft
    assert Submission(purpose="draft", **fields).matches(fields["source"], "t", False, True)
    assert not Submission(purpose="draft", **fields).matches(fields["source"], "t", False, False)


async def test_an_unpromoted_draft_is_deleted_and_an_old_tagged_one_untagged_first(
    fake_koji: FakeKoji,  # noqa: F811
    repo: Distgit,  # noqa: F811
    backends: Callable[..., KojiBackend],  # noqa: F811
) -> None:
    """kojihub delete_build: admin only, refused while tagged.  A draft of today's
    rpmgate (``skip_tag``) is in no tag: one deleteBuild.  One built by an older
    rpmgate was tagged by kojid's BuildTask into the target's destination tag: the
    gate untags it there first.  A promoted build, and a draft someone tagged
    elsewhere, stay."""
    fake_koji.hub.builder.allow_srpm_final = True
    fake_koji.run(lambda: fake_koji.hub.state.users["rpmgate"].perms.add("admin"))
    backend = backends()
    hub = fake_koji.hub
    fresh_request = repo.request(repo.commit(spec(content="fresh")), purpose="draft", key="d8" * 10)
    fresh = await backend.wait(await backend.submit(fresh_request))
    assert fresh.ok, fresh.reason
    assert fake_koji.run(lambda: hub.state.tags["liberty-candidate"].builds) == set()
    removed = await backend.remove_draft(fresh_request.key, fresh_request.target, _draft(fresh))
    assert (removed.outcome, removed.reason) == ("deleted", "")
    assert hub.count("untagBuild") == 0 and hub.count("deleteBuild") == 1

    request = repo.request(repo.commit(spec()), purpose="draft", key="d6" * 10)
    outcome = await backend.wait(await backend.submit(request))
    assert outcome.ok, outcome.reason
    draft_id = int(outcome.extra["build_id"])
    # as kojid's BuildTask tagged the drafts of rpmgate versions without skip_tag
    fake_koji.run(lambda: hub.state.tags["liberty-candidate"].builds.add(draft_id))
    builddir = hub.topdir / f"packages/hello/1.0/1{DIST},draft_{draft_id}"
    assert builddir.is_dir()

    backend.forget_draft(request.key)  # the gate let it go: a new draft is built anew
    removal = await backend.remove_draft(request.key, request.target, _draft(outcome))
    assert (removal.outcome, removal.reason) == ("deleted", "")
    build = fake_koji.run(lambda: hub.state.builds[draft_id])
    assert build.state == koji.BUILD_STATES["DELETED"] and build.draft
    assert not fake_koji.run(lambda: draft_id in hub.state.tags["liberty-candidate"].builds)
    assert not builddir.exists()
    assert hub.count("untagBuild") == 1 and hub.count("deleteBuild") == 3
    again = await backend.remove_draft(request.key, request.target, _draft(outcome))
    assert (again.outcome, again.reason) == ("deleted", "deleted already")

    # the key needed again: a new draft build, never the deleted one's task
    rebuilt = await backend.wait(await backend.submit(request))
    assert rebuilt.ok and int(rebuilt.extra["build_id"]) != draft_id
    # someone tagged it into another tag too: it stays, and says why
    other = int(rebuilt.extra["build_id"])
    fake_koji.run(lambda: hub.state.tags["liberty-release"].builds.add(other))
    left = await backend.remove_draft(request.key, request.target, _draft(rebuilt))
    assert left.outcome == "left"
    assert left.reason.startswith(
        "Koji refused deleteBuild: GenericError: Cannot delete build, tagged"
    )
    assert fake_koji.run(lambda: hub.state.builds[other].state) == koji.BUILD_STATES["COMPLETE"]
    # promoted: never deleted
    promoted = await backend.promote(request, _draft(rebuilt))
    assert promoted.ok, promoted.reason
    kept = await backend.remove_draft(request.key, request.target, _draft(rebuilt))
    assert kept.outcome == "left" and "was promoted" in kept.reason
    assert fake_koji.run(lambda: hub.state.builds[other].state) == koji.BUILD_STATES["COMPLETE"]


async def test_a_hub_that_refuses_the_permission_is_asked_once_and_the_status_says_so(
    fake_koji: FakeKoji,  # noqa: F811
    repo: Distgit,  # noqa: F811
    backends: Callable[..., KojiBackend],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The gate's user without ``admin``: ``deleteBuild`` refuses before anything
    changed; the sweep logs it once, gives the row back and stops asking."""
    fake_koji.hub.builder.allow_srpm_final = True
    backend = backends(draft_retention=0)
    request = repo.request(repo.commit(spec()), purpose="draft", key="d7" * 10)
    outcome = await backend.wait(await backend.submit(request))
    assert outcome.ok, outcome.reason
    draft_id = int(outcome.extra["build_id"])
    assert backend.status()["draft_removal"] == "after 0 s unused"

    engine = make_engine(f"sqlite:///{tmp_path / 'gate.db'}")
    migrate(engine)
    with session(engine) as s:
        change = ChangeRow(project="rpms/hello", ref="refs/heads/x", sha=request.commit)
        s.add(change)
        s.commit()
        s.refresh(change)
        item = ItemRow(queue="liberty", change_id=change.id or 0, project="rpms/hello")
        item.active, item.finished_at = False, datetime.now(UTC)
        s.add(item)
        s.commit()
        s.refresh(item)
        row = BuildRow(
            purpose="draft",
            key=request.key,
            project="rpms/hello",
            package="hello",
            backend="koji",
            commit=request.commit,
            tree=request.tree,
            target=request.target,
            includes=json.dumps([item.id]),
            task_ref=outcome.extra["task_id"],
            state=BuildState.PASSED.value,
            nvr=outcome.nvr,
            finished_at=datetime.now(UTC),
        )
        s.add(row)
        s.commit()
        s.refresh(row)
    events: list[dict[str, Any]] = []
    plumbing = Plumbing()
    plumbing.listeners.append(events.append)
    sweep = DraftSweep(engine, plumbing, {"koji": backend})
    assert sweep.sweep(now=time.time() + 1) == 1
    assert await sweep.remove_collecting() == 0
    assert [(e["result"], e["reason"]) for e in events] == [
        (
            "refused",
            "deleteBuild: ActionNotAllowed: admin permission required (logged in as rpmgate)",
        )
    ]
    assert backend.status()["draft_removal"] == (
        "refused: deleteBuild: ActionNotAllowed: admin permission required (logged in as rpmgate)"
    )
    with session(engine) as s:
        back = s.get(BuildRow, row.id)
        assert back is not None and (back.state, back.reason) == ("passed", "")
    # nothing changed on the hub: refused before the tags were looked at
    hub = fake_koji.hub
    assert fake_koji.run(lambda: hub.state.builds[draft_id].state) == koji.BUILD_STATES["COMPLETE"]
    assert hub.count("deleteBuild") == 1 and hub.count("untagBuild") == 0
    # not asked again (until a restart)
    assert sweep.sweep(now=time.time() + 1) == 0
    assert await sweep.remove_collecting() == 0
    assert hub.count("deleteBuild") == 1 and len(events) == 1
    engine.dispose()


async def test_a_draft_deleted_behind_the_gates_back_is_built_again_as_the_final_build(
    fake_koji: FakeKoji,  # noqa: F811
    repo: Distgit,  # noqa: F811
    backends: Callable[..., KojiBackend],  # noqa: F811
) -> None:
    """An admin (or koji-gc) deleted the draft: promoteBuild would answer "state
    (DELETED) is not COMPLETE" and reject the item for nothing.  The promotion builds
    the final build instead (no draft option, no skip_tag: kojid tags it), once: a
    restart during or after it takes the same task over."""
    hub = fake_koji.hub
    hub.builder.allow_srpm_final = True
    backend = backends()
    commit = repo.commit(spec())
    request = repo.request(commit, purpose="draft", key="d9" * 10)
    draft = await backend.wait(await backend.submit(request))
    assert draft.ok, draft.reason
    draft_id = int(draft.extra["build_id"])
    admin = koji.ClientSession(fake_koji.url, {"user": "kojiadmin", "password": "admin"})
    admin.login()
    admin.deleteBuild(draft_id)
    assert fake_koji.run(lambda: hub.state.builds[draft_id].state) == koji.BUILD_STATES["DELETED"]

    final_request = repo.request(commit, purpose="final", key=request.key)
    outcome = await backend.promote(final_request, _draft(draft))
    assert outcome.ok, outcome.reason
    assert outcome.nvr == f"hello-1.0-1{DIST}"
    final_id = int(outcome.extra["build_id"])
    assert final_id != draft_id
    assert fake_koji.run(lambda: hub.state.builds[final_id].draft) is False
    # the hub's own answer to promoting it, which the gate no longer asks for
    with pytest.raises(koji.GenericError, match=r"state \(DELETED\) is not COMPLETE"):
        admin.promoteBuild(draft_id)
    assert hub.count("promoteBuild") == 1  # (the call just above)
    builds = [c.args[2] for c in hub.calls if c.method == "build"]
    assert builds == [{"draft": True, "skip_tag": True}, {}]
    tags = [t["name"] for t in admin.listTags(build=final_id)]
    assert tags == ["liberty-candidate"]  # by kojid's BuildTask, as at a serial tip
    assert {a.filename for a in outcome.artifacts} == {a.filename for a in draft.artifacts}

    # a restart that had not recorded the outcome promotes again: the same build
    again = await backends("state").promote(final_request, _draft(draft))
    assert again.ok and int(again.extra["build_id"]) == final_id
    assert [c.method for c in hub.calls].count("build") == 2
