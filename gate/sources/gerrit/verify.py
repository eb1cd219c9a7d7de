"""Is a webhooks-plugin delivery from our Gerrit?

The webhooks plugin (plugins/webhooks, Documentation/config.md) signs
nothing and sends no secret header: a remote is just a URL.  So the URL is
the secret -- an unguessable token as its last path segment, compared in
constant time -- and/or the TCP peer must be in an allowlist.  Either check
failing refuses the delivery: 403 for an address not allowed, 401 for a
missing or wrong token.  The reason never contains the token.

Limits (docs/sources/gerrit.md): the token travels in the URL, so it is in
Gerrit's webhooks.config, in access logs of proxies on the way, and must be
sent over HTTPS; the allowlist sees the proxy, not Gerrit, when the gate is
behind a reverse proxy.
"""

from __future__ import annotations

import hmac

from gate.sources.gerrit.config import WebhookConfig
from gate.sources.webhooks import header_bytes


def verify(config: WebhookConfig, token: str | None, peer: str | None) -> tuple[int, str] | None:
    """None when the delivery may be accepted, else (HTTP status, reason)."""
    if not config.allows(peer):
        return 403, f"address {peer} is not in allow_from"
    expected = config.token.get_secret_value() if config.token is not None else None
    if expected is not None:
        given = header_bytes(token or "")
        if not hmac.compare_digest(given, expected.encode()):
            return 401, "wrong or missing webhook token"
    return None
