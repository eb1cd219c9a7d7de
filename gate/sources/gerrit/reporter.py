"""What the gate tells a Gerrit change: a comment, and a vote when the verdict is in.

``enqueued`` and ``dequeued`` are comments only; ``failed`` votes the
connection's ``verified_label`` at its failure value; ``merged`` comments
(the success vote was cast just before the submit, since Gerrit's submit
rules need it).  Reports go to the revision the item tested: Gerrit keeps
a vote on an outdated patch set there (PostReviewCopyApprovalsOp copies it
forward only when the label's copy condition allows).
"""

from __future__ import annotations

from dataclasses import dataclass

from gate.sources.gerrit.config import GerritConfig

#: the order links are listed in under a report's message
LINK_TITLES = {
    "status": "Status",
    "log": "Log",
    "speculative_repo": "Speculative repository",
    "repository": "Repository",
}


@dataclass(frozen=True)
class ReviewPost:
    """One ReviewInput (rest-api-changes.html#review-input): a message and its votes."""

    message: str
    labels: dict[str, int]


def review_post(
    config: GerritConfig, phase: str, message: str, links: dict[str, str]
) -> ReviewPost:
    lines = [message.strip()]
    listed = [
        f"- {LINK_TITLES.get(key, key)}: {url}"
        for key, url in sorted(
            links.items(),
            key=lambda kv: list(LINK_TITLES).index(kv[0]) if kv[0] in LINK_TITLES else 99,
        )
        if url
    ]
    if listed:
        lines += ["", *listed]
    labels: dict[str, int] = {}
    if config.vote and phase == "failed":
        labels[config.verified_label] = config.verified_failure
    return ReviewPost("\n".join(lines), labels)
