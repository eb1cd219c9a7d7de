"""The interface of a review system (a *source* of changes).

A source answers the questions the gate must ask the system that owns a
project's branch, and carries out the one action that changes it:

* what is this change now (events are hints: re-read before acting);
* where is the branch (direct pushes become post items);
* merge this tested commit, or refuse if the branch moved in a way the item
  was not tested on;
* is this commit merged already (crash recovery of the tip);
* what a review says now (:meth:`ChangeSource.read_review`): open, at which
  revision, approved by the connection's rule, mergeable;
* report an item's progress to the people who proposed it (:class:`Report`);
* host a commit the gate made on a branch of its own, for builders that fetch
  what they build from the repository (Koji SCM builds: kojid clones every
  branch, and a merge commit only the gate's clone has is on none).

Speculative merges are not a source's business: they happen in the gate's own
clones (``gate.merger``) whatever system hosts the repository; a review's
revision is fetched by its :attr:`Review.fetch_ref`.  Drivers for review
systems (Gerrit, GitLab, GitHub, Forgejo, Pagure) implement this interface next
to their event parsing and signature verification, one package per system
under ``gate/sources/``, and register in ``gate/drivers.py``: a source may add
web routes (its webhook endpoint, which stores deliveries under the source's
name, see ``gate.sources.webhooks``) or background intake (:meth:`start`), and
translates those deliveries into the gate's events
(:meth:`ChangeSource.parse_event`): :class:`~gate.events.ReviewUpdated` (a
hint: the gate re-reads the review and acts on what it says now) and
:class:`~gate.events.RefUpdated` (a direct push).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from gate.events import Event, Refused
from gate.merger import Merger


@dataclass(frozen=True)
class MergeOutcome:
    ok: bool
    #: why the merge was refused ("" when ok)
    reason: str = ""
    #: the branch head after the merge, when the review system made it (its own
    #: merge commit, a rebase): the gate checks that its tree is the tested tree
    head: str | None = None


class Review(BaseModel):
    """A change as its review system has it now.

    Events are hints; this is what the gate acts on, read again before a change
    is enqueued and before it is merged.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: the review's id there: a Gerrit change number, a GitLab MR iid, a PR number
    id: str
    #: the gate's project name (a key of ``projects:``)
    project: str
    #: full sha of the current revision (patch set, MR head, PR head)
    revision: str
    #: a ref the gate's clone fetches the revision by (``refs/changes/45/12345/3``,
    #: ``refs/merge-requests/7/head``, ``refs/pull/7/head``)
    fetch_ref: str
    #: the target branch
    branch: str
    title: str = ""
    #: the page packagers open; also what ``Depends-On:`` lines name
    url: str = ""
    owner: str = ""
    #: False once merged, closed or abandoned
    open: bool = True
    #: merged (by anyone): with ``open`` False
    merged: bool = False
    #: the connection's approval rule, evaluated now, for ``revision``.  None: this
    #: system approves by command (a comment): the gate's record of an approval
    #: command for this revision decides
    approved: bool | None = False
    #: why it is not approved or not mergeable, in the system's words
    why_not: str = ""
    #: the review system would merge it (no conflict, submit requirements met)
    mergeable: bool = True
    #: earlier revisions the system deems the same code (Gerrit kind TRIVIAL_REBASE,
    #: NO_CODE_CHANGE with votes carried): an item tested on one is not reset
    equivalent: tuple[str, ...] = ()

    def at(self, revision: str) -> bool:
        """Whether ``revision`` is this review's current code."""
        return revision == self.revision or revision in self.equivalent


