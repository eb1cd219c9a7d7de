"""The interface of a review system (a *source* of changes).

A source answers the questions the gate must ask the system that owns a
project's branch, and carries out the one action that changes it:

* what is this change now (events are hints: re-read before acting);
* where is the branch (direct pushes become post items);
* merge this tested commit, or refuse if the branch moved in a way the item
  was not tested on;
* is this commit merged already (crash recovery of the tip);
* report an item's outcome to the people who proposed it;
* host a commit the gate made on a branch of its own, for builders that fetch
  what they build from the repository (Koji SCM builds: kojid clones every
  branch, and a merge commit only the gate's clone has is on none).

Speculative merges are not a source's business: they happen in the gate's own
clones (``gate.merger``) whatever system hosts the repository.  Drivers for
forges (Pagure, GitLab, Gerrit) implement this interface next to their event
parsing and signature verification, one package per forge, and register in
``gate/drivers.py``: a source may add web routes (its webhook endpoint, which
stores deliveries under the source's name) and translates those deliveries
into the gate's events (:meth:`ChangeSource.parse_event`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from gate.events import Event, Refused
from gate.merger import Merger


@dataclass(frozen=True)
class MergeOutcome:
    ok: bool
    #: why the merge was refused ("" when ok)
    reason: str = ""


class GitProject(Protocol):
    """What a source knows of a project it owns (``ProjectConfig`` is one)."""

    @property
    def git(self) -> str: ...

    @property
    def branch(self) -> str: ...


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


class ChangeSource(abc.ABC):
    """A review system that owns projects' branches."""

    #: the source's name in the config (``sources.<name>``)
    name: str = "abstract"

    def routes(self) -> list[web.RouteDef]:
        """Web routes of this source (its webhook endpoint); none by default."""
        return []

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

    @abc.abstractmethod
    async def merge(self, project: str, commit: str) -> MergeOutcome:
        """Merge the tested ``commit`` into the branch; refuse if the branch moved
        to something ``commit`` does not contain.  Safe to repeat."""

    @abc.abstractmethod
    async def is_merged(self, project: str, commit: str) -> bool:
        """Whether ``commit`` is on the branch already (the tip's crash recovery)."""

    async def report(  # noqa: B027 - optional: a source may have no one to tell
        self,
        project: str,
        change_ref: str,
        result: str,
        message: str,
    ) -> None:
        """Tell the change's owners what happened (a comment, a vote, a status)."""

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
