"""Pull requests and review verdicts as the REST APIs give them, validated.

Both systems answer ``GET /repos/{owner}/{repo}/pulls/{n}`` with the same
fields for what the gate reads (GitHub: https://docs.github.com/en/rest/pulls/pulls#get-a-pull-request;
Forgejo: ``PullRequest`` in modules/structs/pull.go, served by
routers/api/v1/repo/pull.go ``GetPullRequest``), so one model reads both.
Answers are data from outside: anything that does not validate is refused
(:class:`Malformed`), never guessed at.

Review verdicts differ in their words (GitHub ``CHANGES_REQUESTED`` and a
``DISMISSED`` state; Forgejo ``REQUEST_CHANGES`` and a ``dismissed`` flag), so
each system turns its reviews into :class:`Verdict` itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Malformed(ValueError):
    """An API answer that does not have the documented shape."""


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Account(_Doc):
    login: str = ""


class BranchRef(_Doc):
    ref: str
    sha: str = Field(pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$")


class LabelDoc(_Doc):
    name: str


class PullRequest(_Doc):
    number: int = Field(ge=1)
    state: str
    title: str = ""
    body: str | None = None
    html_url: str = ""
    user: Account | None = None
    head: BranchRef
    base: BranchRef
    labels: list[LabelDoc] = []
    merged: bool = False
    #: null while the system computes it (GitHub); the merge call has the last word
    mergeable: bool | None = None
    merge_commit_sha: str | None = None
    draft: bool = False

    @property
    def open(self) -> bool:
        return self.state == "open" and not self.merged

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]


def pull_request(doc: Any) -> PullRequest:
    """A pull request from an API answer (or a webhook's ``pull_request``)."""
    try:
        return PullRequest.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise Malformed(f"not a pull request: {problems}") from None


@dataclass(frozen=True)
class Verdict:
    """One review, in the words the approval rule needs."""

    user: str
    #: approve / reject (changes requested) / dismissed; comments are not verdicts
    verdict: Literal["approve", "reject", "dismissed"]
    #: the head the review was given on
    commit: str
