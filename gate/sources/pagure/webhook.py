"""Verifying a Pagure web-hook delivery.

Pagure signs each delivery (``pagure/lib/tasks_services.py`` ``call_web_hooks``):
the body is ``json.dumps({"topic", "msg", "timestamp", "msg_id", "i"},
sort_keys=True)`` and ``X-Pagure-Signature-256`` is the hex HMAC-SHA256 of those
bytes keyed with the project's ``hook_token`` (its "Private web-hook key").  The
other headers (``X-Pagure-Topic``, ``X-Pagure-Project``, ``X-Pagure``) are not
signed and are never read: the topic and the project come from the signed body.
The older ``X-Pagure-Signature`` (HMAC-SHA1) is not accepted.

The key is per project, so the body names which key to try
(``msg.project_fullname``, which ``call_web_hooks`` adds); that claim is only
believed once the signature made with that project's key matches.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

from gate.sources.pagure.config import PagureConfig
from gate.sources.pagure.messages import TOPIC_PATTERN, message_project
from gate.sources.webhooks import header_bytes

SIGNATURE_HEADER = "X-Pagure-Signature-256"
#: Pagure's msg_id is "<year>-<uuid4>"; accept any short printable id
MSG_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


@dataclass(frozen=True)
class Verified:
    topic: str
    msg: dict[str, Any]
    msg_id: str
    #: the project whose key signed it
    project: str
    timestamp: Any = None


@dataclass(frozen=True)
class Rejected:
    status: int
    #: logged and answered; never holds a secret or the presented signature
    why: str


def signature(key: str, body: bytes) -> str:
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def _claimed_project(doc: dict[str, Any]) -> str | None:
    msg = doc.get("msg")
    if not isinstance(msg, dict):
        return None
    claimed = msg.get("project_fullname")
    if isinstance(claimed, str) and claimed:
        return claimed
    topic = doc.get("topic")
    return message_project(topic, msg) if isinstance(topic, str) else None


def verify(config: PagureConfig, body: bytes, presented: str | None) -> Verified | Rejected:
    """The delivery if ``presented`` is the signature of ``body`` with its project's key."""
    if not presented:
        return Rejected(401, f"no {SIGNATURE_HEADER} header")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return Rejected(400, "body is not JSON")
    if not isinstance(doc, dict):
        return Rejected(400, "body is not a JSON object")
    claimed = _claimed_project(doc)
    if claimed is None:
        return Rejected(403, "the body names no project whose key could have signed it")
    key = config.webhook_secret(claimed)
    if key is None:
        return Rejected(403, f"no webhook key for project {claimed[:100]!r}")
    given = header_bytes(presented.strip().lower())
    if not hmac.compare_digest(given, signature(key, body).encode()):
        return Rejected(403, f"bad {SIGNATURE_HEADER} for project {claimed[:100]!r}")
    # signed by the project's key: what follows is Pagure's word, still checked for shape
    topic, msg, msg_id = doc.get("topic"), doc.get("msg"), doc.get("msg_id")
    if not isinstance(topic, str) or not TOPIC_PATTERN.match(topic) or len(topic) > 100:
        return Rejected(400, "topic: not a Pagure topic")
    if not isinstance(msg, dict):
        return Rejected(400, "msg: not an object")
    if not isinstance(msg_id, str) or not MSG_ID.match(msg_id):
        return Rejected(400, "msg_id: not a message id")
    about = message_project(topic, msg)
    if about is not None and about != claimed:
        # one project's key vouches for that project's events only
        return Rejected(403, f"signed for {claimed[:100]!r} but about {about[:100]!r}")
    return Verified(topic, msg, msg_id, claimed, doc.get("timestamp"))
