"""The aiohttp application: change API, admin API, status, health, file serving.

Write endpoints only validate and store: the request body becomes a
:class:`~repo_state.models.Delivery` row, committed before the 202 answer,
and the gate loop acts on it.  A client may send ``Idempotency-Key``; a
repeated key answers with the delivery already stored instead of a new one.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from sqlmodel import select

from gate.config_status import ConfigStatus
from gate.deliveries import StoredRow
from gate.faults import is_transient
from gate.health import Health
from gate.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gate.metrics import GateMetrics
from gate.queue_view import active_items
from gate.runtime import Runtime
from gate.sources import webhooks
from gate.web import job_results
from gate.web.bodies import (
    MAX_ID,
    BadBody,
    Body,
    NoBody,
    ProposeChange,
    RefUpdated,
    Rollback,
    WithReason,
    parse_body,
)
from gate.web.generations import get_generation
from gate.web.live import (
    Commits,
    Encoded,
    EventStream,
    Rendered,
    StatusCache,
    etag_matches,
    serve_events,
)
from gate.web.openapi import openapi
from gate.web.page import add_page
from gate.web.server import guard_middleware
from gate.web.status import TABLES as STATUS_TABLES
from gate.web.status import (
    ItemDocs,
    backends_doc,
    change_doc,
    item_doc,
    item_doc_of,
    repo_doc,
    status_encoded,
    waiting_items,
)
from gate.web.status_rows import StatusRows, related
from repo_state.db import session
from repo_state.models import ChangeRow, Delivery, ItemRow

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=Body)

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime")
HEALTH: web.AppKey[Health] = web.AppKey("health")
METRICS: web.AppKey[GateMetrics] = web.AppKey("metrics")
LIVE: web.AppKey[EventStream] = web.AppKey("live")
STATUS: web.AppKey[StatusCache] = web.AppKey("status")
COMMITS: web.AppKey[Commits] = web.AppKey("commits")
STATUS_ITEMS: web.AppKey[ItemDocs] = web.AppKey("status_items")
STATUS_ROWS: web.AppKey[StatusRows] = web.AppKey("status_rows")
STATUS_CONFIG: web.AppKey[StatusConfig] = web.AppKey("status_config")


@dataclass
class StatusConfig:
    """The configuration's status last put in a status document, and its document."""

    status: ConfigStatus | None = None
    doc: dict[str, Any] = field(default_factory=dict)


MAX_BODY = 1 << 20
#: tries at storing a delivery through a database blip (about 3 s) before a 503
STORE_TRIES = 5
#: the caller of a request, as the token it presented names it
ACTOR: web.RequestKey[str] = web.RequestKey("actor")
#: longest path component and path served from the file trees (NAME_MAX, and
#: far more than any RPM, log or repodata file name the gate writes)
MAX_NAME = 255
MAX_PATH = 2048
_FILE_TREES = ("/speculative/", "/files/", "/repos/", "/assets/")


