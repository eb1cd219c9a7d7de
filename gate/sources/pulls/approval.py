"""When a pull request is approved for the gate: the connection's rule.

Three rules, one per connection (``approval.by``):

* ``reviews`` (default): at least ``approval.reviews`` approving reviews of
  the current head, each from a user with at least ``approval.permission`` on
  the repository, and no outstanding "changes requested" from such a user.
  A user's latest verdict counts (a later approval replaces their request for
  changes; a dismissal withdraws either), as the review systems count them.
  Reviews are bound to the commit they were given on, so new commits need a
  new approval (``stale_reviews: true`` lets older ones count);
* ``label``: the pull request carries ``approval.label``.  A label is not bound
  to a commit: new commits pushed while it is on are approved with it;
* ``command``: a comment ``approval.command`` by a user with that permission,
  bound to the head the system reports with the comment (Forgejo only: a
  GitHub ``issue_comment`` delivery names neither the head nor the
  commenter's permission, see docs/sources/github.md).

The rule is evaluated on what the system says now (:func:`by_reviews` is pure:
the source fetches reviews and permissions and hands them in).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gate.sources.pulls.model import Verdict


class ApprovalConfig(BaseModel):
    """``approval:`` of a GitHub or Forgejo connection."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    by: Literal["reviews", "label", "command"] = "reviews"
    #: approving reviews needed (``by: reviews``)
    reviews: int = Field(default=1, ge=1, le=20)
    #: an approval given on an earlier head counts for the current one
    stale_reviews: bool = False
    #: the label that approves (``by: label``)
    label: str = Field(default="gate", min_length=1, max_length=50)
    #: the comment that approves, alone on its first line (``by: command``)
    command: str = Field(default="/gate", min_length=1, max_length=50, pattern=r"^\S+$")
    #: the least permission on the repository a reviewer or commenter must have
    permission: Literal["write", "maintain", "admin"] = "write"


def latest_verdicts(reviews: Iterable[Verdict]) -> dict[str, Verdict]:
    """Each user's latest verdict (``reviews`` in the order they were given)."""
    latest: dict[str, Verdict] = {}
    for review in reviews:
        latest[review.user] = review
    return latest


def by_reviews(
    reviews: Iterable[Verdict],
    head: str,
    allowed: Mapping[str, bool],
    config: ApprovalConfig,
) -> tuple[bool, str]:
    """(approved, why not) for ``head``; ``allowed``: user -> has the permission."""
    latest = latest_verdicts(reviews)
    blockers = sorted(
        user for user, v in latest.items() if v.verdict == "reject" and allowed.get(user)
    )
    if blockers:
        return False, f"changes requested by {', '.join(blockers)}"
    approvers = sorted(
        user
        for user, v in latest.items()
        if v.verdict == "approve"
        and allowed.get(user)
        and (config.stale_reviews or v.commit == head)
    )
    if len(approvers) >= config.reviews:
        return True, ""
    have = f" (has {len(approvers)}: {', '.join(approvers)})" if approvers else " (has none)"
    return False, (
        f"needs {config.reviews} approving review{'s' if config.reviews > 1 else ''} of "
        f"{head[:12]} from users with {config.permission} permission{have}"
    )


def first_line_is(body: str, command: str) -> bool:
    """Whether a comment is ``command`` (its first non-blank line, nothing else on it)."""
    for line in body.splitlines():
        if line.strip():
            return line.strip() == command
    return False
