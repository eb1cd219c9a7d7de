"""The response documents of the HTTP API, as typed models.

``gate.web.status`` builds these documents as plain dicts (the status document
is read often and large: no second pass over it); these models say what a
client may rely on, and :mod:`gate.web.openapi` publishes them as the
response schemas of ``/api/openapi.json``.  ``tests/test_openapi.py`` runs
schemathesis against the live app, so a document that drifts from its model
fails there.  Models allow keys they do not name (``extra="allow"``): a new
key is not a breaking change for a client; a missing or mistyped one is.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from gate.config_status import ConfigStatus
from gate.health import (
    BackendCheck,
    ConfigCheck,
    DatabaseCheck,
    DiskCheck,
    HeldBackCheck,
    LoopCheck,
    QueueCheck,
    StuckBuildsCheck,
)


class Document(BaseModel):
    model_config = ConfigDict(extra="allow")


class Error(Document):
    """Every 4xx/5xx answer of the API."""

    error: str


class Accepted(Document):
    """A write request was stored as a delivery (202; 200 for a repeated Idempotency-Key)."""

    delivery: int
    #: poll it for the outcome
    status_url: str


class JobResultAnswer(Document):
    """An external job run's result was recorded."""

    message: str
    run: int
    #: passed | failed
    state: str


class DeliveryDoc(Document):
    """``GET /api/deliveries/{id}``: what became of a stored request."""

    id: int
    event_type: str
    #: pending | processed | error (refused, or an internal error)
    state: str
    result: str | None
    error: str | None
    requested_by: str | None


class ChangeDoc(Document):
    id: int
    project: str
    ref: str
    sha: str
    title: str
    #: proposed | queued | merged | rejected | dequeued | pushed
    state: str
    source: str
    review: str | None
    url: str | None
    #: the review's owner, or the API token that proposed it
    owner: str | None = None
    depends_on: list[int]


class BuildDoc(Document):
    id: int | None
    #: scratch | final | draft
    purpose: str
    #: running | passed | failed | canceled; an unpromoted draft past its backend's
    #: ``draft_retention``: collecting | collected (gate/draft_gc.py)
    state: str
    nvr: str
    key: str
    backend: str
    task: str | None
    tree: str
    reason: str
    error: str | None
    #: the build log (text/plain), when the gate serves it or the backend links it
    log_url: str | None
    submissions: int
    #: the arches its binary RPMs are for (empty until it passed)
    arches: list[str]
    created_at: str | None
    finished_at: str | None


class JobDoc(Document):
    """One try of one job on one arch."""

    name: str
    #: the arch tree it tested ("" for a run from before pipelines)
    arch: str
    #: its pipeline stage (1-based; 0 for a run from before pipelines)
    stage: int
    #: which try of the job on this arch in this attempt, of how many
    try_number: int
    tries: int
    #: the named build whose repository it tested ("" in a queue of one build)
    build: str = ""
    #: passed, but only on a retry (``try_number`` > 1)
    flaky: bool
    #: running | passed | failed | canceled
    state: str
    summary: str
    details: list[Any]
    warnings: list[Any]
    log_url: str | None
    started_at: str | None
    finished_at: str | None


class BaseDoc(Document):
    """What an attempt is tested on: a generation plus the items ahead of it."""

    generation: int
    ahead: list[int]


class MergeDoc(Document):
    state: str
    commit: str | None
    tree: str | None


class NamedBuildDoc(Document):
    """One named build of an item in a queue of several (docs/pipelines.md)."""

    #: its scratch build of the current attempt (a post item has none)
    build: BuildDoc | None
    #: its final build, once the item is at the tip
    final_build: BuildDoc | None
    #: the URL of its speculative repository (arch trees below), while it is kept
    speculative_repo: str | None = None


class PackageBuildDoc(Document):
    """One package of one named build of an item whose project has several packages."""

    build_name: str
    package: str
    #: its scratch build (a post item has none)
    build: BuildDoc | None
    #: the scratch build is an earlier build of the same inputs, not one made for the item
    reused: bool
    final_build: BuildDoc | None
    final_reused: bool


class TipDoc(Document):
    step: str
    state: str


class LogTail(Document):
    """The last lines of the log of what failed an item (``gate.web.log_tails``)."""

    #: what failed: ``scratch build``, ``final build (el10)``, ``job install-test (x86_64)``
    label: str
    #: the whole log (text/plain)
    log_url: str | None
    #: at most 20 lines from its last 4 KiB, each at most 300 characters
    lines: list[str]


