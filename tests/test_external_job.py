"""External jobs against fake CI servers over HTTP: the request, the result callback,
timeouts, cancellation, a restart, and the result endpoint's refusals.

The gate side is real: the job (``gate.jobs.external``), the ``external_run`` table
in SQLite after the real migrations, and the result endpoint
(``gate.web.job_results``) served over HTTP on 127.0.0.1; the CI side is one fake
per flavour (``tests/fakeci``) that calls the result URL back as a CI job would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy.engine import Engine
from sqlmodel import select

from gate.faults import is_transient
from gate.jobs.base import JobChange, JobContext
from gate.jobs.external import (
    ExternalJob,
    ExternalJobConfig,
    ExternalRuns,
    cancel_abandoned_runs,
    token_hash,
)
from gate.jobs.external_triggers import TriggerUnavailable
from gate.plumbing import Plumbing
from gate.web.job_results import post_result
from repo_state.db import make_engine, migrate, session
from repo_state.models import ChangeRow, ExternalRunRow, ItemRow
from tests.fakeci import FakeCI
from tests.fakeci.gitlab import FakeGitLabCI
from tests.fakeci.jenkins import FakeJenkins
from tests.fakeci.webhook import FakeWebhookCI
from tests.served import ClientFactory


@dataclass
class GateSide:
    engine: Engine
    plumbing: Plumbing
    public_url: str
    item_id: int
    tmp: Path

    def ctx(self, attempt: int = 1, **attributes: Any) -> JobContext:
        return JobContext(
            item_id=self.item_id,
            attempt=attempt,
            repo_path=self.tmp / "speculative" / f"{self.item_id}-{attempt}",
            repo_url=f"{self.public_url}/speculative/{self.item_id}-{attempt}/",
            arches=("x86_64", "aarch64"),
            base_repos=(),
            log_path=self.tmp / "logs" / f"{self.item_id}-{attempt}-packstack.log",
            baseline_url=f"{self.public_url}/speculative/{self.item_id}-{attempt}-baseline/",
            queue="liberty",
            change=JobChange(
                id=1, project="nova", sha="a" * 40, title="nova 12.0.1", url="https://r/1"
            ),
            attributes=attributes,
            public_url=self.public_url,
            engine=self.engine,
            plumbing=self.plumbing,
        )

    def reset(self) -> None:
        """The item's attempt is superseded (what ``Attempts.start`` commits)."""
        with session(self.engine) as s:
            item = s.get(ItemRow, self.item_id)
            assert item is not None
            item.attempt += 1
            s.add(item)
            s.commit()

    def run_row(self) -> ExternalRunRow:
        with session(self.engine) as s:
            rows = s.exec(select(ExternalRunRow)).all()
            assert len(rows) == 1, rows
            return rows[0]


@pytest.fixture
async def gate_side(tmp_path: Path, aiohttp_client: ClientFactory) -> AsyncIterator[GateSide]:
    engine = make_engine(f"sqlite:///{tmp_path / 'rpmgate.db'}")
    migrate(engine)
    with session(engine) as s:
        change = ChangeRow(project="nova", ref="refs/heads/x", sha="a" * 40)
        s.add(change)
        s.commit()
        item = ItemRow(queue="liberty", change_id=change.id or 0, project="nova", attempt=1)
        s.add(item)
        s.commit()
        item_id = item.id or 0
    plumbing = Plumbing()
    app = web.Application()

    async def handler(request: web.Request) -> web.Response:
        return await post_result(request, engine, plumbing)

    app.router.add_post("/api/jobs/{id}/result", handler)
    client = await aiohttp_client(app)
    yield GateSide(engine, plumbing, str(client.make_url("")).rstrip("/"), item_id, tmp_path)
    engine.dispose()


@pytest.fixture
async def fakes() -> AsyncIterator[Callable[[FakeCI], Any]]:
    started: list[FakeCI] = []

    async def start(fake: FakeCI) -> FakeCI:
        started.append(await fake.start())
        return fake

    yield start
    for fake in started:
        await fake.stop()


def gitlab_job(fake: FakeGitLabCI, timeout: float = 30, **extra: Any) -> ExternalJob:
    trigger = {
        "kind": "gitlab",
        "url": fake.url,
        "project": fake.path,
        "token": fake.trigger_token,
        "cancel_token": fake.access_token,
    }
    return ExternalJob(
        ExternalJobConfig(name="packstack", trigger=trigger, timeout=timeout, **extra)
    )