def _rt(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Writes need a bearer token from ``auth.api_tokens``; its name is who asked."""
    tokens = _rt(request).config.auth.named_tokens()
    if request.path.startswith(webhooks.PREFIX):
        return await handler(request)  # a review system's delivery: its driver verifies it
    if request.path.startswith(job_results.PREFIX):
        return await handler(request)  # an external CI's result: the run's token proves it
    if request.method == "POST" and tokens:
        header = request.headers.get("Authorization", "")
        given = (
            webhooks.header_bytes(header.removeprefix("Bearer ").strip())
            if header.startswith("Bearer ")
            else b""
        )
        actor = None
        for token in tokens:  # every token compared: the time says nothing of which one
            if hmac.compare_digest(given, token.token.encode()) and actor is None:
                actor = token.name
        if actor is None:
            log.warning(
                "refused %s %s from %s: missing or bad token",
                request.method,
                request.path,
                request.remote,
            )
            return _error(401, "a valid bearer token is required")
        request[ACTOR] = actor
    return await handler(request)


@web.middleware
async def file_name_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Names no file tree can hold answer 404, not an operating-system error."""
    path = request.path
    if path.startswith(_FILE_TREES):
        parts = path.split("/")
        odd = (
            len(path.encode()) > MAX_PATH
            or any(len(p.encode()) > MAX_NAME or p in (".", "..") for p in parts)
            or any(ord(c) < 0x20 or c == "\x7f" for c in path)
        )
        if odd:
            return _error(404, "no such file")
    return await handler(request)


async def _body(request: web.Request, model: type[M]) -> M:
    """The request body as ``model``: read within ``listen.body_timeout``, then validated."""
    if request.content_length and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
    timeout = _rt(request).config.listen.body_timeout
    try:
        async with asyncio.timeout(timeout):
            raw = await request.read()
    except TimeoutError:
        log.warning(
            "closed %s %s from %s: body not received in %gs",
            request.method,
            request.path,
            request.remote,
            timeout,
        )
        raise _SlowBody(f"request body not received within {timeout:g}s") from None
    return parse_body(raw, model)


class _SlowBody(Exception):
    """The body did not arrive within ``listen.body_timeout`` (a 408, then close)."""


def _accepted(request: web.Request, delivery: StoredRow, created: bool) -> web.Response:
    base = _rt(request).config.base_url
    return web.json_response(
        {"delivery": delivery.id, "status_url": f"{base}/api/deliveries/{delivery.id}"},
        status=202 if created else 200,
    )


async def _store(request: web.Request, event_type: str, payload: dict[str, Any]) -> web.Response:
    key = request.headers.get("Idempotency-Key")
    if key is not None and (len(key) > 200 or not key.isprintable()):
        return _error(400, "Idempotency-Key: at most 200 printable characters")
    actor = request.get(ACTOR)
    # A database blip is waited out briefly; longer, the client gets a 503 (retry
    # later).  One key for every try: a commit whose answer was lost is found again.
    # Committed with the other requests arriving meanwhile (``gate.deliveries``).
    delivery, created = await _rt(request).deliveries.store(
        "api", event_type, payload, key, actor, tries=STORE_TRIES
    )
    if created:
        log.info(
            "accepted %s delivery %s%s: %s",
            event_type,
            delivery.id,
            f" from {actor}" if actor else "",
            payload,
        )
    return _accepted(request, delivery, created)


def _path_id(request: web.Request) -> int:
    """The ``{id}`` of the path: a positive integer a database row can have, else 404."""
    text = request.match_info["id"]
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"no such id {text[:40]!r}"}), content_type="application/json"
        )
    value = int(text)
    if not 1 <= value <= MAX_ID:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"no such id {value}"}), content_type="application/json"
        )
    return value


# -- change API ---------------------------------------------------------------------------------
async def propose_change(request: web.Request) -> web.Response:
    body = await _body(request, ProposeChange)
    if body.project not in _rt(request).config.projects:
        return _error(404, f"unknown project {body.project!r}")
    payload = {
        "project": body.project,
        "ref": body.ref,
        "title": body.title,
        "approve": body.approve,
    }
    return await _store(request, "change.proposed", payload)


async def _change_event(request: web.Request, event_type: str) -> web.Response:
    change_id = _path_id(request)
    await _body(request, NoBody)
    with session(_rt(request).engine) as s:
        if s.get(ChangeRow, change_id) is None:
            return _error(404, f"no change {change_id}")
    return await _store(request, event_type, {"change": change_id})


async def approve_change(request: web.Request) -> web.Response:
    return await _change_event(request, "change.approved")


async def enqueue_change(request: web.Request) -> web.Response:
    return await _change_event(request, "change.enqueue")


async def get_change(request: web.Request) -> web.Response:
    rt = _rt(request)
    change_id = _path_id(request)
    with session(rt.engine) as s:
        change = s.get(ChangeRow, change_id)
        if change is None:
            return _error(404, f"no change {change_id}")
        items = s.exec(select(ItemRow).where(ItemRow.change_id == change_id)).all()
        rel = related(s, items)  # a few queries for all its items, not a few per item
        docs = [item_doc_of(rt, i, None, rel) for i in items]
    return web.json_response({**change_doc(change), "reason": change.reason or None, "items": docs})


