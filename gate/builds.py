"""Scratch and final builds as durable records: submit, watch, re-attach, cancel.

A build row is written (``state="running"``) before the backend is asked for
anything, the backend's task reference right after ``submit`` returns, and the
outcome when it ends; every one of those writes is retried until it lands
(``gate.faults``).  A running row whose watch is gone -- after a restart, or a
watch that died -- is re-attached by :meth:`Builds.reattach`
(``gate.reconcile`` finds them): a recorded task is waited on again (a backend
whose tasks died with the daemon says :class:`TaskLost` and the build is
submitted again); a row without a task asks the backend, once, to find one
submitted for the same purpose before submitting.  A row the daemon started
itself never needs that search: it recorded the task reference before anything
else could happen.

What ends a watch:

* an outcome (passed, failed: the build's own result, or a refusal such as
  an NVR built from other sources) is recorded;
* a transient fault (hub down, database gone, disk full) is retried, the
  row's ``reason`` saying so;
* anything else (:class:`BackendError`, a bug) stops the watch with the row's
  ``error`` set and the row still running: the outcome is unknown, and
  failing the build would reject a change for the gate's fault.  The error
  shows on the item and fails ``/healthz``; a restart re-attaches.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from gate.build_matrix import DEFAULT_BUILD
from gate.builders.base import (
    BackendError,
    BuildBackend,
    BuildError,
    BuildOutcome,
    BuildRequest,
    Draft,
    Lookaside,
    TaskLost,
    TransientBackendError,
)
from gate.config import Config
from gate.faults import is_transient, until_it_lands
from gate.merger import Merger
from gate.model import BuildState
from gate.plumbing import Plumbing
from gate.queue_rules import build_reusable
from gate.sources.base import ChangeSource
from repo_state.db import session
from repo_state.models import BuildRow, ChangeRow, utcnow
from repo_state.state import Artifact, BuildEntry

log = logging.getLogger(__name__)

#: seconds between retries when a backend is unreachable
TRANSIENT_RETRY = 5.0


def build_owner(build_id: int) -> str:
    """The name of a build's watch among the daemon's tasks (``Plumbing.owner``)."""
    return f"build:{build_id}"


def scratch_key(
    project: str,
    tree: str,
    target: str,
    backend: str,
    build: str = DEFAULT_BUILD,
    package: str | None = None,
) -> str:
    """What determines a scratch build's output; equal keys are never built twice.

    ``build`` is the queue's named build (gate/build_matrix.py): two named builds
    never share a scratch build, even on the same target.  ``package``: which
    package of a project of several (gate/packages.py); None for a project of one.
    """
    # the empty field keeps the keys of builds recorded before it was dropped
    fields = ("scratch", project, tree, target, backend, "", *_member(build, package))
    return hashlib.sha256("\0".join(fields).encode()).hexdigest()


def final_key(
    project: str,
    tree: str,
    target: str,
    build: str = DEFAULT_BUILD,
    package: str | None = None,
) -> str:
    fields = ("final", project, tree, target, *_member(build, package))
    return hashlib.sha256("\0".join(fields).encode()).hexdigest()


def _member(build: str, package: str | None) -> tuple[str, ...]:
    """The key fields naming a member of an item's build set: none for the default
    build of a one-package project, so its keys are the ones they always were."""
    named = () if build == DEFAULT_BUILD else (build,)
    return named + (() if package is None else ("package", package))


def build_entry(row: BuildRow) -> BuildEntry:
    """The repo-state entry a finished build contributes."""
    artifacts = tuple(Artifact.from_dict(a) for a in json.loads(row.artifacts))
    return BuildEntry(
        row.package,
        row.nvr,
        artifacts,
        origin=f"{row.purpose}:{row.id}",
        project=row.project,
        commit=row.commit,
    )


@dataclass(eq=False)
class Builds:
    engine: Engine
    plumbing: Plumbing
    config: Config
    backends: Mapping[str, BuildBackend]
    source_of: Callable[[str], ChangeSource]
    merger: Merger
    _watchers: dict[int, asyncio.Task[None]] = field(default_factory=dict, init=False)

    # -- requests ------------------------------------------------------------------
    def backend(self, row: BuildRow) -> BuildBackend:
        return self.backends[row.backend]

    def request(self, row: BuildRow) -> BuildRequest:
        cfg = self.config
        project = cfg.projects[row.project]
        lookaside = None
        if project.lookaside is not None:
            cache = project.lookaside.cache_dir or (cfg.state_dir / "lookaside")
            lookaside = Lookaside(url=project.lookaside.url, cache_dir=cache)
        scm = project.scm_url or self.source_of(row.project).scm_url(row.project)
        return BuildRequest(
            project=row.project,
            package=row.package,
            purpose=row.purpose,  # type: ignore[arg-type]
            key=row.key,
            git_dir=self.merger.git_dir(row.project),
            commit=row.commit,
            tree=row.tree,
            spec_path=cfg.spec_of(row.project, row.package),
            target=row.target,
            lookaside=lookaside,
            scm_url=f"{scm}#{row.commit}" if scm else None,
        )

    # -- starting --------------------------------------------------------------------
    def ensure(
        self,
        *,
        purpose: str,
        key: str,
        project: str,
        backend: str,
        commit: str,
        tree: str,
        target: str,
        includes: Iterable[int] = (),
        package: str | None = None,
        inputs: str = "",
        waits_for: Iterable[int] = (),
    ) -> BuildRow:
        """The build for ``key``: reused when one exists, else recorded and started.

        Which existing build serves is a queue rule
        (:func:`gate.queue_rules.build_reusable`).  ``package``: which package of
        the project (default: its only one); ``inputs``: that package's input
        digest; ``waits_for``: builds it is submitted after (the packages it is
        built after), a wait its watch does, so a restart waits again.
        """
        with session(self.engine) as s:
            row = s.exec(
                select(BuildRow).where(BuildRow.purpose == purpose, BuildRow.key == key)
            ).first()
            if row is not None and build_reusable(purpose, row.state):
                return row
            if row is None:
                row = BuildRow(
                    purpose=purpose,
                    key=key,
                    project=project,
                    package=package or self.config.package_of(project),
                    backend=backend,
                    commit=commit,
                    tree=tree,
                    target=target,
                    includes=json.dumps(sorted(set(includes))),
                    inputs=inputs,
                    waits_for=json.dumps(list(waits_for)),
                )
            row.state, row.task_ref, row.reason, row.finished_at = (
                BuildState.RUNNING,
                None,
                "",
                None,
            )
            row.error = ""
            s.add(row)
            s.commit()
            s.refresh(row)
        self._watch(row)
        return row

    def _watch(self, row: BuildRow, recovering: bool = False) -> None:
        assert row.id is not None
        if row.id in self._watchers and not self._watchers[row.id].done():
            return
        self._watchers[row.id] = self.plumbing.spawn(
            self._run(row.id, recovering), f"build-{row.id}", owns=(build_owner(row.id),)
        )

    async def _run(self, build_id: int, recovering: bool = False) -> None:
        row = await self._write(build_id, error="") if recovering else self._load(build_id)
        backend = self.backend(row)
        request = self.request(row)
        self.plumbing.emit(
            "build",
            build=build_id,
            project=row.project,
            purpose=row.purpose,
            state=BuildState.RUNNING.value,
        )
        if row.task_ref is None:
            held = await self._wait_for(row)
            if held is not None:
                await until_it_lands(lambda: self._held(build_id, held), f"build {build_id}")
                return
        while True:
            try:
                if row.task_ref is None:
                    # only a row found running at start can have a task whose
                    # reference never reached the database
                    ref = await backend.recover(request) if recovering else None
                    if ref is None:
                        refused = await self._publish_commit(row, backend, request)
                        if refused is not None:
                            outcome = BuildOutcome(ok=False, reason=refused)
                            break
                        ref = await backend.submit(request)
                    row = await self._write(build_id, task_ref=ref, submissions=row.submissions + 1)
                outcome = await backend.wait(row.task_ref or "")
                break
            except TaskLost:
                log.info("build %s: task %s is gone, submitting again", build_id, row.task_ref)
                self._backend_fault(row, "task-lost")
                row = await self._write(build_id, task_ref=None)
                recovering = False
            except TransientBackendError as exc:
                log.warning("build %s: backend unavailable (%s), retrying", build_id, exc)
                self._backend_fault(row, "unavailable")
                await self._write(build_id, reason=f"backend unavailable, retrying: {exc}")
                await asyncio.sleep(TRANSIENT_RETRY)
            except asyncio.CancelledError:
                raise
            except BuildError as exc:  # refused by the backend (e.g. the NVR exists)
                log.info("build %s refused: %s", build_id, exc)
                outcome = BuildOutcome(ok=False, reason=str(exc))
                break
            except Exception as exc:  # BackendError, or a bug: the outcome is unknown
                if is_transient(exc):  # e.g. the disk filled while downloading results
                    log.warning("build %s: transient fault, retrying: %s", build_id, exc)
                    self._backend_fault(row, "transient")
                    await self._write(build_id, reason=f"retrying after: {exc}")
                    await asyncio.sleep(TRANSIENT_RETRY)
                    continue
                await self._stuck(row, exc)
                return
        await until_it_lands(lambda: self._record(build_id, outcome), f"build {build_id}")
        await self._drop_branch(row, backend, request)

    async def _wait_for(self, row: BuildRow) -> BuildRow | None:
        """Wait until the builds ``row`` is submitted after have passed (the packages
        it is built after); the one that did not pass, if one did not."""
        ids = [int(i) for i in json.loads(row.waits_for or "[]")]
        while ids:
            rows = [await until_it_lands(partial(self._load, i), f"build {row.id}") for i in ids]
            for dep in rows:
                if dep.state not in (BuildState.RUNNING, BuildState.PASSED):
                    return dep
            running = [d.id or 0 for d in rows if d.state == BuildState.RUNNING]
            if not running:
                return None
            waits = [asyncio.ensure_future(self.finished(i)) for i in running]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        return None

    def _held(self, build_id: int, dep: BuildRow) -> None:
        """A build whose prerequisite did not pass: failed with it, or cancelled with it
        (a cancelled build is never reused: the same key is built again when wanted)."""
        if dep.state == BuildState.FAILED:
            reason = f"not built: the build of {dep.package} it is built after failed"
            self._record(build_id, BuildOutcome(ok=False, reason=reason))
            return
        with session(self.engine) as s:
            row = s.get(BuildRow, build_id)
            assert row is not None
            if row.state == BuildState.RUNNING:
                row.state, row.finished_at = BuildState.CANCELED, utcnow()
                row.reason = f"cancelled with the build of {dep.package} it is built after"
                s.add(row)
                s.commit()
        self.plumbing.wake()

    async def _publish_commit(
        self, row: BuildRow, backend: BuildBackend, request: BuildRequest
    ) -> str | None:
        """Put the commit on the branch the backend's builders fetch it from, if it needs one.

        Returns why the build cannot be made when the repository refuses the
        branch and the commit is not the change's own (a fast-forward, which
        the review ref already makes fetchable); None when the build can go.
        """
        branch = backend.commit_branch(request)
        if branch is None:
            return None
        pushed = await self.source_of(row.project).push_build_branch(
            row.project, row.commit, branch
        )
        if pushed.ok:
            log.info(
                "build %s: %s is on branch %s for the builders", row.id, row.commit[:12], branch
            )
            return None
        with session(self.engine) as s:
            own = s.exec(
                select(ChangeRow.id).where(
                    ChangeRow.project == row.project, ChangeRow.sha == row.commit
                )
            ).first()
        if own is not None:
            log.warning(
                "build %s: the repository refused branch %s (%s); building the "
                "change's own commit %s",
                row.id,
                branch,
                pushed.reason,
                row.commit[:12],
            )
            await self._write(
                row.id or 0,
                reason=f"branch {branch} refused ({pushed.reason}); "
                "built from the change's own commit",
            )
            return None
        return (
            f"the tested merge {row.commit[:12]} is on no branch the builders can fetch: "
            f"the repository refused the gate's branch {branch} ({pushed.reason}); "
            "rebase the change so that it merges as a fast-forward, or let the gate "
            "push branches under that namespace"
        )

    async def _drop_branch(
        self, row: BuildRow, backend: BuildBackend, request: BuildRequest
    ) -> None:
        branch = backend.commit_branch(request)
        if branch is None:
            return
        try:
            await self.source_of(row.project).delete_build_branch(row.project, branch)
        except Exception as exc:  # a leftover branch is swept at the next start
            log.warning("build %s: cannot delete branch %s: %s", row.id, branch, exc)

    async def sweep_branches(self) -> int:
        """Delete gate-owned build branches no running build needs (after a crash)."""
        with session(self.engine) as s:
            running = s.exec(select(BuildRow).where(BuildRow.state == BuildState.RUNNING)).all()
        wanted = {(r.project, self.backend(r).commit_branch(self.request(r))) for r in running}
        deleted = 0
        for project in self.config.projects:
            queue = self.config.queues[self.config.queue_of(project)]
            backend = self.backends[queue.backend]
            for namespace in backend.namespaces():
                try:
                    branches = await self.source_of(project).build_branches(project, namespace)
                    for name in branches:
                        if (project, name) not in wanted:
                            await self.source_of(project).delete_build_branch(project, name)
                            deleted += 1
                except Exception as exc:
                    log.warning("%s: cannot sweep build branches: %s", project, exc)
        return deleted

    async def _stuck(self, row: BuildRow, exc: Exception) -> None:
        """Stop watching ``row`` without an outcome, loudly (see the module docstring)."""
        log.error(
            "build %s: %s backend error, watch stopped until a restart",
            row.id,
            row.backend,
            exc_info=exc,
        )
        text = (
            str(exc)
            if isinstance(exc, BackendError)
            else (f"{row.backend} backend error: {type(exc).__name__}: {exc}")
        )
        await self._write(row.id or 0, error=text)
        self.plumbing.emit(
            "build",
            build=row.id,
            project=row.project,
            purpose=row.purpose,
            state="error",
            reason=text,
            backend=row.backend,
        )
        self._backend_fault(row, "error")
        self.plumbing.wake()

    def _backend_fault(self, row: BuildRow, fault: str) -> None:
        """A backend fault on ``row``'s build: retried (``task-lost``, ``unavailable``,
        ``transient``) or one that stops its watch (``error``)."""
        self.plumbing.emit("backend", backend=row.backend, build=row.id, fault=fault)

    def _record(self, build_id: int, outcome: BuildOutcome) -> None:
        with session(self.engine) as s:
            row = s.get(BuildRow, build_id)
            assert row is not None
            if row.state == BuildState.CANCELED:
                return
            row.state = BuildState.PASSED if outcome.ok else BuildState.FAILED
            row.nvr = outcome.nvr or row.nvr
            row.reason = outcome.reason
            row.log = outcome.log
            row.artifacts = json.dumps([a.to_dict() for a in outcome.artifacts])
            row.build_requires = json.dumps(list(outcome.build_requires))
            row.finished_at = utcnow()
            s.add(row)
            s.commit()
        self.plumbing.emit(
            "build",
            build=build_id,
            project=row.project,
            purpose=row.purpose,
            state=row.state,
            nvr=row.nvr,
            reason=row.reason,
            log=row.log,
            backend=row.backend,
            seconds=_seconds_between(row.created_at, row.finished_at),
        )
        self.plumbing.wake()

    async def cancel(self, key: str) -> None:
        with session(self.engine) as s:
            row = s.exec(
                select(BuildRow).where(BuildRow.purpose == "scratch", BuildRow.key == key)
            ).first()
            if row is None or row.state != BuildState.RUNNING:
                return
            row.state, row.finished_at = BuildState.CANCELED, utcnow()
            s.add(row)
            s.commit()
        watcher = self._watchers.pop(row.id or 0, None)
        if watcher is not None:
            watcher.cancel()
        if row.task_ref:
            try:
                await self.backend(row).cancel(row.task_ref)
            except Exception:  # cancel is best effort; the row says canceled either way
                log.exception("cancel of build %s failed", row.id)
        await self._drop_branch(row, self.backend(row), self.request(row))
        self.plumbing.emit(
            "build",
            build=row.id,
            project=row.project,
            purpose=row.purpose,
            state=BuildState.CANCELED.value,
        )

    # -- drafts ------------------------------------------------------------------------
    async def promote(self, draft_id: int) -> BuildRow:
        """The final build made of draft ``draft_id``: promoted by the backend, then
        recorded as a finished ``final`` row of the same key (never a running
        one, which a restart would submit as a real build).  Idempotent: a row
        recorded already is returned; the backend's promotion is."""
        draft = self._load(draft_id)
        with session(self.engine) as s:
            row = s.exec(
                select(BuildRow).where(BuildRow.purpose == "final", BuildRow.key == draft.key)
            ).first()
        if row is not None and row.state == BuildState.PASSED:
            return row
        started = time.monotonic()
        backend = self.backend(draft)
        request = replace(self.request(draft), purpose="final")
        artifacts = tuple(Artifact.from_dict(a) for a in json.loads(draft.artifacts))
        spec = Draft(nvr=draft.nvr, task_ref=draft.task_ref or "", artifacts=artifacts)
        while True:
            try:
                outcome = await backend.promote(request, spec)
                break
            except TransientBackendError as exc:
                log.warning("promotion of build %s: backend unavailable (%s)", draft_id, exc)
                self._backend_fault(draft, "unavailable")
                await asyncio.sleep(TRANSIENT_RETRY)
            except BuildError as exc:
                outcome = BuildOutcome(ok=False, nvr=draft.nvr, reason=str(exc))
                break
            except BackendError as exc:  # the gate's fault (e.g. a locked tag), not the change's
                await self._promotion_stuck(draft, exc)
                raise
            except Exception as exc:
                if not is_transient(exc):
                    raise
                await asyncio.sleep(TRANSIENT_RETRY)

        def record() -> BuildRow:
            with session(self.engine) as s:
                final = s.exec(
                    select(BuildRow).where(BuildRow.purpose == "final", BuildRow.key == draft.key)
                ).first()
                if final is None:
                    final = BuildRow(
                        purpose="final",
                        key=draft.key,
                        project=draft.project,
                        package=draft.package,
                        backend=draft.backend,
                        commit=draft.commit,
                        tree=draft.tree,
                        target=draft.target,
                        includes=draft.includes,
                        build_requires=draft.build_requires,
                    )
                # a draft deleted on the hub was replaced by a real final build: its task
                final.task_ref = outcome.extra.get("task_id") or f"promoted:{draft.task_ref or ''}"
                final.state = BuildState.PASSED if outcome.ok else BuildState.FAILED
                final.nvr = outcome.nvr or draft.nvr
                final.reason = outcome.reason
                final.log = outcome.log or draft.log
                final.artifacts = json.dumps(
                    [a.to_dict() for a in (outcome.artifacts or artifacts)]
                )
                final.submissions += 1
                final.finished_at = utcnow()
                s.add(final)
                stuck = s.get(BuildRow, draft_id)
                if stuck is not None and stuck.error:
                    stuck.error = ""  # promoted after all: no longer stuck
                    s.add(stuck)
                s.commit()
                s.refresh(final)
                return final

        final = await until_it_lands(record, f"promotion of build {draft_id}")
        self.plumbing.emit(
            "build",
            build=final.id,
            project=final.project,
            purpose="final",
            state=final.state,
            nvr=final.nvr,
            reason=final.reason,
            backend=final.backend,
            promoted=draft_id,
            # a final build made of a draft takes its promotion's time
            seconds=time.monotonic() - started,
        )
        return final

    async def _promotion_stuck(self, draft: BuildRow, exc: BackendError) -> None:
        """A promotion the backend cannot finish for a reason of its own (a locked
        tag, a permission the gate's user lacks): not the change's outcome, so no
        final row is written (a failed one would reject the item, I5; a running one
        would be submitted as a real build by a restart).  The draft's ``error``
        says why -- the status shows it and ``/healthz`` fails on it
        (``gate.health``) -- until a restart promotes it again
        (:meth:`clear_promotion_errors`, ``Tip.resume``)."""
        log.error("promotion of build %s stopped until a restart: %s", draft.id, exc)
        await self._write(draft.id or 0, error=str(exc))
        self.plumbing.emit(
            "build",
            build=draft.id,
            project=draft.project,
            purpose=draft.purpose,
            state="error",
            reason=str(exc),
            backend=draft.backend,
        )
        self._backend_fault(draft, "error")

    def clear_promotion_errors(self, draft_id: int | None = None) -> int:
        """Forget why promotions stopped: all at start (a restart is how an operator
        retries them; one that fails again says so again), or draft ``draft_id``'s
        when its item left the tip.  Returns how many."""
        with session(self.engine) as s:
            query = select(BuildRow).where(BuildRow.purpose == "draft", BuildRow.error != "")
            if draft_id is not None:
                query = query.where(BuildRow.id == draft_id)
            rows = s.exec(query).all()
            for row in rows:
                row.error = ""
                s.add(row)
            s.commit()
            return len(rows)

    def let_go_of_stuck(self, build_ids: list[int]) -> list[int]:
        """Builds of ``build_ids`` held on a backend error (running, ``error`` set) whose
        item left: canceled, so that no restart takes them up again (a later final
        build of the same NVR takes over what the backend made).  Returns their ids."""
        with session(self.engine) as s:
            rows = s.exec(
                select(BuildRow).where(
                    col(BuildRow.id).in_(build_ids),
                    BuildRow.state == BuildState.RUNNING,
                    BuildRow.error != "",
                )
            ).all()
            for row in rows:
                row.state, row.finished_at = BuildState.CANCELED, utcnow()
                row.error = f"let go when its item left the tip; was: {row.error}"
                s.add(row)
            s.commit()
            let_go = [r.id or 0 for r in rows]
        for build_id in let_go:
            log.warning("build %s: held on a backend error, let go: its item left", build_id)
        return let_go

    async def finished(self, build_id: int) -> None:
        """Return once the build's watcher has recorded an outcome (or is gone)."""
        watcher = self._watchers.get(build_id)
        if watcher is None or watcher.done():
            await asyncio.sleep(0.5)  # not attached yet (start-up): look again soon
            return
        await asyncio.wait({watcher})

    def reattach(self, row: BuildRow) -> None:
        """Watch a running build again whose watch is gone (a restart, a dead task).

        A row without a task reference asks the backend, once, for a task
        submitted for the same purpose before submitting (``recovering``).
        """
        self._watch(row, recovering=True)

    # -- rows ----------------------------------------------------------------------------
    def _load(self, build_id: int) -> BuildRow:
        with session(self.engine) as s:
            row = s.get(BuildRow, build_id)
            assert row is not None
            return row

    async def _write(self, build_id: int, **fields: object) -> BuildRow:
        """:meth:`_update`, retried until it lands (a watch never dies of a database blip)."""
        return await until_it_lands(lambda: self._update(build_id, **fields), f"build {build_id}")

    def _update(self, build_id: int, **fields: object) -> BuildRow:
        with session(self.engine) as s:
            row = s.get(BuildRow, build_id)
            assert row is not None
            for name, value in fields.items():
                setattr(row, name, value)
            s.add(row)
            s.commit()
            s.refresh(row)
            return row


def _seconds_between(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else max(0.0, (end - start).total_seconds())
