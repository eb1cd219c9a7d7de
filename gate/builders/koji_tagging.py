"""Tagging a build into a Koji tag the way a restart cannot do twice (``tagBuild``).

The gate tags builds itself in two places: a promoted draft into its
target's destination tag (drafts are built with ``skip_tag``, so kojid's
BuildTask leaves them untagged: an unmerged change's build must not enter the
candidate tag, nor the buildroots that inherit it), and a published build into
``tag_after_publish``.

kojihub ``RootExports.tagBuild`` checks at call time, in order: login, the
build COMPLETE (``TagError``), the tag's lock and permission
(``assert_tag_access``: ``ActionNotAllowed``), the package list of the tag
(``TagError``: "Package X not in list for T" or "blocked in"), the ``tag``
policy (operation ``tag``, ``ActionNotAllowed``: "policy violation (tag)"),
then returns the id of a ``tagBuild`` task (priority 10) that kojid's
TagBuildTask runs: ``host.tagBuild`` checks the policy again as the task's
owner and tags (``_direct_tag_build``), failing with "already tagged" when
the build is there already.  So a refusal is a fault of the call or a FAILED
task; success is the task CLOSED or the build listed in the tag.

Idempotency across a kill: "tagged already" ends the step before any call;
a ``tagBuild`` task of ours for this (tag, build) that is still alive is
waited for instead of creating a second one; a call whose reply was lost is
followed by a look before it is made again.
"""

from __future__ import annotations

from typing import Any

import koji

from gate.builders.base import BuildError
from gate.builders.koji_session import HubSession, describe
from gate.builders.koji_watch import TaskWatcher

# a tagBuild task that may still tag the build
_ALIVE = [koji.TASK_STATES[s] for s in ("FREE", "ASSIGNED", "OPEN")]


class TagRefused(BuildError):
    """The hub refused to tag a build (policy, permission, package list, lock)."""


class Tagger:
    def __init__(self, hub: HubSession, watcher: TaskWatcher) -> None:
        self.hub = hub
        self.watcher = watcher

    async def dest_tag(self, target: str) -> str:
        """The destination tag of build target ``target`` (``getBuildTarget``)."""
        info = await self.hub.call("getBuildTarget", target)
        if not info:
            raise BuildError(f"the Koji hub has no build target {target!r}")
        return str(info["dest_tag_name"])

    async def tag(self, tag: str, nvr: str) -> None:
        """Tag ``nvr`` into ``tag`` and wait for it; nothing if it is there already.

        Raises :class:`TagRefused` when the hub says no (at call time or in the
        task); transient faults escape for the caller to retry the whole step.
        """
        if await self.is_tagged(tag, nvr):
            return
        task_id = await self._pending(tag, nvr)
        if task_id is None:
            task_id = await self._create(tag, nvr)
            if task_id is None:
                return
        report = await self.watcher.wait(task_id)
        if report.state == "CLOSED" or await self.is_tagged(tag, nvr):
            return
        raise TagRefused(
            f"Koji tagBuild task {task_id} ({nvr} into {tag}) {report.state}: "
            f"{report.fault or 'no fault text'}"
        )

    async def is_tagged(self, tag: str, nvr: str) -> bool:
        tags = await self.hub.call("listTags", build=nvr)
        return any(t.get("name") == tag for t in tags or ())

    async def _create(self, tag: str, nvr: str) -> int | None:
        """``tagBuild``, once; None when a lost reply's call turns out to have tagged it."""
        first = True
        async for attempt in self.hub.retrying(f"tagBuild {tag} {nvr}"):
            with attempt:
                # a failed attempt may have reached the hub: look before calling again
                if not first:
                    if await self.is_tagged(tag, nvr):
                        return None
                    if (found := await self._pending(tag, nvr)) is not None:
                        return found
                first = False
                try:
                    return int(await self.hub.call("tagBuild", tag, nvr, login=True, retry=False))
                except koji.RetryError:
                    raise  # the hub ran it already: the next attempt looks first
                except (koji.TagError, koji.ActionNotAllowed) as exc:
                    raise TagRefused(
                        f"Koji refused to tag {nvr} into {tag}: {describe(exc)}"
                    ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _pending(self, tag: str, nvr: str) -> int | None:
        """A ``tagBuild`` task of ours for (``tag``, ``nvr``) still alive, if any."""
        owner = await self.hub.user_id()
        tasks = await self.hub.call(
            "listTasks",
            {"method": "tagBuild", "owner": owner, "state": _ALIVE},
            {"order": "-id", "limit": 50},
        )
        if not tasks:
            return None
        tag_info = await self.hub.call("getTag", tag)
        build = await self.hub.call("getBuild", nvr)
        if not tag_info or not build:
            return None
        requests: list[Any] = await self.hub.multicall(
            [("getTaskRequest", (t["id"],), {}) for t in tasks]
        )
        for task, req in zip(tasks, requests, strict=True):
            # kojihub tagBuild: make_task('tagBuild', [tag_id, build_id, force, fromtag_id])
            if isinstance(req, list) and len(req) >= 2 and req[:2] == [tag_info["id"], build["id"]]:
                return int(task["id"])
        return None
