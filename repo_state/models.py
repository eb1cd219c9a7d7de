"""sqlmodel tables: the gate's durable state.

Every accepted event is a :class:`Delivery` row before anything acts on it.
Every side effect is recorded before it starts (``state = "running"`` plus
what a restart needs to re-attach: a task reference, a merge commit, a
generation number) and after it ends.  Schema changes go through alembic
(``repo_state/migrations``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def epoch(value: datetime) -> float:
    """A stored time in seconds since the epoch: as written (aware UTC) or as SQLite
    returns it (naive, UTC)."""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


class Delivery(SQLModel, table=True):
    """An accepted event (API call, webhook, admin command), stored before it is acted on."""

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(index=True)
    event_type: str
    #: idempotency key: a redelivery of the same event is recognised, not re-applied
    delivery_key: str = Field(unique=True)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    received_at: datetime = Field(default_factory=utcnow)
    processed_at: datetime | None = Field(default=None, index=True)
    #: what processing produced ("change 12", ...) or why it failed
    result: str | None = None
    error: str | None = None
    #: who asked: the name of the API token (None: the open API, a webhook, the gate)
    requested_by: str | None = None


class ChangeRow(SQLModel, table=True):
    __tablename__ = "change"
    __table_args__ = (Index("ix_change_review", "source", "review"),)

    id: int | None = Field(default=None, primary_key=True)
    project: str = Field(index=True)
    #: the ref it was proposed as ("refs/heads/topic") or the commit itself
    ref: str
    sha: str
    title: str = ""
    #: proposed | queued | merged | rejected | dequeued | pushed
    state: str = "proposed"
    #: the delivery that created it (processing a delivery twice finds it again)
    delivery_id: int | None = Field(default=None, unique=True)
    reason: str = ""
    #: the review system it came from (``sources.<name>``; "git": rpmgate's own API)
    source: str = "git"
    #: its review there (a Gerrit change number, an MR iid, a PR number); one row
    #: per revision of a review
    review: str | None = None
    #: the review's web page
    url: str = ""
    #: JSON list of the change ids it depends on (``Depends-On:``), in order
    depends_on: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    #: who approved this revision by a command (review systems without votes)
    approved_by: str | None = None
    #: who it is by: the review's owner in its review system, or the name of the API
    #: token that proposed it ("" when unknown: a direct push, the open API)
    owner: str = Field(default="", sa_column_kwargs={"server_default": ""})
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ItemRow(SQLModel, table=True):
    __tablename__ = "item"

    id: int | None = Field(default=None, primary_key=True)
    queue: str = Field(index=True)
    change_id: int = Field(foreign_key="change.id", index=True)
    project: str
    #: gate | post
    kind: str = "gate"
    #: queue order among gate items (post items go first, by id)
    seq: float = 0.0
    active: bool = Field(default=True, index=True)
    attempt: int = 0
    base_generation: int | None = None
    #: JSON list of item ids ahead in this attempt's base
    base_ahead: str = "[]"
    merge: str = "none"
    merge_commit: str | None = None
    merge_tree: str | None = None
    build_key: str | None = None
    jobs: str = "none"
    tip: str = "none"
    tip_state: str = "none"
    not_before: float = 0.0
    failure: str = ""
    #: the speculative repo state the current attempt's jobs ran on (RepoState JSON)
    tested_state: str | None = Field(default=None, sa_column=Column(Text))
    final_build_id: int | None = None
    #: the draft final build of the attempt's tree (none | running | passed | failed)
    #: and its build row (purpose ``draft``); promoted at the tip
    draft: str = Field(default="none", sa_column_kwargs={"server_default": "none"})
    draft_build_id: int | None = None
    #: generation number this item publishes (recorded before publishing)
    generation: int | None = None
    publish_attempts: int = 0
    #: merged | rejected | dequeued, once inactive
    result: str | None = None
    #: a post item for a project the repository has no package of yet
    bootstrap: bool = False
    #: who published this post item although its checks failed (admin API)
    forced_by: str | None = None
    #: digest of the project's configuration when the item's final build started
    #: (a failed bootstrap is retried when it changes)
    config_digest: str | None = None
    enqueued_at: datetime = Field(default_factory=utcnow)
    attempt_started_at: datetime | None = None
    finished_at: datetime | None = None


class BuildRow(SQLModel, table=True):
    __tablename__ = "build"
    __table_args__ = (UniqueConstraint("purpose", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    #: scratch | final
    purpose: str
    #: what determines the output, a digest (``gate.builds.scratch_key``, ``final_key``)
    key: str = Field(index=True)
    project: str
    package: str
    backend: str
    commit: str
    tree: str
    target: str
    #: JSON list of item ids whose changes the build contains
    includes: str = "[]"
    task_ref: str | None = None
    #: running | passed | failed | canceled
    state: str = "running"
    nvr: str = ""
    reason: str = ""
    log: str = ""
    artifacts: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    build_requires: str = "[]"
    #: why the watch of a running build stopped (a backend error an operator must
    #: look at; the outcome is unknown and a restart re-attaches), "" when fine
    error: str = Field(default="", sa_column_kwargs={"server_default": ""})
    submissions: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    #: the digest of its package's inputs (``gate.packages.input_digests``) when its
    #: project has several packages: a later build of equal inputs reuses this one
    inputs: str = Field(default="", sa_column_kwargs={"server_default": ""})
    #: JSON list of build ids it is submitted after (the packages it is built after)
    waits_for: str = Field(
        default="[]", sa_column=Column(Text, nullable=False, server_default="[]")
    )


class JobRunRow(SQLModel, table=True):
    __tablename__ = "job_run"

    id: int | None = Field(default=None, primary_key=True)
    item_id: int = Field(foreign_key="item.id", index=True)
    attempt: int
    name: str
    #: running | passed | failed
    state: str = "running"
    summary: str = ""
    details: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    #: JSON list: findings that do not fail the job (problems the baseline had already)
    warnings: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    log_path: str = ""
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    #: the arch tree the run tested ("" before pipelines: every arch at once)
    arch: str = ""
    #: its pipeline stage (1-based; 0 before pipelines)
    stage: int = 0
    #: which try of the job on this arch in this attempt (1: the first run), of ``tries``
    try_number: int = 1
    tries: int = 1
    #: the named build whose repository the run tested ("" in a queue of one build)
    build: str = Field(default="", sa_column_kwargs={"server_default": ""})


class ItemBuildRow(SQLModel, table=True):
    """One build of an item's attempt: a (named build, package, purpose) of its set.

    An item is built once per named build of its queue (``gate.build_matrix``)
    and per package of its project (``gate.packages``); this table says which
    build row serves each, and whether it was reused rather than made for it.
    The first build of the set (the queue's first named build, the project's
    first package) is also the item's ``build_key``/``final_build_id``/
    ``draft_build_id``, as it was before builds were sets (``gate.item_builds``).
    """

    __tablename__ = "item_build"
    __table_args__ = (UniqueConstraint("item_id", "attempt", "build_name", "package", "purpose"),)

    id: int | None = Field(default=None, primary_key=True)
    item_id: int = Field(foreign_key="item.id", index=True)
    attempt: int
    #: the queue's named build (``default`` in a queue without ``builds``)
    build_name: str
    package: str
    #: scratch | draft | final
    purpose: str
    build_id: int
    #: the build was made for an earlier item or attempt and serves this one unchanged
    reused: bool = False
    #: scratch rows: the repo state this build's jobs ran on (RepoState JSON), the
    #: named build's counterpart of ``item.tested_state``
    tested_state: str | None = Field(default=None, sa_column=Column(Text))


class ExternalRunRow(SQLModel, table=True):
    """One run of an external job (``gate.jobs.external``): a request to another CI
    system and the result it posts back to ``/api/jobs/<id>/result``.

    Only a hash of the run's token is kept; a run's state moves once from
    ``requesting``/``running`` to an end state, so a late or repeated result is
    refused instead of changing the outcome.
    """

    __tablename__ = "external_run"
    __table_args__ = (UniqueConstraint("item_id", "attempt", "job", "variant"),)

    id: int | None = Field(default=None, primary_key=True)
    item_id: int = Field(foreign_key="item.id", index=True)
    attempt: int
    job: str
    #: which of the job's runs for this attempt: its arches (a job run once per arch
    #: has one run per arch)
    variant: str = ""
    #: webhook | gitlab | jenkins
    flavour: str
    #: requesting | running | passed | failed | timed_out | cancelled
    state: str = "requesting"
    #: sha256 hex of the run's token (the token itself is never stored)
    token_hash: str
    #: when the run times out (seconds since the epoch; survives a restart)
    deadline: float
    #: the external system's handle: a pipeline id, a Jenkins queue item URL
    remote_id: str | None = None
    #: where a person sees the run on the external system
    remote_url: str | None = None
    #: how many times the request was sent (a restart before its answer sends it again)
    requests: int = 0
    log_url: str | None = None
    summary: str = ""
    details: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class GenerationRow(SQLModel, table=True):
    __tablename__ = "generation"
    __table_args__ = (UniqueConstraint("repo", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    repo: str = Field(index=True)
    number: int
    #: gate | post | rollback | republish
    kind: str
    #: JSON list of the items whose final builds it added (empty: rollback, republish)
    items: str = "[]"
    packages: int = 0
    #: who asked for it (rollback, republish): the API token's name
    requested_by: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class QueueRow(SQLModel, table=True):
    __tablename__ = "queue"

    name: str = Field(primary_key=True)
    window: int
    #: the repository's current generation number as the gate last published it
    generation: int = 0


class ProjectRow(SQLModel, table=True):
    __tablename__ = "project"

    name: str = Field(primary_key=True)
    #: the branch head the gate last saw or pushed
    branch_head: str | None = None