def jenkins_job(fake: FakeJenkins, timeout: float = 30, **trigger: Any) -> ExternalJob:
    doc = {
        "kind": "jenkins",
        "url": fake.url,
        "job": fake.job,
        "user": fake.user,
        "api_token": fake.api_token,
        **trigger,
    }
    return ExternalJob(ExternalJobConfig(name="packstack", trigger=doc, timeout=timeout))


def webhook_job(fake: FakeWebhookCI, timeout: float = 30, secret: str | None = None) -> ExternalJob:
    doc = {"kind": "webhook", "url": f"{fake.url}/hooks/rpmgate", "secret": secret}
    return ExternalJob(ExternalJobConfig(name="packstack", trigger=doc, timeout=timeout))


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


# -- the three flavours ------------------------------------------------------------------------
async def test_gitlab_pipeline_is_triggered_with_the_request_and_its_result_passes_the_job(
    gate_side: GateSide, fakes: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = await fakes(FakeGitLabCI("pass"))
    job = gitlab_job(fake, attributes={"tags": ["default"], "variables": {"MEM": "8G"}})
    ctx = gate_side.ctx(variables={"MEM": "16G"}, tags=["aarch64-large"])

    result = await job.run(ctx)

    assert result.passed, result
    assert result.summary == "packstack passed on x86_64 aarch64"
    (received,) = fake.received
    v = received.variables
    assert v["RPMGATE_RUN"] == str(gate_side.run_row().id)
    assert v["RPMGATE_REPO_URL"] == f"{gate_side.public_url}/speculative/{gate_side.item_id}-1/"
    assert v["RPMGATE_RESULT_URL"] == f"{gate_side.public_url}/api/jobs/{v['RPMGATE_RUN']}/result"
    assert v["RPMGATE_ARCHES"] == "x86_64 aarch64" and v["RPMGATE_BUILD"] == "default"
    assert v["RPMGATE_PROJECT"] == "nova" and v["RPMGATE_CHANGE_SHA"] == "a" * 40
    # the queue's runner attributes override the job's own; their variables are variables
    assert v["MEM"] == "16G"
    assert json.loads(v["RPMGATE_ATTRIBUTES"])["tags"] == ["aarch64-large"]
    row = gate_side.run_row()
    assert (row.state, row.flavour, row.remote_id) == ("passed", "gitlab", "251")
    assert row.remote_url == f"{fake.url}/rpmgate/packstack/-/pipelines/251"
    # only the token's hash is kept; neither it nor the trigger token is logged anywhere
    assert row.token_hash == token_hash(received.token) != received.token
    text = ctx.log_path.read_text()
    assert "pipelines/251" in text
    for secret in (received.token, fake.trigger_token):
        assert secret not in text
        assert secret not in caplog.text


async def test_jenkins_failure_fails_the_job_with_the_log_url(
    gate_side: GateSide, fakes: Any
) -> None:
    fake = await fakes(FakeJenkins("fail"))
    ctx = gate_side.ctx()

    result = await jenkins_job(fake).run(ctx)

    assert not result.passed
    log_url = f"{fake.log_base}/101/console.log"
    assert result.summary == f"packstack failed on x86_64 aarch64 (log: {log_url})"
    assert f"log: {log_url}" in result.details
    assert "tempest: 3 tests failed" in result.details
    (received,) = fake.received
    assert received.variables["RPMGATE_JOB"] == "packstack"
    row = gate_side.run_row()
    assert (row.state, row.remote_id, row.log_url) == ("failed", "101", log_url)
    assert fake.api_token not in ctx.log_path.read_text()


async def test_jenkins_with_a_build_token_and_a_crumb_instead_of_an_api_token(
    gate_side: GateSide, fakes: Any
) -> None:
    fake = await fakes(FakeJenkins("pass", build_token="remote-build-secret"))
    job = ExternalJob(
        ExternalJobConfig(
            name="packstack",
            trigger={
                "kind": "jenkins",
                "url": fake.url,
                "job": fake.job,
                "token": "remote-build-secret",
                "crumb": True,
            },
        )
    )
    ctx = gate_side.ctx()
    result = await job.run(ctx)
    assert result.passed, result
    assert ("GET", "/crumbIssuer/api/json") in fake.requests
    assert "remote-build-secret" not in ctx.log_path.read_text()


async def test_jenkins_refusal_fails_the_job_at_once_naming_the_answer(
    gate_side: GateSide, fakes: Any
) -> None:
    fake = await fakes(FakeJenkins("pass"))
    job = jenkins_job(fake, api_token="not-the-token")
    result = await job.run(gate_side.ctx())
    assert not result.passed
    assert result.summary.startswith("the request was refused: Jenkins buildWithParameters: 403")
    assert fake.received == []
    assert gate_side.run_row().state == "failed"


async def test_webhook_request_is_signed_and_carries_the_whole_request(
    gate_side: GateSide, fakes: Any
) -> None:
    fake = await fakes(FakeWebhookCI("pass", secret="hook-secret"))
    result = await webhook_job(fake, secret="hook-secret").run(gate_side.ctx())
    assert result.passed, result
    assert fake.bad_signatures == 0
    (received,) = fake.received
    doc = received.document
    assert doc is not None
    assert doc["action"] == "run" and doc["job"] == "packstack" and doc["queue"] == "liberty"
    assert doc["change"]["sha"] == "a" * 40 and doc["project"] == "nova"
    assert doc["build"] == "default"
    assert doc["repos"]["arches"]["aarch64"].endswith(
        f"/speculative/{gate_side.item_id}-1/aarch64/"
    )
    assert doc["repos"]["repo_file"].endswith(f"/rpmgate-{gate_side.item_id}.repo")
    assert gate_side.run_row().remote_url == f"{fake.url}/runs/1"


async def test_webhook_with_the_wrong_secret_is_refused_by_the_receiver(
    gate_side: GateSide, fakes: Any
) -> None:
    fake = await fakes(FakeWebhookCI("pass", secret="hook-secret"))
    result = await webhook_job(fake, secret="other").run(gate_side.ctx())
    assert not result.passed and "401" in result.summary
    assert fake.bad_signatures == 1


# -- timeout, cancellation, restart ------------------------------------------------------------
async def test_timeout_fails_the_job_cancels_the_pipeline_and_refuses_the_late_result(
    gate_side: GateSide, fakes: Any
) -> None:
    fake = await fakes(FakeGitLabCI("hold"))
    result = await gitlab_job(fake, timeout=0.5).run(gate_side.ctx())

    assert not result.passed
    assert result.summary == "no result within the timeout of 0.5s"
    assert fake.pipelines[251]["status"] == "canceled"
    (received,) = fake.received
    status, answer = await fake.report(received, True)
    assert status == 409
    assert "ended already (timed_out)" in answer["error"]
    row = gate_side.run_row()
    assert (row.state, row.log_url) == ("timed_out", None)


async def test_a_reset_cancels_the_jenkins_queue_item_and_a_late_result_changes_nothing(
    gate_side: GateSide, fakes: Any
) -> None:
    fake = await fakes(FakeJenkins("hold"))
    task = asyncio.create_task(jenkins_job(fake).run(gate_side.ctx()))
    await until(lambda: bool(fake.received) and gate_side.run_row().state == "running")

    gate_side.reset()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert fake.cancelled_items == [101]
    row = gate_side.run_row()
    assert row.state == "cancelled" and "superseded" in row.summary
    status, answer = await fake.report(fake.received[0], True)
    assert status == 409 and "ended already (cancelled)" in answer["error"]
    assert gate_side.run_row().state == "cancelled"


async def test_a_reset_stops_the_jenkins_build_once_it_left_the_queue(
    gate_side: GateSide, fakes: Any
) -> None:
    fake = await fakes(FakeJenkins("hold", start_builds=True))
    task = asyncio.create_task(jenkins_job(fake).run(gate_side.ctx()))
    await until(lambda: bool(fake.received) and gate_side.run_row().state == "running")
    gate_side.reset()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # cancelItem answered 404 (not queued any more): the build the item became is stopped
    assert ("POST", "/queue/cancelItem?id=101") in fake.requests
    assert fake.stopped == [1]


async def test_a_reset_cancels_the_gitlab_pipeline_and_a_webhook_run(
    gate_side: GateSide, fakes: Any
) -> None:
    gitlab = await fakes(FakeGitLabCI("hold"))
    task = asyncio.create_task(gitlab_job(gitlab).run(gate_side.ctx()))
    await until(lambda: bool(gitlab.received) and gate_side.run_row().state == "running")
    gate_side.reset()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gitlab.pipelines[251]["status"] == "canceled"

    hook = await fakes(FakeWebhookCI("hold"))
    task = asyncio.create_task(webhook_job(hook).run(gate_side.ctx(attempt=2)))
    await until(lambda: bool(hook.received))
    gate_side.reset()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (cancel,) = hook.cancels
    assert cancel["action"] == "cancel" and cancel["run"] == hook.received[0].run


async def test_a_stopping_gate_leaves_the_run_and_the_next_start_waits_for_it_without_resending(
    gate_side: GateSide, fakes: Any
) -> None:
    fake = await fakes(FakeGitLabCI("hold"))
    job = gitlab_job(fake)
    task = asyncio.create_task(job.run(gate_side.ctx()))
    await until(lambda: bool(fake.received) and gate_side.run_row().state == "running")
    gate_side.plumbing.stopping = True  # the daemon stops (Plumbing.stop)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate_side.plumbing.stopping = False  # the next start
    assert fake.pipelines[251]["status"] == "created"
    assert gate_side.run_row().state == "running"

    again = asyncio.create_task(gitlab_job(fake).run(gate_side.ctx()))
    await asyncio.sleep(0.3)
    assert len(fake.received) == 1  # no second pipeline
    status, _ = await fake.report(fake.received[0], True)
    assert status == 200
    result = await asyncio.wait_for(again, 10)
    assert result.passed


async def test_a_request_whose_answer_was_lost_is_sent_again_with_the_same_run_and_a_new_token(
    gate_side: GateSide, fakes: Any
) -> None:
    fake = await fakes(FakeWebhookCI("hold"))
    job = webhook_job(fake)
    ctx = gate_side.ctx()
    # a gate that committed the run, sent the request, and died before the answer
    first = job.request(ctx, 1, "old-token", 0.0, 1)
    runs = ExternalRuns(gate_side.engine)
    run = runs.create(
        gate_side.item_id, 1, "packstack", "x86_64 aarch64 try 1", "webhook", "old-token", 1e10
    )
    runs.sending(run.id)
    assert first.document["run"] == run.id

    task = asyncio.create_task(job.run(ctx))
    await until(lambda: bool(fake.received))
    (received,) = fake.received
    assert received.run == run.id and received.document is not None
    assert received.document["request"] == 2
    assert received.token != "old-token"
    old = await fake.report(received, True, token="old-token")
    assert old[0] == 403
    assert (await fake.report(received, True))[0] == 200
    assert (await asyncio.wait_for(task, 10)).passed


async def test_an_ended_run_is_the_result_of_the_job_run_again(
    gate_side: GateSide, fakes: Any
) -> None:
    fake = await fakes(FakeGitLabCI("fail"))
    first = await gitlab_job(fake).run(gate_side.ctx())
    second = await gitlab_job(fake).run(gate_side.ctx())
    assert not first.passed and (first.summary, first.details) == (second.summary, second.details)
    assert len(fake.received) == 1


# -- the result endpoint ---------------------------------------------------------------------
async def test_result_endpoint_refuses_missing_wrong_reused_tokens_and_bad_bodies(
    gate_side: GateSide, fakes: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = await fakes(FakeWebhookCI("hold"))
    task = asyncio.create_task(webhook_job(fake).run(gate_side.ctx()))
    await until(lambda: bool(fake.received))
    (received,) = fake.received

    missing = await fake.report(received, True, token="")
    wrong = await fake.report(received, True, token=received.token[:-1] + "x")
    malformed = await fake.report(received, True, body={"passed": "yes"})
    not_http = await fake.report(received, True, body={"passed": True, "log_url": "javascript:x"})
    unknown = {"passed": True, "extra": 1}
    extra = await fake.report(received, True, body=unknown)
    huge = await fake.report(received, True, body={"passed": True, "summary": "x" * 70000})
    assert [missing[0], wrong[0], malformed[0], not_http[0], extra[0], huge[0]] == [
        401,
        403,
        400,
        400,
        400,
        413,
    ]
    assert gate_side.run_row().state == "running"  # nothing changed

    assert (await fake.report(received, False))[0] == 200
    reused = await fake.report(received, True)
    assert reused[0] == 409 and "a token is good for one result" in reused[1]["error"]
    result = await asyncio.wait_for(task, 10)
    assert not result.passed and gate_side.run_row().state == "failed"

    gone = dict(received.variables, RPMGATE_RESULT_URL=received.result_url.replace(
        f"/jobs/{received.run}/", "/jobs/999999/"
    ))  # fmt: skip
    received.variables = gone
    assert (await fake.report(received, True))[0] == 404
    received.variables = dict(gone, RPMGATE_RESULT_URL=gone["RPMGATE_RESULT_URL"].replace(
        "/jobs/999999/", "/jobs/0x1/"
    ))  # fmt: skip
    assert (await fake.report(received, True))[0] == 404
    assert received.token not in caplog.text


async def test_a_run_whose_attempt_ended_while_the_gate_was_down_is_cancelled_at_start(
    gate_side: GateSide, fakes: Any
) -> None:
    fake = await fakes(FakeGitLabCI("hold"))
    job = gitlab_job(fake)
    task = asyncio.create_task(job.run(gate_side.ctx()))
    await until(lambda: bool(fake.received) and gate_side.run_row().state == "running")
    gate_side.plumbing.stopping = True  # the gate stops (or dies) with the attempt current
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    jobs = {"liberty": [job.config]}

    # still current: its job will run again and wait for it
    assert await cancel_abandoned_runs(gate_side.engine, jobs) == 0
    assert gate_side.run_row().state == "running"

    gate_side.reset()  # committed by a reset that died before its cancel request
    assert await cancel_abandoned_runs(gate_side.engine, jobs) == 1
    assert gate_side.run_row().state == "cancelled"
    assert fake.pipelines[251]["status"] == "canceled"
    assert await cancel_abandoned_runs(gate_side.engine, jobs) == 0


async def test_an_unavailable_trigger_is_a_transient_fault_and_is_sent_again_until_the_deadline(
    gate_side: GateSide, fakes: Any
) -> None:
    fake = await fakes(FakeGitLabCI("pass"))
    fake.unavailable = 1
    job = gitlab_job(fake)
    with pytest.raises(TriggerUnavailable) as raised:
        await job.run(gate_side.ctx())
    assert is_transient(raised.value)  # the checks retry the job with backoff
    assert (gate_side.run_row().state, gate_side.run_row().requests) == ("requesting", 1)
    result = await job.run(gate_side.ctx())
    assert result.passed, result
    row = gate_side.run_row()
    assert (row.state, row.requests) == ("passed", 2)
    assert [r.run for r in fake.received] == [row.id]


async def test_a_trigger_unavailable_until_the_deadline_times_the_job_out(
    gate_side: GateSide, fakes: Any
) -> None:
    fake = await fakes(FakeGitLabCI("pass"))
    fake.unavailable = 100
    job = gitlab_job(fake, timeout=0.2)
    with pytest.raises(TriggerUnavailable):
        await job.run(gate_side.ctx())
    await asyncio.sleep(0.3)
    result = await job.run(gate_side.ctx())
    assert not result.passed
    assert result.summary == "the request was not accepted within the timeout of 0.2s"
    assert gate_side.run_row().state == "timed_out"
    assert fake.unavailable == 99  # not sent again after the deadline


async def test_a_job_run_once_per_arch_has_one_run_token_and_result_per_arch(
    gate_side: GateSide, fakes: Any
) -> None:
    fake = await fakes(FakeGitLabCI("hold"))
    ctx = gate_side.ctx()
    x86, arm = (dataclasses.replace(ctx, arches=(arch,)) for arch in ("x86_64", "aarch64"))
    tasks = [asyncio.create_task(gitlab_job(fake).run(c)) for c in (x86, arm)]
    await until(lambda: len(fake.received) == 2)
    by_arch = {r.variables["RPMGATE_ARCHES"]: r for r in fake.received}
    assert by_arch["x86_64"].run != by_arch["aarch64"].run
    assert by_arch["x86_64"].token != by_arch["aarch64"].token
    assert (await fake.report(by_arch["aarch64"], False))[0] == 200
    assert (await fake.report(by_arch["x86_64"], True))[0] == 200
    x86_result, arm_result = await asyncio.gather(*tasks)
    assert x86_result.passed and not arm_result.passed


async def test_a_retry_of_the_job_is_a_new_run_not_the_failed_one_again(
    gate_side: GateSide, fakes: Any
) -> None:
    fake = await fakes(FakeGitLabCI("fail"))
    ctx = gate_side.ctx()
    first = await gitlab_job(fake).run(ctx)
    fake.outcome = "pass"
    second = await gitlab_job(fake).run(dataclasses.replace(ctx, try_number=2, tries=2))
    assert not first.passed and second.passed
    assert len({r.run for r in fake.received}) == 2


async def test_a_job_cancelled_while_the_gate_runs_on_cancels_its_run(
    gate_side: GateSide, fakes: Any
) -> None:
    """Another job's early failure stops the item's jobs: the attempt is still current."""
    fake = await fakes(FakeWebhookCI("hold"))
    task = asyncio.create_task(webhook_job(fake).run(gate_side.ctx()))
    await until(lambda: bool(fake.received) and gate_side.run_row().state == "running")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (cancel,) = fake.cancels
    assert cancel["run"] == fake.received[0].run
    row = gate_side.run_row()
    assert row.state == "cancelled"
    assert row.summary == "cancelled: the item's jobs were stopped (another job failed)"
