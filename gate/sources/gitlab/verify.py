"""Is this delivery from our GitLab webhook?  And which delivery is it?

GitLab proves a delivery two ways, and a connection may ask for both:

* the **secret token**: sent verbatim as ``X-Gitlab-Token``
  (https://docs.gitlab.com/ee/user/project/integrations/webhooks.html#validate-payloads-by-using-a-secret-token),
  compared here in constant time;
* the **signing token** (``whsec_<base64 key>``, GitLab 18.x): the Standard Webhooks
  scheme, ``webhook-signature: v1,<base64 HMAC-SHA256>`` over
  ``<webhook-id>.<webhook-timestamp>.<raw body>``, with ``webhook-id`` and
  ``webhook-timestamp`` headers (gitlab-org/gitlab!230944,
  https://www.standardwebhooks.com/).  A signature also binds the body and the
  time, so a replayed or altered delivery fails where a bare token passes.

Each is one :class:`Check`; the verifier runs every configured check, so a
new scheme is one more class, not a change to the others.

Deduplication: GitLab sends ``Idempotency-Key`` (GitLab 17.4+: the same value on
every retry of one event, https://docs.gitlab.com/ee/user/project/integrations/webhooks.html#delivery-headers);
a signed delivery's ``webhook-id`` is the same value.  Older instances send only
``X-Gitlab-Event-UUID`` (one per event, shared by the hooks it fires) and
``X-Gitlab-Webhook-UUID`` (one per hook), which together name one delivery.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gate.sources.webhooks import header_bytes

#: 401: nothing proves where it came from; 403: what it presented is wrong
UNAUTHENTICATED, FORBIDDEN = 401, 403


@dataclass(frozen=True)
class Refusal:
    status: int
    #: why, for the log and the answer: never the secret, never what was presented
    why: str


class Check:
    """One way a delivery proves it comes from the configured webhook."""

    def check(self, headers: Mapping[str, str], body: bytes) -> Refusal | None:
        raise NotImplementedError


@dataclass(frozen=True)
class SecretToken(Check):
    """``X-Gitlab-Token`` equals the webhook's secret token."""

    secret: str

    def check(self, headers: Mapping[str, str], body: bytes) -> Refusal | None:
        given = headers.get("X-Gitlab-Token")
        if given is None:
            return Refusal(UNAUTHENTICATED, "no X-Gitlab-Token header")
        if not hmac.compare_digest(header_bytes(given), self.secret.encode()):
            return Refusal(FORBIDDEN, "X-Gitlab-Token does not match the webhook's secret token")
        return None


@dataclass(frozen=True)
class SigningToken(Check):
    """``webhook-signature`` holds a valid ``v1`` signature of this body, made recently."""

    #: ``whsec_<base64>`` as GitLab shows it
    secret: str
    #: seconds a ``webhook-timestamp`` may be from now
    tolerance: int = 300
    clock: Callable[[], float] = time.time

    def key(self) -> bytes:
        try:
            return base64.b64decode(self.secret.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("signing_token is not whsec_<base64>") from None

    def check(self, headers: Mapping[str, str], body: bytes) -> Refusal | None:
        delivery = headers.get("webhook-id")
        stamp = headers.get("webhook-timestamp")
        signatures = headers.get("webhook-signature")
        if not (delivery and stamp and signatures):
            return Refusal(UNAUTHENTICATED, "unsigned (webhook-id/-timestamp/-signature missing)")
        if not stamp.isdigit() or len(stamp) > 12:
            return Refusal(FORBIDDEN, "webhook-timestamp is not a Unix time")
        if abs(self.clock() - int(stamp)) > self.tolerance:
            return Refusal(FORBIDDEN, "webhook-timestamp too far from now (a replay?)")
        expected = sign(self.key(), delivery, stamp, body)
        # several signatures may be sent (key rotation): one valid v1 is enough;
        # every one is compared, so the time says nothing of which matched
        matched = False
        for entry in signatures.split()[:8]:
            version, _, value = entry.partition(",")
            if version == "v1" and hmac.compare_digest(header_bytes(value), expected.encode()):
                matched = True
        if not matched:
            return Refusal(FORBIDDEN, "webhook-signature does not match")
        return None


def sign(key: bytes, delivery: str, stamp: str, body: bytes) -> str:
    """The ``v1`` signature value (base64) of a delivery."""
    content = header_bytes(delivery) + b"." + header_bytes(stamp) + b"." + body
    return base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


@dataclass(frozen=True)
class Verifier:
    checks: Sequence[Check]

    def verify(self, headers: Mapping[str, str], body: bytes) -> Refusal | None:
        """None when every check passes, else the first refusal."""
        if not self.checks:
            return Refusal(UNAUTHENTICATED, "no way to verify deliveries is configured")
        for check in self.checks:
            refusal = check.check(headers, body)
            if refusal is not None:
                return refusal
        return None


def verifier(
    webhook_token: str, signing_token: str | None = None, tolerance: int = 300
) -> Verifier:
    checks: list[Check] = [SecretToken(webhook_token)]
    if signing_token:
        signing = SigningToken(signing_token, tolerance)
        signing.key()  # a malformed key is a config error, found at start
        checks.append(signing)
    return Verifier(checks)


def delivery_key(headers: Mapping[str, str]) -> str | None:
    """The id GitLab keeps across retries of one delivery (None: it sent none)."""
    key = headers.get("Idempotency-Key") or headers.get("webhook-id")
    if key:
        return key
    event = headers.get("X-Gitlab-Event-UUID")
    if event:
        hook = headers.get("X-Gitlab-Webhook-UUID", "")
        return f"{event}:{hook}" if hook else event
    return None