class ItemDoc(Document):
    id: int | None
    #: place in the queue (0: the head); null for an item that left it
    position: int | None
    queue: str
    #: gate | post
    kind: str
    #: where it is, in words (``gate.model.ItemState``), or how it ended
    state: str
    change: ChangeDoc | None
    attempt: int
    base: BaseDoc | None
    merge: MergeDoc
    build: BuildDoc | None
    final_build: BuildDoc | None
    #: per named build, in a queue of several (``build``/``final_build`` are the first's);
    #: null in a queue of one build
    builds: dict[str, NamedBuildDoc] | None = None
    #: per (named build, package), in build order, when the project has several packages;
    #: null otherwise
    packages: list[PackageBuildDoc] | None = None
    jobs: list[JobDoc]
    #: "install-test (x86_64): flaky: passed on try 2 of 3", one per flaky pass
    flaky: list[str]
    tip: TipDoc
    speculative_repo: str | None
    failure: str | None
    #: the end of the failed build's or job's log, with ``failure`` (its first error
    #: line); null while nothing failed, or when the log is not the gate's (Koji's)
    log_tail: LogTail | None = None
    bootstrap: bool
    forced_by: str | None
    #: merged | rejected | dequeued | superseded | ... once it left its queue
    result: str | None
    generation: int | None
    enqueued_at: str | None
    attempt_started_at: str | None
    finished_at: str | None


class ChangeWithItems(ChangeDoc):
    """``GET /api/changes/{id}``: the change and every item it had."""

    reason: str | None
    items: list[ItemDoc]


class HeldBack(Document):
    """A blocked post item: git and the repository disagree until it is resolved."""

    item: int | None
    project: str
    commit: str | None
    bootstrap: bool
    reason: str
    git_and_repository: str
    actions: list[str]


class FlakyJob(Document):
    """A job whose recent runs passed only on a retry too often."""

    job: str
    #: its recent runs that ended (at most ``flaky.window``)
    runs: int
    #: of which passed only on a retry
    flaky: int
    rate: float
    threshold: float
    summary: str


class QueueDoc(Document):
    name: str
    repo: str
    projects: list[str]
    window: int | None
    generation: int | None
    items: list[ItemDoc]
    #: the items that left the queue last, newest first
    recent: list[ItemDoc]
    held_back: list[HeldBack]
    #: the arch trees its jobs run on
    arches: list[str]
    #: the stages, in order, each a list of job names
    pipeline: list[list[str]]
    #: jobs that passed only on a retry in more of their recent runs than ``flaky.threshold``
    flaky_jobs: list[FlakyJob]


class StatusDoc(Document):
    """``GET /api/status``."""

    queues: list[QueueDoc]
    #: backend name -> what it says of itself (Koji: hub health, tasks in flight)
    backends: dict[str, dict[str, Any]]
    #: the configuration in force and the last one refused (``gate.reload``)
    config: ConfigStatus


class CurrentGeneration(Document):
    number: int
    path: str
    produced_by: dict[str, Any] | None
    created: str | None
    #: binary NEVRAs
    packages: list[str]
    #: package name -> NVR
    builds: dict[str, str]


class GenerationSummary(Document):
    number: int
    #: gate | post | republish | rollback
    kind: str
    items: list[int]
    package_count: int
    created_at: str | None


class RepoDoc(Document):
    """``GET /api/repos/{name}``."""

    name: str
    url: str
    current: CurrentGeneration | None
    #: generations still on disk (rollback targets)
    kept: list[int]
    #: the last 20 generations, newest first
    history: list[GenerationSummary]


#: every kind of check ``/healthz`` runs (``gate.health``), each with what it measured
AnyCheck = (
    DatabaseCheck
    | LoopCheck
    | QueueCheck
    | DiskCheck
    | BackendCheck
    | StuckBuildsCheck
    | HeldBackCheck
    | ConfigCheck
)


class HealthDoc(Document):
    """``GET /healthz``: :class:`gate.health.HealthReport` with each check's own fields."""

    ok: bool
    #: names of the checks that failed, in the order of ``checks``
    failing: list[str]
    checks: list[AnyCheck]
    database: bool
    loop_age_seconds: float | None
    #: backend name -> "ok", or why not
    backends: dict[str, str]
    stuck_builds: list[int]
    uptime_seconds: float
