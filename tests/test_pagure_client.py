"""The Pagure API client and the commit-access check, against the fake Pagure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gate.faults import is_transient
from gate.sources.pagure import authority
from gate.sources.pagure.client import PagureClient, PagureError
from tests.fakepagure import FakePagure

SPEC = {"nova.spec": "Name: nova\nVersion: 1\n"}
BOT_ACLS = ("pull_request_merge", "pull_request_flag", "pull_request_comment")


@pytest.fixture
async def pagure(tmp_path: Path) -> AsyncIterator[FakePagure]:
    fake = FakePagure(tmp_path / "pagure")
    await fake.start()
    project = fake.project("rpms/nova", "owner", SPEC)
    project.access_users["admin"].append(fake.user("admin1"))
    project.access_users["commit"].append(fake.user("committer"))
    project.access_users["collaborator"].append(fake.user("collab"))
    project.access_users["ticket"].append(fake.user("triager"))
    project.access_groups["commit"].append("nova-sig")
    project.access_users["commit"].append(fake.user("gatebot"))
    fake.group("nova-sig", ["sigmember"])
    fake.group("provenpackager", ["proven"])
    yield fake
    await fake.stop()


@pytest.fixture
async def client(pagure: FakePagure) -> AsyncIterator[PagureClient]:
    c = PagureClient(pagure.url, pagure.token("gatebot", BOT_ACLS), timeout=10)
    yield c
    await c.close()


async def test_a_pr_reads_as_pagure_shows_it(pagure: FakePagure, client: PagureClient) -> None:
    pr = await pagure.open_pr("rpms/nova", "contributor", {"a": "1"}, "Update")
    doc = await client.pull_request("rpms/nova", pr.id)
    assert doc["status"] == "Open" and doc["commit_stop"] == pr.commit_stop
    assert doc["project"]["fullname"] == "rpms/nova"
    assert doc["repo_from"]["fullname"] == "forks/contributor/rpms/nova"
    assert doc["full_url"] == f"{pagure.url}/rpms/nova/pull-request/1"


async def test_a_missing_pr_and_project_are_pagures_errors(client: PagureClient) -> None:
    with pytest.raises(PagureError) as exc:
        await client.pull_request("rpms/nova", 99)
    assert (exc.value.status, exc.value.code) == (404, "ENOREQ")
    with pytest.raises(PagureError) as exc:
        await client.project("rpms/nothing")
    assert exc.value.code == "ENOPROJECT"


async def test_a_bad_token_is_refused_and_no_token_never_posts(pagure: FakePagure) -> None:
    pr = await pagure.open_pr("rpms/nova", "contributor", {"a": "1"}, "Update")
    bad = PagureClient(pagure.url, "not-a-token", timeout=10)
    try:
        with pytest.raises(PagureError) as exc:
            await bad.comment("rpms/nova", pr.id, "hi")
        assert (exc.value.status, exc.value.code) == (401, "EINVALIDTOK")
    finally:
        await bad.close()
    weak = PagureClient(pagure.url, pagure.token("gatebot", ("pull_request_comment",)), 10)
    try:
        with pytest.raises(PagureError, match="Missing ACLs: pull_request_merge"):
            await weak.merge("rpms/nova", pr.id)
    finally:
        await weak.close()
    none = PagureClient(pagure.url, None, timeout=10)
    calls = len(pagure.calls)
    with pytest.raises(PagureError, match="no API token"):
        await none.flag(
            "rpms/nova", pr.id, username="x", status="success", comment="c", url="u", uid="u"
        )
    assert len(pagure.calls) == calls
    await none.close()


async def test_server_errors_are_transient(pagure: FakePagure, client: PagureClient) -> None:
    pagure.fail_next["GET"] = [503]
    with pytest.raises(aiohttp.ClientResponseError) as exc:
        await client.project("rpms/nova")
    assert is_transient(exc.value)
    assert (await client.project("rpms/nova"))["fullname"] == "rpms/nova"


async def test_flag_comment_and_merge(pagure: FakePagure, client: PagureClient) -> None:
    pr = await pagure.open_pr("rpms/nova", "contributor", {"a": "1"}, "Update")
    got = await client.flag(
        "rpms/nova",
        pr.id,
        username="rpmgate",
        status="pending",
        comment="queued",
        url="http://gate.example/items/1",
        uid="rpmgate-fedora",
    )
    assert got["message"] == "Flag added" and got["uid"] == "rpmgate-fedora"
    got = await client.flag(
        "rpms/nova",
        pr.id,
        username="rpmgate",
        status="success",
        comment="merged",
        url="http://gate.example/items/1",
        uid="rpmgate-fedora",
    )
    assert got["message"] == "Flag updated"
    flags = await client.pull_request_flags("rpms/nova", pr.id)
    assert [(f["status"], f["user"]["name"]) for f in flags] == [("success", "gatebot")]
    await client.comment("rpms/nova", pr.id, "Queued in liberty")
    assert (await client.pull_request("rpms/nova", pr.id))["comments"][-1]["comment"] == (
        "Queued in liberty"
    )
    assert (await client.merge("rpms/nova", pr.id)) == {"message": "Changes merged!"}
    doc = await client.pull_request("rpms/nova", pr.id)
    assert doc["status"] == "Merged"
    assert pagure.state.head("rpms/nova", "main") == pr.commit_stop  # fast-forward
    with pytest.raises(PagureError) as exc:
        await client.merge("rpms/nova", pr.id)  # a merged PR: Pagure says "conflicts"
    assert (exc.value.status, exc.value.code) == (409, "EPRCONFLICTS")


async def test_an_invalid_flag_is_refused_with_the_fields(
    pagure: FakePagure, client: PagureClient
) -> None:
    pr = await pagure.open_pr("rpms/nova", "contributor", {"a": "1"}, "Update")
    with pytest.raises(PagureError) as exc:
        await client.flag(
            "rpms/nova", pr.id, username="", status="great", comment="c", url="u", uid="x"
        )
    assert exc.value.status == 400 and exc.value.code == "EINVALIDREQ"
    assert "username" in exc.value.message and "status" in exc.value.message


async def test_merge_by_a_bot_without_commit_access_is_refused(pagure: FakePagure) -> None:
    pr = await pagure.open_pr("rpms/nova", "contributor", {"a": "1"}, "Update")
    c = PagureClient(pagure.url, pagure.token("outsider", ("pull_request_merge",)), 10)
    try:
        with pytest.raises(PagureError) as exc:
            await c.merge("rpms/nova", pr.id)
        assert (exc.value.status, exc.value.code) == (403, "ENOPRCLOSE")
    finally:
        await c.close()


@pytest.mark.parametrize(
    ("user", "may", "why"),
    [
        ("owner", True, "owner of rpms/nova"),
        ("admin1", True, "admin of rpms/nova"),
        ("committer", True, "commit of rpms/nova"),
        ("sigmember", True, "member of commit group nova-sig"),
        ("proven", True, "member of provenpackager"),
        ("collab", False, "no commit access"),
        ("triager", False, "no commit access"),
        ("stranger", False, "no commit access"),
    ],
)
async def test_who_may_approve(client: PagureClient, user: str, may: bool, why: str) -> None:
    got = await authority.check(client, "rpms/nova", user, ("provenpackager",))
    assert got.may_approve is may and why in got.why


async def test_a_group_that_is_gone_grants_nothing_and_a_fault_is_an_answer(
    pagure: FakePagure, client: PagureClient
) -> None:
    pagure.state.projects["rpms/nova"].access_groups["admin"].append("gone")
    assert (await authority.check(client, "rpms/nova", "stranger")).may_approve is False
    pagure.fail_next["GET"] = [500]
    got = await authority.check(client, "rpms/nova", "owner")
    assert got.may_approve is False and "could not check" in got.why
