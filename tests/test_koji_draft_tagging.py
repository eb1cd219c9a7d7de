"""Koji drafts stay out of the target's destination tag until promoted: built with
``skip_tag`` (kojid BuildTask.handler tags only ``if not self.opts.get('skip_tag')``),
tagged by the gate after ``promoteBuild`` (``tagBuild``: kojihub RootExports.tagBuild
checks, then a ``tagBuild`` task that kojid's TagBuildTask runs), exactly once
across a kill, through the real ``koji.ClientSession`` against the fake hub."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import koji
import pytest

from gate.builders.base import BackendError, Draft
from gate.builders.koji import KojiBackend
from gate.builders.koji_tagging import TagAccessDenied
from tests.fakekoji import FakeKoji
from tests.fakekoji.distgit import Distgit, spec
from tests.test_koji_backend import DIST, backends, eventually, fake_koji, repo  # noqa: F401

pytestmark = pytest.mark.slow

DEST = "liberty-candidate"
#: Fedora's kind of tag policy: drafts only in side tags, never in the candidate tag
DRAFTS_NOT_IN_CANDIDATE = (
    "is_draft && tag *-candidate :: deny draft builds are not allowed in candidate tags\n"
    "all :: allow"
)


def _draft(outcome) -> Draft:  # type: ignore[no-untyped-def]
    return Draft(nvr=outcome.nvr, task_ref=outcome.extra["task_id"], artifacts=outcome.artifacts)


def _tags(fk: FakeKoji, build: int | str) -> list[str]:
    return [t["name"] for t in koji.ClientSession(fk.url).listTags(build=build)]


async def test_a_draft_enters_the_destination_tag_only_when_promoted(
    fake_koji: FakeKoji,  # noqa: F811
    repo: Distgit,  # noqa: F811
    backends: Callable[..., KojiBackend],  # noqa: F811
) -> None:
    """On a hub whose tag policy denies drafts in the candidate tag (the draft's own
    tagBuild subtask would fail, and the draft with it), the draft is built untagged,
    then the promoted build is tagged there, once."""
    hub = fake_koji.hub
    hub.builder.allow_srpm_final = True
    fake_koji.run(lambda: hub.policies.__setitem__("tag", DRAFTS_NOT_IN_CANDIDATE))
    backend = backends()
    request = repo.request(repo.commit(spec()), purpose="draft", key="t1" * 10)
    draft = await backend.wait(await backend.submit(request))
    assert draft.ok, draft.reason
    draft_id = int(draft.extra["build_id"])
    assert _tags(fake_koji, draft_id) == []
    assert hub.count("tagBuild") == 0
    tasks = koji.ClientSession(fake_koji.url).listTasks({"method": "tagBuild"})
    assert tasks == []  # kojid made no tagBuild subtask

    promoted = await backend.promote(request, _draft(draft))
    assert promoted.ok, promoted.reason
    assert promoted.nvr == f"hello-1.0-1{DIST}"
    assert _tags(fake_koji, draft_id) == [DEST]
    assert hub.count("promoteBuild") == 1 and hub.count("tagBuild") == 1
    # promoting again (a restart that had not recorded it): nothing more on the hub
    again = await backend.promote(request, _draft(draft))
    assert again.ok and again.nvr == promoted.nvr
    assert hub.count("promoteBuild") == 1 and hub.count("tagBuild") == 1
    assert _tags(fake_koji, draft_id) == [DEST]


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        (
            "policy",
            "Koji refused to tag hello-1.0-1{dist} into liberty-candidate: ActionNotAllowed: "
            "policy violation (tag): liberty-candidate is frozen",
        ),
        (
            "package-list",
            "Koji refused to tag hello-1.0-1{dist} into liberty-candidate: TagError: "
            "Package hello blocked in liberty-candidate",
        ),
    ],
)
async def test_a_refused_tag_fails_the_promotion_and_says_why(
    how: str,
    reason: str,
    fake_koji: FakeKoji,  # noqa: F811
    repo: Distgit,  # noqa: F811
    backends: Callable[..., KojiBackend],  # noqa: F811
) -> None:
    hub = fake_koji.hub
    hub.builder.allow_srpm_final = True
    backend = backends()
    commit = repo.commit(spec())
    request = repo.request(commit, purpose="draft", key="t2" * 10)
    draft = await backend.wait(await backend.submit(request))
    assert draft.ok, draft.reason
    if how == "policy":
        rule = "tag liberty-candidate :: deny liberty-candidate is frozen\nall :: allow"
        fake_koji.run(lambda: hub.policies.__setitem__("tag", rule))
    else:
        fake_koji.run(lambda: hub.block_package(DEST, "hello"))

    refused = await backend.promote(request, _draft(draft))
    assert not refused.ok
    assert refused.nvr == f"hello-1.0-1{DIST}"
    assert refused.reason == (
        reason.format(dist=DIST) + f" (the draft was promoted to hello-1.0-1{DIST}, untagged: "
        "once the hub allows the tag, a recheck takes this build over)"
    ), refused.reason
    assert _tags(fake_koji, int(draft.extra["build_id"])) == []
    assert hub.count("tagBuild") == 1  # an answer, not a fault: not retried

    # the hub's admin lifts the refusal; the recheck's draft submission takes the
    # promoted build over, and its promotion only tags it
    if how == "policy":
        fake_koji.run(lambda: hub.policies.reset("tag"))
    else:
        fake_koji.run(lambda: hub.state.tags[DEST].blocked.discard("hello"))
    recheck = repo.request(commit, purpose="draft", key="t3" * 10)
    taken = await backend.wait(await backend.submit(recheck))
    assert taken.ok and taken.nvr == f"hello-1.0-1{DIST}", (taken.nvr, taken.reason)
    again = await backend.promote(recheck, _draft(taken))
    assert again.ok, again.reason
    assert _tags(fake_koji, int(draft.extra["build_id"])) == [DEST]
    assert hub.count("promoteBuild") == 1 and hub.count("tagBuild") == 2


@pytest.mark.parametrize(
    ("how", "why"),
    [("locked", "tag is locked"), ("perm", "tag requires tag permission")],
)
async def test_a_tag_closed_to_the_gate_is_a_backend_error_not_the_builds_outcome(
    how: str,
    why: str,
    fake_koji: FakeKoji,  # noqa: F811
    repo: Distgit,  # noqa: F811
    backends: Callable[..., KojiBackend],  # noqa: F811
) -> None:
    """kojihub check_tag_access refuses the gate's user the destination tag (locked, or
    a permission the user lacks): the same answer for every change, so the promotion
    raises TagAccessDenied (a BackendError) instead of returning a failed outcome;
    the promoted build waits untagged, and once the tag is open again the promotion
    only tags it."""
    hub = fake_koji.hub
    hub.builder.allow_srpm_final = True
    backend = backends()
    request = repo.request(repo.commit(spec()), purpose="draft", key="t5" * 10)
    draft = await backend.wait(await backend.submit(request))
    assert draft.ok, draft.reason
    draft_id = int(draft.extra["build_id"])

    def close_tag() -> None:
        if how == "locked":
            hub.state.tags[DEST].locked = True
        else:
            hub.state.tags[DEST].perm = "tag"

    fake_koji.run(close_tag)
    with pytest.raises(TagAccessDenied) as raised:
        await backend.promote(request, _draft(draft))
    assert isinstance(raised.value, BackendError)
    assert str(raised.value) == (
        f"Koji refuses the gate's user any tag into {DEST} (hello-1.0-1{DIST} waits): "
        f"ActionNotAllowed: {why}; once the hub's admin fixes the tag, restart rpmgate"
    )
    assert not fake_koji.run(lambda: hub.state.builds[draft_id].draft)  # promoted
    assert _tags(fake_koji, draft_id) == []
    assert hub.count("tagBuild") == 1  # a refusal, not a fault: not retried

    def open_tag() -> None:
        hub.state.tags[DEST].locked = False
        hub.state.tags[DEST].perm = None

    fake_koji.run(open_tag)
    again = await backends("state").promote(request, _draft(draft))
    assert again.ok, again.reason
    assert again.nvr == f"hello-1.0-1{DIST}"
    assert _tags(fake_koji, draft_id) == [DEST]
    assert hub.count("promoteBuild") == 1 and hub.count("tagBuild") == 2


async def test_a_tag_locked_while_its_tag_task_waits_is_a_backend_error_too(
    fake_koji: FakeKoji,  # noqa: F811
    repo: Distgit,  # noqa: F811
    backends: Callable[..., KojiBackend],  # noqa: F811
) -> None:
    """The tag is locked after tagBuild's call-time checks, before kojid runs the task:
    kojihub host.tagBuild -> _tag_build -> assert_tag_access fails the task with
    "tag is locked"; that is the gate's user's refusal too, not the build's."""
    hub = fake_koji.hub
    hub.builder.allow_srpm_final = True
    backend = backends()
    request = repo.request(repo.commit(spec()), purpose="draft", key="t6" * 10)
    draft = await backend.wait(await backend.submit(request))
    assert draft.ok, draft.reason
    fake_koji.run(hub.builder.hold)
    promoting = asyncio.create_task(backend.promote(request, _draft(draft)))
    await eventually(lambda: hub.count("tagBuild") == 1)

    def lock_and_run() -> None:
        hub.state.tags[DEST].locked = True
        hub.builder.release()

    fake_koji.run(lock_and_run)
    with pytest.raises(TagAccessDenied, match=r"ActionNotAllowed: tag is locked; once the hub"):
        await promoting
    assert _tags(fake_koji, int(draft.extra["build_id"])) == []
    tasks = koji.ClientSession(fake_koji.url).listTasks({"method": "tagBuild"})
    assert [t["state"] for t in tasks] == [koji.TASK_STATES["FAILED"]]


