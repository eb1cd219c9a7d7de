"""The aiohttp application: change API, admin API, status, health, file serving.

Write endpoints only validate and store: the request body becomes a
:class:`~repo_state.models.Delivery` row, committed before the 202 answer,
and the gate loop acts on it.  A client may send ``Idempotency-Key``; a
repeated key answers with the delivery already stored instead of a new one.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from gate.web.status import item_doc, repo_doc, status
from repo_state.db import session
from repo_state.models import ChangeRow, Delivery, ItemRow

if TYPE_CHECKING:
    from gate.daemon import Gate

log = logging.getLogger(__name__)

GATE_KEY: web.AppKey[Gate] = web.AppKey("gate")
MAX_BODY = 1 << 20


def _gate(request: web.Request) -> Gate:
    return request.app[GATE_KEY]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    tokens = _gate(request).config.auth.api_tokens
    if request.method == "POST" and tokens:
        header = request.headers.get("Authorization", "")
        given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        if not any(hmac.compare_digest(given.encode(), t.encode()) for t in tokens):
            log.warning("refused %s %s from %s: missing or bad token", request.method,
                        request.path, request.remote)
            return _error(401, "a valid bearer token is required")
    return await handler(request)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise _BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _BadRequest("body must be a JSON object")
    return body


class _BadRequest(Exception):
    pass


def store_delivery(gate: Gate, source: str, event_type: str, payload: dict[str, Any],
                   key: str | None) -> tuple[Delivery, bool]:
    """Commit the event; returns (delivery, created).  Idempotent on ``key``."""
    delivery_key = f"{source}:{event_type}:{key or uuid.uuid4()}"
    with session(gate.engine) as s:
        existing = s.exec(select(Delivery).where(Delivery.delivery_key == delivery_key)).first()
        if existing is not None:
            return existing, False
        row = Delivery(source=source, event_type=event_type, delivery_key=delivery_key,
                       payload=json.dumps(payload, sort_keys=True))
        s.add(row)
        try:
            s.commit()
        except IntegrityError:
            s.rollback()
            again = s.exec(select(Delivery).where(Delivery.delivery_key == delivery_key)).one()
            return again, False
        s.refresh(row)
    gate.wake()
    return row, True


def _accepted(request: web.Request, delivery: Delivery, created: bool) -> web.Response:
    base = _gate(request).config.base_url
    return web.json_response(
        {"delivery": delivery.id, "status_url": f"{base}/api/deliveries/{delivery.id}"},
        status=202 if created else 200,
    )


async def _store(request: web.Request, event_type: str, payload: dict[str, Any]) -> web.Response:
    delivery, created = store_delivery(_gate(request), "api", event_type, payload,
                                       request.headers.get("Idempotency-Key"))
    if created:
        log.info("accepted %s delivery %s: %s", event_type, delivery.id, payload)
    return _accepted(request, delivery, created)


# -- change API ---------------------------------------------------------------------------------
async def propose_change(request: web.Request) -> web.Response:
    body = await _json_body(request)
    project, ref = body.get("project"), body.get("ref")
    if not isinstance(project, str) or not isinstance(ref, str) or not ref:
        return _error(400, "'project' and 'ref' (a ref name or commit sha) are required")
    if project not in _gate(request).config.projects:
        return _error(404, f"unknown project {project!r}")
    payload = {"project": project, "ref": ref, "title": str(body.get("title") or ""),
               "approve": bool(body.get("approve", False))}
    return await _store(request, "change.proposed", payload)


async def _change_event(request: web.Request, event_type: str) -> web.Response:
    change_id = _int(request.match_info["id"])
    with session(_gate(request).engine) as s:
        if s.get(ChangeRow, change_id) is None:
            return _error(404, f"no change {change_id}")
    return await _store(request, event_type, {"change": change_id})


async def approve_change(request: web.Request) -> web.Response:
    return await _change_event(request, "change.approved")


async def enqueue_change(request: web.Request) -> web.Response:
    return await _change_event(request, "change.enqueue")


async def get_change(request: web.Request) -> web.Response:
    gate = _gate(request)
    change_id = _int(request.match_info["id"])
    with session(gate.engine) as s:
        change = s.get(ChangeRow, change_id)
        if change is None:
            return _error(404, f"no change {change_id}")
        items = s.exec(select(ItemRow).where(ItemRow.change_id == change_id)).all()
        docs = [item_doc(gate, s, i, None) for i in items]
    return web.json_response({"id": change.id, "project": change.project, "ref": change.ref,
                              "sha": change.sha, "title": change.title, "state": change.state,
                              "reason": change.reason or None, "items": docs})


async def ref_updated(request: web.Request) -> web.Response:
    body = await _json_body(request)
    project = body.get("project")
    if project not in _gate(request).config.projects:
        return _error(404 if isinstance(project, str) else 400, f"unknown project {project!r}")
    return await _store(request, "ref.updated", {"project": project, "new": body.get("new"),
                                                 "old": body.get("old"),
                                                 "force": bool(body.get("force"))})


# -- admin API ---------------------------------------------------------------------------------
async def _item_event(request: web.Request, event_type: str) -> web.Response:
    item_id = _int(request.match_info["id"])
    body = await _json_body(request)
    with session(_gate(request).engine) as s:
        item = s.get(ItemRow, item_id)
        if item is None or not item.active:
            return _error(404, f"item {item_id} is not in a queue")
    return await _store(request, event_type, {"item": item_id, "reason": body.get("reason")})


async def dequeue_item(request: web.Request) -> web.Response:
    return await _item_event(request, "item.dequeue")


async def promote_item(request: web.Request) -> web.Response:
    return await _item_event(request, "item.promote")


async def republish(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _gate(request).publishers:
        return _error(404, f"unknown repository {name!r}")
    body = await _json_body(request)
    return await _store(request, "repo.republish",
                        {"repo": name, "action": "republish", "reason": body.get("reason")})


async def rollback(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _gate(request).publishers:
        return _error(404, f"unknown repository {name!r}")
    body = await _json_body(request)
    to = body.get("to")
    if not isinstance(to, int) or to < 1:
        return _error(400, "'to' (a generation number) is required")
    return await _store(request, "repo.rollback",
                        {"repo": name, "action": "rollback", "to": to,
                         "reason": body.get("reason")})


# -- reads ---------------------------------------------------------------------------------
async def get_status(request: web.Request) -> web.Response:
    gate = _gate(request)
    with session(gate.engine) as s:
        doc = status(gate, s)
    return web.json_response(doc)


async def get_repo(request: web.Request) -> web.Response:
    gate = _gate(request)
    with session(gate.engine) as s:
        doc = repo_doc(gate, s, request.match_info["name"])
    if doc is None:
        return _error(404, f"unknown repository {request.match_info['name']!r}")
    return web.json_response(doc)


async def get_delivery(request: web.Request) -> web.Response:
    gate = _gate(request)
    with session(gate.engine) as s:
        row = s.get(Delivery, _int(request.match_info["id"]))
    if row is None:
        return _error(404, "no such delivery")
    state = "pending" if row.processed_at is None else ("error" if row.error else "processed")
    return web.json_response({"id": row.id, "event_type": row.event_type, "state": state,
                              "result": row.result, "error": row.error})


async def healthz(request: web.Request) -> web.Response:
    gate = _gate(request)
    try:
        with session(gate.engine) as s:
            s.exec(select(Delivery.id).limit(1)).first()
        db_ok = True
    except Exception as exc:  # the probe reports, it does not crash
        log.warning("health check: database unavailable: %s", exc)
        db_ok = False
    loop_age = time.time() - gate.last_loop_at if gate.last_loop_at else None
    ok = db_ok and loop_age is not None and loop_age < 120
    return web.json_response({"ok": ok, "database": db_ok, "loop_age_seconds": loop_age,
                              "uptime_seconds": time.time() - gate.started_at},
                             status=200 if ok else 503)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise web.HTTPNotFound() from None


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except _BadRequest as exc:
        log.warning("refused %s %s: %s", request.method, request.path, exc)
        return _error(400, str(exc))


def make_app(gate: Gate) -> web.Application:
    app = web.Application(middlewares=[error_middleware, auth_middleware],
                          client_max_size=MAX_BODY)
    app[GATE_KEY] = gate
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/status", get_status)
    app.router.add_get("/api/repos/{name}", get_repo)
    app.router.add_get("/api/deliveries/{id}", get_delivery)
    app.router.add_post("/api/changes", propose_change)
    app.router.add_get("/api/changes/{id}", get_change)
    app.router.add_post("/api/changes/{id}/approve", approve_change)
    app.router.add_post("/api/changes/{id}/enqueue", enqueue_change)
    app.router.add_post("/api/ref-updated", ref_updated)
    app.router.add_post("/api/items/{id}/dequeue", dequeue_item)
    app.router.add_post("/api/items/{id}/promote", promote_item)
    app.router.add_post("/api/repos/{name}/republish", republish)
    app.router.add_post("/api/repos/{name}/rollback", rollback)
    speculative = gate.state_dir / "speculative"
    speculative.mkdir(parents=True, exist_ok=True)
    app.router.add_static("/speculative/", speculative, show_index=True)
    app.router.add_static("/files/logs/", _ensure(gate.state_dir / "logs"), show_index=True)
    for name, backend_cfg in gate.config.backends.items():
        if backend_cfg.type == "local":
            logs = _ensure(gate.state_dir / "builds" / name / "logs")
            app.router.add_static(f"/files/builds/{name}/logs/", logs)
    for name, pub in gate.config.publishers.items():
        app.router.add_static(f"/repos/{name}/", _ensure(pub.root), show_index=True,
                              follow_symlinks=True)
    return app


def _ensure(path: Any) -> Any:
    path.mkdir(parents=True, exist_ok=True)
    return path
