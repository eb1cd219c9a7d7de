"""The embedded build backend: rpmbuild in subprocesses on this machine.

A build is an asyncio task: :func:`~gate.builders.srpm.build_srpm`, then
``rpmbuild --rebuild --nodeps`` of that SRPM, then every RPM into the
:class:`~repo_state.pool.Pool`.  A semaphore bounds how many builds run at
once.  Tasks live in this process only, so after a restart :meth:`wait`
raises :class:`TaskLost` and the daemon submits again.

Final builds go into a *build store* (``builds/<name>/<version>/<release>/
build.json``) that plays Koji's part: an NVR is built once, a second final
build of it from the same tree adopts the first, from another tree is refused.

Drafts (Koji's draft builds, here): a ``draft`` build is a final build kept
privately under ``drafts/<key digest>/build.json``, one per tested tree, so
several drafts of one NVR may exist and none claims it.  Promotion is one
``rename(2)`` of that directory into the build store, under the NVR's lock:
the NVR is claimed atomically, by one draft only.  Drafts never promoted are
deleted by the daemon's policy (``draft_retention``, ``gate.draft_gc``), which
asks :meth:`LocalBackend.remove_draft`; ``drafts: off`` keeps the serial tip.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from gate.builders.base import (
    DEFAULT_DRAFT_RETENTION,
    BuildBackend,
    BuildOutcome,
    BuildRequest,
    Draft,
    DraftRemoval,
    ExistingBuild,
    TaskLost,
    draft_retention_seconds,
)
from gate.builders.sandbox import Sandbox, minimal_environment
from gate.builders.srpm import (
    Confined,
    SrpmError,
    SrpmResult,
    build_srpm,
    failure_reason,
    output_files,
    rpmbuild_dir_defines,
    run_capture,
    run_logged,
)
from gate.processes import RecordError
from gate.registry import DriverConfig
from repo_state.durable import write_atomically
from repo_state.pool import Pool
from repo_state.state import Artifact

logger = logging.getLogger(__name__)

#: first wait before a build whose command could not be recorded starts over
RECORD_RETRY_S = 2.0


class LocalBackendConfig(DriverConfig):
    type: Literal["local"] = "local"
    #: concurrent rpmbuild processes
    workers: Annotated[int, Field(ge=1, le=64)] = 2
    #: final builds ahead of the tip as drafts, promoted at the tip (``off``: serial tip)
    drafts: Literal["auto", "off"] = "auto"
    #: seconds a draft no item can use any more (never promoted: its item was reset
    #: onto another tree, or left the queue) is kept before it is deleted; ``keep``:
    #: never deleted (gate/draft_gc.py)
    draft_retention: float | Literal["keep"] = DEFAULT_DRAFT_RETENTION

    @model_validator(mode="before")
    @classmethod
    def _draft_keep_hours(cls, data: Any) -> Any:
        """``draft_keep_hours`` (hours), the key's name before ``draft_retention``."""
        if isinstance(data, dict) and "draft_keep_hours" in data:
            data = dict(data)
            hours = data.pop("draft_keep_hours")
            if "draft_retention" not in data and isinstance(hours, int | float):
                data["draft_retention"] = float(hours) * 3600
        return data

    @field_validator("draft_retention")
    @classmethod
    def _retention(cls, value: float | str) -> float | str:
        draft_retention_seconds(value)
        return value


