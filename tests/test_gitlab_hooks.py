"""GitLab payloads read into the gate's events: real captured deliveries (tests/data/gitlab)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gate.events import RefUpdated, Refused, ReviewUpdated
from gate.merger import Merger
from gate.sources.gitlab import hooks
from gate.sources.gitlab.config import GitLabConfig
from gate.sources.gitlab.source import GitLabSource

DATA = Path(__file__).parent / "data" / "gitlab"


def payload(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


@dataclass(frozen=True)
class Proj:
    git: str
    branch: str
    name: str


def source(tmp_path: Path, mode: str = "approvals", **projects: Proj) -> GitLabSource:
    cfg = GitLabConfig(
        type="gitlab",
        url="https://gitlab.com",
        token="t",  # type: ignore[arg-type]
        webhook_token="w",  # type: ignore[arg-type]
        approval={"mode": mode},  # type: ignore[arg-type]
    )
    projects = projects or {
        "hello": Proj("/dev/null", "master", "testing/packit/hello-there"),
        "open-vm-tools": Proj("/dev/null", "c9s", "packit-service/rpms/open-vm-tools"),
        "hello-world": Proj("/dev/null", "master", "packit-service/hello-world"),
    }
    return GitLabSource("centos-gitlab", cfg, projects, Merger(tmp_path / "git"))


def test_update_with_oldrev_is_a_new_revision() -> None:
    hint = hooks.merge_request(payload("mr_update_event"))
    assert hint.new_revision
    assert hint.oldrev == "94ccba9f986629e24b432c11d9c7fd20bb2ea51d"
    assert hint.revision == "45e272a57335e4e308f3176df6e9226a9e7805a9"
    assert hint.project_path == "testing/packit/hello-there" and hint.iid == 2
    assert not hint.from_fork


def test_update_without_oldrev_is_metadata_only(tmp_path: Path) -> None:
    doc = payload("mr_update_event")
    del doc["object_attributes"]["oldrev"]
    assert not hooks.merge_request(doc).new_revision
    # a title or time-tracking change: nothing the gate acts on
    assert source(tmp_path).parse_event("gitlab.merge_request_hook", doc) is None
    doc["changes"] = {"labels": {"previous": [], "current": [{"title": "gate"}]}}
    assert isinstance(source(tmp_path).parse_event("gitlab.merge_request_hook", doc), ReviewUpdated)


def test_new_revision_asks_the_gate_to_read_the_merge_request_again(tmp_path: Path) -> None:
    event = source(tmp_path).parse_event("gitlab.merge_request_hook", payload("mr_update_event"))
    assert event == ReviewUpdated(source="centos-gitlab", project="hello", review="2")


def test_a_merge_request_from_a_fork_is_closed(tmp_path: Path) -> None:
    hint = hooks.merge_request(payload("mr_closed"))
    assert hint.from_fork and hint.action == "close"
    event = source(tmp_path).parse_event("gitlab.merge_request_hook", payload("mr_closed"))
    assert event == ReviewUpdated(source="centos-gitlab", project="hello-world", review="19")


def test_a_hook_without_action_is_read_as_an_update(tmp_path: Path) -> None:
    assert hooks.merge_request(payload("mr_event")).action == "update"


def test_push_head_is_the_commit_named_by_after_not_the_last_listed() -> None:
    doc = payload("push_with_many_commits")
    hint = hooks.push(doc)
    assert doc["commits"][-1]["id"] != doc["after"]
    assert hint.head is not None and hint.head["id"] == doc["after"]
    assert hint.head["title"] == "Add .gitlab-ci.yml"
    assert hint.branch == "c9s"


def test_push_to_the_target_branch_is_a_direct_push(tmp_path: Path) -> None:
    event = source(tmp_path).parse_event("gitlab.push_hook", payload("push_with_many_commits"))
    assert event == RefUpdated(
        project="open-vm-tools",
        old="8c349949521e5c3fcd5c1811d1acbc5a752b385e",
        new="15af92227f9e965b392e85ba2f08a41a5aeb278a",
    )


def test_push_to_another_branch_is_not_ours(tmp_path: Path) -> None:
    # refs/heads/test: a merge request's source branch, not the distgit branch
    assert source(tmp_path).parse_event("gitlab.push_hook", payload("push_branch")) is None


def test_comment_command_in_command_mode(tmp_path: Path) -> None:
    doc = payload("mr_comment")
    assert source(tmp_path, "command").parse_event("gitlab.note_hook", doc) is None
    doc["object_attributes"]["note"] = "/gate\nplease"
    assert source(tmp_path, "approvals").parse_event("gitlab.note_hook", doc) is None
    event = source(tmp_path, "command").parse_event("gitlab.note_hook", doc)
    assert event == ReviewUpdated(source="centos-gitlab", project="hello", review="2")
    hint = hooks.note(doc)
    assert hint is not None and hint.revision == "45e272a57335e4e308f3176df6e9226a9e7805a9"


def test_comments_on_issues_and_tag_pushes_are_kept_not_acted_on(tmp_path: Path) -> None:
    src = source(tmp_path, "command")
    assert src.parse_event("gitlab.note_hook", payload("issue_comment")) is None
    assert src.parse_event("gitlab.tag_push_hook", payload("tag_push")) is None


def test_projects_of_other_gates_are_ignored(tmp_path: Path) -> None:
    src = source(tmp_path, other=Proj("/dev/null", "main", "someone/else"))
    assert src.parse_event("gitlab.merge_request_hook", payload("mr_update_event")) is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d.update(object_kind="push"),
        lambda d: d["object_attributes"].update(iid="2; rm -rf /"),
        lambda d: d["object_attributes"].update(iid=True),
        lambda d: d.update(project=["not", "an", "object"]),
        lambda d: d.pop("object_attributes"),
    ],
)
def test_malformed_deliveries_are_refused(tmp_path: Path, mangle: Any) -> None:
    doc = payload("mr_update_event")
    mangle(doc)
    with pytest.raises(Refused, match="malformed GitLab merge_request_hook"):
        source(tmp_path).parse_event("gitlab.merge_request_hook", doc)


def test_hostile_shas_never_reach_git(tmp_path: Path) -> None:
    doc = payload("mr_update_event")
    doc["object_attributes"]["oldrev"] = "--upload-pack=evil"
    doc["object_attributes"]["last_commit"]["id"] = "HEAD~1"
    hint = hooks.merge_request(doc)
    assert hint.oldrev is None and hint.revision is None
    push = payload("push_with_many_commits")
    push["after"] = "--output=/etc/passwd"
    with pytest.raises(Refused):
        source(tmp_path).parse_event("gitlab.push_hook", push)


def test_event_type_from_the_header() -> None:
    assert hooks.event_type("Merge Request Hook") == "merge_request_hook"
    assert hooks.event_type("Note Hook") == "note_hook"
    assert hooks.event_type("../../etc") == "etc"
    assert hooks.event_type("") == "unknown"


def test_commands_are_the_first_word_of_the_first_line() -> None:
    assert hooks.is_command("/gate", "/gate")
    assert hooks.is_command("\n  /gate please\n", "/gate")
    assert not hooks.is_command("lgtm\n/gate", "/gate")
    assert not hooks.is_command("/gatekeeper", "/gate")


def test_depends_on_urls_name_merge_requests(tmp_path: Path) -> None:
    src = source(tmp_path)
    url = "https://gitlab.com/testing/packit/hello-there/-/merge_requests/7"
    assert src.review_for_url(url) == ("hello", "7")
    assert src.review_for_url(url + "#note_1") == ("hello", "7")
    assert src.review_for_url("https://gitlab.com/testing/packit/hello-there/merge_requests/7")
    assert src.review_for_url("https://gitlab.com/other/proj/-/merge_requests/7") is None
    assert (
        src.review_for_url("https://evil.example/testing/packit/hello-there/-/merge_requests/7")
        is None
    )


def test_scm_url_of_a_multi_level_path(tmp_path: Path) -> None:
    src = source(tmp_path)
    assert (
        src.scm_url("open-vm-tools")
        == "git+https://gitlab.com/packit-service/rpms/open-vm-tools.git"
    )
