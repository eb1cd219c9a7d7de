"""The fake hub speaks Koji's dialect: checked with the real koji.ClientSession over HTTP."""

from __future__ import annotations

import os
import subprocess
import time
import xmlrpc.client
import zlib
from collections.abc import Iterator
from pathlib import Path

import koji
import pytest
import requests

from tests.fakekoji import Failure, FakeKoji
from tests.fakekoji.distgit import SCM_PREFIX, Distgit, spec
from tests.fakekoji.tls import make_pki

pytestmark = pytest.mark.slow


@pytest.fixture
def fake_koji(tmp_path: Path) -> Iterator[FakeKoji]:
    with FakeKoji(tmp_path / "hub") as fk:
        fk.hub.builder.scm_roots[SCM_PREFIX] = tmp_path / "git"
        yield fk


def client(fk: FakeKoji, login: bool = True, **opts: object) -> koji.ClientSession:
    session = koji.ClientSession(
        fk.url, {"max_retries": 0, "user": "rpmgate", "password": "secret", **opts}
    )
    if login:
        session.login()
    return session


def wait_task(session: koji.ClientSession, task_id: int, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = koji.TASK_STATES[session.getTaskInfo(task_id)["state"]]
        if state in ("CLOSED", "FAILED", "CANCELED"):
            return state
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} still running")


def scm_build(fk: FakeKoji, tmp_path: Path, opts: dict) -> tuple[koji.ClientSession, int]:
    repo = Distgit.create(tmp_path / "git", "hello")
    sha, _ = repo.commit(spec())
    session = client(fk)
    return session, session.build(f"git+{SCM_PREFIX}hello.git#{sha}", "liberty-candidate", opts)


def test_only_post_is_accepted(fake_koji: FakeKoji) -> None:
    response = requests.get(fake_koji.url, timeout=10)

    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


def test_koji_version_header_tells_the_client_the_hub_version(fake_koji: FakeKoji) -> None:
    session = client(fake_koji, login=False)
    session.getAPIVersion()

    assert session.hub_version == (1, 36, 1)
    assert fake_koji.hub.count("getKojiVersion") == 0


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


def test_faults_carry_kojis_codes(fake_koji: FakeKoji, tmp_path: Path) -> None:
    anonymous = client(fake_koji, login=False)

    with pytest.raises(koji.GenericError, match="Invalid method: noSuchCall") as generic:
        anonymous.noSuchCall()
    assert type(generic.value) is koji.GenericError
    with pytest.raises(koji.ParameterError):
        anonymous.getTaskInfo(1, False, False, "too many")
    with pytest.raises(koji.AuthError, match="Not logged in"):
        anonymous.build("cli-build/x/y.src.rpm", "liberty-candidate", {"scratch": True})
    # an unexpected exception on the hub is fault 1, which koji leaves a raw Fault
    with pytest.raises(xmlrpc.client.Fault) as unexpected:
        anonymous.getTaskInfo("not a number")
    assert unexpected.value.faultCode == 1 and "ValueError" in unexpected.value.faultString
    fake_koji.hub.fault_next("getAPIVersion", 4242, "unknown to koji")
    with pytest.raises(xmlrpc.client.Fault) as unknown:
        anonymous.getAPIVersion()
    assert unknown.value.faultCode == 4242
    fake_koji.hub.outage = "offline"
    with pytest.raises(koji.ServerOffline):
        anonymous.getAPIVersion()
    fake_koji.hub.outage = None

    fake_koji.hub.builder.failures.append(
        Failure("buildArch", "error building package (arch noarch)")
    )
    session, task_id = scm_build(fake_koji, tmp_path, {"scratch": True})
    assert wait_task(session, task_id) == "FAILED"
    with pytest.raises(koji.BuildError, match="error building package"):
        session.getTaskResult(task_id)


def test_outages_fail_like_real_ones(fake_koji: FakeKoji) -> None:
    session = client(fake_koji, login=False)

    fake_koji.hub.outage = "503"
    with pytest.raises(requests.exceptions.HTTPError, match="503"):
        session.getAPIVersion()
    fake_koji.hub.outage = "reset"
    with pytest.raises(requests.exceptions.ConnectionError):
        session.getAPIVersion()
    fake_koji.hub.outage = None
    fake_koji.hub.fail_requests(1, "503")
    with pytest.raises(requests.exceptions.HTTPError):
        session.getAPIVersion()
    assert session.getAPIVersion() == 1


def test_multicall_and_system_multicall_return_results_and_faults_per_call(
    fake_koji: FakeKoji,
) -> None:
    session = client(fake_koji, login=False)
    before = fake_koji.hub.http_requests

    with session.multicall() as m:
        ok = m.getAPIVersion()
        missing = m.getTaskInfo(999, strict=True)
    raw = session.system.multicall(
        [{"methodName": "echo", "params": [7]}, {"methodName": "nope", "params": []}]
    )

    assert ok.result == 1
    with pytest.raises(koji.GenericError, match="No such task"):
        missing.result  # noqa: B018 - the property raises
    assert raw[0] == [[7]] and raw[1]["faultCode"] == koji.GenericError.faultCode
    assert fake_koji.hub.http_requests - before == 2
    assert [c.in_multicall for c in fake_koji.hub.calls if c.method == "getTaskInfo"] == [True]


