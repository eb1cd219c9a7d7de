"""Tagging a build into a Koji tag the way a restart cannot do twice (``tagBuild``).

The gate tags builds itself in three places: a promoted draft into its
target's destination tag (drafts are built with ``skip_tag``, so kojid's
BuildTask leaves them untagged: an unmerged change's build must not enter the
candidate tag, nor the buildroots that inherit it), a published build into
``tag_after_publish``, and a final build made at the tip that kojid built but
could not tag (:func:`untagged_by_kojid`).

kojihub ``RootExports.tagBuild`` checks at call time, in order: login, the
build COMPLETE (``TagError``), the tag's lock and permission
(``assert_tag_access``: ``ActionNotAllowed``), the package list of the tag
(``TagError``: "Package X not in list for T" or "blocked in"), the ``tag``
policy (operation ``tag``, ``ActionNotAllowed``: "policy violation (tag)"),
then returns the id of a ``tagBuild`` task (priority 10) that kojid's
TagBuildTask runs: ``host.tagBuild`` checks the policy and the package list
again as the task's owner, then ``_tag_build`` the tag access again
(``assert_tag_access``: a tag locked since the call fails the task) and tags
(``_direct_tag_build``), failing with "already tagged" when the build is
there already.  So a refusal is a fault of the call or a FAILED
task; success is the task CLOSED or the build listed in the tag.

Idempotency across a kill: "tagged already" ends the step before any call;
the intent to tag (tag, build) is journaled before the call and the task id
as soon as the hub returns it, so a restart waits for that task; only an
intent without a task id (a kill during the call) makes the gate look for a
``tagBuild`` task of ours for this (tag, build) that is still alive
(``listTasks``), which is waited for instead of creating a second one; a
call whose reply was lost is followed by the same look before it is made
again.  The normal path asks the hub no ``listTasks``.

Whose fault a refusal is (invariant I5: an item is ejected only for its own
fault).  The package list and the ``tag`` policy answer about this build (a
policy may name the user too, but a refusal it words is treated as the
change's answer, as kojid's tagBuild subtask of a final build made at the
tip would have got it): :class:`TagRefused`, the build's outcome.  The tag
access check answers about the tag and the gate's user, the same for every
change: kojihub ``check_tag_access`` returns the reason "tag is locked" or
"tag requires <perm> permission", which ``assert_tag_access`` raises as
``ActionNotAllowed(reason)``.  Those two texts, and only those, are
:class:`TagAccessDenied`: a :class:`~gate.builders.base.BackendError`, so the
step stops with the error shown and ``/healthz`` failing instead of
rejecting every item in turn for the gate's own configuration.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import koji

from gate.builders.base import BackendError, BuildError
from gate.builders.koji_session import HubSession, describe
from gate.builders.koji_watch import TaskReport, TaskWatcher
from repo_state.durable import write_atomically

# a tagBuild task that may still tag the build
_ALIVE = [koji.TASK_STATES[s] for s in ("FREE", "ASSIGNED", "OPEN")]


#: the reasons kojihub ``check_tag_access`` gives (kojihub/kojihub.py:
#: ``return (False, override, "tag is locked")`` and
#: ``"tag requires %s permission" % needed_perm``), raised by ``assert_tag_access``
#: as ``koji.ActionNotAllowed(reason)``; a permission name has no blanks
_TAG_ACCESS = re.compile(r"tag is locked|tag requires \S+ permission")


class TagRefused(BuildError):
    """The hub refused to tag this build (its package list, the ``tag`` policy)."""


class TagAccessDenied(BackendError):
    """The hub refuses the gate's user any tagging into the tag (locked, or a
    permission the user lacks): a fault of the gate's configuration, not of the
    change whose build it is.  Fixed by the hub's admin, then a restart."""


def refusal(exc: koji.GenericError, tag: str, nvr: str) -> BuildError | BackendError:
    """What a ``tagBuild`` refusal ``exc`` means for the gate (see the module docstring)."""
    if isinstance(exc, koji.ActionNotAllowed) and _TAG_ACCESS.fullmatch(str(exc).strip()):
        return TagAccessDenied(
            f"Koji refuses the gate's user any tag into {tag} ({nvr} waits): "
            f"{describe(exc)}; once the hub's admin fixes the tag, restart rpmgate"
        )
    return TagRefused(f"Koji refused to tag {nvr} into {tag}: {describe(exc)}")


@dataclass(frozen=True)
class Untagged:
    """A final build kojid made COMPLETE but did not tag: its ``tagBuild`` subtask failed."""

    #: the tag kojid's subtask was to tag it into (the target's destination tag)
    tag: str
    #: ``getBuild`` of the build
    build: dict[str, Any]
    #: the failed ``tagBuild`` subtask and its fault (``describe()``'s words)
    subtask: int
    fault: str