class LocalBackend(BuildBackend):
    """Builds with the host's rpmbuild, ``workers`` builds at a time."""

    name = "local"

    def __init__(
        self,
        state_dir: Path,
        pool: Pool,
        workers: int = 2,
        sandbox: Sandbox | None = None,
        drafts: Literal["auto", "off"] = "auto",
        draft_retention: float | None = DEFAULT_DRAFT_RETENTION,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.state_dir = Path(state_dir)
        self.pool = pool
        #: how rpmbuild runs the change's spec (see gate.builders.sandbox)
        self.sandbox = sandbox or Sandbox.create()
        self.sandbox.check_reachable(self.tasks_dir)
        self.workers = workers
        self._slots = asyncio.Semaphore(workers)
        self._tasks: dict[str, asyncio.Task[BuildOutcome]] = {}
        # Serialises final builds of one NVR so "is it in the store?" and
        # "record it" cannot interleave between two of them.
        self._nvr_locks: dict[str, asyncio.Lock] = {}
        #: ``rpmbuild --rebuild`` runs started, by (purpose, key)
        self.rebuilds: Counter[tuple[str, str]] = Counter()
        self.drafts = drafts
        #: seconds (None: kept for ever), see :meth:`draft_retention`
        self._draft_retention = draft_retention
        # a draft's record is written (a build's thread) and removed (the sweep's
        # thread) under this lock, so a removal never takes a newer draft's record
        self._drafts_lock = threading.Lock()

    @property
    def drafts_dir(self) -> Path:
        return self.state_dir / "drafts"

    def draft_dir(self, key: str) -> Path:
        """The private place of the draft of build key ``key`` (a digest: no path)."""
        return self.drafts_dir / hashlib.sha256(key.encode()).hexdigest()

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def served_logs(self) -> Path:
        return self.logs_dir

    @property
    def builds_dir(self) -> Path:
        return self.state_dir / "builds"

    @property
    def tasks_dir(self) -> Path:
        return self.state_dir / "tasks"

    def log_path(self, task_ref: str) -> Path:
        """Where the combined output of build ``task_ref`` is kept."""
        return self.logs_dir / f"{task_ref}.log"

    def rebuild_count(self, purpose: str | None = None, key: str | None = None) -> int:
        """How many ``rpmbuild --rebuild`` runs were started, optionally filtered."""
        return sum(
            n
            for (p, k), n in self.rebuilds.items()
            if (purpose is None or p == purpose) and (key is None or k == key)
        )

    # -- BuildBackend -------------------------------------------------------

    async def submit(self, request: BuildRequest) -> str:
        """Queue the build as an asyncio task and return its reference at once."""
        ref = uuid.uuid4().hex
        task = asyncio.create_task(self._build(ref, request), name=f"local-build-{ref}")
        # Mark exceptions retrieved: wait() re-raises them, and a build nobody
        # waits for must not spam "exception was never retrieved".
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._tasks[ref] = task
        return ref

    async def wait(self, task_ref: str) -> BuildOutcome:
        """Wait for build ``task_ref``; a canceled build is an ``ok=False`` outcome.

        Cancelling the caller does not cancel the build (use :meth:`cancel`).
        Infrastructure errors (e.g. the lookaside server is down, raised as
        ``TransientBackendError``) propagate.
        """
        task = self._tasks.get(task_ref)
        if task is None:
            raise TaskLost(f"local build {task_ref} is unknown (builds die with the daemon)")
        await asyncio.wait({task})
        if task.cancelled():
            return BuildOutcome(ok=False, reason="build canceled", log=str(self.log_path(task_ref)))
        error = task.exception()
        if error is not None:
            # the build is over without an outcome (a fault, e.g. the lookaside is
            # down): forget it, so the caller's retry submits it again (TaskLost)
            del self._tasks[task_ref]
            raise error
        return task.result()

    async def cancel(self, task_ref: str) -> None:
        """Kill the build's process group and wait until it is gone.  Idempotent."""
        task = self._tasks.get(task_ref)
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.wait({task})

    # -- drafts -------------------------------------------------------------
    async def draft_support(self) -> str | None:
        if self.drafts == "off":
            return "drafts: off in the backend's configuration"
        return None

    def status(self) -> dict[str, Any]:
        drafts = "off (serial tip)" if self.drafts == "off" else "on"
        return {"drafts": drafts}

    def draft_retention(self) -> float | None:
        return self._draft_retention

    async def remove_draft(self, key: str, target: str, draft: Draft) -> DraftRemoval:
        """Delete the private record of ``draft`` (``drafts/<digest of key>/``), if it
        is still that draft's: a newer draft of the same key (built after the
        gate let this one go) stays, and a promoted one has left ``drafts/``.
        The RPMs stay in the pool, which other builds and generations share."""
        return await asyncio.to_thread(self._remove_draft, key, draft)

    def _remove_draft(self, key: str, draft: Draft) -> DraftRemoval:
        private = self.draft_dir(key)
        with self._drafts_lock:
            try:
                record = json.loads((private / "build.json").read_text(encoding="utf-8"))
            except FileNotFoundError:
                record = None
            if record is not None and record.get("task_ref") != draft.task_ref:
                return DraftRemoval("deleted", "a newer draft of the same tree is kept")
            shutil.rmtree(private, ignore_errors=True)
        return DraftRemoval("deleted")

    async def promote(self, request: BuildRequest, draft: Draft) -> BuildOutcome:
        """Claim the NVR for the draft of ``request``'s tree: rename its private
        directory into the build store (atomic), or adopt the same tree's
        promotion done before a crash; another tree's build of the NVR wins."""
        async with self._nvr_locks.setdefault(draft.nvr, asyncio.Lock()):
            return await asyncio.to_thread(self._promote_locked, request, draft)

    def _promote_locked(self, request: BuildRequest, draft: Draft) -> BuildOutcome:
        with self._drafts_lock:  # never with a removal of the same key's draft
            return self._promote(request, draft)

    def _promote(self, request: BuildRequest, draft: Draft) -> BuildOutcome:
        final = self._record_path(draft.nvr)
        if final is None:
            return BuildOutcome(ok=False, nvr=draft.nvr, reason=f"bad NVR {draft.nvr!r}")
        record = self._read_record(draft.nvr)
        if record is not None:
            artifacts = tuple(Artifact.from_dict(a) for a in record.get("artifacts") or [])
            if record.get("source") == request.tree:
                # promoted already (a daemon killed after the rename), or the draft
                # took over the final build of the same tree: the same build
                return BuildOutcome(ok=True, nvr=draft.nvr, artifacts=artifacts)
            reason = (
                f"build {draft.nvr} already exists (built from tree {record.get('source')}, "
                f"this change is tree {request.tree}): the draft is not promoted"
            )
            return BuildOutcome(ok=False, nvr=draft.nvr, reason=reason)
        private = self.draft_dir(request.key)
        mine = private / "build.json"
        if not mine.exists():
            return BuildOutcome(
                ok=False,
                nvr=draft.nvr,
                reason=(
                    f"the draft of {draft.nvr} is gone from {private}: "
                    "`rpmgate retry` builds it again"
                ),
            )
        data = json.loads(mine.read_text(encoding="utf-8"))
        if data.get("nvr") != draft.nvr or data.get("source") != request.tree:
            return BuildOutcome(ok=False, nvr=draft.nvr, reason="the draft is not this tree's")
        data["state"], data["promoted_at"] = "COMPLETE", time.time()
        write_atomically(mine, json.dumps(data, indent=2, sort_keys=True) + "\n")
        final.parent.parent.mkdir(parents=True, exist_ok=True)
        # the NVR's directory does not exist (no record, under the lock): rename
        # claims it whole; a leftover empty directory is replaced
        if final.parent.exists() and not any(final.parent.iterdir()):
            final.parent.rmdir()
        os.rename(private, final.parent)
        _fsync_dir(final.parent.parent)
        artifacts = tuple(Artifact.from_dict(a) for a in data.get("artifacts") or [])
        return BuildOutcome(ok=True, nvr=draft.nvr, artifacts=artifacts)

    async def find_final(self, nvr: str) -> ExistingBuild | None:
        """The final build of ``nvr`` recorded in the build store, if any."""
        record = await asyncio.to_thread(self._read_record, nvr)
        if record is None:
            return None
        return ExistingBuild(
            nvr=str(record["nvr"]),
            state=str(record.get("state") or "COMPLETE"),
            source=str(record.get("source") or ""),
            task_ref=str(record.get("task_ref") or "") or None,
            artifacts=tuple(Artifact.from_dict(a) for a in record.get("artifacts") or []),
        )

    async def probe(self) -> str | None:
        """Run ``rpmbuild --version`` as a build runs rpmbuild: looked up on the builds'
        ``PATH`` (not the daemon's), confined by the sandbox, in a scratch directory
        under ``tasks/``.  Fails when rpmbuild is gone or the sandbox stopped working."""
        path = minimal_environment("/")["PATH"]
        if shutil.which("rpmbuild", path=path) is None:
            return f"rpmbuild is not installed: not found on the builds' PATH {path}"
        scratch = self.tasks_dir / f"probe-{uuid.uuid4().hex}"
        try:
            await asyncio.to_thread(self.sandbox.prepare, scratch)
            code, _, err = await run_capture(
                ["rpmbuild", "--version"], confined=Confined(self.sandbox, writable=scratch)
            )
        except OSError as exc:
            return f"cannot run rpmbuild {self.sandbox.describe()}: {exc}"
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if code != 0:
            last = (err.strip().splitlines() or [""])[-1]
            return f"rpmbuild --version exits {code} {self.sandbox.describe()}: {last}"
        return None

    async def close(self) -> None:
        """Cancel every running build and wait for their processes to die."""
        running = [t for t in self._tasks.values() if not t.done()]
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)

    # -- one build ----------------------------------------------------------

    async def _build(self, ref: str, request: BuildRequest) -> BuildOutcome:
        log_path = self.log_path(ref)
        taskdir = self.tasks_dir / ref
        tries = 0
        while True:
            try:
                async with self._slots:
                    return await self._build_in_slot(ref, request, taskdir, log_path)
            except RecordError as exc:
                # A command's process group could not be recorded (a full disk), so
                # it did not run: not the change's fault; the build starts over later.
                tries += 1
                logger.warning("local build %s: %s; trying again", ref, exc)
                await asyncio.sleep(min(RECORD_RETRY_S * 2 ** (tries - 1), 60.0))
            finally:
                # The RPMs are in the pool and the log in logs/; the rest is scratch.
                await asyncio.to_thread(shutil.rmtree, taskdir, True)

    async def _build_in_slot(
        self, ref: str, request: BuildRequest, taskdir: Path, log_path: Path
    ) -> BuildOutcome:
        header = (
            f"# rpmgate local {request.purpose} build {ref}: {request.project} "
            f"commit {request.commit} tree {request.tree} key {request.key}\n"
        )
        try:
            srpm = await build_srpm(request, taskdir / "srpm", self.sandbox)
        except SrpmError as exc:
            await asyncio.to_thread(_write, log_path, header + exc.log)
            return BuildOutcome(ok=False, reason=exc.reason, log=str(log_path))
        await asyncio.to_thread(_write, log_path, header + srpm.log)

        if request.purpose == "draft":
            # several drafts of one NVR may exist: the NVR is claimed at promotion;
            # but, as kojihub's new_build does, not a draft of an NVR built already
            existing = await self.find_final(srpm.nvr)
            if existing is not None:
                return await self._existing(request, srpm, existing, log_path)
            outcome = await self._rebuild(ref, request, srpm, taskdir, log_path)
            if outcome.ok:
                await asyncio.to_thread(self._write_draft, ref, request, srpm, outcome)
            return outcome
        if request.purpose != "final":
            return await self._rebuild(ref, request, srpm, taskdir, log_path)
        # The NVR is only known from the SRPM header, hence the check here and
        # not at submit time; it must come before the (expensive) rebuild.
        async with self._nvr_locks.setdefault(srpm.nvr, asyncio.Lock()):
            existing = await self.find_final(srpm.nvr)
            if existing is not None:
                return await self._existing(request, srpm, existing, log_path)
            outcome = await self._rebuild(ref, request, srpm, taskdir, log_path)
            if outcome.ok:
                await asyncio.to_thread(self._write_record, ref, request, srpm, outcome)
            return outcome

    async def _rebuild(
        self, ref: str, request: BuildRequest, srpm: SrpmResult, taskdir: Path, log_path: Path
    ) -> BuildOutcome:
        self.rebuilds[(request.purpose, request.key)] += 1
        topdir = taskdir / "rebuild"
        # --nodeps: BuildRequires cannot be installed on the gate host; they
        # are reported in the outcome so jobs can check them instead.
        argv = ["rpmbuild", "--rebuild", "--nodeps", *rpmbuild_dir_defines(topdir), str(srpm.path)]
        await asyncio.to_thread(self.sandbox.prepare, topdir)
        confined = Confined(self.sandbox, writable=topdir, readable=(srpm.path.parent,))
        code = await run_logged(argv, log_path, confined=confined)
        outcome = _outcome_of(srpm, log_path)
        if code != 0:
            log = await asyncio.to_thread(log_path.read_text, "utf-8", "replace")
            return replace(outcome, reason=failure_reason(log))
        rpms = await asyncio.to_thread(output_files, topdir / "RPMS", "*.rpm")
        artifacts = await asyncio.to_thread(self._pool_artifacts, [*rpms, srpm.path])
        return replace(outcome, ok=True, artifacts=artifacts, extra={"task_ref": ref})

    async def _existing(
        self, request: BuildRequest, srpm: SrpmResult, existing: ExistingBuild, log_path: Path
    ) -> BuildOutcome:
        outcome = _outcome_of(srpm, log_path)
        if existing.source != request.tree:
            # Koji refuses to build an NVR twice; a change that does not bump
            # the release must fail rather than silently replace RPMs.
            reason = (
                f"build {srpm.nvr} already exists (built from tree {existing.source}, "
                f"this change is tree {request.tree})"
            )
            await asyncio.to_thread(_append, log_path, f"refused: {reason}\n")
            return replace(outcome, reason=reason)
        missing = [a.filename for a in existing.artifacts if a.checksum not in self.pool]
        if missing:
            reason = f"build {srpm.nvr} exists but its RPMs left the pool: {', '.join(missing)}"
            return replace(outcome, reason=reason)
        await asyncio.to_thread(
            _append, log_path, f"adopted existing build {srpm.nvr} (task {existing.task_ref})\n"
        )
        extra = {"adopted": "true", "task_ref": existing.task_ref or ""}
        return replace(outcome, ok=True, artifacts=existing.artifacts, extra=extra)

    # -- pool and store (run in threads) --------------------------------------

    def _pool_artifacts(self, paths: list[Path]) -> tuple[Artifact, ...]:
        # copied, not linked: the build user owned these files
        return tuple(sorted(self.pool.add_rpm(path, copy=True) for path in paths))

    def _record_path(self, nvr: str) -> Path | None:
        parts = nvr.rsplit("-", 2)
        if len(parts) != 3 or any(not p or p in (".", "..") or "/" in p for p in parts):
            return None
        name, version, release = parts
        return self.builds_dir / name / version / release / "build.json"

    def _read_record(self, nvr: str) -> dict[str, Any] | None:
        path = self._record_path(nvr)
        if path is None or not path.exists():
            return None
        record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return record

    def _write_draft(
        self, ref: str, request: BuildRequest, srpm: SrpmResult, outcome: BuildOutcome
    ) -> None:
        record = self._record(ref, request, srpm, outcome)
        record["state"] = "DRAFT"
        path = self.draft_dir(request.key) / "build.json"
        with self._drafts_lock:
            write_atomically(path, json.dumps(record, indent=2, sort_keys=True) + "\n")

    def _write_record(
        self, ref: str, request: BuildRequest, srpm: SrpmResult, outcome: BuildOutcome
    ) -> None:
        path = self._record_path(srpm.nvr)
        if path is None:
            raise ValueError(f"cannot store build {srpm.nvr!r}")
        record = self._record(ref, request, srpm, outcome)
        write_atomically(path, json.dumps(record, indent=2, sort_keys=True) + "\n")

    def _record(
        self, ref: str, request: BuildRequest, srpm: SrpmResult, outcome: BuildOutcome
    ) -> dict[str, Any]:
        return {
            "nvr": srpm.nvr,
            "name": srpm.name,
            "epoch": srpm.epoch,
            "version": srpm.version,
            "release": srpm.release,
            "state": "COMPLETE",
            "source": request.tree,
            "commit": request.commit,
            "project": request.project,
            "key": request.key,
            "task_ref": ref,
            "build_requires": list(srpm.build_requires),
            "artifacts": [a.to_dict() for a in outcome.artifacts],
        }


def _outcome_of(srpm: SrpmResult, log_path: Path) -> BuildOutcome:
    """A failed outcome naming the SRPM's NVR and the log (what every outcome shares)."""
    return BuildOutcome(
        ok=False, nvr=srpm.nvr, log=str(log_path), build_requires=srpm.build_requires
    )


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)
