"""Draft builds on the local backend: several drafts of one NVR, none claiming it,
promotion an atomic rename into the build store (once per NVR, idempotent).
Unpromoted drafts are deleted by the daemon's policy: tests/test_draft_gc.py."""

from __future__ import annotations

from gate.builders.base import Draft
from gate.builders.local import LocalBackend
from repo_state.pool import Pool
from tests.test_local_builder import backend, build, distgit, spec  # noqa: F401 (fixtures)


def _draft(outcome) -> Draft:  # type: ignore[no-untyped-def]
    return Draft(nvr=outcome.nvr, task_ref=outcome.extra["task_ref"], artifacts=outcome.artifacts)


async def test_two_drafts_of_one_nvr_and_only_one_is_promoted(
    backend: LocalBackend,  # noqa: F811
    distgit,  # noqa: F811
) -> None:
    repo = distgit()
    first_commit = repo.commit({"hello.spec": spec()})
    # the same NVR from another tree (a change that did not bump the release)
    second_commit = repo.commit({"hello.spec": spec(), "README": "changed\n"})
    first_request = repo.request(first_commit, purpose="draft", key="d1")
    second_request = repo.request(second_commit, purpose="draft", key="d2")

    first = await build(backend, first_request)
    second = await build(backend, second_request)
    assert first.ok and second.ok, (first.reason, second.reason)
    assert first.nvr == second.nvr == "hello-1.0-1"
    # drafts claim nothing: no final build of the NVR yet, both kept privately
    assert await backend.find_final("hello-1.0-1") is None
    assert (backend.draft_dir("d1") / "build.json").is_file()
    assert (backend.draft_dir("d2") / "build.json").is_file()

    promoted = await backend.promote(first_request, _draft(first))
    assert promoted.ok, promoted.reason
    assert promoted.artifacts == first.artifacts
    existing = await backend.find_final("hello-1.0-1")
    assert existing is not None and existing.source == first_commit[1]
    assert not backend.draft_dir("d1").exists()  # renamed into the store

    refused = await backend.promote(second_request, _draft(second))
    assert not refused.ok
    assert refused.reason == (
        f"build hello-1.0-1 already exists (built from tree {first_commit[1]}, "
        f"this change is tree {second_commit[1]}): the draft is not promoted"
    )
    assert (await backend.find_final("hello-1.0-1")).source == first_commit[1]
    # a kill after the rename, before the gate recorded it: promoting again is the
    # same final build
    again = await backend.promote(first_request, _draft(first))
    assert again.ok and again.artifacts == first.artifacts
    # no final build ran: the drafts were the builds
    assert backend.rebuild_count("final") == 0 and backend.rebuild_count("draft") == 2


async def test_a_draft_of_an_nvr_built_already_is_refused_or_takes_it_over(
    backend: LocalBackend,  # noqa: F811
    distgit,  # noqa: F811
) -> None:
    """As kojihub's new_build refuses a draft whose target NVR exists: from another
    tree it fails at once, from the same tree it is that build (promoted as is)."""
    repo = distgit()
    first_commit = repo.commit({"hello.spec": spec()})
    final = await build(backend, repo.request(first_commit, "final", "f"))
    assert final.ok
    commit = repo.commit({"hello.spec": spec(), "README": "other\n"})
    refused = await build(backend, repo.request(commit, purpose="draft", key="d"))
    assert not refused.ok and refused.reason.startswith("build hello-1.0-1 already exists")
    same = repo.request(first_commit, purpose="draft", key="d0")
    adopted = await build(backend, same)
    assert adopted.ok and adopted.artifacts == final.artifacts
    promoted = await backend.promote(same, _draft(adopted))
    assert promoted.ok and promoted.artifacts == final.artifacts
    assert backend.rebuild_count("draft") == 0


async def test_drafts_off_is_the_serial_tip(tmp_path) -> None:
    off = LocalBackend(tmp_path / "off", Pool(tmp_path / "pool"), drafts="off")
    on = LocalBackend(tmp_path / "on", Pool(tmp_path / "pool"))
    assert await off.draft_support() == "drafts: off in the backend's configuration"
    assert off.status() == {"drafts": "off (serial tip)"}
    assert await on.draft_support() is None
    assert on.status() == {"drafts": "on"}
