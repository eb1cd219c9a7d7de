"""Gerrit events read as hints: both shapes, both number types, the ones ignored, dedup keys.

Every line of tests/data/gerrit/*.jsonl is a real captured event (see the
README there); hostile variants are derived from them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from gate.sources.gerrit import hints
from gate.sources.gerrit.approval import equivalent_revisions, evaluate
from gate.sources.gerrit.client import strip_xssi
from gate.sources.gerrit.config import OPENSTACK_APPROVALS, GerritConfig, WebhookConfig
from gate.sources.gerrit.verify import verify

DATA = Path(__file__).parent / "data" / "gerrit"


def captured(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line]


def every_capture() -> list[dict[str, Any]]:
    return [e for f in sorted(DATA.glob("*.jsonl")) for e in captured(f.name)]


def test_every_captured_event_parses_or_is_ignored() -> None:
    for event in every_capture():
        kind = hints.event_type(event)
        if kind in hints.IGNORED_EVENTS:
            continue
        hint = hints.parse(event)
        assert hint.type == kind and hint.project


def test_stream_events_shape_names_the_change_and_patch_set() -> None:
    created = next(
        e for e in captured("stream-events-ferrit.jsonl") if e["type"] == "patchset-created"
    )
    hint = hints.parse(created)
    assert (hint.project, hint.change, hint.patchset, hint.branch) == (
        "openstack/nova",
        3033,
        1,
        "master",
    )
    assert hint.revision == "9108f306de1364fa9f6f510b189b3de1c2a31365" and hint.kind == "REWORK"


def test_webhooks_plugin_shape_has_project_as_an_object() -> None:
    events = captured("webhooks-cdevents.jsonl")
    created = next(e for e in events if e["type"] == "patchset-created")
    assert created["project"] == {"name": "TestRepo1"}
    hint = hints.parse(created)
    assert (hint.project, hint.change, hint.patchset, hint.branch) == (
        "TestRepo1",
        2,
        1,
        "patch_create",
    )
    comment = next(e for e in events if e["type"] == "comment-added")
    assert hints.parse(comment).kind == "NO_CODE_CHANGE"


def test_string_change_numbers_of_older_gerrits() -> None:
    parsed = [hints.parse(e) for e in captured("stream-events-string-numbers.jsonl")]
    assert [(h.change, h.patchset) for h in parsed] == [(48726, 10), (48881, 1), (48922, 4)]


def test_both_shapes_of_one_event_share_a_delivery_key() -> None:
    event = next(e for e in captured("stream-events-ferrit.jsonl") if e["type"] == "comment-added")
    webhook = {
        **event,
        "project": {"name": event["project"]},
        "changeKey": {"key": event["changeKey"]["id"]},
    }
    stringly = json.loads(json.dumps(event).replace('"number":3033', '"number":"3033"'))
    assert hints.delivery_key(event) == hints.delivery_key(webhook) == hints.delivery_key(stringly)


def test_distinct_events_have_distinct_keys() -> None:
    keys = [hints.delivery_key(e) for e in every_capture()]
    assert len(set(keys)) == len(keys)
    event = next(e for e in captured("stream-events-ferrit.jsonl") if e["type"] == "comment-added")
    later = {**event, "comment": "recheck"}
    assert hints.delivery_key(later) != hints.delivery_key(event)


def test_bookkeeping_refs_are_not_pushes() -> None:
    refs = [hints.parse(e).ref for e in every_capture() if e["type"] == "ref-updated"]
    assert "refs/changes/33/3033/meta" in refs and "refs/meta/config" in refs
    for ref in (
        "refs/changes/33/3033/meta",
        "refs/meta/config",
        "refs/sequences/changes",
        "refs/notes/review",
    ):
        assert hints.is_bookkeeping(ref)
    assert hints.patchset_of_ref("refs/changes/33/3033/1") == (3033, 1)
    assert not hints.is_bookkeeping("refs/heads/test_branch")
    assert not hints.is_bookkeeping(
        "refs/changes/33/3033/1"
    )  # a patch set: patchset-created says it


def test_a_short_branch_name_of_old_gerrits_is_a_branch() -> None:
    event = {
        "type": "ref-updated",
        "refUpdate": {"project": "p", "refName": "master", "oldRev": "a" * 40, "newRev": "b" * 40},
    }
    assert hints.parse(event).ref == "refs/heads/master"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e["change"].update(number=-1),
        lambda e: e["change"].update(number="12; rm -rf /"),
        lambda e: e["change"].update(number=True),
        lambda e: e["change"].update(project=["nova"]),
        lambda e: e["change"].pop("project") and e.pop("project"),
        lambda e: e["patchSet"].update(revision="--upload-pack=evil"),
        lambda e: e["patchSet"].update(revision="HEAD"),
        lambda e: e.pop("change"),
        lambda e: e.update(type="../../etc"),
    ],
)
def test_hostile_fields_make_the_event_malformed(mutate: Any) -> None:
    event = next(
        e for e in captured("stream-events-ferrit.jsonl") if e["type"] == "patchset-created"
    )
    mutate(event)
    with pytest.raises(hints.Malformed):
        hints.parse(event)


def test_a_ref_update_with_an_option_for_a_sha_is_malformed() -> None:
    event = next(e for e in captured("webhooks-cdevents.jsonl") if e["type"] == "ref-updated")
    event["refUpdate"]["newRev"] = "--force"
    with pytest.raises(hints.Malformed):
        hints.parse(event)


def test_replication_events_are_ignored() -> None:
    # plugins/replication's RefReplicatedEvent fields (Documentation/about.md of the plugin)
    event = {
        "project": "nova",
        "ref": "refs/heads/main",
        "targetNode": "mirror",
        "status": "succeeded",
        "refStatus": "OK",
        "type": "ref-replicated",
        "eventCreatedOn": 1,
    }
    assert hints.event_type(event) in hints.IGNORED_EVENTS


# -- webhook verification ---------------------------------------------------------

TOKEN = "x" * 40


def test_the_right_token_is_accepted_and_a_wrong_one_refused_with_401() -> None:
    config = WebhookConfig(token=SecretStr(TOKEN))
    assert verify(config, TOKEN, "192.0.2.1") is None
    status, why = verify(config, "y" * 40, "192.0.2.1") or (0, "")
    assert status == 401 and TOKEN not in why
    assert verify(config, None, "192.0.2.1") == (401, "wrong or missing webhook token")


def test_an_address_outside_the_allowlist_is_refused_with_403() -> None:
    config = WebhookConfig(token=SecretStr(TOKEN), allow_from=("192.0.2.0/24", "2001:db8::1"))
    assert verify(config, TOKEN, "192.0.2.77") is None
    assert verify(config, TOKEN, "2001:db8::1") is None
    assert verify(config, TOKEN, "198.51.100.1") == (
        403,
        "address 198.51.100.1 is not in allow_from",
    )
    assert verify(config, TOKEN, None) is not None
    only_addresses = WebhookConfig(allow_from=("127.0.0.1",))
    assert verify(only_addresses, None, "127.0.0.1") is None


def test_a_webhook_needs_a_long_token_or_an_allowlist() -> None:
    with pytest.raises(ValidationError, match="signs nothing"):
        WebhookConfig()
    with pytest.raises(ValidationError, match="32 or more"):
        WebhookConfig(token=SecretStr("short"))
    with pytest.raises(ValidationError):
        WebhookConfig(allow_from=("not-an-address",))


def test_config_keeps_secrets_out_of_its_repr() -> None:
    config = GerritConfig(
        url="https://review.example.org/r/",
        user="rpmgate",
        password=SecretStr("hunter2"),
        webhook=WebhookConfig(token=SecretStr(TOKEN)),
    )
    assert "hunter2" not in repr(config) and TOKEN not in repr(config)
    assert (
        config.git_url("openstack/nova-distgit")
        == "https://review.example.org/r/openstack/nova-distgit"
    )
    assert config.scm_url("rpms/nova") == "git+https://review.example.org/r/rpms/nova.git"


def test_xssi_prefix_is_stripped() -> None:
    assert json.loads(strip_xssi(')]}\'\n{"a": 1}')) == {"a": 1}
    assert strip_xssi("[]") == "[]"


# -- approval ---------------------------------------------------------------------


def labels(**votes: list[int]) -> dict[str, Any]:
    ranges = {"Code-Review": (-2, 2), "Workflow": (-1, 1), "Verified": (-1, 1)}
    return {
        name: {
            "all": [{"_account_id": i, "value": v} for i, v in enumerate(values)],
            "values": {
                f"{v:+d}" if v else " 0": "" for v in range(ranges[name][0], ranges[name][1] + 1)
            },
        }
        for name, values in votes.items()
    }


def test_openstack_recipe_needs_a_plus_two_and_workflow() -> None:
    change = {"status": "NEW", "labels": labels(**{"Code-Review": [2, 1], "Workflow": [1]})}
    assert evaluate(change, OPENSTACK_APPROVALS) == (True, "")
    change = {"status": "NEW", "labels": labels(**{"Code-Review": [1], "Workflow": [1]})}
    assert evaluate(change, OPENSTACK_APPROVALS) == (False, "needs Code-Review +2")
    change = {"status": "NEW", "labels": labels(**{"Code-Review": [2, -2], "Workflow": [1]})}
    assert evaluate(change, OPENSTACK_APPROVALS) == (False, "Code-Review -2 blocks it")
    change = {"status": "NEW", "labels": labels(**{"Code-Review": [2], "Workflow": [-1, 1]})}
    assert evaluate(change, OPENSTACK_APPROVALS)[0] is False
    merged = {"status": "MERGED", "labels": labels(**{"Code-Review": [2], "Workflow": [1]})}
    assert evaluate(merged, OPENSTACK_APPROVALS) == (False, "the change is merged")
    wip = {
        "status": "NEW",
        "work_in_progress": True,
        "labels": labels(**{"Code-Review": [2], "Workflow": [1]}),
    }
    assert evaluate(wip, OPENSTACK_APPROVALS)[0] is False


def test_trivial_rebases_and_message_edits_are_the_same_code() -> None:
    change: dict[str, Any] = {
        "current_revision": "c" * 40,
        "revisions": {
            "a" * 40: {"_number": 1, "kind": "REWORK"},
            "b" * 40: {"_number": 2, "kind": "TRIVIAL_REBASE"},
            "c" * 40: {"_number": 3, "kind": "NO_CODE_CHANGE"},
        },
    }
    assert equivalent_revisions(change) == ("b" * 40, "a" * 40)
    change["revisions"]["c" * 40]["kind"] = "REWORK"
    assert equivalent_revisions(change) == ()
