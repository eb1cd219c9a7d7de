"""The ``koji`` build backend: scratch builds for the gate, final builds at the tip.

Scratch builds are made from the speculative merge, as an SRPM built here
and uploaded to ``<upload_dir>/rpmgate-<purpose>-<key>-<tree>/`` (default), or
from the project's SCM URL (``git+https://host/rpms/<name>.git#<sha>``).
Final builds come from whichever source ``final_source`` names; before one is
submitted ``getBuild(nvr)`` decides: a COMPLETE or BUILDING build of the same
sources is taken over (a restart after a crash needs this), one of other
sources fails the item with a clear message, a FAILED or CANCELED one may be
built again, as Koji allows.

The pieces, one module each: :mod:`~gate.builders.koji_config` (profile and
overrides), :mod:`~gate.builders.koji_session` (``ClientSession`` pool,
logins, retries), :mod:`~gate.builders.koji_watch` (multicall poller),
:mod:`~gate.builders.koji_download` (top URL to pool),
:mod:`~gate.builders.koji_journal` (what was submitted, for crash recovery),
:mod:`~gate.builders.koji_promotion` (promoting a draft at the tip),
:mod:`~gate.builders.koji_drafts` (deleting unpromoted drafts),
:mod:`~gate.builders.koji_tagging` (``tagBuild``: promoted drafts, ``tag_after_publish``,
final builds kojid built but could not tag).
A task reference is the Koji task id as a string.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import koji

from gate.builders.base import (
    BuildBackend,
    BuildError,
    BuildOutcome,
    BuildRequest,
    Draft,
    DraftRemoval,
    ExistingBuild,
    TaskLost,
    TransientBackendError,
    draft_retention_seconds,
)
from gate.builders.koji_config import KojiConfig
from gate.builders.koji_download import Downloader, RemoteRpm
from gate.builders.koji_drafts import DraftRemover
from gate.builders.koji_journal import Submission, SubmissionJournal
from gate.builders.koji_promotion import GONE, promote_draft
from gate.builders.koji_session import HubSession, HubUnavailable, describe, is_transient
from gate.builders.koji_tagging import Tagger, TagRefused, Untagged, untagged_by_kojid
from gate.builders.koji_watch import TaskReport, TaskUnreadable, TaskWatcher, build_id
from gate.builders.sandbox import Sandbox
from gate.builders.srpm import (
    Confined,
    SrpmError,
    SrpmResult,
    build_srpm,
    output_files,
    rpmbuild_dir_defines,
    run_capture,
)
from gate.refs import is_full_sha
from repo_state.pool import Pool
from repo_state.state import Artifact

log = logging.getLogger(__name__)

#: polls in a row a fault about one task lasts before it fails ``/healthz``
UNHEALTHY_AFTER = 3

# Tasks a search for a submission whose id was lost may adopt: alive or done,
# never FAILED or CANCELED (a new submission is made instead; kojihub lets a
# failed NVR be built again, kojihub.py recycle_build).
_FINDABLE_STATES = [koji.TASK_STATES[s] for s in ("FREE", "ASSIGNED", "OPEN", "CLOSED")]
#: seconds a hub's clock may run behind ours when searching tasks made after an intent
_CLOCK_SKEW = 120.0
#: the first Koji with draft builds (``build(..., {'draft': True})``, ``promoteBuild``)
DRAFTS_SINCE = (1, 34)
_UPLOAD_TREE = re.compile(
    r"rpmgate-(?:scratch|final|draft)-[^/]*?-([0-9a-f]{40}|[0-9a-f]{64})(?:-\d+)?/"
)


class KojiBackend(BuildBackend):
    """Builds in Koji through the real ``koji.ClientSession``."""

    name = "koji"

    def __init__(
        self,
        config: KojiConfig,
        pool: Pool,
        state_dir: Path,
        session_factory: Callable[[str, dict[str, Any]], koji.ClientSession] = koji.ClientSession,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.config = config
        self.conn = config.resolve()
        #: how the spec is parsed here (rpmbuild -bs / -rs run its %(…))
        self.sandbox = sandbox or Sandbox.create()
        self.pool = pool
        self.state_dir = Path(state_dir)
        self.hub = HubSession(self.conn, config, session_factory)
        self.watcher = TaskWatcher(self.hub, config.poll_interval)
        self.downloader = Downloader(self.conn, config, pool, self.state_dir / "koji" / "downloads")
        self.journal = SubmissionJournal(self.state_dir / "koji" / "submissions")
        self.paths = koji.PathInfo(topdir=self.conn.topurl)
        self._locks: dict[str, asyncio.Lock] = {}
        self._dist: dict[str, str] = {}
        #: ``build`` tasks this process created, by purpose
        self.submitted: Counter[str] = Counter()
        #: why drafts are not used (None: they are), once ``draft_support`` asked
        self.drafts_off: str | None = "not asked yet"
        #: deletes unpromoted drafts (``gate.draft_gc``)
        self.drafts_remover = DraftRemover(self.hub)
        #: tags promoted drafts and published builds (``tagBuild``)
        self.tagger = Tagger(self.hub, self.watcher, self.state_dir / "koji" / "tagging")

    def task_url(self, task_id: int) -> str:
        return f"{self.conn.weburl}/taskinfo?taskID={task_id}"

    def commit_branch(self, request: BuildRequest) -> str | None:
        mode = (
            self.config.scratch_source
            if request.purpose == "scratch"
            else (self.config.final_source)
        )
        if mode != "scm":
            return None
        key = re.sub(r"[^A-Za-z0-9]", "", request.key)[:16] or "nokey"
        return f"{self.config.scm_branch_namespace}/{request.purpose}-{key}"

    def namespaces(self) -> tuple[str, ...]:
        if "scm" in (self.config.scratch_source, self.config.final_source):
            return (self.config.scm_branch_namespace,)
        return ()

    def problem(self) -> str | None:
        if self.hub.health.backend_error:
            return f"Koji backend error: {self.hub.health.backend_error}"
        # a fault about one task fails /healthz once it repeats (one poll's fault that
        # the next poll does not see again would only make the check flap); the
        # status shows it from the first poll
        faults = {
            t: f for t, f in self.watcher.task_faults().items() if f["polls"] >= UNHEALTHY_AFTER
        }
        if faults:
            return "; ".join(
                f"Koji answers faults about task {task_id} ({self.task_url(task_id)}): "
                f"{f['fault']} ({f['polls']} of {f['gives_up_after']} polls in a row)"
                for task_id, f in faults.items()
            )
        return None

    async def probe(self) -> str | None:
        """Ask the hub for its API version (anonymous, not retried: an outage shows at once)."""
        try:
            await self.hub.ping()
        except Exception as exc:
            if is_transient(exc):
                return f"Koji hub {self.conn.server} unreachable: {describe(exc)}"
            return f"Koji hub {self.conn.server} answers getAPIVersion with {describe(exc)}"
        return None

    def status(self) -> dict[str, Any]:
        """Hub health and in-flight tasks, for the status API."""
        return {
            "backend": self.name,
            "hub": self.conn.server,
            "in_flight": len(self.watcher),
            "poll_cycles": self.watcher.cycles,
            "tasks": self.watcher.progress(),
            "drafts": "on" if self.drafts_off is None else f"off: {self.drafts_off}",
            "draft_removal": self._draft_removal_status(),
            "task_faults": {str(t): f for t, f in self.watcher.task_faults().items()},
            **self.hub.health.as_dict(),
        }

    # -- drafts (Koji >= 1.34) ------------------------------------------------

    async def draft_support(self) -> str | None:
        """Drafts when the hub is Koji 1.34 or newer (``getKojiVersion``; hubs before
        1.23 lack the call) and ``drafts`` is not ``off``."""
        self.drafts_off = await self._drafts_off()
        return self.drafts_off

    async def _drafts_off(self) -> str | None:
        if self.config.drafts == "off":
            return "drafts: off in the backend's configuration (serial tip)"
        try:
            version = str(await self.hub.call("getKojiVersion"))
        except koji.GenericError:
            return "the hub predates getKojiVersion (Koji < 1.23): no draft builds, serial tip"
        numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:2])
        if numbers < DRAFTS_SINCE:
            return f"Koji hub {version} has no draft builds (Koji 1.34 added them): serial tip"
        return None

    async def promote(self, request: BuildRequest, draft: Draft) -> BuildOutcome:
        """``promoteBuild`` of the draft (:mod:`~gate.builders.koji_promotion`): the
        build keeps its id and takes the target NVR; then it is tagged into the
        target's destination tag, where kojid did not put the draft (``skip_tag``).
        A draft promoted already (a daemon killed since) is that build, tagged if
        it is not yet.  A draft deleted behind the gate's back is built again, as
        the final build (kojid tags it).

        A tag the gate's user may not tag into at all (locked, a permission it
        lacks) raises :class:`~gate.builders.koji_tagging.TagAccessDenied`, a
        :class:`BackendError`: the same for every change, so no item is rejected
        for it (I5); the promoted build waits, untagged, for a restart."""
        with _translated(f"promote draft build {draft.nvr}"):
            promoted = await promote_draft(self.hub, draft)
        if isinstance(promoted, BuildOutcome):
            return promoted
        if promoted == GONE:
            return await self._final_instead(request, draft)
        try:
            with _translated(f"find the destination tag of {self._target(request)}"):
                dest = await self.tagger.dest_tag(self._target(request))
            await self.tag_build(dest, promoted)
        except TagRefused as exc:
            # a policy's or a package list's answer: the same one kojid's tagBuild
            # subtask would have got for a final build made at the tip
            return BuildOutcome(
                ok=False,
                nvr=promoted,
                reason=f"{exc} (the draft was promoted to {promoted}, untagged: once the hub "
                "allows the tag, a recheck takes this build over)",
            )
        return BuildOutcome(ok=True, nvr=promoted, artifacts=draft.artifacts)

    async def _final_instead(self, request: BuildRequest, draft: Draft) -> BuildOutcome:
        """The final build at the tip, for a draft someone deleted (an admin, koji-gc):
        promoting it could only fail ("state (DELETED) is not COMPLETE") and reject
        the item for nothing.  Journaled as the key's final build: a restart during
        it takes the same task over."""
        log.warning(
            "draft build %s was deleted on the hub: building %s's final build at the tip",
            draft.nvr,
            request.project,
        )
        final = dataclasses.replace(request, purpose="final")
        return await self.wait(await self.submit(final))

    # -- unpromoted drafts (gate.draft_gc) -----------------------------------

    def draft_retention(self) -> float | None:
        return draft_retention_seconds(self.config.draft_retention)

    def _draft_removal_status(self) -> str:
        if self.drafts_remover.refused is not None:
            return f"refused: {self.drafts_remover.refused}"
        retention = self.draft_retention()
        if retention is None:
            return "keep (left to koji-gc or an admin)"
        return f"after {retention:g} s unused"

    def forget_draft(self, key: str) -> None:
        """The journal's task of the draft of ``key`` becomes a previous one: a later
        ``submit`` of that key builds a new draft instead of taking this task's
        build, which is about to be deleted."""
        record = self.journal.load("draft", key)
        if record is None or record.task_id is None:
            return
        record.previous = [*record.previous, record.task_id]
        record.task_id, record.nvr, record.adopted = None, None, False
        self.journal.save(record)

    async def remove_draft(self, key: str, target: str, draft: Draft) -> DraftRemoval:
        """``deleteBuild`` of an unpromoted draft, untagged from the target's destination
        tag first (:mod:`~gate.builders.koji_drafts`)."""
        with _translated(f"delete draft build {draft.nvr}"):
            return await self.drafts_remover.remove(target, draft)

    # -- BuildBackend -------------------------------------------------------

    async def submit(self, request: BuildRequest) -> str:
        """Submit a build, or return the task already submitted for this purpose and key."""
        async with self._lock(f"{request.purpose}:{request.key}"):
            with _translated(f"submit the {request.purpose} build of {request.project}"):
                return await self._submit(request)

    async def _submit(self, request: BuildRequest) -> str:
        record = await asyncio.to_thread(self.journal.load, request.purpose, request.key)
        previous: list[int] = list(record.previous) if record else []
        if record is not None and record.task_id is not None:
            if await self._still_useful(record.task_id):
                return str(record.task_id)
            previous.append(record.task_id)
        if request.purpose in ("final", "draft"):
            # a draft like a final build: kojihub's new_build refuses a draft whose
            # target NVR exists ("Target build already exists"), so the same check
            # first, and a build of the same sources is taken over
            return await self._submit_final(request, previous)
        return await self._submit_scratch(request, previous)

    async def wait(self, task_ref: str) -> BuildOutcome:
        """Wait for the task (polled with all others) and fetch its RPMs into the pool."""
        try:
            report = await self.watcher.wait(_task_id(task_ref))
        except TaskUnreadable as exc:
            return await self._unreadable(exc)
        return await self._outcome(report)

    async def _unreadable(self, exc: TaskUnreadable) -> BuildOutcome:
        """A task the hub says is gone, or whose output is (:class:`TaskUnreadable`):
        a build the gate cannot observe is not one it can trust, so it fails, naming
        the task and the hub's fault; the journal forgets the task, so building the
        same key again (a failed final build is retried at the tip) makes a new one
        instead of taking this one over.  Only kojihub's own "gone" faults get here:
        an outage or any other fault holds the build instead (``koji_watch``)."""
        forgotten = await asyncio.to_thread(self.journal.forget_task, exc.task_id)
        log.error("%s; build failed (journal records forgotten: %d)", exc, forgotten)
        return BuildOutcome(
            ok=False,
            reason=(
                f"{exc}: the hub lost this task or its files, so the gate cannot see what "
                f"it built ({self.task_url(exc.task_id)}); not a fault of the change"
            ),
        )

    async def cancel(self, task_ref: str) -> None:
        """``cancelTask`` (children included); a finished or unknown task is left alone."""
        try:
            task_id = _task_id(task_ref)
        except TaskLost:
            return
        with _translated(f"cancel task {task_id}"):
            try:
                await self.hub.call("cancelTask", task_id, login=True)
            except koji.GenericError as exc:
                if "No such task" not in str(exc):
                    raise

    async def recover(self, request: BuildRequest) -> str | None:
        """Find the task submitted for ``request`` before a crash, without submitting.

        Called once, at start, for a build row that was running without a
        task reference.  Only what the submission journal names is adopted:
        its task id, or (when the crash came between ``build`` and writing the
        id) a task made after the journaled intent with exactly its source,
        target and scratch flag, alive or closed.  No journal, nothing to find.
        """
        with _translated(f"recover the {request.purpose} build of {request.project}"):
            return await self._recover(request)

    async def _recover(self, request: BuildRequest) -> str | None:
        record = await asyncio.to_thread(self.journal.load, request.purpose, request.key)
        if record is None:
            return None
        if record.task_id is not None:
            info = await self.hub.call("getTaskInfo", record.task_id)
            alive = info is not None and info["state"] in _FINDABLE_STATES
            return str(record.task_id) if alive else None
        found = await self._find_task(record)
        if found is None:
            return None
        record.task_id = found
        await asyncio.to_thread(self.journal.save, record)
        return str(found)

    async def find_final(self, nvr: str) -> ExistingBuild | None:
        """The hub's build of ``nvr`` (COMPLETE ones with their RPMs, fetched into the pool)."""
        with _translated(f"look up build {nvr}"):
            return await self._find_final(nvr)

    async def _find_final(self, nvr: str) -> ExistingBuild | None:
        build = await self.hub.call("getBuild", nvr)
        if not build:
            return None
        state = koji.BUILD_STATES[build["state"]]
        scm, upload = await self._build_source(build)
        tree = _tree_from_upload(upload) if upload else None
        artifacts: tuple[Artifact, ...] = ()
        if state == "COMPLETE":
            rpms = await self.hub.call("listRPMs", buildID=build_id(build))
            artifacts = await self.downloader.fetch_all([self._final_rpm(build, r) for r in rpms])
        task_id = build.get("task_id")
        return ExistingBuild(
            nvr=build["nvr"],
            state=state,
            source=tree or scm or upload or "",
            task_ref=str(task_id) if task_id else None,
            artifacts=artifacts,
        )

    async def tag_build(self, tag: str, nvr: str) -> None:
        """Tag ``nvr`` into ``tag`` and wait for it; a no-op if already there
        (:mod:`~gate.builders.koji_tagging`); a refusal is a :class:`TagRefused`, or a
        :class:`~gate.builders.koji_tagging.TagAccessDenied` for a locked tag or a
        permission the gate's user lacks."""
        with _translated(f"tag {nvr} into {tag}"):
            await self.tagger.tag(tag, nvr)

    async def after_publish(self, nvr: str) -> None:
        """Tag a published final build into ``tag_after_publish``, when configured."""
        if self.config.tag_after_publish:
            await self.tag_build(self.config.tag_after_publish, nvr)

    async def close(self) -> None:
        """Stop polling and log out; tasks keep running on the hub."""
        await self.watcher.close()
        await self.downloader.close()
        await self.hub.close()

    # -- submitting ---------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _target(self, request: BuildRequest) -> str:
        target = request.target or self.config.target
        if not target:
            raise BuildError(f"{request.project}: no Koji build target (request or koji.target)")
        return target

    async def _still_useful(self, task_id: int) -> bool:
        info = await self.hub.call("getTaskInfo", task_id)
        if info is None:
            return False
        return info["state"] not in (koji.TASK_STATES["CANCELED"], koji.TASK_STATES["FAILED"])

    async def _submit_scratch(self, request: BuildRequest, previous: list[int]) -> str:
        srpm = await self._srpm(request) if self.config.scratch_source == "srpm" else None
        try:
            record = self._intent_for(request, self.config.scratch_source, srpm, previous)
            return await self._start(record, srpm)
        finally:
            await self._drop_srpm(request)

    async def _submit_final(self, request: BuildRequest, previous: list[int]) -> str:
        # The NVR decides everything here, and only the spec knows it: build
        # the SRPM even when the build itself will come from SCM.
        srpm = await self._srpm(request)
        try:
            nvr = await self._koji_nvr(request, srpm)
            async with self._lock(f"nvr:{nvr}"):
                build = await self.hub.call("getBuild", nvr)
                if build:
                    adopted = await self._existing_final(request, nvr, build)
                    if adopted is not None:
                        record = self._intent_for(request, self.config.final_source, srpm, previous)
                        record.nvr, record.task_id, record.adopted = nvr, adopted, True
                        await asyncio.to_thread(self.journal.save, record)
                        log.info(
                            "taking over %s build %s (task %s)",
                            koji.BUILD_STATES[build["state"]],
                            nvr,
                            adopted,
                        )
                        return str(adopted)
                mode = self.config.final_source
                record = self._intent_for(request, mode, srpm if mode == "srpm" else None, previous)
                record.nvr = nvr
                return await self._start(record, srpm if mode == "srpm" else None)
        finally:
            await self._drop_srpm(request)

    def _intent_for(
        self,
        request: BuildRequest,
        mode: str,
        srpm: SrpmResult | None = None,
        previous: list[int] | None = None,
    ) -> Submission:
        """The submission record for ``request`` built from ``mode`` ("srpm" or "scm")."""
        previous = list(previous or [])
        intent = Submission(
            purpose=request.purpose,
            key=request.key,
            project=request.project,
            target=self._target(request),
            source="",
            scratch=request.purpose == "scratch",
            commit=request.commit,
            tree=request.tree,
            intent_at=time.time(),
            previous=previous,
        )
        if mode == "scm":
            if not request.scm_url:
                raise BuildError(
                    f"{request.project}: Koji {request.purpose} builds come from SCM "
                    f"({request.purpose}_source: scm) but the project has no SCM URL"
                )
            url = (
                request.scm_url if "#" in request.scm_url else f"{request.scm_url}#{request.commit}"
            )
            return dataclasses.replace(intent, source=url)
        # One directory per purpose, key, tree and attempt: a task whose request
        # names it was submitted for exactly this (what recover() looks for).
        key = re.sub(r"[^A-Za-z0-9]", "", request.key)[:16] or "nokey"
        upload_dir = f"{self.config.upload_dir}/rpmgate-{request.purpose}-{key}-{request.tree}"
        if previous:
            upload_dir += f"-{len(previous)}"
        if srpm is None:
            raise BuildError(f"{request.project}: an SRPM build needs the SRPM")
        return dataclasses.replace(
            intent, source=f"{upload_dir}/{srpm.path.name}", upload_dir=upload_dir
        )

    async def _start(self, record: Submission, srpm: SrpmResult | None) -> str:
        await asyncio.to_thread(
            self.journal.save, record
        )  # the intent, before anything reaches the hub
        if srpm is not None:
            assert record.upload_dir is not None
            await self.hub.upload(srpm.path, record.upload_dir)
        task_id = await self._create_task(record)
        record.task_id = task_id
        await asyncio.to_thread(self.journal.save, record)
        log.info(
            "submitted %s build of %s as Koji task %d", record.purpose, record.project, task_id
        )
        return str(task_id)

    async def _create_task(self, record: Submission) -> int:
        """Call ``build`` once; after a failure that may hide a created task, look for it first."""
        opts: dict[str, Any] = {"scratch": True} if record.scratch else {}
        if record.draft:
            opts["draft"] = True  # kojihub build(): opts['draft'] (Koji >= 1.34)
            # kojid BuildTask tags every non-scratch build into the destination tag
            # unless skip_tag, drafts too: an unmerged change's draft stays out of it
            # (and of buildroots inheriting it) until promote() tags the promoted build
            opts["skip_tag"] = True
        kwargs: dict[str, Any] = {}
        if self.config.priority is not None:
            kwargs["priority"] = self.config.priority
        if self.config.channel:
            kwargs["channel"] = self.config.channel
        what = f"build {record.source}"
        with _translated(f"{what} for {record.target}"):
            first = True
            async for attempt in self.hub.retrying(what):
                with attempt:
                    if not first and (found := await self._find_task(record)) is not None:
                        return found
                    first = False
                    try:
                        task_id = await self.hub.call(
                            "build",
                            record.source,
                            record.target,
                            opts,
                            login=True,
                            retry=False,
                            **kwargs,
                        )
                    except koji.RetryError:
                        # the hub ran this very call before; its reply was lost
                        if (found := await self._find_task(record)) is not None:
                            return found
                        raise
                    self.submitted[record.purpose] += 1
                    return int(task_id)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _find_task(self, record: Submission) -> int | None:
        """The newest ``build`` task of ours whose request matches ``record``, if any."""
        owner = await self.hub.user_id()
        # kojihub RootExports.listTasks: method a string, owner an int id, state
        # a list; createdAfter a timestamp (converted to the DB's time)
        tasks = await self.hub.call(
            "listTasks",
            {
                "method": "build",
                "owner": owner,
                "state": _FINDABLE_STATES,
                "createdAfter": record.intent_at - _CLOCK_SKEW,
            },
            {"order": "-id", "limit": 100},
        )
        candidates = [t["id"] for t in tasks if t["id"] not in record.previous]
        if not candidates:
            return None
        requests = await self.hub.multicall([("getTaskRequest", (i,), {}) for i in candidates])
        for task_id, req in zip(candidates, requests, strict=True):
            if not isinstance(req, list) or len(req) < 2:
                continue
            opts = req[2] if len(req) > 2 and isinstance(req[2], dict) else {}
            scratch, draft = bool(opts.get("scratch")), bool(opts.get("draft"))
            if record.matches(str(req[0]), str(req[1]), scratch, draft):
                return int(task_id)
        return None

    async def _srpm(self, request: BuildRequest) -> SrpmResult:
        try:
            return await build_srpm(request, self._srpm_dir(request), self.sandbox)
        except SrpmError as exc:
            raise BuildError(f"{request.project}: cannot make the SRPM: {exc.reason}") from exc

    def _srpm_dir(self, request: BuildRequest) -> Path:
        key = re.sub(r"[^A-Za-z0-9]", "", request.key)[:32] or "nokey"
        return self.state_dir / "koji" / "srpm" / f"{request.purpose}-{key}"

    async def _drop_srpm(self, request: BuildRequest) -> None:
        await asyncio.to_thread(shutil.rmtree, self._srpm_dir(request), True)

    async def _koji_nvr(self, request: BuildRequest, srpm: SrpmResult) -> str:
        """The NVR Koji will give this SRPM: its Release re-expanded with the build tag's %dist."""
        dist = await self._dist_for(self._target(request))
        if not dist:
            return srpm.nvr
        topdir = self._srpm_dir(request) / "dist"
        # -rs parses the spec again, %(…) included: confined like -bs
        await asyncio.to_thread(self.sandbox.prepare, topdir)
        argv = [
            "rpmbuild",
            "-rs",
            "--nodeps",
            *rpmbuild_dir_defines(topdir),
            "--define",
            f"dist {dist}",
            str(srpm.path),
        ]
        confined = Confined(self.sandbox, writable=topdir, readable=(srpm.path.parent,))
        code, out, err = await run_capture(argv, confined=confined)
        made = await asyncio.to_thread(output_files, topdir / "SRPMS", "*.src.rpm")
        if code != 0 or len(made) != 1:
            raise BuildError(
                f"{request.project}: cannot expand the Release with %dist {dist}: "
                f"{(err or out).strip()[-300:]}"
            )
        code, out, err = await run_capture(
            ["rpm", "-qp", "--nosignature", "--qf", "%{NAME}-%{VERSION}-%{RELEASE}", str(made[0])]
        )
        if code != 0:
            raise BuildError(f"cannot read {made[0].name}: {err.strip()}")
        return out.strip()

    async def _dist_for(self, target: str) -> str:
        if self.config.dist is not None:
            return self.config.dist
        if target not in self._dist:
            info = await self.hub.call("getBuildTarget", target)
            if not info:
                raise BuildError(f"the Koji hub has no build target {target!r}")
            tag = await self.hub.call("getBuildConfig", info["build_tag_name"])
            self._dist[target] = str((tag.get("extra") or {}).get("rpm.macro.dist") or "")
        return self._dist[target]

    async def _existing_final(
        self, request: BuildRequest, nvr: str, build: dict[str, Any]
    ) -> int | None:
        """Task id to take over for an existing build of ``nvr``, None to build it again."""
        state = koji.BUILD_STATES[build["state"]]
        if state in ("FAILED", "CANCELED"):
            return None  # Koji lets a failed or canceled NVR be built again
        scm, upload = await self._build_source(build)
        if scm:
            sha = scm.rsplit("#", 1)[1] if "#" in scm else ""
            same = bool(sha) and (
                sha == request.commit or await _tree_of(request, sha) == request.tree
            )
            origin = scm
        elif upload:
            same = _tree_from_upload(upload) == request.tree
            origin = f"the SRPM {upload}"
        else:
            same, origin = False, "an import without a build task"
        if not same:
            raise BuildError(
                f"{nvr} already exists in Koji (build {build['id']}, {state}) from {origin}, "
                f"not from tree {request.tree} of {request.project}: bump the Release to build "
                "this change"
            )
        if state == "DELETED":
            raise BuildError(
                f"{nvr} was built in Koji from these sources but has been deleted; "
                "bump the Release to build it again"
            )
        if not build.get("task_id"):
            raise BuildError(f"{nvr} exists in Koji without a build task")
        return int(build["task_id"])

    async def _build_source(self, build: dict[str, Any]) -> tuple[str | None, str | None]:
        """(SCM URL, uploaded SRPM path) a Koji build was made from, as far as the hub says."""
        extra = build.get("extra") or {}
        for scm in (build.get("source"), (extra.get("source") or {}).get("original_url")):
            # kojid records the checked-out commit for SCM builds; anything that
            # is not a URL (some hubs record an SRPM's name) says nothing here
            if isinstance(scm, str) and "://" in scm:
                return scm, None
        if build.get("task_id"):
            req = await self.hub.call("getTaskRequest", build["task_id"])
            if req and isinstance(req[0], str):
                return (req[0], None) if "://" in req[0] else (None, req[0])
        return None, None

    # -- outcomes -------------------------------------------------------------

    async def _outcome(self, report: TaskReport) -> BuildOutcome:
        url = self.task_url(report.id)
        extra = {"task_id": str(report.id), "task_url": url}
        if report.state == "CANCELED":
            return BuildOutcome(
                ok=False, reason=f"Koji task {report.id} was canceled", log=url, extra=extra
            )
        if report.state == "FAILED":
            untagged = await untagged_by_kojid(self.hub, report)
            if untagged is None:
                return self._failure(report, extra)
            return await self._tag_for_kojid(untagged, extra)
        if report.builds:
            build = report.builds[0]
            extra["build_id"] = str(build_id(build))
            rpms = [self._final_rpm(build, r) for r in report.rpms.get(build_id(build), [])]
        else:
            rpms = self._scratch_rpms(report)
        if not rpms:
            return BuildOutcome(
                ok=False,
                reason=f"Koji task {report.id} finished without RPMs",
                log=url,
                extra=extra,
            )
        artifacts = await self.downloader.fetch_all(rpms)
        source = next((a for a in artifacts if a.is_source), None)
        if report.builds:
            nvr = report.builds[0]["nvr"]
        elif source is not None:
            nvr = f"{source.name}-{source.version}-{source.release}"
        else:
            nvr = artifacts[0].sourcerpm.removesuffix(".src.rpm")
        return BuildOutcome(ok=True, nvr=nvr, artifacts=artifacts, log=url, extra=extra)

    async def _tag_for_kojid(self, untagged: Untagged, extra: dict[str, str]) -> BuildOutcome:
        """A final build kojid made but could not tag (its ``tagBuild`` subtask failed):
        tagged by the gate now (:class:`Tagger`, journaled), then the build's outcome.
        A tag closed to the gate's user raises ``TagAccessDenied``: the watch stops, the
        item waits at the tip, and a restart waits for this task again, landing here
        (I5); a refusal about the build (``tag`` policy, package list) fails it."""
        build, nvr, url = untagged.build, str(untagged.build["nvr"]), extra["task_url"]
        extra["build_id"] = str(build_id(build))
        log.warning("%s: kojid did not tag it (%s): tagging it", nvr, untagged.fault)
        try:
            await self.tag_build(untagged.tag, nvr)
        except TagRefused as exc:
            why = f"{exc} ({nvr} is built, untagged: once the hub allows the tag, a recheck "
            return BuildOutcome(
                False, nvr, reason=why + "takes this build over)", log=url, extra=extra
            )
        rpms = await self.hub.call("listRPMs", buildID=build_id(build))
        artifacts = await self.downloader.fetch_all([self._final_rpm(build, r) for r in rpms])
        return BuildOutcome(ok=True, nvr=nvr, artifacts=artifacts, log=url, extra=extra)

    def _failure(self, report: TaskReport, extra: dict[str, str]) -> BuildOutcome:
        failed = sorted(
            (c for c in report.children if c.state == "FAILED"),
            key=lambda c: (c.method != "buildArch", c.id),
        )
        if failed:
            child = failed[0]
            taskdir = self.paths.task(child.id)
            build_log, root_log = f"{taskdir}/build.log", f"{taskdir}/root.log"
            extra.update(
                failed_task=str(child.id),
                failed_arch=child.arch,
                build_log=build_log,
                root_log=root_log,
            )
            reason = (
                f"Koji {child.method} task {child.id} ({child.arch}) failed: "
                f"{child.fault or report.fault}; see {build_log} and {root_log}"
            )
            return BuildOutcome(ok=False, reason=reason, log=build_log, extra=extra)
        reason = f"Koji task {report.id} failed: {report.fault or 'no fault text'}"
        if (
            report.fault_code == koji.ActionNotAllowed.faultCode
            and "build_from_srpm" in report.fault
        ):
            reason += " (this hub builds non-scratch only from SCM: set final_source to scm)"
        return BuildOutcome(ok=False, reason=reason, log=extra["task_url"], extra=extra)

    def _scratch_rpms(self, report: TaskReport) -> list[RemoteRpm]:
        rpms: dict[str, RemoteRpm] = {}
        for child in report.children:
            if child.method != "buildArch" or child.state != "CLOSED" or not child.result:
                continue
            taskdir = self.paths.task(child.id)
            for rel in [*child.result.get("rpms", []), *child.result.get("srpms", [])]:
                name = rel.rsplit("/", 1)[-1]
                # the SRPM comes from the first arch only; keep one copy of anything
                rpms.setdefault(name, RemoteRpm(f"{taskdir}/{name}", name, child.output.get(name)))
        return list(rpms.values())

    def _final_rpm(self, build: dict[str, Any], rpm: dict[str, Any]) -> RemoteRpm:
        url = f"{self.paths.build(build)}/{self.paths.rpm(rpm)}"
        return RemoteRpm(
            url,
            url.rsplit("/", 1)[-1],
            int(rpm["size"]) if rpm.get("size") else None,
            rpm.get("payloadhash"),
        )


