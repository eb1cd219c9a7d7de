"""What every review system's webhook endpoint does the same way.

A driver's route (mounted under :data:`PREFIX` ``<source name>/``, outside the
API's bearer-token check: the review system proves itself by the driver's own
verification) reads the raw body (signatures are over the exact bytes),
verifies it, and then either

* :func:`refuse`: ``401``/``403``, logged with the connection's name and the
  peer's address (never the secret or the signature), nothing stored; or
* :func:`accept`: the delivery is committed (with the other deliveries
  arriving meanwhile, in one transaction: ``gate.deliveries``; retried
  briefly on a transient database fault, a ``503`` from the app's middleware
  after that) and only then answered ``202`` (``200`` for a delivery id seen before: review
  systems redeliver).

Parsing a delivery into events happens later, in the loop
(``ChangeSource.parse_event``), so an endpoint stores anything it verified,
unknown event types included: they are logged and kept, never dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from typing import Any

from aiohttp import web

from gate.faults import retried_call
from gate.sources.base import StoreDelivery

log = logging.getLogger(__name__)

#: every source's routes live under PREFIX + "<source name>/"
PREFIX = "/api/sources/"
#: the most a review system's delivery may weigh (GitHub caps its own at 25 MB;
#: a distgit's events are small)
MAX_BODY = 1 << 20
#: tries at storing a delivery before the answer is 503 (the system redelivers)
STORE_TRIES = 5


def path(source: str, *rest: str) -> str:
    """The URL path of a route of ``source`` (``/api/sources/<name>/...``)."""
    return PREFIX + "/".join([source, *rest])


def hmac_sha256_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def header_bytes(value: str) -> bytes:
    """The bytes a client sent as a header value (or a path segment).

    aiohttp decodes them as UTF-8 with ``surrogateescape``, so a byte that is not
    UTF-8 (``\\x80``) arrives as a lone surrogate that a plain ``encode()`` refuses
    (a 500); encoding back the same way gives the sent bytes and never raises."""
    return value.encode("utf-8", "surrogateescape")


def same(given: str, expected: str) -> bool:
    """Constant-time comparison of a presented secret or signature."""
    return hmac.compare_digest(header_bytes(given), expected.encode())


def peer(request: web.Request) -> str:
    return request.remote or "unknown"


def refuse(request: web.Request, source: str, status: int, why: str) -> web.Response:
    """Refuse a delivery: logged with who sent it, nothing stored.  ``why`` must
    not hold a secret or a presented signature."""
    log.warning("%s: webhook from %s refused (%d): %s", source, peer(request), status, why)
    return web.json_response({"error": why}, status=status)


async def read_body(request: web.Request, source: str) -> bytes | web.Response:
    """The raw body, or a refusal if it is too large."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        return refuse(request, source, 413, f"body larger than {MAX_BODY} bytes")
    body = await request.read()
    if len(body) > MAX_BODY:
        return refuse(request, source, 413, f"body larger than {MAX_BODY} bytes")
    return body


def json_object(request: web.Request, source: str, body: bytes) -> dict[str, Any] | web.Response:
    """A verified body as a JSON object, or a 400 refusal."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return refuse(request, source, 400, "body is not JSON")
    if not isinstance(doc, dict):
        return refuse(request, source, 400, "body is not a JSON object")
    return doc


async def accept(
    request: web.Request,
    store: StoreDelivery,
    source: str,
    event_type: str,
    payload: dict[str, Any],
    key: str | None,
) -> web.Response:
    """Commit a verified delivery, then answer: 202 (new) or 200 (``key`` seen before).

    ``key``: the review system's delivery id (deduplication); without one every
    delivery is new.
    """
    if key is not None and (len(key) > 200 or not key.isprintable()):
        return refuse(request, source, 400, "delivery id: at most 200 printable characters")
    fixed = key or str(uuid.uuid4())  # one key for every try: a lost commit answer is found
    created = await retried_call(
        lambda: store(source, event_type, payload, fixed),
        f"storing a {source} {event_type} delivery",
        tries=STORE_TRIES,
    )
    if created:
        log.info("%s: accepted %s delivery from %s", source, event_type, peer(request))
    return web.json_response(
        {"accepted": True, "duplicate": not created}, status=202 if created else 200
    )
