"""Talking to Forgejo: the REST calls that are Forgejo's own, and webhook verification.

REST: the instance's ``/api/v1`` (swagger at ``<instance>/api/swagger``; the
handlers are routers/api/v1/repo/*.go in the Forgejo source), a token in
``Authorization: token <token>``.

Webhooks: services/webhook/shared/payloader.go ``AddDefaultHeaders`` signs the
raw body with the webhook's secret and sends the hex HMAC-SHA256, without a
prefix, as ``X-Forgejo-Signature`` (and the same as ``X-Gitea-Signature``,
which is all Gitea sends); the fine-grained event is
``X-Forgejo-Event-Type``/``X-Gitea-Event-Type`` (``pull_request_sync``,
``pull_request_review_approved``, ...: modules/webhook/type.go), the delivery
id ``X-Forgejo-Delivery``/``X-Gitea-Delivery`` (the hook task's UUID, the same
on a redelivery).  Forgejo also sends GitHub-style ``X-Hub-Signature-256``
and ``X-GitHub-Event`` headers; they are not used here: ``X-GitHub-Event`` is
the coarse event (``pull_request`` for a sync and a label change alike).
"""

from __future__ import annotations

from urllib.parse import quote

from multidict import CIMultiDictProxy

from gate.sources.forgejo.config import ForgejoConfig
from gate.sources.pulls.model import PullRequest, Verdict
from gate.sources.pulls.rest import ApiError, RestClient
from gate.sources.pulls.source import Intake
from gate.sources.webhooks import hmac_sha256_hex, same

USER_AGENT = "rpmgate"
MAX_HEADER = 100
#: a list page (Forgejo's default MAX_RESPONSE_ITEMS is 50)
PAGE = "50"
#: ``permission`` of the collaborator permission call (``perm.AccessMode.String()``),
#: weakest first
LEVELS = ("none", "read", "write", "admin", "owner")


def client(config: ForgejoConfig) -> RestClient:
    return RestClient(
        config.api_url,
        {"Authorization": f"token {config.token.get_secret_value()}"},
        user_agent=USER_AGENT,
    )


def verify(secret: str, headers: CIMultiDictProxy[str], body: bytes) -> tuple[int, str] | None:
    """None if ``X-Forgejo-Signature`` (or, from Gitea, ``X-Gitea-Signature``) is the
    body's hex HMAC-SHA256; else (status, why): 401 missing, 403 wrong."""
    name = "X-Forgejo-Signature" if "X-Forgejo-Signature" in headers else "X-Gitea-Signature"
    given = headers.get(name)
    if given is None:
        return 401, "no X-Forgejo-Signature or X-Gitea-Signature header"
    if not same(given.strip().lower(), hmac_sha256_hex(secret, body)):
        return 403, f"{name} does not match the body"
    return None


def intake(headers: CIMultiDictProxy[str]) -> Intake | None:
    event = headers.get("X-Forgejo-Event-Type") or headers.get("X-Gitea-Event-Type") or ""
    event = event.strip()
    if not event or len(event) > MAX_HEADER or not event.replace("_", "").isalnum():
        return None
    delivery = headers.get("X-Forgejo-Delivery") or headers.get("X-Gitea-Delivery")
    return Intake(event, delivery.strip()[:MAX_HEADER] if delivery else None)


async def verdicts(api: RestClient, repo: str, number: int) -> list[Verdict]:
    """``GET /repos/{owner}/{repo}/pulls/{index}/reviews``, oldest first.

    routers/api/v1/repo/pull_review.go ``ListPullReviews``; each a ``PullReview``
    (services/convert/pull_review.go): ``state`` APPROVED, REQUEST_CHANGES,
    COMMENT, PENDING or REQUEST_REVIEW; ``dismissed`` (a dismissed review keeps its
    state, unlike GitHub's DISMISSED); ``commit_id`` the head it was given on.
    """
    found: list[Verdict] = []
    reviews = await api.get_all(f"/repos/{repo}/pulls/{number}/reviews", params={"limit": PAGE})
    for review in reviews:
        if not isinstance(review, dict):
            continue
        user = (review.get("user") or {}).get("login")
        state, commit = review.get("state"), review.get("commit_id")
        if not isinstance(user, str) or not isinstance(commit, str):
            continue
        if state in ("APPROVED", "REQUEST_CHANGES") and review.get("dismissed") is True:
            found.append(Verdict(user, "dismissed", commit))
        elif state == "APPROVED":
            found.append(Verdict(user, "approve", commit))
        elif state == "REQUEST_CHANGES":
            found.append(Verdict(user, "reject", commit))
    return found


async def permission(api: RestClient, repo: str, user: str) -> str:
    """``GET /repos/{owner}/{repo}/collaborators/{collaborator}/permission``.

    routers/api/v1/repo/collaborators.go ``GetRepoPermissions``: only a site
    admin, a repository admin or the user themselves may ask (403 otherwise:
    the bot account needs admin on the repository); 404 for an unknown user.
    The answer's ``permission`` is none, read, write, admin or owner.
    """
    try:
        doc = await api.get(f"/repos/{repo}/collaborators/{quote(user, safe='')}/permission")
    except ApiError as exc:
        if exc.status == 404:
            return "none"
        raise
    level = doc.get("permission") if isinstance(doc, dict) else None
    return str(level) if level in LEVELS else "none"


def at_least(level: str, wanted: str) -> bool:
    return level in LEVELS and LEVELS.index(level) >= LEVELS.index(wanted)


async def merge(api: RestClient, repo: str, pr: PullRequest, style: str) -> str | None:
    """``POST /repos/{owner}/{repo}/pulls/{index}/merge`` with ``head_commit_id``.

    routers/api/v1/repo/pull.go ``MergePullRequest``: 200 with an empty body
    (merged; the merge commit is read back from the pull request); 404 closed;
    405 merged already, not mergeable, not allowed, a style the repository
    does not allow; 409 "head out of date" (the sha guard:
    ``models.ErrSHADoesNotMatch``), conflicts, a push out of date.  Returns
    None when merged, else the refusal (the caller re-reads: "merged already"
    is done).
    """
    try:
        await api.post(
            f"/repos/{repo}/pulls/{pr.number}/merge",
            {"Do": style, "head_commit_id": pr.head.sha},
        )
    except ApiError as exc:
        if exc.status >= 500 or exc.status == 429:
            raise
        if exc.status == 409:
            return f"Forgejo refused to merge pull request #{pr.number}: {exc.message}"
        return f"Forgejo refused to merge pull request #{pr.number} ({exc.status}): {exc.message}"
    return None
