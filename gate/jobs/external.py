"""A job another CI system runs: the gate sends a request and waits for the result.

The request (item, change, project, arches, runner attributes, the speculative
repository's URLs, and a one-time callback ``POST <public_url>/api/jobs/<run>/result``
with a per-run token) goes to the configured trigger (``gate.jobs.external_triggers``:
a generic webhook, a GitLab pipeline trigger or Jenkins ``buildWithParameters``).
The external system posts the result back with the token
(``gate.web.job_results``); the job ends with that result, or fails when
``timeout`` seconds pass first.

A run is durable (``external_run`` rows, ``repo_state.models.ExternalRunRow``):

* ``requesting``: the row and the token's hash are committed *before* the request
  is sent; ``running`` once the external system acknowledged it (its pipeline id
  or queue item recorded); then ``passed``/``failed``/``timed_out``/``cancelled``,
  set once, by whoever comes first (a conditional update): the result endpoint,
  the timeout, or a reset.
* After a gate restart the jobs of an item are run again (``Checks.interrupted``)
  and this job finds its run by (item, attempt, job, arch and try):
  ``running`` -> it keeps waiting, to the original deadline, and sends nothing:
  the external system has the request, and GitLab's and Jenkins' triggers are not
  idempotent (a second POST starts a second pipeline or build).
  ``requesting`` -> the gate cannot know whether the request arrived, so it sends
  it again, same run id, with a new token (only the token's hash was kept; the
  old one dies with it, so a run started by a request that did arrive cannot
  report a result that is no longer asked for).  A webhook receiver should treat
  a repeated run id as the same run (``"request"`` counts the sends).
  An ended run -> its result is the job's result; nothing is sent.
* A reset, a dequeue or another job's early failure cancels the job's task; the
  run becomes ``cancelled`` and the flavour's cancel request is sent.  A daemon
  that is stopping cancels the task too (``Plumbing.stopping``): the run is left
  as it is for the next start.
* A timeout sets ``timed_out`` and sends the cancel request as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, Literal

import aiohttp
from pydantic import Field
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from gate.build_matrix import DEFAULT_BUILD
from gate.faults import until_it_lands
from gate.jobs.base import Job, JobConfig, JobContext, JobResult
from gate.jobs.external_triggers import (
    HTTP_TIMEOUT,
    JobRequest,
    Trigger,
    TriggerConfig,
    Triggered,
    TriggerRefused,
    make_trigger,
    scrub,
    variable_name,
)
from repo_state.db import session
from repo_state.models import ExternalRunRow, ItemRow, utcnow

log = logging.getLogger(__name__)

#: states a run does not leave
ENDED = ("passed", "failed", "timed_out", "cancelled")
#: states a result may still be posted in
OPEN = ("requesting", "running")
#: the plumbing event the result endpoint emits (``run``, ``state``)
RESULT_TOPIC = "external-result"
#: how often a waiting run reads its row even without a wake-up
POLL_S = 5.0
#: the longest a cancel request may take while the job's task is being cancelled
CANCEL_TIMEOUT_S = 10.0


class ExternalJobConfig(JobConfig):
    type: Literal["external"] = "external"
    #: where the request goes: ``{kind: webhook|gitlab|jenkins, url: ..., ...}``
    trigger: TriggerConfig
    #: seconds to wait for the result; then the job fails and the run is cancelled
    timeout: Annotated[float, Field(gt=0, le=7 * 86400)] = 3600.0
    #: runner attributes sent with the request (the queue's runner rules, when given,
    #: override these: ``JobContext.attributes``); ``variables`` (a mapping of names
    #: to strings) also become GitLab variables / Jenkins parameters
    attributes: dict[str, Any] = Field(default_factory=dict)


def token_hash(token: str) -> str:
    """What the database keeps of a run's token."""
    # surrogateescape: a presented token that is not UTF-8 hashes to a wrong one, no error
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def result_path(run: int) -> str:
    return f"/api/jobs/{run}/result"


@dataclass(frozen=True)
class RunView:
    """An external run as the job reads it."""

    id: int
    state: str
    deadline: float
    remote_id: str | None
    remote_url: str | None
    requests: int
    log_url: str | None
    summary: str
    details: tuple[str, ...]

    @property
    def handle(self) -> Triggered:
        return Triggered(self.remote_id, self.remote_url)


