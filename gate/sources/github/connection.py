"""Talking to GitHub: the REST calls that are GitHub's own, and webhook verification.

REST (https://docs.github.com/en/rest), version ``2022-11-28``, with a token in
``Authorization: Bearer`` (https://docs.github.com/en/rest/authentication/authenticating-to-the-rest-api).

Webhooks (https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries):
GitHub signs the raw body with the webhook's secret and sends
``X-Hub-Signature-256: sha256=<hex HMAC-SHA256>``; ``X-GitHub-Event`` names the
event and ``X-GitHub-Delivery`` is a GUID that a redelivery repeats
(https://docs.github.com/en/webhooks/webhook-events-and-payloads#delivery-headers).
The SHA-1 ``X-Hub-Signature`` is ignored: only the SHA-256 one is accepted.
"""

from __future__ import annotations

from urllib.parse import quote

from multidict import CIMultiDictProxy

from gate.sources.base import MergeOutcome
from gate.sources.github.config import GitHubConfig
from gate.sources.pulls.model import PullRequest, Verdict
from gate.sources.pulls.rest import ApiError, RestClient
from gate.sources.pulls.source import Intake
from gate.sources.webhooks import hmac_sha256_hex, same

API_VERSION = "2022-11-28"
USER_AGENT = "rpmgate"
#: GitHub's event names and delivery ids are short ASCII words and GUIDs
MAX_HEADER = 100

#: ``permission`` and ``role_name`` of the collaborator permission call, weakest first
#: (https://docs.github.com/en/rest/collaborators/collaborators#get-repository-permissions-for-a-user:
#: ``permission`` is the legacy admin/write/read/none, ``role_name`` adds maintain
#: and triage and custom roles' names)
LEVELS = ("none", "read", "triage", "write", "maintain", "admin")


def client(config: GitHubConfig) -> RestClient:
    return RestClient(
        config.api_url,
        {
            "Authorization": f"Bearer {config.token.get_secret_value()}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
        },
        user_agent=USER_AGENT,
    )


def verify(secret: str, headers: CIMultiDictProxy[str], body: bytes) -> tuple[int, str] | None:
    """None if ``X-Hub-Signature-256`` is the body's signature; else (status, why).

    Missing: 401; present but wrong: 403.  The presented value is never echoed.
    """
    given = headers.get("X-Hub-Signature-256")
    if given is None:
        return 401, "no X-Hub-Signature-256 header"
    if not same(given.strip(), "sha256=" + hmac_sha256_hex(secret, body)):
        return 403, "X-Hub-Signature-256 does not match the body"
    return None


def intake(headers: CIMultiDictProxy[str]) -> Intake | None:
    event = headers.get("X-GitHub-Event", "").strip()
    if not event or len(event) > MAX_HEADER or not event.replace("_", "").isalnum():
        return None
    delivery = headers.get("X-GitHub-Delivery")
    return Intake(event, delivery.strip()[:MAX_HEADER] if delivery else None)


async def verdicts(api: RestClient, repo: str, number: int) -> list[Verdict]:
    """``GET /repos/{owner}/{repo}/pulls/{n}/reviews``, oldest first.

    https://docs.github.com/en/rest/pulls/reviews#list-reviews-for-a-pull-request:
    ``state`` is APPROVED, CHANGES_REQUESTED, COMMENTED, DISMISSED or PENDING;
    ``commit_id`` the head it was given on.  A COMMENTED review leaves a
    user's verdict as it was; PENDING ones are drafts only their author sees.
    """
    found: list[Verdict] = []
    for review in await api.get_all(
        f"/repos/{repo}/pulls/{number}/reviews", params={"per_page": "100"}
    ):
        if not isinstance(review, dict):
            continue
        user = (review.get("user") or {}).get("login")
        state, commit = review.get("state"), review.get("commit_id")
        if not isinstance(user, str) or not isinstance(commit, str):
            continue
        verdict = {"APPROVED": "approve", "CHANGES_REQUESTED": "reject", "DISMISSED": "dismissed"}
        if state in verdict:
            found.append(Verdict(user, verdict[state], commit))  # type: ignore[arg-type]
    return found


async def permission(api: RestClient, repo: str, user: str) -> str:
    """``GET /repos/{owner}/{repo}/collaborators/{username}/permission``: the user's role.

    https://docs.github.com/en/rest/collaborators/collaborators#get-repository-permissions-for-a-user
    ``role_name`` when it is one of GitHub's roles, else the legacy ``permission``
    (a custom role's name says nothing comparable).  A user GitHub does not know: none.
    """
    try:
        doc = await api.get(f"/repos/{repo}/collaborators/{quote(user, safe='')}/permission")
    except ApiError as exc:
        if exc.status == 404:
            return "none"
        raise
    if not isinstance(doc, dict):
        return "none"
    role, legacy = doc.get("role_name"), doc.get("permission")
    if role in LEVELS:
        return str(role)
    return str(legacy) if legacy in LEVELS else "none"


def at_least(level: str, wanted: str) -> bool:
    return level in LEVELS and LEVELS.index(level) >= LEVELS.index(wanted)


async def merge(api: RestClient, repo: str, pr: PullRequest, method: str) -> MergeOutcome | str:
    """``PUT /repos/{owner}/{repo}/pulls/{n}/merge`` with ``sha``: the head must still be it.

    https://docs.github.com/en/rest/pulls/pulls#merge-a-pull-request:
    200 ``{"sha", "merged": true, "message"}``; 405 "Pull Request is not mergeable"
    (also when it is merged already); 409 "Head branch was modified. Review and
    try the merge again." (the sha guard); 422 validation failed (the base
    branch moved under a merge, a method the repository does not allow); 403
    (the token may not merge, branch protection).  A refusal returns its
    reason as a string: the caller re-reads to tell "merged already" from "no".
    """
    try:
        doc = await api.put(
            f"/repos/{repo}/pulls/{pr.number}/merge",
            {"sha": pr.head.sha, "merge_method": method},
        )
    except ApiError as exc:
        if exc.status >= 500 or exc.status == 429:
            raise
        if exc.status == 409:
            return f"pull request #{pr.number} moved while it was merged: {exc.message}"
        return f"GitHub refused to merge pull request #{pr.number} ({exc.status}): {exc.message}"
    sha = doc.get("sha") if isinstance(doc, dict) else None
    if isinstance(doc, dict) and doc.get("merged") is True:
        return MergeOutcome(True, head=sha if isinstance(sha, str) else None)
    message = doc.get("message") if isinstance(doc, dict) else None
    return f"GitHub did not merge pull request #{pr.number}: {message or 'no reason given'}"