async def untagged_by_kojid(hub: HubSession, report: TaskReport) -> Untagged | None:
    """The build of a failed ``build`` task whose only failure is its ``tagBuild`` subtask.

    kojid BuildTask.handler (builder/kojid, koji 2083513a) imports the build
    (``host.completeBuild``: COMPLETE) inside the ``try`` that would
    ``failBuild`` it, then, after that ``try``, unless ``skip_tag`` or
    ``scratch``, ``self.tagBuild(build_id, dest_tag)``: a ``tagBuild`` subtask
    (``arglist=[dest_tag, build_id, False, None, True]``, label ``tag``) and
    ``self.wait(task_id)``, whose ``host.taskWaitResults`` raises the
    subtask's fault; TaskManager.runTask fails the build task with it (a
    GenericError as ``(faultCode, str(e))``).  The subtask is TagBuildTask:
    ``host.tagBuild`` as the task's owner -- the ``tag`` policy, the package
    list, then ``_tag_build``'s ``assert_tag_access``.  So a refused tag
    leaves a FAILED build task, a FAILED ``tagBuild`` child, and a COMPLETE
    build in no tag: built, not the change's failure until the hub refuses
    the tag for this build, which :meth:`Tagger.tag` asks again and sorts
    (a locked tag, a missing permission: :class:`TagAccessDenied`).
    None for any other failure (a ``buildArch`` child, a policy before the
    build), and for a build that is not COMPLETE (deleted since)."""
    if report.method != "build" or report.state != "FAILED":
        return None
    failed = [c for c in report.children if c.state == "FAILED"]
    if len(failed) != 1 or failed[0].method != "tagBuild":
        return None
    # kojihub getTaskRequest: the decoded arglist, [tag_id, build_id, force, fromtag, ...]
    request = await hub.call("getTaskRequest", failed[0].id)
    if not isinstance(request, list) or len(request) < 2:
        return None
    tag = await hub.call("getTag", request[0])
    build = await hub.call("getBuild", request[1])
    if not tag or not build or build["state"] != koji.BUILD_STATES["COMPLETE"]:
        return None
    if build.get("task_id") != report.id:
        return None  # not this task's build (an NVR someone else made since)
    return Untagged(str(tag["name"]), build, failed[0].id, failed[0].fault)


class Tagger:
    def __init__(self, hub: HubSession, watcher: TaskWatcher, journal: Path | None = None) -> None:
        self.hub = hub
        self.watcher = watcher
        #: one JSON file per (tag, build): ``{"task_id": int | null}``; without a
        #: directory every tag looks for a pending task first, as after a kill
        self.journal = journal

    def _record(self, tag: str, nvr: str) -> Path | None:
        if self.journal is None:
            return None
        digest = hashlib.sha256(f"{tag}\0{nvr}".encode()).hexdigest()
        return self.journal / f"tag-{digest}.json"

    def _load(self, tag: str, nvr: str) -> dict[str, Any] | None:
        path = self._record(tag, nvr)
        if path is None:
            return {"task_id": None}  # nothing known: look, as after a kill
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return data if isinstance(data, dict) else {"task_id": None}

    def _forget(self, tag: str, nvr: str) -> None:
        path = self._record(tag, nvr)
        if path is not None:
            path.unlink(missing_ok=True)

    def _save(self, tag: str, nvr: str, task_id: int | None) -> None:
        path = self._record(tag, nvr)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, json.dumps({"tag": tag, "nvr": nvr, "task_id": task_id}) + "\n")

    async def dest_tag(self, target: str) -> str:
        """The destination tag of build target ``target`` (``getBuildTarget``)."""
        info = await self.hub.call("getBuildTarget", target)
        if not info:
            raise BuildError(f"the Koji hub has no build target {target!r}")
        return str(info["dest_tag_name"])

    async def tag(self, tag: str, nvr: str) -> None:
        """Tag ``nvr`` into ``tag`` and wait for it; nothing if it is there already.

        Raises :class:`TagRefused` when the hub says no to this build (at call
        time or in the task), :class:`TagAccessDenied` when it says no to the
        gate's user for the tag; transient faults escape for the caller to retry
        the whole step.
        """
        if await self.is_tagged(tag, nvr):
            return
        record = self._load(tag, nvr)
        task_id = None
        if record is not None:
            recorded = record.get("task_id")
            # a recorded task is ours; an intent without one: the call may have
            # reached the hub before a kill, look for its task
            task_id = int(recorded) if recorded is not None else await self._pending(tag, nvr)
        if task_id is None:
            await asyncio.to_thread(self._save, tag, nvr, None)
            try:
                task_id = await self._create(tag, nvr)
            except (TagRefused, TagAccessDenied):
                await asyncio.to_thread(self._forget, tag, nvr)
                raise
            if task_id is None:
                return
            await asyncio.to_thread(self._save, tag, nvr, task_id)
        report = await self.watcher.wait(task_id)
        if report.state == "CLOSED" or await self.is_tagged(tag, nvr):
            return
        # the next try (a recheck once the hub allows it) makes a new task
        await asyncio.to_thread(self._forget, tag, nvr)
        fault = report.fault or "no fault text"
        # describe(): "ActionNotAllowed: <reason>" (or "fault <code>: <reason>")
        reason = fault.split(": ", 1)[-1].strip()
        if report.fault_code == koji.ActionNotAllowed.faultCode and _TAG_ACCESS.fullmatch(reason):
            raise TagAccessDenied(
                f"Koji refuses the gate's user any tag into {tag} ({nvr} waits): tagBuild "
                f"task {task_id} {report.state}: {fault}; once the hub's admin fixes the "
                "tag, restart rpmgate"
            )
        raise TagRefused(f"Koji tagBuild task {task_id} ({nvr} into {tag}) {report.state}: {fault}")

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
                    raise refusal(exc, tag, nvr) from exc
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