async def get_item(request: web.Request) -> web.Response:
    rt = _rt(request)
    item_id = _path_id(request)
    with session(rt.engine) as s:
        item = s.get(ItemRow, item_id)
        if item is None:
            return _error(404, f"no item {item_id}")
        position, waiting = None, frozenset[int]()
        if item.active:
            rows = active_items(s, item.queue)
            order = [i.id for i in rows]
            position = order.index(item_id) if item_id in order else None
            waiting = waiting_items(s, item.queue, rows)
        doc = item_doc(rt, s, item, position, item_id in waiting)
    return web.json_response(doc)


async def ref_updated(request: web.Request) -> web.Response:
    body = await _body(request, RefUpdated)
    if body.project not in _rt(request).config.projects:
        return _error(404, f"unknown project {body.project!r}")
    return await _store(
        request,
        "ref.updated",
        {"project": body.project, "new": body.new, "old": body.old, "force": body.force},
    )


# -- admin API ---------------------------------------------------------------------------------
async def _item_event(request: web.Request, event_type: str) -> web.Response:
    item_id = _path_id(request)
    body = await _body(request, WithReason)
    with session(_rt(request).engine) as s:
        item = s.get(ItemRow, item_id)
        if item is None or not item.active:
            return _error(404, f"item {item_id} is not in a queue")
    return await _store(request, event_type, {"item": item_id, "reason": body.reason})


async def dequeue_item(request: web.Request) -> web.Response:
    return await _item_event(request, "item.dequeue")


async def promote_item(request: web.Request) -> web.Response:
    return await _item_event(request, "item.promote")


async def publish_item(request: web.Request) -> web.Response:
    return await _item_event(request, "item.publish")


async def retry_item(request: web.Request) -> web.Response:
    return await _item_event(request, "item.retry")