class Report(BaseModel):
    """What the gate tells a change's owners, at each step that matters to them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    phase: Literal["enqueued", "failed", "merged", "dequeued"]
    project: str
    #: :attr:`Review.id`; None for a change of plain git
    review: str | None
    #: the commit the item tested
    revision: str
    #: the change's ref as recorded
    ref: str
    #: one paragraph, ready to post as a comment
    message: str
    #: ``status`` (the item in the gate's status API), ``log`` (the failing job's or
    #: build's log), ``speculative_repo``, ``repository`` (the published repository)
    links: dict[str, str] = {}
    queue: str = ""
    #: enqueued: its place in the queue (0: the head)
    position: int | None = None
    #: merged: the generation published with it
    generation: int | None = None


class GitProject(Protocol):
    """What a source knows of a project it owns (``ProjectConfig`` is one)."""

    @property
    def git(self) -> str: ...

    @property
    def branch(self) -> str: ...

    @property
    def name(self) -> str | None:
        """The project's path in its review system (filled in from the project's key)."""
        ...


#: commit a delivery: (source name, event type, payload, idempotency key) -> created
StoreDelivery = Callable[[str, str, dict[str, Any], str | None], bool]


@dataclass(frozen=True)
class SourceParts:
    """What a source driver is built with (``gate.drivers``)."""

    #: the projects whose ``source`` is this source, by name
    projects: Mapping[str, GitProject]
    merger: Merger
    #: how a webhook endpoint stores what it accepted (before answering 202)
    store: StoreDelivery | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    #: the gate's public URL (links in reports)
    public_url: str = ""


class ChangeSource(abc.ABC):
    """A review system that owns projects' branches."""

    #: the source's name in the config (``sources.<name>``)
    name: str = "abstract"

    def routes(self) -> list[web.RouteDef]:
        """Web routes of this source (its webhook endpoint); none by default."""
        return []

    def projects_changed(self) -> None:
        """The mapping of this source's projects was updated in place (a reload,
        ``gate.reload``): recompute what was derived from it."""
        return None

    def parse_event(self, event_type: str, payload: dict[str, Any]) -> Event | None:
        """The gate event a delivery stored by this source's routes holds.

        None: the delivery is understood and needs nothing (a comment that is
        not a command).  :class:`~gate.events.Refused`: it cannot be acted on.
        """
        raise Refused(f"source {self.name!r} takes no events")

    @abc.abstractmethod
    async def resolve(self, project: str, ref: str) -> str:
        """The commit a change (a ref, a review id, a sha) points at now."""

    @abc.abstractmethod
    async def branch_head(self, project: str) -> str:
        """The project's target branch head as the review system has it now."""

    async def read_review(self, project: str, review: str) -> Review:
        """What the review system says of ``review`` now (:class:`Review`).

        :class:`~gate.events.Refused` when there is no such review; transient
        faults (the system unreachable, 5xx) are raised as they are.
        """
        raise Refused(f"source {self.name!r} has no reviews")

    def review_for_url(self, url: str) -> tuple[str, str] | None:
        """The (project, review id) a ``Depends-On: <url>`` line names, if it is one
        of this source's reviews of a project the gate knows."""
        return None

    @abc.abstractmethod
    async def merge(self, project: str, commit: str, review: Review | None = None) -> MergeOutcome:
        """Merge the tested ``commit`` (of ``review``, when the change is one) into the
        branch; refuse if the branch or the review moved to something the item was
        not tested on.  Safe to repeat: a merge that happened already is ok."""

    @abc.abstractmethod
    async def is_merged(self, project: str, commit: str) -> bool:
        """Whether ``commit`` is on the branch already (the tip's crash recovery)."""

    async def report(self, project: str, report: Report) -> None:  # noqa: B027
        """Tell the change's owners (a comment, a vote, a status).  May raise: the gate
        retries transient faults and logs the rest; a report never holds the gate."""

    def scm_url(self, project: str) -> str | None:
        """Where a builder clones the project from (``git+https://host/path.git``, the
        commit appended), for Koji SCM builds; None: the project's ``scm_url``."""
        return None

    async def start(self) -> None:  # noqa: B027 - optional
        """Start background intake (a stream of events); deliveries go through ``store``."""

    async def close(self) -> None:  # noqa: B027 - optional
        """Stop background intake, close connections."""

    async def push_build_branch(self, project: str, commit: str, branch: str) -> MergeOutcome:
        """Point the gate-owned ``branch`` of the repository at ``commit`` (forced).

        The default: this review system does not let the gate create branches.
        """
        return MergeOutcome(False, f"{self.name} sources do not host build branches")

    async def delete_build_branch(self, project: str, branch: str) -> None:  # noqa: B027
        """Remove a gate-owned branch (its build is over).  Idempotent."""

    async def build_branches(self, project: str, namespace: str) -> list[str]:
        """The gate-owned branches under ``namespace/`` that exist now."""
        return []