def _view(row: ExternalRunRow) -> RunView:
    return RunView(
        id=row.id or 0,
        state=row.state,
        deadline=row.deadline,
        remote_id=row.remote_id,
        remote_url=row.remote_url,
        requests=row.requests,
        log_url=row.log_url,
        summary=row.summary,
        details=tuple(str(d) for d in json.loads(row.details)),
    )


class ExternalRuns:
    """The ``external_run`` table: each write one transaction, ends set once."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def find(self, item_id: int, attempt: int, job: str, variant: str) -> RunView | None:
        with session(self.engine) as s:
            row = s.exec(
                select(ExternalRunRow).where(
                    ExternalRunRow.item_id == item_id,
                    ExternalRunRow.attempt == attempt,
                    ExternalRunRow.job == job,
                    ExternalRunRow.variant == variant,
                )
            ).first()
            return _view(row) if row is not None else None

    def row(self, run: int) -> ExternalRunRow | None:
        """The row itself, detached (the result endpoint reads its token hash)."""
        with session(self.engine) as s:
            row = s.get(ExternalRunRow, run)
            if row is not None:
                s.expunge(row)
            return row

    def get(self, run: int) -> RunView | None:
        with session(self.engine) as s:
            row = s.get(ExternalRunRow, run)
            return _view(row) if row is not None else None

    def create(
        self,
        item_id: int,
        attempt: int,
        job: str,
        variant: str,
        flavour: str,
        token: str,
        deadline: float,
    ) -> RunView:
        with session(self.engine) as s:
            row = ExternalRunRow(
                item_id=item_id,
                attempt=attempt,
                job=job,
                variant=variant,
                flavour=flavour,
                token_hash=token_hash(token),
                deadline=deadline,
            )
            s.add(row)
            s.commit()
            s.refresh(row)
            return _view(row)

    def new_token(self, run: int, token: str) -> None:
        """A request sent again carries a new token; the old one stops working."""
        with session(self.engine) as s:
            s.execute(
                update(ExternalRunRow)
                .where(col(ExternalRunRow.id) == run, col(ExternalRunRow.state) == "requesting")
                .values(token_hash=token_hash(token))
            )
            s.commit()

    def sending(self, run: int) -> None:
        with session(self.engine) as s:
            row = s.get(ExternalRunRow, run)
            assert row is not None
            row.requests += 1
            s.add(row)
            s.commit()

    def acknowledged(self, run: int, handle: Triggered) -> None:
        with session(self.engine) as s:
            s.execute(
                update(ExternalRunRow)
                .where(col(ExternalRunRow.id) == run, col(ExternalRunRow.state) == "requesting")
                .values(state="running", remote_id=handle.remote_id, remote_url=handle.remote_url)
            )
            s.commit()

    def finish(
        self,
        run: int,
        state: str,
        summary: str,
        *,
        log_url: str | None = None,
        details: tuple[str, ...] = (),
    ) -> bool:
        """End the run if it is still open; False: something else ended it first."""
        assert state in ENDED
        with session(self.engine) as s:
            result = s.execute(
                update(ExternalRunRow)
                .where(col(ExternalRunRow.id) == run, col(ExternalRunRow.state).in_(OPEN))
                .values(
                    state=state,
                    summary=summary,
                    log_url=log_url,
                    details=json.dumps(list(details)),
                    finished_at=utcnow(),
                )
            )
            s.commit()
            return bool(getattr(result, "rowcount", 0))


class ExternalJob(Job):
    """Send the request, wait for the result (or the deadline), cancel when superseded."""

    def __init__(self, config: ExternalJobConfig) -> None:
        self.name = config.name
        self.config = config

    async def run(self, ctx: JobContext) -> JobResult:
        if ctx.engine is None or not ctx.public_url:
            return self._result(ctx, False, "an external job needs a gate (database, public_url)")
        runs = ExternalRuns(ctx.engine)
        ctx.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(ctx.log_path, "a", encoding="utf-8") as joblog:
            # cookies of IP-addressed hosts too: Jenkins binds its crumbs to the session
            async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT),
                cookie_jar=aiohttp.CookieJar(unsafe=True),
            ) as http:
                trigger = make_trigger(http, self.config.trigger)
                return await self._run(ctx, runs, trigger, joblog)

    async def _run(
        self, ctx: JobContext, runs: ExternalRuns, trigger: Trigger, joblog: Any
    ) -> JobResult:
        def note(line: str) -> None:
            joblog.write(
                f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} {scrub(line, trigger.secrets())}\n"
            )
            joblog.flush()

        variant = run_variant(ctx)
        run = runs.find(ctx.item_id, ctx.attempt, self.name, variant)
        if run is not None and run.state in ENDED:
            note(f"run {run.id} ended already: {run.state}")
            return self._ended(ctx, run)
        wake = asyncio.Event()
        run_id = run.id if run is not None else 0

        def listener(event: dict[str, Any]) -> None:
            if event.get("topic") == RESULT_TOPIC and event.get("run") == run_id:
                wake.set()

        if ctx.plumbing is not None:
            ctx.plumbing.listeners.append(listener)
        try:
            if run is not None and run.state == "requesting" and run.deadline <= time.time():
                # sending kept failing (a transient fault, retried) until the deadline
                summary = (
                    f"the request was not accepted within the timeout of {self.config.timeout:g}s"
                )
                await self._cancel(runs, trigger, run.id, summary, note, state="timed_out")
                return self._result(ctx, False, summary)
            if run is None or run.state == "requesting":
                token = secrets.token_urlsafe(32)
                if run is None:
                    run = runs.create(
                        ctx.item_id,
                        ctx.attempt,
                        self.name,
                        variant,
                        trigger.kind,
                        token,
                        time.time() + self.config.timeout,
                    )
                    run_id = run.id
                else:
                    runs.new_token(run.id, token)
                    note(f"run {run.id}: no answer recorded for the last request; sending again")
                refused = await self._send(ctx, runs, trigger, run, token, note)
                if refused is not None:
                    return refused
            else:
                where = run.remote_url or run.remote_id
                note(f"run {run.id}: {trigger.kind} has the request ({where}); waiting")
            return await self._wait(ctx, runs, trigger, run.id, wake, note)
        except asyncio.CancelledError:
            if run_id and not (ctx.plumbing is not None and ctx.plumbing.stopping):
                # a reset, a dequeue, another job's early failure: the run is not wanted
                await self._cancel(runs, trigger, run_id, f"cancelled: {_why_cancelled(ctx)}", note)
            raise
        finally:
            if ctx.plumbing is not None and listener in ctx.plumbing.listeners:
                ctx.plumbing.listeners.remove(listener)

    async def _send(
        self,
        ctx: JobContext,
        runs: ExternalRuns,
        trigger: Trigger,
        run: RunView,
        token: str,
        note: Any,
    ) -> JobResult | None:
        request = self.request(ctx, run.id, token, run.deadline, run.requests + 1)
        runs.sending(run.id)
        note(f"run {run.id}: sending the request to {trigger.describe()} (try {run.requests + 1})")
        try:
            handle = await trigger.trigger(request)
        except TriggerRefused as exc:
            summary = scrub(f"the request was refused: {exc}", [token, *trigger.secrets()])
            runs.finish(run.id, "failed", summary)
            note(summary)
            return self._result(ctx, False, summary)
        # TriggerUnavailable is transient: the checks retry the job, which sends again.
        # The answer must land: lost, a restart would send the request again.
        await until_it_lands(partial(runs.acknowledged, run.id, handle), f"external run {run.id}")
        note(
            f"run {run.id}: accepted; {handle.remote_url or handle.remote_id or 'no handle given'}"
        )
        return None

    async def _wait(
        self,
        ctx: JobContext,
        runs: ExternalRuns,
        trigger: Trigger,
        run_id: int,
        wake: asyncio.Event,
        note: Any,
    ) -> JobResult:
        while True:
            run = runs.get(run_id)
            assert run is not None
            if run.state in ENDED:
                note(
                    f"run {run.id}: {run.state}: {run.summary}"
                    + (f" (log {run.log_url})" if run.log_url else "")
                )
                return self._ended(ctx, run)
            remaining = run.deadline - time.time()
            if remaining <= 0:
                summary = f"no result within the timeout of {self.config.timeout:g}s"
                if await self._cancel(runs, trigger, run_id, summary, note, state="timed_out"):
                    return self._result(ctx, False, summary, _handle_details(run))
                continue  # a result came first: read it
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), min(remaining, POLL_S))

    async def _cancel(
        self,
        runs: ExternalRuns,
        trigger: Trigger,
        run_id: int,
        summary: str,
        note: Any,
        state: str = "cancelled",
    ) -> bool:
        """End the run as ``state`` and ask the external system to stop it; False: it
        had ended already (its result stands)."""
        if not runs.finish(run_id, state, summary):
            return False
        note(f"run {run_id}: {summary}")
        run = runs.get(run_id)
        if run is None or run.requests == 0:
            return True
        try:
            answer = await asyncio.wait_for(
                trigger.cancel(run_id, run.handle, summary), CANCEL_TIMEOUT_S
            )
        except Exception as exc:  # the run is ended here whatever the external system says
            answer = f"cancel request failed: {exc}"
        note(f"run {run_id}: {answer}")
        log.info(
            "external run %s (%s): %s; %s",
            run_id,
            trigger.kind,
            summary,
            scrub(answer, trigger.secrets()),
        )
        return True

    def request(
        self, ctx: JobContext, run: int, token: str, deadline: float, attempt_no: int
    ) -> JobRequest:
        """The job request: a JSON document (webhook) and the same as flat variables."""
        attributes = {**self.config.attributes, **ctx.attributes}
        base = ctx.repo_url if ctx.repo_url.endswith("/") else ctx.repo_url + "/"
        repo_file = f"{base}rpmgate-{ctx.item_id}.repo"
        repos: dict[str, Any] = {
            "url": base,
            "arches": {arch: f"{base}{arch}/" for arch in ctx.arches},
            "repo_file": repo_file,
            "baseline_url": ctx.baseline_url,
        }
        change = ctx.change
        result_url = ctx.public_url.rstrip("/") + result_path(run)
        document: dict[str, Any] = {
            "action": "run",
            "run": run,
            "request": attempt_no,
            "job": self.name,
            "queue": ctx.queue,
            "item": ctx.item_id,
            "attempt": ctx.attempt,
            "project": change.project if change else "",
            "change": {
                "id": change.id,
                "sha": change.sha,
                "title": change.title,
                "url": change.url,
                "review": change.review,
            }
            if change
            else None,
            "arches": list(ctx.arches),
            "build": ctx.build,
            "stage": ctx.stage,
            "try": ctx.try_number,
            "attributes": attributes,
            "repos": repos,
            "result_url": result_url,
            "token": token,
            "deadline": datetime.fromtimestamp(deadline, UTC).isoformat(),
        }
        variables = {
            "RPMGATE_RUN": str(run),
            "RPMGATE_JOB": self.name,
            "RPMGATE_QUEUE": ctx.queue,
            "RPMGATE_ITEM": str(ctx.item_id),
            "RPMGATE_ATTEMPT": str(ctx.attempt),
            "RPMGATE_PROJECT": change.project if change else "",
            "RPMGATE_CHANGE": str(change.id) if change else "",
            "RPMGATE_CHANGE_SHA": change.sha if change else "",
            "RPMGATE_CHANGE_URL": change.url if change else "",
            "RPMGATE_ARCHES": " ".join(ctx.arches),
            "RPMGATE_BUILD": ctx.build,
            "RPMGATE_STAGE": str(ctx.stage),
            "RPMGATE_TRY": str(ctx.try_number),
            "RPMGATE_REPO_URL": base,
            "RPMGATE_REPO_FILE": repo_file,
            "RPMGATE_ATTRIBUTES": json.dumps(attributes, sort_keys=True),
            "RPMGATE_RESULT_URL": result_url,
            "RPMGATE_TOKEN": token,
        }
        extra = attributes.get("variables")
        if isinstance(extra, Mapping):
            for key, value in extra.items():
                name = str(key)
                if variable_name(name) and not name.startswith("RPMGATE_"):
                    variables[name] = str(value)
        return JobRequest(document=document, variables=variables, token=token)

    def _ended(self, ctx: JobContext, run: RunView) -> JobResult:
        details = _handle_details(run) + run.details
        if run.state == "passed":
            return self._result(ctx, True, run.summary or "passed", details)
        summary = run.summary or run.state
        if run.state == "failed" and run.log_url:
            summary = f"{summary} (log: {run.log_url})"
        return self._result(ctx, False, summary, details)

    def _result(
        self, ctx: JobContext, passed: bool, summary: str, details: tuple[str, ...] = ()
    ) -> JobResult:
        return JobResult(self.name, passed, summary, str(ctx.log_path), details)


def run_variant(ctx: JobContext) -> str:
    """Which of the job's runs of an attempt ``ctx`` is: a job the pipeline runs once
    per arch has one run, one token, one result for each arch, and so has each try
    of a job with ``retries``, and of each named build in a queue of several (the
    ``default`` build's variant is the one it always had)."""
    where = f"{ctx.arch or ' '.join(ctx.arches)} try {ctx.try_number}"
    return where if ctx.build == DEFAULT_BUILD else f"{ctx.build} {where}"


def _handle_details(run: RunView) -> tuple[str, ...]:
    lines = []
    if run.log_url:
        lines.append(f"log: {run.log_url}")
    if run.remote_url:
        lines.append(f"external run: {run.remote_url}")
    return tuple(lines)


def _why_cancelled(ctx: JobContext) -> str:
    """Why a run's job was cancelled while the daemon is not stopping, in words."""
    assert ctx.engine is not None
    try:
        with session(ctx.engine) as s:
            item = s.get(ItemRow, ctx.item_id)
            if item is None or not item.active:
                return "the item left its queue"
            if item.attempt != ctx.attempt:
                return "the item's attempt was superseded"
    except Exception as exc:  # the reason is for people; the cancel goes on
        log.warning("item %s: cannot read why its job was cancelled: %s", ctx.item_id, exc)
    return "the item's jobs were stopped (another job failed)"


async def cancel_abandoned_runs(engine: Engine, jobs_of: Mapping[str, Sequence[JobConfig]]) -> int:
    """Cancel the open runs no job will wait for again; returns how many.

    A run is abandoned when its item's attempt is over (a reset or dequeue whose
    cancel request a crash cut short: the new attempt was committed first), or its
    job is no longer in the queue's config.  Called when the daemon starts.
    """
    with session(engine) as s:
        rows = s.exec(
            select(ExternalRunRow, ItemRow)
            .join(ItemRow, col(ItemRow.id) == ExternalRunRow.item_id)
            .where(col(ExternalRunRow.state).in_(OPEN))
        ).all()
        found = [(_view(run), run.job, item.queue, item.active, item.attempt, run.attempt)
                 for run, item in rows]  # fmt: skip
    cancelled = 0
    runs = ExternalRuns(engine)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT)) as http:
        for run, job, queue, active, current, attempt in found:
            config = next(
                (j for j in jobs_of.get(queue, ()) if j.name == job),
                None,
            )
            if active and current == attempt and isinstance(config, ExternalJobConfig):
                continue  # its job runs again and waits for it
            reason = "cancelled: the item's attempt was superseded while the gate was down"
            if not runs.finish(run.id, "cancelled", reason):
                continue
            cancelled += 1
            if not isinstance(config, ExternalJobConfig) or run.requests == 0:
                log.warning("external run %s abandoned; no trigger to cancel it with", run.id)
                continue
            trigger = make_trigger(http, config.trigger)
            try:
                answer = await asyncio.wait_for(
                    trigger.cancel(run.id, run.handle, reason), CANCEL_TIMEOUT_S
                )
            except Exception as exc:
                answer = f"cancel request failed: {exc}"
            log.info("external run %s: %s; %s", run.id, reason, scrub(answer, trigger.secrets()))
    return cancelled


def external_job(config: ExternalJobConfig) -> ExternalJob:
    return ExternalJob(config)
