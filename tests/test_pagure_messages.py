"""Pagure messages (captured from src.fedoraproject.org and pagure.io) into hints."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from gate.sources.pagure.config import PagureConfig
from gate.sources.pagure.messages import Hint, Malformed, parse, stored_payload
from gate.sources.pagure.webhook import Rejected, Verified, signature, verify

DATA = Path(__file__).parent / "data" / "pagure"
PREFIX = "org.fedoraproject.prod.pagure."


def captured(name: str) -> dict[str, Any]:
    """A captured fedora-messaging body as the consumer stores it (see the README)."""
    body = json.loads((DATA / f"{name}.json").read_text())
    topic = body.pop("topic").removeprefix(PREFIX)
    body.pop("timestamp", None)
    return stored_payload(topic, body, f"id-{name}", "fedora-messaging")


def test_a_new_pr_from_a_fork_is_a_hint_about_the_target_project() -> None:
    hint = parse(captured("pagure_pr_new"), "/gate")
    assert hint == Hint("review", "rpms/optee_os", 2)


def test_a_pr_from_a_branch_of_a_project_without_namespace() -> None:
    assert parse(captured("pagure_pr_new_no_fork"), "/gate") == Hint(
        "review", "fedora-kiwi-descriptions", 150
    )


@pytest.mark.parametrize(
    ("name", "project", "pr"),
    [
        ("pagure_pr_updated", "rpms/marshalparser", 32),
        ("pagure_pr_rebased", "rpms/ftp", 6),
        ("pagure_pr_flag_updated", "rpms/packit", 268),
    ],
)
def test_updates_rebases_and_flags_are_review_hints(name: str, project: str, pr: int) -> None:
    assert parse(captured(name), "/gate") == Hint("review", project, pr)


def test_a_comment_that_is_not_the_command_approves_nothing() -> None:
    hint = parse(captured("pagure_pr_comment"), "/gate")
    assert hint == Hint("review", "rpms/python-teamcity-messages", 36)


def with_authority(payload: dict[str, Any], user: str, may: bool, why: str) -> dict[str, Any]:
    return {**payload, "authority": {"user": user, "may_approve": may, "why": why}}


def test_the_command_by_a_committer_approves_the_head_it_was_given_on() -> None:
    # the captured comment is "/packit koji-build" by mmassari, the project's owner
    payload = with_authority(captured("pagure_pr_comment"), "mmassari", True, "owner")
    hint = parse(payload, "/packit koji-build")
    assert hint.approved_revision == "beaf90bcecc51968a46663f8d6f092bfdc92e682"
    assert hint.approved_by == "mmassari"


def test_the_command_by_someone_without_commit_access_is_ignored_with_the_reason() -> None:
    payload = with_authority(
        captured("pagure_pr_comment"), "mmassari", False, "mmassari has no commit access"
    )
    hint = parse(payload, "/packit koji-build")
    assert hint.approved_revision is None
    assert "no commit access" in hint.note


def test_a_command_whose_authority_was_not_checked_approves_nothing() -> None:
    hint = parse(captured("pagure_pr_comment"), "/packit koji-build")
    assert hint.approved_revision is None and "not checked" in hint.note


def test_an_authority_for_another_user_does_not_count() -> None:
    payload = with_authority(captured("pagure_pr_comment"), "limb", True, "admin")
    assert parse(payload, "/packit koji-build").approved_revision is None


def test_a_notification_comment_is_nobodys_command() -> None:
    payload = with_authority(captured("pagure_pr_comment"), "mmassari", True, "owner")
    payload["msg"]["pullrequest"]["comments"][0]["notification"] = True
    assert parse(payload, "/packit koji-build").approved_revision is None


def test_only_the_commenters_latest_comment_is_the_new_one() -> None:
    payload = with_authority(captured("pagure_pr_comment"), "mmassari", True, "owner")
    comments = payload["msg"]["pullrequest"]["comments"]
    later = copy.deepcopy(comments[0])
    later["id"] += 1
    later["comment"] = "thanks!"
    comments.append(later)
    assert parse(payload, "/packit koji-build").approved_revision is None


def test_a_push_to_the_distgit_is_a_push_hint() -> None:
    assert parse(captured("distgit_commit"), "/gate") == Hint("push", "rpms/buildah", branch="main")
    assert parse(captured("distgit_push_packit"), "/gate") == Hint(
        "push", "rpms/packit", branch="f36"
    )


def test_a_push_to_a_fork_is_not_a_push_to_the_distgit() -> None:
    payload = captured("distgit_commit")
    payload["msg"]["repo"] = {"fullname": "forks/someone/rpms/buildah", "name": "buildah"}
    hint = parse(payload, "/gate")
    assert hint.kind == "nothing" and "fork" in hint.note
    payload["msg"]["repo"] = {"namespace": "rpms", "name": "buildah", "parent": {"name": "x"}}
    assert parse(payload, "/gate").kind == "nothing"


def test_unknown_topics_are_told_apart_from_known_ones_that_change_nothing() -> None:
    payload = captured("pagure_pr_new")
    assert parse({**payload, "topic": "pull-request.tag.added"}, "/gate").kind == "nothing"
    unknown = parse({**payload, "topic": "pull-request.something.new"}, "/gate")
    assert unknown.kind == "unknown" and unknown.project == "rpms/optee_os"
    assert parse({**payload, "topic": "issue.new", "msg": {}}, "/gate").kind == "unknown"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda p: p.update(topic=["pull-request.new"]),
        lambda p: p.update(msg="text"),
        lambda p: p["msg"].update(pullrequest=None),
        lambda p: p["msg"]["pullrequest"].update(id="2"),
        lambda p: p["msg"]["pullrequest"].update(id=True),
        lambda p: p["msg"]["pullrequest"].update(id=-1),
        lambda p: p["msg"]["pullrequest"].update(project=[]),
        lambda p: p["msg"]["pullrequest"]["project"].update(fullname=None, name=None),
    ],
)
def test_hostile_messages_are_malformed_not_crashes(mangle: Any) -> None:
    payload = captured("pagure_pr_new")
    mangle(payload)
    with pytest.raises(Malformed):
        parse(payload, "/gate")


# -- web-hook verification --------------------------------------------------------------
#: Pagure's own test of call_web_hooks (tests/test_pagure_lib_task_services.py,
#: test_webhook_notification_no_webhook): the exact body and signature it expects
#: for project "test" whose hook_token is "aaabbbccc" (tests/__init__.py create_projects)
PAGURE_BODY = (
    b'{"i": 1, "msg": {"pagure_instance": "http://localhost.localdomain/", '
    b'"payload": ["a", "b", "c"], "project_fullname": "test"}, '
    b'"msg_id": "2018-not_so_random", "timestamp": 2, "topic": "topic"}'
)
PAGURE_SIGNATURE = "f3d757796554466eac49a5282b24ee32a1ecfb65dedd6c6231fb207240a9fe58"


def config(**keys: str) -> PagureConfig:
    return PagureConfig(url="https://src.example.org", webhook_keys=keys)  # type: ignore[arg-type]


def test_pagures_own_signature_test_vector_verifies() -> None:
    assert signature("aaabbbccc", PAGURE_BODY) == PAGURE_SIGNATURE
    got = verify(config(test="aaabbbccc"), PAGURE_BODY, PAGURE_SIGNATURE)
    assert isinstance(got, Verified)
    assert (got.topic, got.msg_id, got.project) == ("topic", "2018-not_so_random", "test")
    assert parse(stored_payload(got.topic, got.msg, got.msg_id, "webhook"), "/gate").kind == (
        "unknown"
    )


@pytest.mark.parametrize(
    ("keys", "body", "presented", "status"),
    [
        ({"test": "aaabbbccc"}, PAGURE_BODY, None, 401),
        ({"test": "aaabbbccc"}, PAGURE_BODY, "", 401),
        ({"test": "aaabbbccd"}, PAGURE_BODY, PAGURE_SIGNATURE, 403),
        ({"test": "aaabbbccc"}, PAGURE_BODY.replace(b'"a"', b'"z"'), PAGURE_SIGNATURE, 403),
        ({"other": "aaabbbccc"}, PAGURE_BODY, PAGURE_SIGNATURE, 403),
        ({"test": "aaabbbccc"}, b"not json", PAGURE_SIGNATURE, 400),
        ({"test": "aaabbbccc"}, b"[]", PAGURE_SIGNATURE, 400),
    ],
)
def test_deliveries_that_do_not_verify_are_rejected(
    keys: dict[str, str], body: bytes, presented: str | None, status: int
) -> None:
    got = verify(config(**keys), body, presented)
    assert isinstance(got, Rejected) and got.status == status
    assert "aaabbb" not in got.why and PAGURE_SIGNATURE not in got.why


def test_a_key_vouches_only_for_its_own_projects_events() -> None:
    msg = json.loads((DATA / "pagure_pr_new.json").read_text())
    msg.pop("topic")
    msg["project_fullname"] = "rpms/nova"  # signed with nova's key, about optee_os
    body = json.dumps(
        {"topic": "pull-request.new", "msg": msg, "msg_id": "2024-x", "i": 1, "timestamp": 1},
        sort_keys=True,
    ).encode()
    got = verify(config(**{"rpms/nova": "k"}), body, signature("k", body))
    assert isinstance(got, Rejected) and got.status == 403 and "optee_os" in got.why
