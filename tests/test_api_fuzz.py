"""Every endpoint of the real daemon (``rpmgate run``) fuzzed over HTTP: no input gets a 5xx.

Hypothesis draws a method and path (ids of any size or no number at all, names
of any length and alphabet, file names for the served trees), headers the API
and the review-system drivers read (any value), and a body (the endpoint's own
fields with values of every JSON type, any JSON document, or raw bytes).  The
daemon has a connection of each driver, so their webhooks are fuzzed too: none
of those deliveries is signed, so each must be refused (4xx) and none stored.
After the run the daemon must still be healthy and its log must hold no
traceback: what it accepted was processed without an internal error.  A last
test holds ENDPOINTS to the app's router: a route can be fuzzed or excluded
with a reason, not forgotten.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from aiohttp import web
from aiohttp.web_urldispatcher import AbstractResource, StaticResource
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate.config import parse_config
from gate.daemon import Gate
from gate.demo_world import World
from gate.web.app import make_app
from tests.daemon import Daemon, free_port
from tests.served import ClientFactory

pytestmark = pytest.mark.slow

#: the fuzz daemon's review-system connections: one of each driver, so each webhook
#: route is served; the fuzz never signs a delivery, so each must be refused
_SECRET = "fuzz-webhook-secret-0123456789abcdef"
FORGE_SOURCES: dict[str, dict[str, Any]] = {
    "gerrit": {"type": "gerrit", "url": "https://gerrit.invalid", "webhook": {"token": _SECRET}},
    "gitlab": {
        "type": "gitlab",
        "url": "https://gitlab.invalid",
        "token": _SECRET,
        "webhook_token": _SECRET,
    },
    "github": {
        "type": "github",
        "url": "https://github.invalid",
        "token": _SECRET,
        "webhook_secret": _SECRET,
    },
    "forgejo": {
        "type": "forgejo",
        "url": "https://forgejo.invalid",
        "token": _SECRET,
        "webhook_secret": _SECRET,
    },
    "pagure": {
        "type": "pagure",
        "url": "https://pagure.invalid",
        "token": _SECRET,
        "webhook_keys": {"rpms/nova": _SECRET},
    },
}

#: (method, path template, the body's fields) of every route the daemon serves: the
#: template is the route's own (``app.router``), a file tree's is ``<prefix>/{file}``;
#: a GET endpoint is sent as HEAD too (aiohttp serves HEAD with the GET handler)
ENDPOINTS: list[tuple[str, str, tuple[str, ...]]] = [
    ("GET", "/healthz", ()),
    ("GET", "/metrics", ()),
    ("GET", "/api/openapi.json", ()),
    ("GET", "/api/status", ()),
    ("GET", "/api/events", ()),
    ("GET", "/api/repos/{name}", ()),
    ("GET", "/api/repos/{name}/generations/{number}", ()),
    ("GET", "/api/deliveries/{id}", ()),
    ("GET", "/api/changes/{id}", ()),
    ("GET", "/api/items/{id}", ()),
    ("POST", "/api/changes", ("project", "ref", "title", "approve")),
    ("POST", "/api/changes/{id}/approve", ()),
    ("POST", "/api/changes/{id}/enqueue", ()),
    ("POST", "/api/ref-updated", ("project", "old", "new", "force")),
    ("POST", "/api/items/{id}/dequeue", ("reason",)),
    ("POST", "/api/items/{id}/promote", ("reason",)),
    ("POST", "/api/items/{id}/publish", ("reason",)),
    ("POST", "/api/items/{id}/retry", ("reason",)),
    ("POST", "/api/repos/{name}/republish", ("reason",)),
    ("POST", "/api/repos/{name}/rollback", ("to", "reason")),
    ("POST", "/api/jobs/{id}/result", ("passed", "log_url", "summary", "details")),
    ("POST", "/api/admin/reload", ()),
    # the status page
    ("GET", "/", ()),
    ("GET", "/queues/{name}", ()),
    ("GET", "/repositories/{name}", ()),
    ("GET", "/assets/{file}", ()),
    # file trees
    ("GET", "/repos/liberty/{file}", ()),
    ("GET", "/repos/{name}/{file}", ()),
    ("GET", "/speculative/{file}", ()),
    ("GET", "/files/logs/{file}", ()),
    ("GET", "/files/builds/local/logs/{file}", ()),
    # dnf .repo files (answered by a middleware, before the file trees)
    ("GET", "/repos/{name}/{name}.repo", ()),
    ("GET", "/speculative/{id}-{id}/rpmgate-{id}.repo", ()),
    # the review systems' webhooks: verified before anything is read
    ("POST", "/api/sources/gerrit/events/{token}", ()),
    ("POST", "/api/sources/gitlab/webhook", ("object_kind", "project", "object_attributes")),
    ("POST", "/api/sources/github/webhook", ("action", "repository", "pull_request")),
    ("POST", "/api/sources/forgejo/webhook", ("action", "repository", "pull_request")),
    ("POST", "/api/sources/pagure/webhook", ("topic", "msg", "msg_id", "timestamp")),
]

#: templates that are not routes of their own: a middleware answers them first
NOT_ROUTES = {"/repos/{name}/{file}", "/repos/{name}/{name}.repo"}
NOT_ROUTES |= {"/speculative/{id}-{id}/rpmgate-{id}.repo"}

#: (method, route) left out of the fuzz, with the reason; empty: every route is fuzzed
EXCLUDED: dict[tuple[str, str], str] = {}

WEBHOOKS = tuple(t for _, t, _ in ENDPOINTS if t.startswith("/api/sources/"))

#: headers the drivers and the API read, each sent with any value
_HEADERS = (
    "Authorization",
    "Idempotency-Key",
    "If-None-Match",
    "Accept-Encoding",
    "Last-Event-ID",
    "X-Gitlab-Token",
    "X-Gitlab-Event",
    "X-Gitlab-Event-UUID",
    "X-Gitlab-Webhook-UUID",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "X-Hub-Signature-256",
    "X-GitHub-Event",
    "X-GitHub-Delivery",
    "X-Forgejo-Signature",
    "X-Gitea-Signature",
    "X-Forgejo-Event-Type",
    "X-Gitea-Event-Type",
    "X-Forgejo-Delivery",
    "X-Pagure-Signature-256",
    "X-Pagure-Topic",
)
#: what http.client can put in a header value (no CR, LF or NUL)
_HEADER_VALUES = st.one_of(
    st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
        max_size=80,
    ),
    st.sampled_from(
        ["sha256=" + "0" * 64, "push", "pull_request", "Merge Request Hook", _SECRET[:-1]]
    ),
)

_IDS = st.one_of(
    st.integers(-(2**70), 2**70).map(str), st.sampled_from(["1", "2", "3"]), st.text(max_size=30)
)
_NAMES = st.one_of(st.sampled_from(["liberty", "nova", "current", "1"]), st.text(max_size=300))
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
def requests(draw: st.DrawFn) -> tuple[str, str, bytes | None, dict[str, str]]:
    method, template, fields = draw(st.sampled_from(ENDPOINTS))
    if method == "GET":
        method = draw(st.sampled_from(["GET", "HEAD"]))
    path = template
    for slot, values in (
        ("{id}", _IDS),
        ("{number}", _IDS),
        ("{name}", _NAMES),
        ("{token}", _NAMES),
    ):
        if slot in path:
            path = path.replace(slot, quote(draw(values), safe=""))
    if "{file}" in path:
        path = path.replace("{file}", quote(draw(_FILES), safe="/"))
    headers = draw(st.dictionaries(st.sampled_from(_HEADERS), _HEADER_VALUES, max_size=4))
    if method != "POST":
        return method, path, None, headers
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
    return method, path, body, headers


def fuzz_config(world: World, port: int) -> dict[str, Any]:
    return world.config(listen={"host": "127.0.0.1", "port": port}, sources=FORGE_SOURCES)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("fuzz")
    world = World(root / "world").create()
    port = free_port()
    config_path = root / "rpmgate.yaml"
    config_path.write_text(yaml.safe_dump(fuzz_config(world, port)))
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
#: the webhook routes the fuzz reached
WEBHOOKS_SENT: set[str] = set()


def _send(
    daemon: Daemon, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> int:
    port = int(daemon.base.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        sent = dict(headers)
        if body:
            sent.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        if path.startswith("/api/events") and response.status == 200:
            return response.status  # an event stream: it never ends; the status is enough
        answer = response.read()
        if response.status == 202 and not path.startswith("/api/sources/"):
            ACCEPTED.append(json.loads(answer)["delivery"])
        return response.status
    finally:
        conn.close()


@settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(requests())
def test_no_request_gets_a_5xx(
    daemon: Daemon, request_: tuple[str, str, bytes | None, dict[str, str]]
) -> None:
    method, path, body, headers = request_
    status = _send(daemon, method, path, body, headers)
    shown = (method, path[:200], (body or b"")[:200], headers, status)
    assert status < 500, shown
    webhook = next((w for w in WEBHOOKS if path.startswith(w.split("{", 1)[0])), None)
    if webhook is not None:
        # nothing the fuzz sends is signed: a review system's endpoint refuses it all
        assert 400 <= status < 500, shown
        WEBHOOKS_SENT.add(webhook)


def test_after_the_fuzz_the_daemon_is_healthy_and_logged_no_traceback(daemon: Daemon) -> None:
    # runs after the fuzz (same module, same daemon): what it accepted gets processed
    assert ACCEPTED, "the fuzz should have got some requests accepted"
    assert set(WEBHOOKS) == WEBHOOKS_SENT
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
    # no refused webhook left a delivery behind
    with sqlite3.connect(daemon.config_path.parent / "world" / "state" / "rpmgate.db") as db:
        stored = db.execute(
            "SELECT source, count(*) FROM delivery WHERE source IN (?, ?, ?, ?, ?) GROUP BY source",
            tuple(FORGE_SOURCES),
        ).fetchall()
    assert stored == []


# -- every route is fuzzed -------------------------------------------------------------------
def _routes(app: web.Application) -> dict[tuple[str, str], AbstractResource]:
    return {
        (route.method, resource.canonical): resource
        for resource in app.router.resources()
        for route in resource
    }


def _covers(template: str, resource: AbstractResource) -> bool:
    if isinstance(resource, StaticResource):
        return template.startswith(resource.canonical + "/")
    return template == resource.canonical


async def test_every_route_of_the_app_is_fuzzed_or_excluded_with_a_reason(
    world: World, aiohttp_client: ClientFactory
) -> None:
    """A route added to gate/web/app.py (or a driver's) without a line in ENDPOINTS fails."""
    gate = Gate(parse_config(fuzz_config(world, 0)))
    try:
        routes = _routes(make_app(gate.runtime))
    finally:
        await gate.stop()
    fuzzed = {
        key
        for key, resource in routes.items()
        for method, template, _ in ENDPOINTS
        if key[0] in ({method, "HEAD"} if method == "GET" else {method})
        and _covers(template, resource)
    }
    assert sorted(set(routes) - fuzzed - set(EXCLUDED)) == []
    assert sorted(set(EXCLUDED) - set(routes)) == [], "an exclusion of a route that is gone"
    assert all(reason.strip() for reason in EXCLUDED.values())
    unrouted = [
        template
        for _, template, _ in ENDPOINTS
        if template not in NOT_ROUTES and not any(_covers(template, r) for r in routes.values())
    ]
    assert unrouted == [], "ENDPOINTS names a route the app does not have"