@pytest.mark.parametrize("when", ["after-promote", "tag-task-running", "tag-reply-lost"])
async def test_a_kill_between_promotion_and_tag_ends_tagged_once(
    when: str,
    fake_koji: FakeKoji,  # noqa: F811
    repo: Distgit,  # noqa: F811
    backends: Callable[..., KojiBackend],  # noqa: F811
) -> None:
    """after-promote: the hub promoted, its reply was lost and the daemon died before
    tagBuild.  tag-task-running: the daemon died with the tagBuild task queued (its id
    journaled).  tag-reply-lost: the hub made the task, the daemon died before its reply
    (the journal has the intent only: the new daemon finds the task with listTasks).  A
    new daemon promotes again: it promotes nothing, tags (or waits for the task) once."""
    hub = fake_koji.hub
    hub.builder.allow_srpm_final = True
    backend = backends()
    request = repo.request(repo.commit(spec()), purpose="draft", key="t4" * 10)
    draft = await backend.wait(await backend.submit(request))
    assert draft.ok, draft.reason
    draft_id = int(draft.extra["build_id"])

    if when == "after-promote":
        # the hub promotes, its reply is held: the daemon dies waiting for it
        hub.delay_reply("promoteBuild", 2.0)
        promoting = asyncio.create_task(backend.promote(request, _draft(draft)))
        await eventually(lambda: not fake_koji.run(lambda: hub.state.builds[draft_id].draft))
    else:
        fake_koji.run(hub.builder.hold)
        if when == "tag-reply-lost":
            hub.delay_reply("tagBuild", 5.0)
        promoting = asyncio.create_task(backend.promote(request, _draft(draft)))
        await eventually(lambda: hub.count("tagBuild") == 1)
    promoting.cancel()  # kill -9: the step never finishes in this process
    with contextlib.suppress(asyncio.CancelledError):
        await promoting
    assert hub.count("tagBuild") == (0 if when == "after-promote" else 1)
    await backend.close()
    build = fake_koji.run(lambda: hub.state.builds[draft_id])
    assert not build.draft and _tags(fake_koji, draft_id) == []

    restarted = backends("state")
    if when == "tag-task-running":
        fake_koji.run(hub.builder.release)
    promoted = asyncio.create_task(restarted.promote(request, _draft(draft)))
    if when == "tag-reply-lost":
        # the task is still queued: the new daemon must find it, not tag again
        await eventually(lambda: hub.count("listTasks") >= 1 or promoted.done())
        fake_koji.run(hub.builder.release)
    outcome = await promoted
    assert outcome.ok, outcome.reason
    assert outcome.nvr == f"hello-1.0-1{DIST}"
    assert _tags(fake_koji, draft_id) == [DEST]
    assert hub.count("promoteBuild") == 1
    assert hub.count("tagBuild") == 1  # the queued task was waited for, not doubled
    tasks = koji.ClientSession(fake_koji.url).listTasks({"method": "tagBuild"})
    assert [t["state"] for t in tasks] == [koji.TASK_STATES["CLOSED"]]