async def republish(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _rt(request).publishers:
        return _error(404, f"unknown repository {name[:100]!r}")
    body = await _body(request, WithReason)
    return await _store(
        request, "repo.republish", {"repo": name, "action": "republish", "reason": body.reason}
    )


async def rollback(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _rt(request).publishers:
        return _error(404, f"unknown repository {name[:100]!r}")
    body = await _body(request, Rollback)
    return await _store(
        request,
        "repo.rollback",
        {"repo": name, "action": "rollback", "to": body.to, "reason": body.reason},
    )


async def reload_config(request: web.Request) -> web.Response:
    """Read the configuration again, check it, apply it (``gate.reload``): answered
    with the outcome, not stored as a delivery (a restart reads the file anyway)."""
    await _body(request, NoBody)
    reload = _rt(request).reloader
    if reload is None:
        return _error(404, "nothing to reload: this gate was not started from a configuration file")
    code, answer = await reload(f"api:{request.get(ACTOR, 'anonymous')}")
    return web.json_response(answer.model_dump(mode="json"), status=code)


# -- reads ---------------------------------------------------------------------------------
async def get_status(request: web.Request) -> web.Response:
    """Built once per state version, off the loop (``gate.web.live``); ``If-None-Match``
    answers 304."""
    doc = await current_status(request.app)
    headers = {"ETag": doc.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if etag_matches(request.headers.get("If-None-Match"), doc.etag):
        return web.Response(status=304, headers=headers)
    body = doc.body
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        body = doc.gzipped
    return web.Response(body=body, content_type="application/json", headers=headers)


async def current_status(app: web.Application) -> Rendered:
    """The status document of the state now (``Rendered.document``, ``.body``, ``.etag``):
    what ``GET /api/status`` answers, for every view of it (the HTML page)."""
    version, build = _status_version(app)
    return await app[STATUS].current(version, build, partial(_status_version, app))


def _status_version(app: web.Application) -> tuple[Hashable, Callable[[], Encoded]]:
    """The status document's version now, and what builds it (on the loop: per request)."""
    rt = app[RUNTIME]
    # kept in memory (each backend's health, the configuration in force): read on the loop
    backends = backends_doc(rt)
    # the configuration's status is replaced, never changed (a frozen model): its
    # document is made once per status, not per request
    kept = app[STATUS_CONFIG]
    if kept.status is not rt.config_status:
        kept.status, kept.doc = rt.config_status, rt.config_status.model_dump(mode="json")
    config_status, config = kept.status, kept.doc
    version = (
        app[LIVE].version,
        app[COMMITS].count,
        json.dumps(backends, sort_keys=True, default=str),
        config_status,
    )
    return version, partial(_status_now, app, backends, config)


def _status_now(
    app: web.Application, backends: dict[str, dict[str, Any]], config: dict[str, Any]
) -> Encoded:
    """In the worker thread: what was committed since the last document (taken before
    any query), read again, and the document made from the rows kept."""
    rt = app[RUNTIME]
    written = app[COMMITS].take()
    with session(rt.engine) as s:
        return status_encoded(
            rt,
            s,
            backends=backends,
            memo=app[STATUS_ITEMS],
            config=config,
            rows=app[STATUS_ROWS],
            written=written,
        )


async def get_events(request: web.Request) -> web.StreamResponse:
    return await serve_events(request, request.app[LIVE])


async def get_repo(request: web.Request) -> web.Response:
    rt = _rt(request)
    with session(rt.engine) as s:
        doc = repo_doc(rt, s, request.match_info["name"])
    if doc is None:
        return _error(404, f"unknown repository {request.match_info['name'][:100]!r}")
    return web.json_response(doc)


async def get_repo_generation(request: web.Request) -> web.Response:
    return await get_generation(request, _rt(request))


async def get_delivery(request: web.Request) -> web.Response:
    rt = _rt(request)
    with session(rt.engine) as s:
        row = s.get(Delivery, _path_id(request))
    if row is None:
        return _error(404, "no such delivery")
    state = "pending" if row.processed_at is None else ("error" if row.error else "processed")
    return web.json_response(
        {
            "id": row.id,
            "event_type": row.event_type,
            "state": state,
            "result": row.result,
            "error": row.error,
            "requested_by": row.requested_by,
        }
    )


async def post_job_result(request: web.Request) -> web.Response:
    rt = _rt(request)
    return await job_results.post_result(
        request, rt.engine, rt.plumbing, rt.config.listen.body_timeout
    )


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi())


# -- dnf .repo files ---------------------------------------------------------------------------
def _repo_file(section: str, name: str, baseurl: str) -> web.Response:
    return _repo_sections([(section, name, baseurl)])


def _repo_sections(sections: list[tuple[str, str, str]]) -> web.Response:
    text = "\n".join(
        f"[{section}]\nname={name}\nbaseurl={baseurl}\nenabled=1\ngpgcheck=0\nmetadata_expire=1m\n"
        for section, name, baseurl in sections
    )
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


#: ``/repos/<name>/<name>.repo`` and ``/speculative/<item>-<attempt>/rpmgate-<item>.repo``
_PUBLISHED_REPO_FILE = re.compile(r"/repos/([^/]+)/([^/]+)\.repo")
_SPECULATIVE_REPO_FILE = re.compile(
    r"/speculative/([0-9]{1,19})-([0-9]{1,9})/rpmgate-([0-9]{1,19})\.repo"
)


@web.middleware
async def repo_file_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """dnf ``.repo`` files, answered before the file trees are looked in (the router
    matches the trees' prefixes first, so these are not routes)."""
    if request.method not in ("GET", "HEAD"):
        return await handler(request)
    published = _PUBLISHED_REPO_FILE.fullmatch(request.path)
    if published:
        return published_repo_file(_rt(request), *published.groups())
    speculative = _SPECULATIVE_REPO_FILE.fullmatch(request.path)
    if speculative:
        return speculative_repo_file(_rt(request), *speculative.groups())
    return await handler(request)


def published_repo_file(rt: Runtime, name: str, file: str) -> web.Response:
    """The published repository for dnf: ``current`` of each arch (``$basearch``)."""
    if name not in rt.publishers or file != name:
        return _error(404, "no such file")
    url = rt.config.publishers[name].url or f"{rt.config.base_url}/repos/{name}"
    return _repo_file(name, f"{name} (rpmgate)", f"{url.rstrip('/')}/current/$basearch/")


def speculative_repo_file(rt: Runtime, item: str, attempt: str, named: str) -> web.Response:
    """An item's speculative repository, while it is on disk.  The numbers must be
    written as the gate writes them (no leading zeros) and agree with each other."""
    tree = f"{int(item)}-{int(attempt)}"
    if named != item or tree != f"{item}-{attempt}":
        return _error(404, "no such file")
    root = rt.state_dir / "speculative" / tree
    if not root.is_dir():
        return _error(404, "no such file")
    builds = _named_build_dirs(root)
    if builds:  # a queue of several named builds: a repository per build, a section each
        return _repo_sections(
            [
                (
                    f"rpmgate-{item}-{build}",
                    f"item {item} attempt {attempt}, build {build}, speculative (rpmgate)",
                    f"{rt.config.base_url}/speculative/{tree}/{build}/$basearch/",
                )
                for build in builds
            ]
        )
    return _repo_file(
        f"rpmgate-{item}",
        f"item {item} attempt {attempt}, speculative (rpmgate)",
        f"{rt.config.base_url}/speculative/{tree}/$basearch/",
    )


def _named_build_dirs(root: Path) -> list[str]:
    """The named builds' repositories under an item's speculative tree
    (``<item>-<attempt>/<build>/<arch>/``; empty: the arch trees are right under it)."""
    return sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir()
        and not (d / "repodata").is_dir()
        and any((a / "repodata").is_dir() for a in d.iterdir() if a.is_dir())
    )


async def _logs_as_text(request: web.Request, response: web.StreamResponse) -> None:
    """Build and job logs are text a browser shows, whatever their extension says."""
    path = request.path
    if path.startswith("/files/") and path.endswith(".log") and response.status in (200, 206):
        response.headers["Content-Type"] = "text/plain; charset=utf-8"


async def healthz(request: web.Request) -> web.Response:
    """Every check named and measured (``gate.health``); 503 when one fails."""
    report = await request.app[HEALTH].report()
    return web.json_response(report.model_dump(mode="json"), status=200 if report.ok else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus' text format (docs/metrics.md)."""
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


def _delivery_source(request: web.Request) -> str | None:
    """Whose delivery a write request is: ``api``, a configured source, else None."""
    if request.method != "POST":
        return None
    if request.path.startswith(webhooks.PREFIX):
        name = request.path[len(webhooks.PREFIX) :].split("/", 1)[0]
        # a label is never what a client wrote: unknown names are counted together
        return name if name in _rt(request).sources else "unknown"
    return "api" if request.path.startswith("/api/") else None


@web.middleware
async def count_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every write request by source and how it was answered (``/metrics``)."""
    source = _delivery_source(request)
    if source is None:
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        request.app[METRICS].request_answered(source, exc.status)
        raise
    request.app[METRICS].request_answered(source, response.status)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadBody as exc:
        log.warning("refused %s %s: %s", request.method, request.path, exc)
        return _error(400, str(exc))
    except _SlowBody as exc:
        response = _error(408, str(exc))
        response.force_close()  # the rest of the body may still be on its way
        return response
    except Exception as exc:
        if not is_transient(exc):
            raise
        # nothing was accepted: the client may send the same request again
        log.warning("%s %s: transient fault: %s", request.method, request.path, exc)
        response = _error(503, f"temporarily unavailable ({type(exc).__name__}); retry later")
        response.headers["Retry-After"] = "5"
        return response


async def _close_health(app: web.Application) -> None:
    await app[HEALTH].close()


async def _start_live(app: web.Application) -> None:
    app[RUNTIME].plumbing.listeners.append(app[LIVE].publish)
    app[COMMITS].start()


async def _close_live(app: web.Application) -> None:
    app[LIVE].close()  # open event streams end, so the server can stop


async def _stop_live(app: web.Application) -> None:
    app[COMMITS].stop()
    listeners = app[RUNTIME].plumbing.listeners
    if app[LIVE].publish in listeners:
        listeners.remove(app[LIVE].publish)


async def _start_metrics(app: web.Application) -> None:
    app[RUNTIME].plumbing.listeners.append(app[METRICS].observe)
    app[METRICS].start()


async def _stop_metrics(app: web.Application) -> None:
    listeners = app[RUNTIME].plumbing.listeners
    if app[METRICS].observe in listeners:
        listeners.remove(app[METRICS].observe)
    await app[METRICS].stop()


def make_app(rt: Runtime) -> web.Application:
    app = web.Application(
        middlewares=[
            guard_middleware,
            count_middleware,
            error_middleware,
            file_name_middleware,
            repo_file_middleware,
            auth_middleware,
        ],
        client_max_size=MAX_BODY,
    )
    app[RUNTIME] = rt
    app[HEALTH] = Health(rt)
    app[METRICS] = GateMetrics(rt)
    app[LIVE] = EventStream()
    app[STATUS] = StatusCache()
    app[COMMITS] = Commits(rt.engine, STATUS_TABLES)
    app[STATUS_ITEMS] = ItemDocs()
    app[STATUS_ROWS] = StatusRows()
    app[STATUS_CONFIG] = StatusConfig()
    app.on_startup.append(_start_metrics)
    app.on_startup.append(_start_live)
    app.on_shutdown.append(_close_live)
    app.on_cleanup.append(_stop_live)
    app.on_cleanup.append(_close_health)
    app.on_cleanup.append(_stop_metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/openapi.json", openapi_json)
    app.on_response_prepare.append(_logs_as_text)
    app.router.add_get("/api/status", get_status)
    app.router.add_get("/api/events", get_events)
    app.router.add_get("/api/repos/{name}", get_repo)
    app.router.add_get("/api/repos/{name}/generations/{number}", get_repo_generation)
    app.router.add_get("/api/deliveries/{id}", get_delivery)
    app.router.add_post("/api/changes", propose_change)
    app.router.add_get("/api/changes/{id}", get_change)
    app.router.add_post("/api/changes/{id}/approve", approve_change)
    app.router.add_post("/api/changes/{id}/enqueue", enqueue_change)
    app.router.add_post("/api/ref-updated", ref_updated)
    app.router.add_get("/api/items/{id}", get_item)
    app.router.add_post("/api/items/{id}/dequeue", dequeue_item)
    app.router.add_post("/api/items/{id}/promote", promote_item)
    app.router.add_post("/api/items/{id}/publish", publish_item)
    app.router.add_post("/api/items/{id}/retry", retry_item)
    app.router.add_post("/api/repos/{name}/republish", republish)
    app.router.add_post("/api/repos/{name}/rollback", rollback)
    app.router.add_post("/api/jobs/{id}/result", post_job_result)
    app.router.add_post("/api/admin/reload", reload_config)
    add_page(app, rt, partial(current_status, app))
    speculative = rt.state_dir / "speculative"
    speculative.mkdir(parents=True, exist_ok=True)
    app.router.add_static("/speculative/", speculative, show_index=True)
    app.router.add_static("/files/logs/", _ensure(rt.state_dir / "logs"), show_index=True)
    for name, backend in rt.backends.items():
        logs = backend.served_logs()
        if logs is not None:
            app.router.add_static(f"/files/builds/{name}/logs/", _ensure(logs))
    for name, publisher in rt.publishers.items():
        app.router.add_static(
            f"/repos/{name}/", _ensure(publisher.root), show_index=True, follow_symlinks=True
        )
    for source in rt.sources.values():
        routes = source.routes()
        for route in routes:
            if isinstance(route, web.RouteDef) and not route.path.startswith(
                webhooks.path(source.name, "")
            ):
                raise ValueError(f"source {source.name}: route {route.path} not under its prefix")
        app.router.add_routes(routes)
    return app


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