def _task_id(task_ref: str) -> int:
    try:
        return int(task_ref)
    except (TypeError, ValueError):
        raise TaskLost(f"{task_ref!r} is not a Koji task id") from None


def _tree_from_upload(path: str) -> str | None:
    match = _UPLOAD_TREE.search(path)
    return match.group(1) if match else None


async def _tree_of(request: BuildRequest, sha: str) -> str | None:
    if not is_full_sha(sha):
        return None
    code, out, _ = await run_capture(
        [
            "git",
            "-C",
            str(request.git_dir),
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            f"{sha}^{{tree}}",
        ]
    )
    return out.strip() if code == 0 else None


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn hub faults escaping the block into BuildError / HubUnavailable."""
    try:
        yield
    except Exception as exc:
        translated = _translate(exc, what)
        if translated is exc:
            raise
        raise translated from exc


def _translate(exc: Exception, what: str) -> Exception:
    """The exception a caller of the backend sees for a failed hub step."""
    if isinstance(exc, BuildError | TransientBackendError):
        return exc
    if is_transient(exc):
        return HubUnavailable(f"Koji hub unavailable ({what}): {describe(exc)}")
    if isinstance(exc, koji.GenericError | koji.Fault):
        return BuildError(f"Koji refused to {what}: {describe(exc)}")
    return exc
