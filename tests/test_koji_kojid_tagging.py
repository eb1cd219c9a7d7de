"""A final build made at the tip without a draft (serial tip) is tagged by kojid: its
build task imports the build (COMPLETE), then runs a ``tagBuild`` subtask, and fails
with that subtask's fault when the hub refuses the tag (builder/kojid
BuildTask.handler / BuildTask.tagBuild, kojihub HostExports.tagBuild).  The backend
reads that shape and tags the COMPLETE build itself (``koji_tagging.Tagger``): a tag
closed to the gate's user (kojihub check_tag_access) is a backend error, not the
build's outcome (I5), and a restart only tags; a ``tag`` policy refusal stays the
build's failure, and a recheck takes the built NVR over.  Real koji.ClientSession
against the fake hub."""

from __future__ import annotations

from collections.abc import Callable

import koji
import pytest

from gate.builders.base import BackendError
from gate.builders.koji import KojiBackend
from gate.builders.koji_tagging import TagAccessDenied, untagged_by_kojid
from tests.fakekoji import Failure, FakeKoji
from tests.fakekoji.distgit import Distgit, spec
from tests.test_koji_backend import DIST, backends, eventually, fake_koji, repo  # noqa: F401

pytestmark = pytest.mark.slow

DEST = "liberty-candidate"
NVR = f"hello-1.0-1{DIST}"


def _tags(fk: FakeKoji, build: int | str) -> list[str]:
    return [t["name"] for t in koji.ClientSession(fk.url).listTags(build=build)]


def _hub_build(fk: FakeKoji) -> tuple[str, int | None]:
    build = koji.ClientSession(fk.url).getBuild(NVR)
    return koji.BUILD_STATES[build["state"]], build["task_id"]


def _set_closed(fk: FakeKoji, how: str, closed: bool) -> None:
    def change() -> None:
        tag = fk.hub.state.tags[DEST]
        if how == "locked":
            tag.locked = closed
        else:
            tag.perm = "tag" if closed else None

    fk.run(change)


@pytest.mark.parametrize(
    ("how", "why"),
    [("locked", "tag is locked"), ("perm", "tag requires tag permission")],
)
async def test_a_build_kojid_cannot_tag_into_a_closed_tag_waits_then_is_only_tagged(
    how: str,
    why: str,
    fake_koji: FakeKoji,  # noqa: F811
    repo: Distgit,  # noqa: F811
    backends: Callable[..., KojiBackend],  # noqa: F811
) -> None:
    """The destination tag is closed to the gate's user: kojid's tagBuild subtask fails
    with check_tag_access's reason, and the build task with it, the build COMPLETE.
    The backend's wait raises TagAccessDenied (a BackendError: the watch stops, no
    outcome); after the admin opens the tag, a new daemon waiting for the same task
    tags the build and returns it, built once."""
    hub = fake_koji.hub
    hub.builder.allow_srpm_final = True
    _set_closed(fake_koji, how, True)
    backend = backends()
    request = repo.request(repo.commit(spec()), purpose="final")
    ref = await backend.submit(request)

    with pytest.raises(TagAccessDenied) as raised:
        await backend.wait(ref)
    assert isinstance(raised.value, BackendError)
    assert str(raised.value) == (
        f"Koji refuses the gate's user any tag into {DEST} ({NVR} waits): "
        f"ActionNotAllowed: {why}; once the hub's admin fixes the tag, restart rpmgate"
    )
    assert _hub_build(fake_koji) == ("COMPLETE", int(ref))
    assert _tags(fake_koji, NVR) == []
    assert hub.count("tagBuild") == 1  # the gate asked once, refused at the call

    # still closed: a restart waits again, and is refused again, building nothing
    with pytest.raises(TagAccessDenied):
        await backends("state").wait(ref)
    _set_closed(fake_koji, how, False)
    outcome = await backends("state").wait(ref)
    assert outcome.ok, outcome.reason
    assert outcome.nvr == NVR
    assert outcome.extra["task_id"] == ref
    assert outcome.extra["build_id"] == str(koji.ClientSession(fake_koji.url).getBuild(NVR)["id"])
    assert {a.arch for a in outcome.artifacts} == {"noarch", "src"}
    assert _tags(fake_koji, NVR) == [DEST]
    assert hub.count("build") == 1 and hub.count("tagBuild") == 3
    # tagged now: waiting again (a restart before the outcome was recorded) tags nothing
    again = await backends("state").wait(ref)
    assert again.ok and again.artifacts == outcome.artifacts
    assert hub.count("tagBuild") == 3


