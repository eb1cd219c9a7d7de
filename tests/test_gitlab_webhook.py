"""GitLab deliveries at the door: verified, deduplicated, stored, or refused and logged."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gate.sources.gitlab.verify import (
    SecretToken,
    SigningToken,
    delivery_key,
    sign,
    verifier,
)
from tests.fakegitlab import FakeGitLab
from tests.gitlab_world import PATH, WEBHOOK_TOKEN, commit_on_branch, gitlab_source, make_repo
from tests.served import ClientFactory

KEY = base64.b64encode(b"k" * 32).decode()
SIGNING = f"whsec_{KEY}"
BODY = b'{"object_kind": "push"}'


def signed(body: bytes, stamp: int, delivery: str = "d-1") -> dict[str, str]:
    return {
        "webhook-id": delivery,
        "webhook-timestamp": str(stamp),
        "webhook-signature": "v1," + sign(b"k" * 32, delivery, str(stamp), body),
    }


def test_secret_token_missing_is_401_wrong_is_403() -> None:
    check = SecretToken("s3cret")
    assert check.check({"X-Gitlab-Token": "s3cret"}, BODY) is None
    missing = check.check({}, BODY)
    assert missing is not None and missing.status == 401
    wrong = check.check({"X-Gitlab-Token": "s3cret!"}, BODY)
    assert wrong is not None and wrong.status == 403 and "s3cret" not in wrong.why


def test_signing_token_binds_body_and_time() -> None:
    check = SigningToken(SIGNING, tolerance=300, clock=lambda: 1_000_000.0)
    assert check.check(signed(BODY, 1_000_000), BODY) is None
    # key rotation: several signatures, one of them valid
    rotated = signed(BODY, 1_000_000)
    rotated["webhook-signature"] = "v1,AAAA " + rotated["webhook-signature"]
    assert check.check(rotated, BODY) is None
    altered = check.check(signed(BODY, 1_000_000), BODY + b" ")
    assert altered is not None and altered.status == 403
    stale = check.check(signed(BODY, 1_000_000 - 301), BODY)
    assert stale is not None and stale.status == 403 and "replay" in stale.why
    unsigned = check.check({}, BODY)
    assert unsigned is not None and unsigned.status == 401


def test_header_bytes_that_are_not_utf8_are_refused_not_raised() -> None:
    """aiohttp hands a header byte that is not UTF-8 on as a lone surrogate."""
    odd = b"\x80\xff".decode("utf-8", "surrogateescape")
    token = SecretToken("s3cret").check({"X-Gitlab-Token": odd}, BODY)
    assert token is not None and token.status == 403
    check = SigningToken(SIGNING, tolerance=300, clock=lambda: 1_000_000.0)
    for name, value in (("webhook-id", odd), ("webhook-signature", f"v1,{odd}")):
        headers = {**signed(BODY, 1_000_000), name: value}
        refusal = check.check(headers, BODY)
        assert refusal is not None and refusal.status == 403, name


def test_signing_is_an_addition_to_the_token() -> None:
    both = verifier("s3cret", SIGNING)
    headers = {"X-Gitlab-Token": "s3cret", **signed(BODY, 0)}
    refusal = both.verify(headers, BODY)  # the clock is now, the stamp 1970
    assert refusal is not None and refusal.status == 403
    assert verifier("s3cret").verify({"X-Gitlab-Token": "s3cret"}, BODY) is None
    with pytest.raises(ValueError, match="whsec_"):
        verifier("s3cret", "whsec_not base64!")


def test_delivery_key_prefers_idempotency_key() -> None:
    assert delivery_key({"Idempotency-Key": "a", "X-Gitlab-Event-UUID": "b"}) == "a"
    assert delivery_key({"webhook-id": "w"}) == "w"
    assert delivery_key({"X-Gitlab-Event-UUID": "e", "X-Gitlab-Webhook-UUID": "h"}) == "e:h"
    assert delivery_key({}) is None


class Store:
    """What the endpoint commits (the gate's ``store_delivery``), in memory."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, str, dict[str, Any]]] = {}

    async def __call__(
        self, source: str, event_type: str, payload: dict[str, Any], key: str | None
    ) -> bool:
        if key in self.rows:
            return False
        self.rows[str(key)] = (source, event_type, payload)
        return True


@pytest.fixture
async def served_source(tmp_path: Path, aiohttp_client: ClientFactory) -> Any:
    fake = await FakeGitLab().start()
    bare, work = make_repo(tmp_path / "repos", "nova")
    fake.add_project(PATH, bare)
    source = gitlab_source(fake, bare, tmp_path)
    store = Store()
    source.store = store
    app = web.Application()
    app.router.add_routes(source.routes())
    client = await aiohttp_client(app)
    yield fake, source, store, client, work
    await source.close()
    await fake.stop()


async def test_bad_or_missing_token_is_refused_logged_and_not_stored(
    served_source: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _, _, store, client, _ = served_source
    url = "/api/sources/centos-gitlab/webhook"
    caplog.set_level(logging.WARNING)
    headers = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "guess-" + WEBHOOK_TOKEN}
    resp = await client.post(url, data=BODY, headers=headers)
    assert resp.status == 403
    resp = await client.post(url, data=BODY, headers={"X-Gitlab-Event": "Push Hook"})
    assert resp.status == 401
    assert store.rows == {}
    logged = caplog.text
    assert "centos-gitlab" in logged and "127.0.0.1" in logged
    assert WEBHOOK_TOKEN not in logged and "guess-" not in logged


async def test_deliveries_from_gitlab_are_stored_once(served_source: Any) -> None:
    fake, _, store, client, work = served_source
    fake.add_hook(PATH, str(client.make_url("/api/sources/centos-gitlab/webhook")), WEBHOOK_TOKEN)
    commit_on_branch(work, "update", "Version: 12.0.1\n", "Update")
    await fake.open_mr(PATH, "update", "Update", fake.add_user("alice"))
    [delivery] = fake.deliveries
    assert delivery.status == 202
    key = delivery.headers["Idempotency-Key"]
    source, kind, payload = store.rows[key]
    assert (source, kind) == ("centos-gitlab", "gitlab.merge_request_hook")
    assert payload["object_attributes"]["action"] == "open"
    assert await fake.deliver(delivery) == 200  # "Resend request": the same key
    assert len(store.rows) == 1


async def test_unknown_event_types_are_stored(served_source: Any) -> None:
    _, source, store, client, _ = served_source
    headers = {
        "X-Gitlab-Event": "Pipeline Hook",
        "X-Gitlab-Token": WEBHOOK_TOKEN,
        "Idempotency-Key": "p-1",
    }
    resp = await client.post(
        "/api/sources/centos-gitlab/webhook",
        data=json.dumps({"object_kind": "pipeline"}),
        headers=headers,
    )
    assert resp.status == 202
    assert store.rows["p-1"][1] == "gitlab.pipeline_hook"
    assert source.parse_event("gitlab.pipeline_hook", store.rows["p-1"][2]) is None


async def test_not_json_after_verification_is_400(served_source: Any) -> None:
    _, _, store, client, _ = served_source
    headers = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": WEBHOOK_TOKEN}
    resp = await client.post("/api/sources/centos-gitlab/webhook", data=b"[1,", headers=headers)
    assert resp.status == 400 and store.rows == {}


async def test_a_signed_connection_refuses_unsigned_deliveries(
    tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    fake = await FakeGitLab().start()
    bare, work = make_repo(tmp_path / "repos", "nova")
    fake.add_project(PATH, bare)
    source = gitlab_source(fake, bare, tmp_path, signing_token=SIGNING)
    store = Store()
    source.store = store
    app = web.Application()
    app.router.add_routes(source.routes())
    client = await aiohttp_client(app)
    url = str(client.make_url("/api/sources/centos-gitlab/webhook"))
    try:
        fake.add_hook(PATH, url, WEBHOOK_TOKEN)  # the token only: refused
        fake.add_hook(PATH, url, WEBHOOK_TOKEN, signing_token=SIGNING)
        commit_on_branch(work, "update", "Version: 12.0.1\n", "Update")
        await fake.open_mr(PATH, "update", "Update", fake.add_user("alice"))
        assert [d.status for d in fake.deliveries] == [401, 202]
        assert len(store.rows) == 1
    finally:
        await source.close()
        await fake.stop()