def test_logged_in_calls_carry_the_session_and_a_replayed_call_number_is_refused(
    fake_koji: FakeKoji,
) -> None:
    session = client(fake_koji)
    assert session.getLoggedInUser()["name"] == "rpmgate"
    assert fake_koji.hub.calls[-1].user == "rpmgate"

    handler, headers, body = session._prepCall("getLoggedInUser", ())
    session._sendCall(handler, headers, body)
    with pytest.raises(xmlrpc.client.Fault) as replay:
        session._sendCall(handler, headers, body)

    assert koji.convertFault(replay.value).__class__ is koji.RetryError


def test_expired_session_is_renewed_by_the_client(fake_koji: FakeKoji) -> None:
    session = client(fake_koji)
    fake_koji.hub.expire_sessions()

    assert session.getLoggedInUser()["name"] == "rpmgate"
    assert fake_koji.hub.count("login") == 2


def test_raw_upload_in_chunks_answers_adler32_and_check_upload_sees_the_file(
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
    check = session.checkUpload("cli-build/test-dir", "big.src.rpm", verify="adler32")
    assert check["size"] == len(data)
    assert check["hexdigest"] == "%08x" % (zlib.adler32(data) & 0xFFFFFFFF)
    assert session.checkUpload("cli-build/test-dir", "other.rpm") is None


def test_raw_upload_needs_a_login_and_stays_in_the_work_dir(fake_koji: FakeKoji) -> None:
    response = requests.post(
        fake_koji.url + "?filename=x.rpm&filepath=cli-build/d&fileverify=adler32&offset=0",
        data=b"x",
        headers={"Content-Type": "application/octet-stream"},
        timeout=10,
    )
    with pytest.raises(xmlrpc.client.Fault) as anonymous:
        xmlrpc.client.loads(response.content)
    assert anonymous.value.faultCode == koji.ActionNotAllowed.faultCode

    session = client(fake_koji)
    with pytest.raises(koji.GenericError, match="Upload path not allowed"):
        session.fastUpload(__file__, "../../etc")


def test_scratch_task_output_is_served_under_topurl_with_kojis_layout(
    fake_koji: FakeKoji, tmp_path: Path
) -> None:
    session, task_id = scm_build(fake_koji, tmp_path, {"scratch": True})
    assert wait_task(session, task_id) == "CLOSED"

    children = session.getTaskChildren(task_id)
    assert [c["method"] for c in children] == ["buildSRPMFromSCM", "buildArch"]
    arch_task = children[1]
    result = session.getTaskResult(arch_task["id"])
    output = session.listTaskOutput(arch_task["id"], stat=True)
    assert sorted(output) == [
        "build.log",
        "hello-1.0-1.noarch.rpm",
        "hello-1.0-1.src.rpm",
        "root.log",
    ]
    assert result["rpms"] == [
        f"{koji.pathinfo.taskrelpath(arch_task['id'])}/hello-1.0-1.noarch.rpm"
    ]
    url = f"{fake_koji.topurl}/work/{result['rpms'][0]}"
    body = requests.get(url, timeout=10).content
    assert len(body) == int(output["hello-1.0-1.noarch.rpm"]["st_size"])
    rpm_file = tmp_path / "dl.rpm"
    rpm_file.write_bytes(body)
    name = subprocess.run(
        ["rpm", "-qp", "--nosignature", "--qf", "%{NAME}", str(rpm_file)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert name == "hello"


def test_non_scratch_build_is_imported_listed_and_tagged(
    fake_koji: FakeKoji, tmp_path: Path
) -> None:
    fake_koji.hub.add_package("liberty-candidate", "hello")
    session, task_id = scm_build(fake_koji, tmp_path, {})
    assert wait_task(session, task_id) == "CLOSED"

    build = session.getBuild("hello-1.0-1")
    rpms = session.listRPMs(buildID=build["id"])

    assert koji.BUILD_STATES[build["state"]] == "COMPLETE" and build["task_id"] == task_id
    assert build["source"].startswith(f"git+{SCM_PREFIX}hello.git#")
    assert sorted(r["arch"] for r in rpms) == ["noarch", "src"]
    for rpm in rpms:
        path = Path(
            koji.PathInfo(topdir=str(fake_koji.hub.topdir)).build(build)
        ) / koji.pathinfo.rpm(rpm)
        sigmd5 = subprocess.run(
            ["rpm", "-qp", "--nosignature", "--qf", "%{SIGMD5}", str(path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert sigmd5 == rpm["payloadhash"] and path.stat().st_size == rpm["size"]
    assert [t["name"] for t in session.listTags(build="hello-1.0-1")] == ["liberty-candidate"]
    assert session.listBuilds(taskID=task_id)[0]["id"] == build["id"]

    # the same NVR cannot be built twice
    again = session.build(build["source"], "liberty-candidate", {})
    assert wait_task(session, again) == "FAILED"
    with pytest.raises(koji.GenericError, match="Build already exists"):
        session.getTaskResult(again)


def test_ssl_login_needs_a_client_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    with FakeKoji(tmp_path / "hub", ssl_context=pki.server_context()) as fk:
        session = koji.ClientSession(fk.url, {"max_retries": 0, "serverca": str(pki.ca)})
        session.ssl_login(cert=str(pki.client_pem))
        assert session.getLoggedInUser()["name"] == "rpmgate"

        without = koji.ClientSession(fk.url, {"max_retries": 0, "serverca": str(pki.ca)})
        with pytest.raises(koji.AuthError):
            without._callMethod("sslLogin", [], {})