async def test_a_tag_the_policy_refuses_fails_the_build_and_a_recheck_only_tags_it(
    fake_koji: FakeKoji,  # noqa: F811
    repo: Distgit,  # noqa: F811
    backends: Callable[..., KojiBackend],  # noqa: F811
) -> None:
    """The hub's tag policy refuses the build in the candidate tag: the change's verdict,
    in the hub's words, as a promoted draft gets it.  Once the policy allows it, a
    recheck of the same sources takes the COMPLETE build over and only tags it."""
    hub = fake_koji.hub
    hub.builder.allow_srpm_final = True
    rule = f"tag {DEST} :: deny {DEST} is frozen\nall :: allow"
    fake_koji.run(lambda: hub.policies.__setitem__("tag", rule))
    backend = backends()
    commit = repo.commit(spec())
    ref = await backend.submit(repo.request(commit, purpose="final", key="p1" * 10))

    refused = await backend.wait(ref)
    assert not refused.ok
    assert refused.nvr == NVR
    assert refused.reason == (
        f"Koji refused to tag {NVR} into {DEST}: ActionNotAllowed: policy violation (tag): "
        f"{DEST} is frozen ({NVR} is built, untagged: once the hub allows the tag, a "
        "recheck takes this build over)"
    )
    assert refused.log == f"{fake_koji.weburl}/taskinfo?taskID={ref}"
    assert _hub_build(fake_koji) == ("COMPLETE", int(ref))
    assert _tags(fake_koji, NVR) == []

    fake_koji.run(lambda: hub.policies.reset("tag"))
    recheck = repo.request(commit, purpose="final", key="p2" * 10)
    assert await backend.submit(recheck) == ref  # the COMPLETE build's task, taken over
    outcome = await backend.wait(ref)
    assert outcome.ok, outcome.reason
    assert outcome.nvr == NVR and _tags(fake_koji, NVR) == [DEST]
    assert hub.count("build") == 1


async def test_a_tag_subtask_that_died_is_done_by_the_gate(
    fake_koji: FakeKoji,  # noqa: F811
    repo: Distgit,  # noqa: F811
    backends: Callable[..., KojiBackend],  # noqa: F811
) -> None:
    """kojid's tagBuild subtask fails for a reason of its own (the hub would tag the
    build): the build is COMPLETE and the gate's tagBuild succeeds, so the final build
    passes instead of rejecting the change."""
    hub = fake_koji.hub
    hub.builder.allow_srpm_final = True
    hub.builder.failures.append(Failure("tagBuild", "builder lost its connection"))
    backend = backends()
    ref = await backend.submit(repo.request(repo.commit(spec()), "final"))
    failed = koji.TASK_STATES["FAILED"]
    await eventually(lambda: fake_koji.run(lambda: hub.state.tasks[int(ref)].state == failed))
    hub.builder.failures.clear()  # (it would fail the gate's tagBuild task too)
    outcome = await backend.wait(ref)
    assert outcome.ok, outcome.reason
    assert _tags(fake_koji, NVR) == [DEST]
    assert hub.count("build") == 1 and hub.count("tagBuild") == 1


async def test_only_a_build_task_failed_by_its_tag_subtask_is_read_as_untagged(
    fake_koji: FakeKoji,  # noqa: F811
    repo: Distgit,  # noqa: F811
    backends: Callable[..., KojiBackend],  # noqa: F811
) -> None:
    """A failed buildArch (no build to tag), a passed task and a scratch build are not
    kojid's untagged builds; a locked tag's is, with the subtask that failed."""
    hub = fake_koji.hub
    hub.builder.allow_srpm_final = True
    backend = backends()
    hub.builder.failures.append(Failure("buildArch", "builder ran out of disk"))
    failed = await backend.submit(repo.request(repo.commit(spec()), "final", key="f1" * 10))
    report = await backend.watcher.wait(int(failed))
    assert report.state == "FAILED" and await untagged_by_kojid(backend.hub, report) is None
    assert not (await backend.wait(failed)).ok
    hub.builder.failures.clear()

    scratch = await backend.submit(repo.request(repo.commit(spec()), "scratch", key="s1" * 10))
    report = await backend.watcher.wait(int(scratch))
    assert report.state == "CLOSED" and await untagged_by_kojid(backend.hub, report) is None

    _set_closed(fake_koji, "locked", True)
    final = await backend.submit(repo.request(repo.commit(spec()), "final", key="f2" * 10))
    report = await backend.watcher.wait(int(final))
    untagged = await untagged_by_kojid(backend.hub, report)
    assert untagged is not None
    assert (untagged.tag, untagged.build["nvr"]) == (DEST, NVR)
    assert untagged.fault == "ActionNotAllowed: tag is locked"
    [child] = [c for c in report.children if c.method == "tagBuild"]
    assert untagged.subtask == child.id and child.state == "FAILED"
