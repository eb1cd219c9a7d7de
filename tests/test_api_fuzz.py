"""Every endpoint of the real daemon (``rpmgate run``) fuzzed over HTTP: no input gets a 5xx.

Hypothesis draws a method and path (ids of any size or no number at all, names
of any length and alphabet, file names for the served trees) and a body (the
endpoint's own fields with values of every JSON type, any JSON document, or
raw bytes).  After the run the daemon must still be healthy and its log must
hold no traceback: what it accepted was processed without an internal error.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate.demo_world import World
from tests.daemon import Daemon, free_port

pytestmark = pytest.mark.slow

#: (method, path template, the body's fields) of every route the daemon serves
ENDPOINTS: list[tuple[str, str, tuple[str, ...]]] = [
    ("GET", "/healthz", ()),
    ("GET", "/api/status", ()),
    ("GET", "/api/repos/{name}", ()),
    ("GET", "/api/deliveries/{id}", ()),
    ("GET", "/api/changes/{id}", ()),
    ("GET", "/api/items/{id}", ()),
    ("GET", "/api/openapi.json", ()),
    ("GET", "/metrics", ()),
    ("POST", "/api/changes", ("project", "ref", "title", "approve")),
    ("POST", "/api/changes/{id}/approve", ()),
    ("POST", "/api/changes/{id}/enqueue", ()),
    ("POST", "/api/ref-updated", ("project", "old", "new", "force")),
    ("POST", "/api/items/{id}/dequeue", ("reason",)),
    ("POST", "/api/items/{id}/promote", ("reason",)),
    ("POST", "/api/repos/{name}/republish", ("reason",)),
    ("POST", "/api/repos/{name}/rollback", ("to", "reason")),
    ("POST", "/api/jobs/{id}/result", ("passed", "log_url", "summary", "details")),
    ("GET", "/repos/{name}/{file}", ()),
    ("GET", "/repos/{name}/{name}.repo", ()),
    ("GET", "/speculative/{id}-{id}/rpmgate-{id}.repo", ()),
    ("GET", "/speculative/{file}", ()),
    ("GET", "/files/logs/{file}", ()),
    ("GET", "/files/builds/local/logs/{file}", ()),
]

_IDS = st.one_of(
    st.integers(-(2**70), 2**70).map(str), st.sampled_from(["1", "2", "3"]), st.text(max_size=30)
)
_NAMES = st.one_of(st.sampled_from(["liberty", "nova", "current"]), st.text(max_size=300))
_FILES = st.one_of(
    st.sampled_from(["current/x86_64/repodata/repomd.xml", "..", "%2e%2e"]),
    st.text(max_size=600),
    st.text(max_size=20).map(lambda t: t * 300),
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=60),
    st.sampled_from(["nova", "refs/heads/main", "--upload-pack=touch x", "0" * 40, "liberty"]),
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes | None]:
    method, template, fields = draw(st.sampled_from(ENDPOINTS))
    path = template
    for slot, values in (("{id}", _IDS), ("{name}", _NAMES)):
        if slot in path:
            path = path.replace(slot, quote(draw(values), safe=""))
    if "{file}" in path:
        path = path.replace("{file}", quote(draw(_FILES), safe="/"))
    if method == "GET":
        return method, path, None
    kind = draw(st.sampled_from(["fields", "json", "bytes", "empty"]))
    if kind == "fields":
        chosen = draw(st.lists(st.sampled_from(fields or ("x",)), unique=True))
        body = json.dumps({f: draw(_JSON) for f in chosen}).encode()
    elif kind == "json":
        body = json.dumps(draw(_JSON)).encode()
    elif kind == "bytes":
        body = draw(st.binary(max_size=300))
    else:
        body = b""
    return method, path, body


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("fuzz")
    world = World(root / "world").create()
    port = free_port()
    config_path = root / "rpmgate.yaml"
    config_path.write_text(yaml.safe_dump(world.config(listen={"host": "127.0.0.1", "port": port})))
    daemon = Daemon(config_path, f"http://127.0.0.1:{port}", root / "daemon.log")
    daemon.start()
    deadline = time.time() + 120
    while not daemon.get("/api/repos/liberty")["current"] and time.time() < deadline:
        time.sleep(0.2)
    try:
        yield daemon
    finally:
        daemon.stop()


#: deliveries the daemon accepted during the fuzz (checked afterwards)
ACCEPTED: list[int] = []


def _send(daemon: Daemon, method: str, path: str, body: bytes | None) -> int:
    port = int(daemon.base.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers: dict[str, Any] = {"Content-Type": "application/json"} if body else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        answer = response.read()
        if response.status == 202:
            ACCEPTED.append(json.loads(answer)["delivery"])
        return response.status
    finally:
        conn.close()


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(requests())
def test_no_request_gets_a_5xx(daemon: Daemon, request_: tuple[str, str, bytes | None]) -> None:
    method, path, body = request_
    status = _send(daemon, method, path, body)
    assert status < 500, (method, path[:200], (body or b"")[:200], status)


def test_after_the_fuzz_the_daemon_is_healthy_and_logged_no_traceback(daemon: Daemon) -> None:
    # runs after the fuzz (same module, same daemon): what it accepted gets processed
    assert ACCEPTED, "the fuzz should have got some requests accepted"
    deadline = time.time() + 120
    while time.time() < deadline:
        states = [daemon.get(f"/api/deliveries/{d}")["state"] for d in ACCEPTED]
        if "pending" not in states:
            break
        time.sleep(0.2)
    assert "pending" not in states
    assert daemon.get("/healthz")["ok"] is True
    log = Path(daemon.log).read_text()
    assert "Traceback" not in log, log[log.find("Traceback") - 500 :][:3000]
