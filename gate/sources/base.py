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
parsing and signature verification, one package per forge.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass


@dataclass(frozen=True)
class MergeOutcome:
    ok: bool
    #: why the merge was refused ("" when ok)
    reason: str = ""


class ChangeSource(abc.ABC):
    """A review system that owns projects' branches."""

    name: str = "abstract"

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

    async def report(self, project: str, change_ref: str, result: str,  # noqa: B027
                     message: str) -> None:
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
