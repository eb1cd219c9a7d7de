"""The fake hub answers as kojihub/kojid do: checked with the real koji.ClientSession over HTTP.

Every expectation here is read from koji's own source at the commit the fake
follows (``tests.fakekoji.api.KOJI_COMMIT``); the function is named next to
each check.  Lists the hub returns without ORDER BY are compared as sets.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import re
import subprocess
import time
import xmlrpc.client
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import koji
import pytest
import requests

from tests.fakekoji import Failure, FakeKoji
from tests.fakekoji.api import KOJI_COMMIT
from tests.fakekoji.distgit import SCM_PREFIX, Distgit, spec
from tests.fakekoji.tls import make_pki

pytestmark = pytest.mark.slow

TARGET = "liberty-candidate"
# an arch package with a noarch subpackage
DOCS_SPEC = """\
Name: docs
Version: 1.0
Release: 1%{?dist}
Summary: docs
License: MIT

%description
docs

%package doc
Summary: doc
BuildArch: noarch

%description doc
doc

%install
mkdir -p %{buildroot}/usr/share/docs
echo arch > %{buildroot}/usr/share/docs/arch.txt
echo doc > %{buildroot}/usr/share/docs/doc.txt

%files
/usr/share/docs/arch.txt

%files doc
/usr/share/docs/doc.txt
"""
DONE = ("CLOSED", "FAILED", "CANCELED")


#: every koji.ClientSession made here, kept alive until _sessions_forgotten ends
_SESSIONS: list[Any] = []


def _session(url: str, opts: dict[str, Any]) -> Any:
    session = koji.ClientSession(url, opts)
    _SESSIONS.append(session)
    return session


@contextlib.contextmanager
def _sessions_forgotten() -> Iterator[None]:
    """Forget the tests' sessions on the test's thread while their hub still runs.

    ``koji.ClientSession.__del__`` logs a logged-in session out over HTTP.  A
    session that only the cyclic garbage collector frees (a fault raised through
    ``_callMethod`` keeps it in a traceback's reference cycle) is freed in whatever
    thread the collector happens to run in; on the hub's own thread that logout
    waits, with koji's 12-hour default timeout, for a reply from the loop it
    blocks.  Held here, no session is garbage before its hub stops; forgotten,
    none logs out later.  The gate forgets its sessions for the same reason
    (gate/builders/koji_session.py ``close``).
    """
    try:
        yield
    finally:
        while _SESSIONS:
            _SESSIONS.pop()._forget()


@pytest.fixture
def fake_koji(tmp_path: Path) -> Iterator[FakeKoji]:
    with FakeKoji(tmp_path / "hub") as fk, _sessions_forgotten():
        fk.hub.builder.scm_roots[SCM_PREFIX] = tmp_path / "git"
        yield fk


@pytest.fixture
def repo(tmp_path: Path) -> Distgit:
    return Distgit.create(tmp_path / "git", "hello")


def client(fk: FakeKoji, login: bool = True, user: str = "rpmgate", **opts: Any) -> Any:
    password = {"rpmgate": "secret", "kojiadmin": "admin"}[user]
    session = _session(fk.url, {"max_retries": 0, "user": user, "password": password, **opts})
    if login:
        session.login()
    return session


def state_of(session: Any, task_id: int) -> str:
    return koji.TASK_STATES[session.getTaskInfo(task_id)["state"]]


def wait_task(session: Any, task_id: int, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = state_of(session, task_id)
        if state in DONE:
            return state
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} still running")


def until(check: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {check}")


def scm_url(sha: str, name: str = "hello") -> str:
    return f"git+{SCM_PREFIX}{name}.git#{sha}"


def children_by_label(session: Any, task_id: int, request: bool = False) -> dict[Any, dict]:
    return {c["label"]: c for c in session.getTaskChildren(task_id, request=request)}


def fault_of(session: Any, task_id: int) -> dict[str, Any]:
    return session.getTaskResult(task_id, raise_fault=False)


def upload_srpm(session: Any, tmp_path: Path, text: str | None = None) -> str:
    """Build an SRPM of ``text`` (distgit's spec: Release 1%{?dist}) and upload it."""
    top = tmp_path / "srpm-build"
    top.mkdir(exist_ok=True)
    (top / "hello.spec").write_text(text or spec())
    subprocess.run(
        ["rpmbuild", "-bs", "--define", f"_topdir {top}", str(top / "hello.spec")],
        check=True,
        capture_output=True,
    )
    (srpm,) = (top / "SRPMS").glob("*.src.rpm")
    session.uploadWrapper(str(srpm), "cli-build/hello")
    return f"cli-build/hello/{srpm.name}"


def raw_call(fk: FakeKoji, method: str, params: tuple, **headers: str) -> Any:
    body = xmlrpc.client.dumps(params, method, allow_none=True)
    response = requests.post(
        fk.url, data=body, headers={"Content-Type": "text/xml", **headers}, timeout=10
    )
    return xmlrpc.client.loads(response.content)[0][0]


# -- transport ------------------------------------------------------------------


def test_only_post_is_accepted_and_an_unreadable_body_is_a_400(fake_koji: FakeKoji) -> None:
    # kojixmlrpc.application / error_reply; handle_rpc -> BadRequest
    response = requests.get(fake_koji.url, timeout=10)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.text == (
        "Method Not Allowed\nThis is an XML-RPC server. Only POST requests are accepted.\n"
    )
    bad = requests.post(fake_koji.url, data=b"<not xml", timeout=10)
    assert bad.status_code == 400 and bad.text.startswith("Invalid request: ")


def test_koji_version_header_names_the_hub_release_the_fake_follows(
    fake_koji: FakeKoji,
) -> None:
    session = client(fake_koji, login=False)
    session.getAPIVersion()

    # koji/_version.py at the followed commit says 1.35.3
    assert session.hub_version == (1, 35, 3)
    assert session.getKojiVersion() == "1.35.3"
    assert KOJI_COMMIT == "2083513aab6ed193215efebb21823d905e02f339"


def test_i8_nil_and_keyword_arguments_round_trip(fake_koji: FakeKoji) -> None:
    session = client(fake_koji, login=False)
    task = fake_koji.run(lambda: fake_koji.hub.state.new_task("build", ["src", "t", {}], owner=1))

    assert session.echo(2**40, None, {"deep": [None, -(2**40)]}) == [
        2**40,
        None,
        {"deep": [None, -(2**40)]},
    ]
    assert session.getTaskInfo(task.id, request=True)["request"] == ["src", "t", {}]
    call = fake_koji.hub.calls[-1]
    assert (call.method, call.args, call.opts) == ("getTaskInfo", (task.id,), {"request": True})


def test_faults_carry_kojis_codes_and_texts(fake_koji: FakeKoji) -> None:
    anonymous = client(fake_koji, login=False)

    with pytest.raises(koji.GenericError, match=r"Invalid method: noSuchCall") as generic:
        anonymous.noSuchCall()
    assert type(generic.value) is koji.GenericError
    # call_with_argcheck: Python's own TypeError text as a ParameterError; a
    # staticmethod export carries its module function's name
    with pytest.raises(koji.ParameterError) as kwarg:
        anonymous.getTaskInfo(1, x=1)
    assert str(kwarg.value) == "RootExports.getTaskInfo() got an unexpected keyword argument 'x'"
    with pytest.raises(koji.ParameterError) as alias:
        anonymous.getBuild(1, x=1)
    assert str(alias.value) == "get_build() got an unexpected keyword argument 'x'"
    # Task(id): convert_value(id, cast=int)
    with pytest.raises(koji.ParameterError) as param:
        anonymous.getTaskInfo("not a number")
    assert str(param.value) == (
        "Invalid type for value 'not a number': <class 'str'>, expected type <class 'int'>"
    )
    # a database error is fault 1, "<class>: text", which koji leaves a raw Fault
    with pytest.raises(xmlrpc.client.Fault) as unexpected:
        anonymous.listTasks({"state": 1})
    assert unexpected.value.faultCode == 1
    assert unexpected.value.faultString.startswith("<class 'psycopg2.errors.SyntaxError'>")
    fake_koji.hub.fault_next("getAPIVersion", 4242, "unknown to koji")
    with pytest.raises(xmlrpc.client.Fault) as unknown:
        anonymous.getAPIVersion()
    assert unknown.value.faultCode == 4242
    fake_koji.hub.outage = "offline"
    with pytest.raises(koji.ServerOffline):
        anonymous.getAPIVersion()
    fake_koji.hub.outage = None


def test_the_method_is_looked_up_before_the_session(fake_koji: FakeKoji) -> None:
    # kojixmlrpc _dispatch: _get_handler(method) runs before check_session()
    bogus = {"Koji-Session-Id": "999", "Koji-Session-Key": "nope", "Koji-Session-Callnum": "0"}
    with pytest.raises(xmlrpc.client.Fault, match=r"Invalid method: noSuchCall"):
        raw_call(fake_koji, "noSuchCall", (), **bogus)
    for method in ("getAPIVersion", "login"):
        with pytest.raises(xmlrpc.client.Fault) as invalid:
            raw_call(fake_koji, method, (), **bogus)
        assert invalid.value.faultCode == koji.AuthError.faultCode
        assert invalid.value.faultString == "Invalid session or bad credentials"


def test_outages_fail_like_real_ones(fake_koji: FakeKoji) -> None:
    session = client(fake_koji, login=False)

    fake_koji.hub.outage = "503"
    with pytest.raises(requests.exceptions.HTTPError, match=r"503"):
        session.getAPIVersion()
    fake_koji.hub.outage = "reset"
    with pytest.raises(requests.exceptions.ConnectionError):
        session.getAPIVersion()
    fake_koji.hub.outage = None
    fake_koji.hub.fail_requests(1, "503")
    with pytest.raises(requests.exceptions.HTTPError):
        session.getAPIVersion()
    assert session.getAPIVersion() == 1


def test_multicall_returns_results_and_faults_per_call(fake_koji: FakeKoji) -> None:
    session = client(fake_koji, login=False)
    before = fake_koji.hub.http_requests

    with session.multicall() as m:
        ok = m.getAPIVersion()
        missing = m.getTaskInfo(999, strict=True)
    raw = session.system.multicall(
        [
            {"methodName": "echo", "params": [7]},
            {"methodName": "nope", "params": []},
            {"methodName": "listTasks", "params": [{"state": 1}]},
        ]
    )

    assert ok.result == 1
    with pytest.raises(koji.GenericError, match=r"^query returned no rows$"):
        missing.result  # noqa: B018 - the property raises
    assert raw[0] == [[7]]
    # kojixmlrpc multiCall: an exception (not a Fault) carries its traceback lines
    assert (raw[1]["faultCode"], raw[1]["faultString"]) == (1000, "Invalid method: nope")
    assert raw[1]["traceback"] and raw[2]["faultCode"] == 1 and raw[2]["traceback"]
    assert fake_koji.hub.http_requests - before == 2
    assert [c.in_multicall for c in fake_koji.hub.calls if c.method == "getTaskInfo"] == [True]


# -- sessions -------------------------------------------------------------------


def test_only_a_committed_write_makes_a_replayed_call_number_a_retry_error(
    fake_koji: FakeKoji, repo: Distgit
) -> None:
    # kojihub/auth.py Session: the callnum is stored after the commit, and only
    # committed when the call wrote (context.commit_pending) and did not fault
    session = client(fake_koji)
    sid = session.sinfo["session-id"]
    read = session._prepCall("getLoggedInUser", ())
    assert session._sendCall(*read)["name"] == "rpmgate"
    assert session._sendCall(*read)["name"] == "rpmgate"  # a replayed read succeeds

    faulted = session._prepCall("build", (None, TARGET, {"scratch": True}))
    for _ in range(2):  # a call that faulted committed nothing: replay it freely
        with pytest.raises(xmlrpc.client.Fault) as bad_src:
            session._sendCall(*faulted)
        assert bad_src.value.faultString == "Invalid type, expected type <class 'str'>"

    write = session._prepCall("build", (scm_url(repo.commit(spec())[0]), TARGET, {"scratch": 1}))
    session._sendCall(*write)
    with pytest.raises(xmlrpc.client.Fault) as replay:
        session._sendCall(*write)
    callnum = dict(write[1])["Koji-Session-Callnum"]
    assert koji.convertFault(replay.value).__class__ is koji.RetryError
    assert replay.value.faultString == (
        f"unable to retry call {callnum} (method build) for session {sid}"
    )
    with pytest.raises(xmlrpc.client.Fault) as older:
        session._sendCall(*read)
    assert koji.convertFault(older.value).__class__ is koji.SequenceError
    assert (
        older.value.faultString == f"{callnum} > {dict(read[1])['Koji-Session-Callnum']} "
        f"(session {sid})"
    )
    assert fake_koji.hub.count("build") == 3


def test_the_legacy_callnum_header_and_query_string_sessions_are_read(
    fake_koji: FakeKoji, repo: Distgit
) -> None:
    session = client(fake_koji)
    handler, headers, body = session._prepCall(
        "build", (scm_url(repo.commit(spec())[0]), TARGET, {"scratch": True})
    )
    legacy = [("Koji-Callnum", v) if k == "Koji-Session-Callnum" else (k, v) for k, v in headers]
    session._sendCall(handler, legacy, body)
    with pytest.raises(xmlrpc.client.Fault) as replay:
        session._sendCall(handler, legacy, body)
    assert replay.value.faultCode == koji.RetryError.faultCode

    sinfo = session.sinfo
    url = f"{fake_koji.url}?session-id={sinfo['session-id']}&session-key={sinfo['session-key']}"
    body = xmlrpc.client.dumps((), "getLoggedInUser").encode()
    reply = requests.post(url + "&callnum=x", data=body, timeout=10)
    with pytest.raises(xmlrpc.client.Fault) as invalid:
        xmlrpc.client.loads(reply.content)
    assert invalid.value.faultString == "Invalid callnum: 'x'"
    reply = requests.post(url + "&callnum=99", data=body, timeout=10)
    assert xmlrpc.client.loads(reply.content)[0][0]["name"] == "rpmgate"


def test_an_expired_session_is_renewed_but_keeps_its_stored_call_number(
    fake_koji: FakeKoji, repo: Distgit
) -> None:
    session = client(fake_koji)
    sid = session.sinfo["session-id"]
    fake_koji.hub.expire_sessions()
    with pytest.raises(xmlrpc.client.Fault) as expired:
        session._sendCall(*session._prepCall("getLoggedInUser", ()))
    assert expired.value.faultCode == koji.AuthExpired.faultCode
    assert expired.value.faultString == f'session "{sid}" has expired'

    # read-only so far: renewal (login renew=True) keeps the id and works
    assert session.getLoggedInUser()["name"] == "rpmgate"
    assert fake_koji.hub.count("login") == 2 and session.sinfo["session-id"] == sid

    # Session.createSession(renew) leaves sessions.callnum alone while the
    # client restarts at 0: after a committed write, the renewed session's
    # next call is out of sequence
    session.build(scm_url(repo.commit(spec())[0]), TARGET, {"scratch": True})
    fake_koji.hub.expire_sessions()
    with pytest.raises(koji.SequenceError, match=rf"^\d+ > 0 \(session {sid}\)$"):
        session.getLoggedInUser()


def test_the_collector_on_the_hubs_thread_has_no_session_to_log_out(fake_koji: FakeKoji) -> None:
    with _sessions_forgotten():
        session = client(fake_koji)
        sid = session.sinfo["session-id"]
    session.itself = session  # garbage that only the cyclic collector frees
    del session
    # unforgotten, its __del__ would log out from the hub's thread and block the
    # hub's loop on its own reply: run() would time out
    fake_koji.run(gc.collect)
    assert not fake_koji.hub.state.sessions[sid].closed


def test_login_and_logout_fail_with_the_hubs_texts(fake_koji: FakeKoji) -> None:
    wrong = _session(fake_koji.url, {"user": "rpmgate", "password": "nope"})
    with pytest.raises(koji.AuthError, match=r"^invalid username or password$"):
        wrong.login()
    anonymous = client(fake_koji, login=False)
    with pytest.raises(koji.AuthError, match=r"^Not logged in$"):
        anonymous._callMethod("logout", [], {})
    session = client(fake_koji)
    with pytest.raises(koji.AuthError, match=r"^Already logged in$"):
        session._callMethod("login", ["rpmgate", "secret"], {})
    session.logout()
    sid = max(fake_koji.hub.state.sessions)
    assert fake_koji.hub.state.sessions[sid].closed


def test_check_upload_needs_no_login_and_verifies_md5_adler32_sha256(
    fake_koji: FakeKoji, tmp_path: Path
) -> None:
    data = os.urandom(2 * 1024 * 1024 + 12345)
    local = tmp_path / "big.src.rpm"
    local.write_bytes(data)
    session = client(fake_koji)

    session.uploadWrapper(str(local), "cli-build/test-dir", blocksize=1024 * 1024)

    assert fake_koji.hub.requests["upload"] == 3
    stored = fake_koji.hub.topdir / "work/cli-build/test-dir/big.src.rpm"
    assert stored.read_bytes() == data
    anonymous = client(fake_koji, login=False)
    check = anonymous.checkUpload("cli-build/test-dir", "big.src.rpm", verify="adler32")
    assert set(check) == {"size", "mtime", "sumlength", "hexdigest"}
    assert check["size"] == check["sumlength"] == len(data)
    assert check["hexdigest"] == "%08x" % (zlib.adler32(data) & 0xFFFFFFFF)
    for verify, algorithm in (("md5", hashlib.md5), ("sha256", hashlib.sha256)):
        check = anonymous.checkUpload("cli-build/test-dir", "big.src.rpm", verify=verify)
        assert check["hexdigest"] == algorithm(data).hexdigest()
    tail = anonymous.checkUpload("cli-build/test-dir", "big.src.rpm", verify="md5", tail=10)
    assert tail["sumlength"] == 10 and tail["hexdigest"] == hashlib.md5(data[-10:]).hexdigest()
    assert set(anonymous.checkUpload("cli-build/test-dir", "big.src.rpm")) == {"size", "mtime"}
    assert anonymous.checkUpload("cli-build/test-dir", "other.rpm") is None
    with pytest.raises(koji.GenericError, match=r"^Unsupported verify type: crc$"):
        anonymous.checkUpload("cli-build/test-dir", "big.src.rpm", verify="crc")
    # kojihub get_upload_path
    for path, name, text in (
        ("cli-build/x", "../y", "Invalid upload filename: ../y"),
        ("cli-build/x", ".hidden", "Invalid upload filename: .hidden"),
        ("../etc", "passwd", "Invalid upload directory: ../etc"),
    ):
        with pytest.raises(koji.GenericError, match=rf"^{text}$"):
            anonymous.checkUpload(path, name)


def test_raw_upload_checks_the_session_and_the_destination(
    fake_koji: FakeKoji, tmp_path: Path
) -> None:
    # no session headers: the query string is read as URL session args
    response = requests.post(
        fake_koji.url + "?filename=x.rpm&filepath=cli-build/d&fileverify=adler32&offset=0",
        data=b"x",
        headers={"Content-Type": "application/octet-stream"},
        timeout=10,
    )
    with pytest.raises(xmlrpc.client.Fault) as anonymous:
        xmlrpc.client.loads(response.content)
    assert anonymous.value.faultCode == koji.AuthError.faultCode
    assert anonymous.value.faultString == "'session-id' not specified in session args"

    session = client(fake_koji)
    (tmp_path / "a.txt").write_text("a")
    with pytest.raises(koji.AuthError, match=r"^User 1 is not a host$"):
        session.fastUpload(str(tmp_path / "a.txt"), "tasks/0/1000")
    session.fastUpload(str(tmp_path / "a.txt"), "cli-build/d")
    with pytest.raises(koji.GenericError) as exists:
        session.fastUpload(str(tmp_path / "a.txt"), "cli-build/d", overwrite=False)
    target = fake_koji.hub.topdir / "work/cli-build/d/a.txt"
    assert str(exists.value) == f"upload path exists: {target}"


# -- users, permissions, tags ---------------------------------------------------


def test_users_and_permissions_answer_as_the_hub(fake_koji: FakeKoji) -> None:
    session = client(fake_koji)
    admin = client(fake_koji, user="kojiadmin")
    anonymous = client(fake_koji, login=False)

    me = session.getLoggedInUser()
    assert set(me) == {
        "id", "name", "status", "usertype", "krb_principals", "authtype", "krb_principal",
    }  # fmt: skip
    assert me["authtype"] == koji.AUTHTYPES["NORMAL"]
    assert me["krb_principal"] == "rpmgate@EXAMPLE.COM"
    assert anonymous.getLoggedInUser() is None
    with pytest.raises(koji.GenericError, match=r"^No user provided$"):
        anonymous.getUser()
    with pytest.raises(koji.GenericError, match=r"^No such user: 'nobody'$"):
        anonymous.getUser("nobody", strict=True)
    assert "krb_principals" not in anonymous.getUser("rpmgate", krb_princs=False)
    # Session.hasPerm: admin is not every permission
    assert (session.hasPerm("admin"), admin.hasPerm("admin"), admin.hasPerm("tag")) == (
        False,
        True,
        False,
    )
    assert (session.getPerms(), admin.getPerms(), anonymous.getPerms()) == ([], ["admin"], [])
    with pytest.raises(koji.GenericError, match=r"^No such permission nope defined$"):
        session.hasPerm("nope", strict=True)


def test_tags_and_build_config_have_the_hubs_keys_and_inheritance(fake_koji: FakeKoji) -> None:
    fake_koji.run(
        lambda: fake_koji.hub.add_tag("base", arches="x86_64 aarch64", **{"rpm.macro.dist": ".b1"})
    )
    fake_koji.run(lambda: fake_koji.hub.add_tag("child", arches=None, parents=["base"]))
    session = client(fake_koji, login=False)

    rows = session.listTags()
    assert {r["name"] for r in rows} >= {"liberty-build", "base", "child"}
    assert set(rows[0]) == {
        "id", "name", "arches", "locked", "maven_support", "maven_include_all", "perm_id", "perm",
    }  # fmt: skip
    assert "perm" not in session.listTags(perms=False)[0]
    assert [t["name"] for t in session.listTags(pattern="chi*")] == ["child"]
    config = session.getBuildConfig("child")
    assert config["arches"] == "x86_64 aarch64"
    assert config["extra"] == {"rpm.macro.dist": ".b1"}
    base = session.getTag("base")
    ref = {"id": base["id"], "name": "base"}
    assert config["config_inheritance"] == {"extra": {"rpm.macro.dist": ref}, "arches": ref}
    with pytest.raises(koji.GenericError, match=r"^No such tagInfo: 'nope'$"):
        session.getBuildConfig("nope")
    with pytest.raises(koji.ParameterError, match=r"^Invalid name or id value: \[1\]$"):
        session.getBuildTarget([1])
    with pytest.raises(koji.GenericError, match=r"^No such build target: nope$"):
        session.getBuildTarget("nope", strict=True)


# -- build() at call time -------------------------------------------------------


def test_build_checks_login_source_type_priority_and_channel_but_not_the_target(
    fake_koji: FakeKoji, repo: Distgit
) -> None:
    url = scm_url(repo.commit(spec())[0])
    anonymous = client(fake_koji, login=False)
    with pytest.raises(koji.ActionNotAllowed, match=r"^you must be logged in for this operation$"):
        anonymous.build(url, TARGET, {"scratch": True})
    session = client(fake_koji)
    with pytest.raises(koji.ParameterError) as not_str:
        session.build(5, TARGET)
    assert (
        str(not_str.value)
        == "Invalid type for value '5': <class 'int'>, expected type <class 'str'>"
    )
    with pytest.raises(
        koji.ActionNotAllowed, match=r"^only admins may create high-priority tasks$"
    ):
        session.build(url, TARGET, {"scratch": True}, priority=-5)
    with pytest.raises(koji.GenericError, match=r"^No such channel: gpu$"):
        session.build(url, TARGET, {"scratch": True}, channel="gpu")

    low = session.build(url, TARGET, {"scratch": True}, priority=5, channel="createrepo")
    high = client(fake_koji, user="kojiadmin").build(url, TARGET, {"scratch": True}, priority=-5)
    empty = session.build("", TARGET, {"scratch": True})  # an empty src is accepted
    unknown = session.build(url, "no-such-target", {"scratch": True})

    info = session.getTaskInfo(low, request=True)
    assert (info["priority"], info["channel_id"], info["label"], info["arch"]) == (
        25,
        2,
        None,
        "noarch",
    )
    assert info["request"] == [url, TARGET, {"scratch": True}]
    assert session.getTaskInfo(high)["priority"] == 15
    assert session.getTaskRequest(session.build(url, TARGET)) == [url, TARGET, {}]
    # kojid BuildTask.handler: the target is looked up in the task
    assert wait_task(session, unknown) == "FAILED"
    assert fault_of(session, unknown) == {
        "faultCode": 1000,
        "faultString": "unknown build target: no-such-target",
    }
    assert session.getTaskChildren(unknown) == []
    # "<topdir>/work/" exists (a directory): kojid's shutil.copy of it is fault 1
    assert wait_task(session, empty) == "FAILED"
    assert fault_of(session, empty)["faultCode"] == 1
    assert "IsADirectoryError" in fault_of(session, empty)["faultString"]


def test_a_generic_error_in_the_builder_is_fault_1_with_the_traceback(
    fake_koji: FakeKoji, repo: Distgit
) -> None:
    # koji/daemon.py TaskManager.runTask: Fault(1, <traceback>) for non-koji errors
    session = client(fake_koji)
    task_id = session.build(scm_url(repo.commit(spec())[0]), TARGET, ["not", "a", "dict"])
    assert wait_task(session, task_id) == "FAILED"
    fault = fault_of(session, task_id)
    assert fault["faultCode"] == 1
    assert fault["faultString"].startswith("Traceback (most recent call last):")
    assert "AttributeError: 'list' object has no attribute 'get'" in fault["faultString"]


# -- the task tree --------------------------------------------------------------


def test_tasks_go_free_assigned_open_and_record_waits(fake_koji: FakeKoji, repo: Distgit) -> None:
    builder = fake_koji.hub.builder
    builder.start_delay = 0.3
    builder.open_delay = 0.3
    session = client(fake_koji)
    task_id = session.build(scm_url(repo.commit(spec())[0]), TARGET, {"scratch": True})

    assert session.getTaskInfo(task_id)["state"] == koji.TASK_STATES["FREE"]
    assigned = until(
        lambda: state_of(session, task_id) == "ASSIGNED" and session.getTaskInfo(task_id)
    )
    assert assigned["host_id"] == 1 and assigned["start_time"] is None
    srpm = until(lambda: children_by_label(session, task_id).get("srpm"))
    parent = session.getTaskInfo(task_id)
    assert (parent["state"], parent["waiting"], parent["awaited"]) == (
        koji.TASK_STATES["OPEN"],
        True,
        None,
    )
    assert parent["start_time"] is not None and parent["weight"] == 0.2
    assert (srpm["state"], srpm["awaited"], srpm["host_id"]) == (
        koji.TASK_STATES["FREE"],
        True,
        None,
    )
    assert wait_task(session, task_id) == "CLOSED"
    parent = session.getTaskInfo(task_id)
    assert parent["waiting"] is False
    assert {c["awaited"] for c in session.getTaskChildren(task_id)} == {False}


def test_build_children_have_kojids_labels_arches_requests_priorities_and_weights(
    fake_koji: FakeKoji, repo: Distgit
) -> None:
    fake_koji.hub.add_package(TARGET, "hello")
    session = client(fake_koji)
    url = scm_url(repo.commit(spec())[0])
    task_id = session.build(url, TARGET, {})
    assert wait_task(session, task_id) == "CLOSED"

    tag_ids = {t["name"]: t["id"] for t in session.listTags()}
    build = session.getBuild("hello-1.0-1")
    children = children_by_label(session, task_id, request=True)
    assert set(children) == {"srpm", "noarch", "tag"}
    srpm, arch, tag = children["srpm"], children["noarch"], children["tag"]
    repo_id = srpm["request"][2]["repo_id"]
    assert (srpm["method"], srpm["arch"]) == ("buildSRPMFromSCM", "noarch")
    assert srpm["request"] == [url, tag_ids["liberty-build"], {"repo_id": repo_id, "scratch": None}]
    assert (arch["method"], arch["arch"]) == ("buildArch", "noarch")
    srpm_rel = session.getTaskResult(srpm["id"])["srpm"]
    assert arch["request"] == [
        srpm_rel,
        tag_ids["liberty-build"],
        "noarch",
        True,
        {"repo_id": repo_id},
    ]
    assert (tag["method"], tag["arch"]) == ("tagBuild", "noarch")
    assert tag["request"] == [tag_ids[TARGET], build["id"], False, None, True]
    assert {c["priority"] for c in children.values()} == {19}
    assert (srpm["weight"], tag["weight"]) == (1.0, 1.0) and arch["weight"] >= 1.5
    assert session.getTaskResult(task_id) is None and session.getTaskResult(tag["id"]) is None


def test_lists_come_back_in_no_particular_order(fake_koji: FakeKoji, repo: Distgit) -> None:
    # kojihub/db.py QueryProcessor: no ORDER BY unless queryOpts['order']
    fake_koji.hub.add_package(TARGET, "hello")
    session = client(fake_koji)
    task_id = session.build(scm_url(repo.commit(spec())[0]), TARGET, {})
    assert wait_task(session, task_id) == "CLOSED"

    child_ids = [c["id"] for c in session.getTaskChildren(task_id)]
    assert len(child_ids) == 3 and child_ids != sorted(child_ids)
    output = session.listTaskOutput(children_by_label(session, task_id)["noarch"]["id"])
    assert len(output) > 2 and output != sorted(output)
    task_ids = [t["id"] for t in session.listTasks()]
    assert task_ids != sorted(task_ids)
    ordered = session.listTasks(queryOpts={"order": "-id", "limit": 2})
    assert [t["id"] for t in ordered] == sorted(task_ids, reverse=True)[:2]
    with pytest.raises(xmlrpc.client.Fault, match=r"Invalid order: nope"):
        session.listTasks(queryOpts={"order": "nope"})
    rpm_ids = [r["id"] for r in session.listRPMs()]
    assert len(rpm_ids) == 2 and rpm_ids != sorted(rpm_ids)


def test_task_calls_fault_with_the_hubs_texts(fake_koji: FakeKoji, repo: Distgit) -> None:
    session = client(fake_koji)
    with pytest.raises(koji.GenericError, match=r"^query returned no rows$"):
        session.getTaskInfo(999, strict=True)
    assert session.getTaskInfo(999) is None and session.getTaskInfo([999]) == [None]
    with pytest.raises(koji.GenericError, match=r"^query returned no rows$"):
        session.getTaskChildren(999, strict=True)
    assert session.getTaskChildren(999) == []
    with pytest.raises(koji.GenericError, match=r"^query returned no rows$"):
        session.getTaskRequest(999)
    with pytest.raises(koji.GenericError, match=r"^No such task$"):
        session.getTaskResult(taskId=999)
    with pytest.raises(koji.GenericError, match=r"^Task doesn't exist$"):
        session.listTaskOutput(999, strict=True)
    assert session.listTaskOutput(999) == [] and session.listTaskOutput(999, stat=True) == {}

    fake_koji.hold()
    task_id = session.build(scm_url(repo.commit(spec())[0]), TARGET, {"scratch": True})
    with pytest.raises(koji.GenericError, match=rf"^Task {task_id} is not finished$"):
        session.getTaskResult(task_id)
    session.cancelTask(task_id)
    fake_koji.release()
    with pytest.raises(koji.GenericError, match=rf"^Task {task_id} is canceled$"):
        session.getTaskResult(task_id)


def test_cancel_task_checks_ownership_without_login_and_cancels_the_build(
    fake_koji: FakeKoji, repo: Distgit
) -> None:
    fake_koji.hub.add_package(TARGET, "hello")
    session = client(fake_koji)
    anonymous = client(fake_koji, login=False)
    admin = client(fake_koji, user="kojiadmin")
    # RootExports.cancelTask: no assertLogin; verifyOwner is False without a user
    with pytest.raises(koji.ActionNotAllowed, match=r"^Cannot cancel task, not owner$"):
        anonymous.cancelTask(999)
    with pytest.raises(koji.GenericError, match=r"^No such task: 999$"):
        session.cancelTask(999)
    theirs = admin.build(scm_url(repo.commit(spec())[0]), TARGET, {"scratch": True})
    with pytest.raises(koji.ActionNotAllowed, match=r"^Cannot cancel task, not owner$"):
        session.cancelTask(theirs)

    task_id = session.build(scm_url(repo.commit(spec(build="sleep 30"))[0]), TARGET, {})
    arch = until(lambda: (c := children_by_label(session, task_id).get("noarch")) and c)
    until(lambda: state_of(session, arch["id"]) == "OPEN")
    build = session.getBuild("hello-1.0-1")
    assert koji.BUILD_STATES[build["state"]] == "BUILDING"
    assert session.cancelTask(task_id) is None

    # Task.cancel: BUILDING builds of the task are canceled; closed children stay
    build = session.getBuild("hello-1.0-1")
    assert koji.BUILD_STATES[build["state"]] == "CANCELED" and build["completion_time"]
    states = {c["label"]: koji.TASK_STATES[c["state"]] for c in session.getTaskChildren(task_id)}
    assert states == {"srpm": "CLOSED", "noarch": "CANCELED"}
    until(lambda: fake_koji.run(lambda: not fake_koji.hub.builder._jobs))


def test_list_tasks_takes_options_as_the_hubs_sql_does(fake_koji: FakeKoji, repo: Distgit) -> None:
    session = client(fake_koji)
    url = scm_url(repo.commit(spec())[0])
    task_id = session.build(url, TARGET, {"scratch": True})
    assert wait_task(session, task_id) == "CLOSED"
    owner = session.getLoggedInUser()["id"]

    rows = session.listTasks({"method": "build", "owner": owner, "state": [2]})
    assert [r["id"] for r in rows] == [task_id]
    row = rows[0]
    assert (row["owner_name"], row["owner_type"]) == ("rpmgate", koji.USERTYPES["NORMAL"])
    # without decode: the stored XML of request and result
    assert xmlrpc.client.loads(row["request"]) == ((url, TARGET, {"scratch": True}), "build")
    assert xmlrpc.client.loads(row["result"])[0] == (None,)
    decoded = session.listTasks({"parent": task_id, "decode": True, "method": "buildArch"})
    assert decoded[0]["request"][2] == "noarch" and set(decoded[0]["result"][0]) == {
        "rpms", "srpms", "logs", "brootid",
    }  # fmt: skip
    assert session.listTasks({"parent": None, "state": [2]}, {"countOnly": True}) == 1
    with pytest.raises(xmlrpc.client.Fault) as by_name:
        session.listTasks({"owner": "rpmgate"})
    assert by_name.value.faultCode == 1 and "InvalidTextRepresentation" in by_name.value.faultString
    assert session.listTasks({"method": ["build"]}) == []  # a list is no method name


# -- policies and allowed SCMs --------------------------------------------------


def test_build_from_srpm_is_checked_in_the_build_task_before_any_child(
    fake_koji: FakeKoji, tmp_path: Path
) -> None:
    fake_koji.hub.add_package(TARGET, "hello")
    session = client(fake_koji)
    src = upload_srpm(session, tmp_path)

    denied = session.build(src, TARGET, {})
    assert wait_task(session, denied) == "FAILED"
    assert fault_of(session, denied) == {
        "faultCode": koji.ActionNotAllowed.faultCode,
        "faultString": "policy violation (build_from_srpm): "
        "Only admin can do this via default policy",
    }
    assert session.getTaskChildren(denied) == []
    fake_koji.hub.policies.verbose = True
    verbose = session.build(src, TARGET, {})
    assert wait_task(session, verbose) == "FAILED"
    assert fault_of(session, verbose)["faultString"].endswith(
        " [rule: all :: deny Only admin can do this via default policy]"
    )

    fake_koji.hub.builder.allow_srpm_final = True  # build_from_srpm = all :: allow
    allowed = session.build(src, TARGET, {})
    assert wait_task(session, allowed) == "CLOSED"
    assert fake_koji.hub.policies["build_from_srpm"] == "all :: allow"


def test_allowed_scms_decides_in_the_srpm_task_with_kojids_texts(
    fake_koji: FakeKoji, repo: Distgit
) -> None:
    builder = fake_koji.hub.builder
    session = client(fake_koji)
    url = scm_url(repo.commit(spec())[0])

    def failure(allowed: str) -> str:
        builder.allowed_scms = allowed
        task_id = session.build(url, TARGET, {"scratch": True})
        assert wait_task(session, task_id) == "FAILED"
        srpm = children_by_label(session, task_id)["srpm"]
        assert fault_of(session, srpm["id"]) == fault_of(session, task_id)
        return fault_of(session, task_id)["faultString"]

    not_listed = "git.example.com:/rpms/hello.git is not in the list of allowed SCMs"
    assert failure("") == not_listed  # kojid's default: no SCM at all
    assert failure("git.example.com:/other/*") == not_listed
    assert failure("!git.example.com:/rpms/hello* git.example.com:/rpms/*:no:") == not_listed
    # use_common defaults to on: the common repo is cloned too
    assert failure("git.example.com:/rpms/*") == (
        'Error running GIT command "git clone https://git.example.com/rpms/common.git common", '
        "see checkout.log for details"
    )
    # source_cmd defaults to make sources, run in the checkout
    assert failure("git.example.com:/rpms/*:no") == (
        "error retrieving sources, mock exited with status 2; see root.log for more information"
    )

    builder.allowed_scms_use_config = False
    builder.allowed_scms_use_policy = True
    assert failure("") == (
        "SCM: git.example.com:/rpms/hello.git is not allowed, "
        "reason: Only admin can do this via default policy"
    )
    fake_koji.hub.policies["build_from_scm"] = "match scm_host git.example.com :: allow none"
    task_id = session.build(url, TARGET, {"scratch": True})
    assert wait_task(session, task_id) == "CLOSED"


# -- results, logs and where files land -----------------------------------------


def test_scratch_results_have_kojids_shapes_and_files_move_to_scratch(
    fake_koji: FakeKoji, repo: Distgit
) -> None:
    session = client(fake_koji)
    sha = repo.commit(spec())[0]
    task_id = session.build(scm_url(sha), TARGET, {"scratch": True})
    assert wait_task(session, task_id) == "CLOSED"

    children = children_by_label(session, task_id)
    srpm_task, arch_task = children["srpm"]["id"], children["noarch"]["id"]
    srpm_result = session.getTaskResult(srpm_task)
    assert set(srpm_result) == {"srpm", "logs", "brootid", "source"}
    assert srpm_result["source"] == {"url": scm_url(sha), "source": scm_url(sha)}
    srpm_dir = koji.pathinfo.taskrelpath(srpm_task)
    assert srpm_result["srpm"] == f"{srpm_dir}/hello-1.0-1.src.rpm"
    logs = {"build.log", "root.log", "state.log", "hw_info.log", "installed_pkgs.log",
            "mock_config.log", "mock_output.log"}  # fmt: skip
    assert {p.rsplit("/", 1)[1] for p in srpm_result["logs"]} == logs
    assert "checkout.log" in session.listTaskOutput(srpm_task)  # uploaded, not listed

    result = session.getTaskResult(arch_task)
    arch_dir = koji.pathinfo.taskrelpath(arch_task)
    assert set(result) == {"rpms", "srpms", "logs", "brootid"}
    assert result["brootid"] not in (arch_task, srpm_result["brootid"])
    assert result["rpms"] == [f"{arch_dir}/hello-1.0-1.noarch.rpm"]
    assert result["srpms"] == [f"{arch_dir}/hello-1.0-1.src.rpm"]
    assert {p.rsplit("/", 1)[1] for p in result["logs"]} == logs | {"noarch_rpmdiff.json"}

    # HostExports.moveBuildToScratch: moved, with relative symlinks left behind
    work = fake_koji.hub.topdir / "work" / arch_dir
    scratch = fake_koji.hub.topdir / f"scratch/rpmgate/task_{task_id}"
    link = work / "hello-1.0-1.noarch.rpm"
    assert os.readlink(link) == f"../../../../scratch/rpmgate/task_{task_id}/hello-1.0-1.noarch.rpm"
    assert (scratch / "hello-1.0-1.noarch.rpm").is_file()
    assert (scratch / "hello-1.0-1.src.rpm").is_file()
    assert os.readlink(work / "build.log").endswith(f"task_{task_id}/logs/noarch/build.log")
    # the srpm child's own files stay where they are
    assert not (fake_koji.hub.topdir / "work" / srpm_result["srpm"]).is_symlink()

    output = session.listTaskOutput(arch_task, stat=True)
    assert set(output) == {"hello-1.0-1.noarch.rpm", "hello-1.0-1.src.rpm"} | logs | {
        "noarch_rpmdiff.json"
    }
    assert set(output["build.log"]) == {"st_size", "st_atime", "st_mtime", "st_ctime"}
    body = requests.get(f"{fake_koji.topurl}/work/{result['rpms'][0]}", timeout=10).content
    assert len(body) == int(output["hello-1.0-1.noarch.rpm"]["st_size"]) > 0
    assert body == (scratch / "hello-1.0-1.noarch.rpm").read_bytes()


def test_final_builds_are_imported_under_packages_and_listed_as_the_hub_lists_them(
    fake_koji: FakeKoji, repo: Distgit
) -> None:
    fake_koji.hub.add_package(TARGET, "hello")
    fake_koji.hub.builder.scm_roots["https://gate@git.example.com/rpms/"] = repo.path.parent
    session = client(fake_koji)
    sha = repo.commit(spec())[0]
    submitted = "git+https://gate@git.example.com/rpms//hello.git/#main"
    task_id = session.build(submitted, TARGET, {})
    assert wait_task(session, task_id) == "CLOSED"

    rows = session.listBuilds(taskID=task_id)
    assert len(rows) == 1
    row = rows[0]
    assert "id" not in row and "cg_id" not in row and "cg_name" not in row
    for key in ("build_id", "draft", "promoter_id", "promoter_name", "promotion_time",
                "promotion_ts"):  # fmt: skip
        assert key in row
    build = session.getBuild("hello-1.0-1")
    assert build["id"] == build["build_id"] == row["build_id"]
    assert set(build) - set(row) == {"id", "cg_id", "cg_name"}
    # SCM.get_source: user@ dropped, path normalised, the commit from rev-parse HEAD
    assert build["source"] == f"git+https://git.example.com/rpms/hello.git#{sha}"
    assert build["extra"] == {"source": {"original_url": submitted}}
    assert koji.BUILD_STATES[build["state"]] == "COMPLETE" and build["task_id"] == task_id
    with pytest.raises(koji.GenericError, match=r"^No such build: 'hello-9-9'$"):
        session.getBuild("hello-9-9", strict=True)
    with pytest.raises(koji.GenericError, match=r"^No such build: 12345$"):
        session.getBuild(12345, strict=True)
    with pytest.raises(koji.GenericError, match=r"^invalid format: 500$"):
        session.getBuild("500")

    rpms = session.listRPMs(buildID=build["id"])
    assert sorted(r["arch"] for r in rpms) == ["noarch", "src"]
    pathinfo = koji.PathInfo(topdir=str(fake_koji.hub.topdir))
    for rpm in rpms:
        assert rpm["draft"] is False and rpm["buildroot_id"] != rpm["id"]
        path = Path(pathinfo.build(build)) / pathinfo.rpm(rpm)
        assert path.is_file() and not path.is_symlink() and path.stat().st_size == rpm["size"]
    assert session.listBuildRPMs(99999) == []
    with pytest.raises(koji.GenericError, match=r'^Invalid type for "arches" parameter'):
        session.listRPMs(arches=5)
    arch_task = children_by_label(session, task_id)["noarch"]["id"]
    link = fake_koji.hub.task_dir(arch_task) / "hello-1.0-1.noarch.rpm"
    assert os.readlink(link) == "../../../../packages/hello/1.0/1/noarch/hello-1.0-1.noarch.rpm"
    logs = Path(pathinfo.build_logs(build)) / "noarch"
    assert (logs / "build.log").is_file() and (logs / "noarch_rpmdiff.json").is_file()
    assert [t["name"] for t in session.listTags(build="hello-1.0-1")] == [TARGET]

    again = session.build(scm_url(sha), TARGET, {})
    assert wait_task(session, again) == "FAILED"
    assert fault_of(session, again)["faultString"].startswith(
        f"Build already exists (id={build['id']}, state=COMPLETE): {{'name': 'hello', "
    )


def test_srpm_builds_record_the_rebuilt_srpm_as_source(fake_koji: FakeKoji, tmp_path: Path) -> None:
    fake_koji.hub.add_package(TARGET, "hello")
    fake_koji.hub.set_dist("liberty-build", ".lib1")
    fake_koji.hub.builder.allow_srpm_final = True
    session = client(fake_koji)
    src = upload_srpm(session, tmp_path)
    task_id = session.build(src, TARGET, {})
    assert wait_task(session, task_id) == "CLOSED"

    srpm = session.getTaskResult(children_by_label(session, task_id)["srpm"]["id"])
    rebuilt = "hello-1.0-1.lib1.src.rpm"  # hello-1.0-1 was uploaded; the tag's %dist applies
    assert srpm["source"] == {"source": rebuilt, "url": rebuilt}
    build = session.listBuilds(taskID=task_id)[0]
    assert build["source"] == rebuilt and build["extra"] == {"source": {"original_url": rebuilt}}
    assert build["nvr"] == "hello-1.0-1.lib1"


def test_a_failed_nvr_is_recycled_with_the_same_build_id(
    fake_koji: FakeKoji, repo: Distgit
) -> None:
    fake_koji.hub.add_package(TARGET, "hello")
    session = client(fake_koji)
    failing = session.build(scm_url(repo.commit(spec(build="exit 1"))[0]), TARGET, {})
    assert wait_task(session, failing) == "FAILED"
    # BuildRoot._mockResult: mock's build failure (exit 10) points at build.log
    assert fault_of(session, failing) == {
        "faultCode": koji.BuildError.faultCode,
        "faultString": "error building package (arch noarch), mock exited with status 10; "
        "see build.log for more information",
    }
    failed = session.getBuild("hello-1.0-1")
    assert koji.BUILD_STATES[failed["state"]] == "FAILED"

    fixed = session.build(scm_url(repo.commit(spec())[0]), TARGET, {})
    assert wait_task(session, fixed) == "CLOSED"
    build = session.getBuild("hello-1.0-1")
    assert build["id"] == failed["id"] and build["task_id"] == fixed
    assert koji.BUILD_STATES[build["state"]] == "COMPLETE"
    assert build["creation_event_id"] != failed["creation_event_id"]
    assert len(session.listBuilds()) == 1


def test_a_draft_build_gets_a_draft_release_and_refuses_an_existing_nvr(
    fake_koji: FakeKoji, repo: Distgit
) -> None:
    # kojihub new_build: release "<release>,draft_<build id>" (koji.gen_draft_release)
    fake_koji.hub.add_package(TARGET, "hello")
    session = client(fake_koji)
    url = scm_url(repo.commit(spec())[0])
    draft = session.build(url, TARGET, {"draft": True})
    assert wait_task(session, draft) == "CLOSED", fault_of(session, draft)
    (row,) = session.listBuilds(taskID=draft)
    assert row["draft"] is True and row["release"] == f"1,draft_{row['build_id']}"
    rpms = session.listRPMs(buildID=row["build_id"])
    assert {r["draft"] for r in rpms} == {True} and {r["release"] for r in rpms} == {"1"}
    builddir = Path(koji.PathInfo(topdir=str(fake_koji.hub.topdir)).build(row))
    assert (builddir / "noarch" / "hello-1.0-1.noarch.rpm").is_file()

    final = session.build(url, TARGET, {})
    assert wait_task(session, final) == "CLOSED"
    again = session.build(url, TARGET, {"draft": True})
    assert wait_task(session, again) == "FAILED"
    build_id = session.getBuild("hello-1.0-1")["id"]
    assert fault_of(session, again)["faultString"] == (
        f"Target build already exists: hello-1.0-1 (id={build_id})"
    )


def test_an_nvr_building_elsewhere_is_already_in_progress(
    fake_koji: FakeKoji, repo: Distgit
) -> None:
    fake_koji.hub.add_package(TARGET, "hello")
    session = client(fake_koji)
    url = scm_url(repo.commit(spec(build="sleep 2"))[0])
    first = session.build(url, TARGET, {})
    until(lambda: session.listBuilds(taskID=first))
    second = session.build(url, TARGET, {})
    assert wait_task(session, second) == "FAILED"
    assert fault_of(session, second)["faultString"] == f"Build already in progress (task {first})"
    assert wait_task(session, first) == "CLOSED"


# -- SCM handling ---------------------------------------------------------------


def test_only_kojids_scm_schemes_count_and_the_revision_is_required(
    fake_koji: FakeKoji, repo: Distgit
) -> None:
    session = client(fake_koji)
    plain = "https://git.example.com/rpms/hello.git#abc"
    task_id = session.build(plain, TARGET, {"scratch": True})
    assert wait_task(session, task_id) == "FAILED"
    # SCM.is_scm_url: not an SCM URL, so it is an SRPM path for rebuildSRPM
    assert children_by_label(session, task_id)["srpm"]["method"] == "rebuildSRPM"
    assert fault_of(session, task_id)["faultString"] == (
        f"Input SRPM file missing: {fake_koji.hub.topdir}/work/{plain}"
    )
    no_rev = f"git+{SCM_PREFIX}hello.git"
    task_id = session.build(no_rev, TARGET, {"scratch": True})
    assert wait_task(session, task_id) == "FAILED"
    assert fault_of(session, task_id) == {
        "faultCode": 1000,
        "faultString": f"Unable to parse SCM URL: {no_rev} . Could not find the fragment element.",
    }


def test_the_checkout_runs_kojids_git_commands_against_the_remote(
    fake_koji: FakeKoji, repo: Distgit, tmp_path: Path
) -> None:
    session = client(fake_koji)
    sha = repo.commit(spec())[0]
    task_id = session.build(scm_url(sha), TARGET, {"scratch": True})
    assert wait_task(session, task_id) == "CLOSED"
    srpm_task = children_by_label(session, task_id)["srpm"]["id"]
    log = (fake_koji.hub.task_dir(srpm_task) / "checkout.log").read_text()
    commands = [line[2:] for line in log.splitlines() if line.startswith("$ ")]
    assert commands[0].startswith("git clone -n https://git.example.com/rpms/hello.git /")
    assert commands[0].endswith("/scmroot/hello")
    assert commands[1:] == [
        f"git fetch origin {sha}:KOJI_FETCH_HEAD",
        "git reset --hard KOJI_FETCH_HEAD",
    ]

    # a commit that only exists in another clone: neither fetch nor reset finds it
    clone = tmp_path / "gate-clone"
    subprocess.run(["git", "clone", "-q", str(repo.path), str(clone)], check=True)
    (clone / "hello.spec").write_text(spec(content="merged"))
    git = ["git", "-C", str(clone), "-c", "user.name=g", "-c", "user.email=g@example.com"]
    subprocess.run([*git, "commit", "-qam", "merge"], check=True)
    merge = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    unreachable = session.build(scm_url(merge), TARGET, {"scratch": True})
    assert wait_task(session, unreachable) == "FAILED"
    assert fault_of(session, unreachable) == {
        "faultCode": koji.BuildError.faultCode,
        "faultString": f'Error running GIT command "git reset --hard {merge}", '
        "see checkout.log for details",
    }
    # pushed to a gate-owned branch of the remote, the same commit builds
    subprocess.run([*git, "push", "-q", "origin", "HEAD:refs/heads/rpmgate/main/1"], check=True)
    reachable = session.build(scm_url(merge), TARGET, {"scratch": True})
    assert wait_task(session, reachable) == "CLOSED"


def test_a_mapped_scm_host_is_served_from_a_local_bare_repository(
    fake_koji: FakeKoji, repo: Distgit, tmp_path: Path
) -> None:
    sha = repo.commit(spec())[0]
    root = tmp_path / "other"
    bare = root / "rpms" / "hello.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo.path), str(bare)], check=True)
    builder = fake_koji.hub.builder
    builder.map_scm_host("src.example.org", root)
    builder.allowed_scms += " src.example.org:/rpms/*:no:"
    fake_koji.hub.add_package(TARGET, "hello")
    session = client(fake_koji)

    task_id = session.build(f"git://src.example.org/rpms/hello.git#{sha}", TARGET, {})
    assert wait_task(session, task_id) == "CLOSED", fault_of(session, task_id)
    build = session.getBuild("hello-1.0-1")
    assert build["source"] == f"git://src.example.org/rpms/hello.git#{sha}"


# -- several arches -------------------------------------------------------------


def test_a_two_arch_target_builds_each_arch_and_keeps_one_srpm(
    fake_koji: FakeKoji, repo: Distgit
) -> None:
    hub = fake_koji.hub
    fake_koji.run(lambda: hub.add_target("multi", "multi-build", "multi", arches="x86_64 aarch64"))
    hub.add_package("multi", "hello")
    hub.add_package("multi", "docs")
    session = client(fake_koji)

    task_id = session.build(scm_url(repo.commit(spec(noarch=False))[0]), "multi", {})
    assert wait_task(session, task_id) == "CLOSED"
    children = children_by_label(session, task_id, request=True)
    assert set(children) == {"srpm", "x86_64", "aarch64", "tag"}
    assert (children["x86_64"]["arch"], children["aarch64"]["arch"]) == ("x86_64", "aarch64")
    keep = {children[a]["request"][3] for a in ("x86_64", "aarch64")}
    assert keep == {True, False}
    first = next(a for a in ("x86_64", "aarch64") if children[a]["request"][3])
    other = "aarch64" if first == "x86_64" else "x86_64"
    assert session.getTaskResult(children[other]["id"])["srpms"] == []
    build = session.getBuild("hello-1.0-1")
    assert sorted(r["arch"] for r in session.listRPMs(buildID=build["id"])) == [
        "aarch64",
        "src",
        "x86_64",
    ]

    noarch = session.build(scm_url(repo.commit(spec(version="2.0"))[0]), "multi", {})
    assert wait_task(session, noarch) == "CLOSED"
    assert set(children_by_label(session, noarch)) == {"srpm", "noarch", "tag"}

    # an arch package with a noarch subpackage: each arch builds it, one copy is kept
    docs = Distgit.create(repo.path.parent, "docs")
    task_id = session.build(scm_url(docs.commit(DOCS_SPEC)[0], "docs"), "multi", {})
    assert wait_task(session, task_id) == "CLOSED", fault_of(session, task_id)
    build = session.getBuild("docs-1.0-1")
    arches = sorted(r["arch"] for r in session.listRPMs(buildID=build["id"]))
    assert arches == ["aarch64", "noarch", "src", "x86_64"]
    copies = [
        hub.task_dir(children_by_label(session, task_id)[a]["id"]) / "docs-doc-1.0-1.noarch.rpm"
        for a in ("x86_64", "aarch64")
    ]
    assert sorted(p.is_symlink() for p in copies) == [False, True]


# -- tagging ----------------------------------------------------------------------


def test_tag_build_checks_at_call_time_and_runs_at_priority_10(
    fake_koji: FakeKoji, repo: Distgit
) -> None:
    fake_koji.hub.add_package(TARGET, "hello")
    session = client(fake_koji)
    task_id = session.build(scm_url(repo.commit(spec())[0]), TARGET, {})
    assert wait_task(session, task_id) == "CLOSED"
    anonymous = client(fake_koji, login=False)

    with pytest.raises(koji.ActionNotAllowed, match=r"^you must be logged in for this operation$"):
        anonymous.tagBuild("liberty-release", "hello-1.0-1")
    with pytest.raises(koji.GenericError, match=r"^No such build: 'hello-9-9'$"):
        session.tagBuild("liberty-release", "hello-9-9")
    with pytest.raises(koji.GenericError, match=r"^No such tagInfo: 'nope'$"):
        session.tagBuild("nope", "hello-1.0-1")
    with pytest.raises(koji.TagError, match=r"^Package hello not in list for liberty-release$"):
        session.tagBuild("liberty-release", "hello-1.0-1")
    fake_koji.hub.add_package("liberty-release", "hello")
    fake_koji.hub.state.tags["liberty-release"].perm = "admin"
    with pytest.raises(koji.ActionNotAllowed, match=r"^tag requires admin permission$"):
        session.tagBuild("liberty-release", "hello-1.0-1")
    fake_koji.hub.state.tags["liberty-release"].perm = None
    fake_koji.hub.state.tags["liberty-release"].locked = True
    with pytest.raises(koji.ActionNotAllowed, match=r"^tag is locked$"):
        session.tagBuild("liberty-release", "hello-1.0-1")
    fake_koji.hub.state.tags["liberty-release"].locked = False

    tag_task = session.tagBuild("liberty-release", "hello-1.0-1")
    info = session.getTaskInfo(tag_task, request=True)
    release_id = session.getTag("liberty-release")["id"]
    build_id = session.getBuild("hello-1.0-1")["id"]
    assert (info["priority"], info["method"]) == (10, "tagBuild")
    assert info["request"] == [release_id, build_id, False, None]
    assert wait_task(session, tag_task) == "CLOSED"
    again = session.tagBuild("liberty-release", "hello-1.0-1")
    assert wait_task(session, again) == "FAILED"
    assert fault_of(session, again) == {
        "faultCode": koji.TagError.faultCode,
        "faultString": "build hello-1.0-1 already tagged (liberty-release)",
    }


@pytest.mark.parametrize(
    ("how", "why"),
    [
        ("locked", "tag is locked"),
        ("perm", "tag requires admin permission"),
        ("policy", "policy violation (tag): frozen"),
    ],
)
def test_a_refused_tag_subtask_fails_the_build_task_but_the_build_is_complete(
    how: str, why: str, fake_koji: FakeKoji, repo: Distgit
) -> None:
    """builder/kojid BuildTask.handler: completeBuild inside the try (failBuild on an
    error), then self.tagBuild(build_id, dest_tag) after it -- a tagBuild subtask that
    self.wait()s; host.taskWaitResults raises the subtask's fault and TaskManager.runTask
    fails the build task with it (a GenericError as (faultCode, str(e))).  The subtask
    (TagBuildTask -> host.tagBuild: tag policy, package list, _tag_build's
    assert_tag_access as the task owner) fails with kojihub's text; the build stays
    COMPLETE, in no tag."""
    fake_koji.hub.add_package(TARGET, "hello")
    tag = fake_koji.hub.state.tags[TARGET]
    if how == "locked":
        tag.locked = True
    elif how == "perm":
        tag.perm = "admin"
    else:
        fake_koji.hub.policies["tag"] = f"tag {TARGET} :: deny frozen\nall :: allow"
    session = client(fake_koji)
    task_id = session.build(scm_url(repo.commit(spec())[0]), TARGET, {})
    assert wait_task(session, task_id) == "FAILED"

    children = children_by_label(session, task_id, request=True)
    sub = children["tag"]
    assert (sub["method"], koji.TASK_STATES[sub["state"]]) == ("tagBuild", "FAILED")
    assert {koji.TASK_STATES[c["state"]] for lbl, c in children.items() if lbl != "tag"} == {
        "CLOSED"
    }
    build = session.getBuild("hello-1.0-1")
    assert sub["request"] == [session.getTag(TARGET)["id"], build["id"], False, None, True]
    expected = {"faultCode": koji.ActionNotAllowed.faultCode, "faultString": why}
    assert fault_of(session, sub["id"]) == fault_of(session, task_id) == expected
    with pytest.raises(koji.ActionNotAllowed, match=rf"^{re.escape(why)}$"):
        session.getTaskResult(task_id)
    assert koji.BUILD_STATES[build["state"]] == "COMPLETE" and build["task_id"] == task_id
    assert session.listTags(build="hello-1.0-1") == []


def test_untag_and_delete_build_answer_as_kojihub(fake_koji: FakeKoji, repo: Distgit) -> None:
    """RootExports.untagBuild and delete_build: login, the tag policy and tag access,
    ``strict``; ``assertPerm('admin')`` before anything else, refused while tagged,
    DELETED (files removed) once, then a silent no-op."""
    fake_koji.hub.add_package(TARGET, "hello")
    session = client(fake_koji)
    task_id = session.build(scm_url(repo.commit(spec())[0]), TARGET, {})
    assert wait_task(session, task_id) == "CLOSED"
    build = session.getBuild("hello-1.0-1")
    builddir = fake_koji.hub.topdir / "packages/hello/1.0/1"
    assert builddir.is_dir()
    anonymous, admin = client(fake_koji, login=False), client(fake_koji, user="kojiadmin")

    with pytest.raises(koji.ActionNotAllowed, match=r"^you must be logged in for this operation$"):
        anonymous.untagBuild(TARGET, "hello-1.0-1")
    with pytest.raises(
        koji.ActionNotAllowed,
        match=r"^admin permission required \(logged in as rpmgate\)$",
    ):
        session.deleteBuild(build["id"])
    with pytest.raises(
        koji.ActionNotAllowed, match=r"^admin permission required \(user not logged in\)$"
    ):
        anonymous.deleteBuild(build["id"])
    tag_id = session.getTag(TARGET)["id"]
    with pytest.raises(
        koji.GenericError,
        match=rf"^Cannot delete build, tagged: \[\{{'tag_id': {tag_id}, 'name': '{TARGET}'\}}\]$",
    ):
        admin.deleteBuild(build["id"])
    assert admin.deleteBuild(build["id"], strict=False) is False

    fake_koji.hub.state.tags[TARGET].locked = True
    with pytest.raises(koji.ActionNotAllowed, match=r"^tag is locked$"):
        session.untagBuild(TARGET, "hello-1.0-1")
    fake_koji.hub.state.tags[TARGET].locked = False
    assert session.untagBuild(TARGET, "hello-1.0-1") is None
    with pytest.raises(koji.TagError, match=rf"^build hello-1.0-1 not in tag {TARGET}$"):
        session.untagBuild(TARGET, "hello-1.0-1")
    assert session.untagBuild(TARGET, "hello-1.0-1", strict=False) is None

    assert admin.deleteBuild(build["id"]) is True
    assert session.getBuild(build["id"])["state"] == koji.BUILD_STATES["DELETED"]
    assert not builddir.exists()
    assert admin.deleteBuild("hello-1.0-1") is None  # deleted already


# -- injected failures and TLS ----------------------------------------------------


def test_an_injected_failure_fails_the_child_and_the_parent_alike(
    fake_koji: FakeKoji, repo: Distgit
) -> None:
    fake_koji.hub.builder.failures.append(Failure("buildArch", "builder ran out of disk"))
    session = client(fake_koji)
    task_id = session.build(scm_url(repo.commit(spec())[0]), TARGET, {"scratch": True})
    assert wait_task(session, task_id) == "FAILED"
    arch = children_by_label(session, task_id)["noarch"]
    assert (
        fault_of(session, arch["id"])
        == fault_of(session, task_id)
        == {
            "faultCode": koji.BuildError.faultCode,
            "faultString": "builder ran out of disk",
        }
    )
    with pytest.raises(koji.BuildError, match=r"builder ran out of disk"):
        session.getTaskResult(task_id)


def test_ssl_login_needs_a_client_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    with FakeKoji(tmp_path / "hub", ssl_context=pki.server_context()) as fk, _sessions_forgotten():
        session = _session(fk.url, {"max_retries": 0, "serverca": str(pki.ca)})
        session.ssl_login(cert=str(pki.client_pem))
        me = session.getLoggedInUser()
        assert (me["name"], me["authtype"]) == ("rpmgate", koji.AUTHTYPES["SSL"])

        without = _session(fk.url, {"max_retries": 0, "serverca": str(pki.ca)})
        with pytest.raises(koji.AuthError, match=r"^could not verify client: NONE$"):
            without._callMethod("sslLogin", [], {})
