"""The status document: queues -> items, each with its change, base, builds, jobs."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Table
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from gate.flaky import flaky_jobs, flaky_note, flaky_notes
from gate.item_builds import Member
from gate.items import view_of
from gate.model import BuildState, ItemKind, ItemState, Step, outside_window
from gate.pipeline import stages_of
from gate.queue_rules import queue_order
from gate.queue_view import item_view
from gate.reporting import file_url
from gate.runtime import Runtime
from gate.web.log_tails import failure_log, item_builds
from repo_state.models import (
    BuildRow,
    ChangeRow,
    GenerationRow,
    ItemBuildRow,
    ItemRow,
    JobRunRow,
    ProjectRow,
    QueueRow,
)

T = TypeVar("T")


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def item_label(
    item: ItemRow,
    build: BuildRow | None,
    outside_window: bool = False,
    builds: Mapping[Member, BuildRow] | None = None,
) -> str:
    """Where the item is, in a word or two (``gate.model.ItemState``), or how it ended;
    ``outside_window`` as ``gate.model.outside_window`` says of the queue; ``builds``:
    its scratch builds by name in a queue of several named builds."""
    if not item.active:
        return item.result or "finished"
    if outside_window:
        return ItemState.OUTSIDE_WINDOW.value
    return item_view(item, build, builds).state.value


def waiting_items(s: Session, queue: str, active: list[ItemRow]) -> frozenset[int]:
    """The queue's items outside its window (``active``: its active items in order)."""
    qrow = s.get(QueueRow, queue)
    return outside_window([view_of(r) for r in active], qrow.window if qrow else 0)


def build_doc(rt: Runtime, row: BuildRow | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "id": row.id,
        "purpose": row.purpose,
        "state": row.state,
        "nvr": row.nvr,
        "key": row.key,
        "backend": row.backend,
        "task": row.task_ref,
        "tree": row.tree,
        "reason": row.reason,
        "error": row.error or None,
        "log_url": log_url(rt, row.log),
        "submissions": row.submissions,
        "arches": built_arches(row.artifacts),
        "created_at": _iso(row.created_at),
        "finished_at": _iso(row.finished_at),
    }


def built_arches(artifacts: str) -> list[str]:
    """The arches a build's binary RPMs are for (none while it runs, or if it failed)."""
    return sorted({str(a.get("arch")) for a in json.loads(artifacts or "[]")} - {"src"})


def log_url(rt: Runtime, path: str) -> str | None:
    return file_url(rt.state_dir, rt.config.base_url, path)


def change_doc(change: ChangeRow) -> dict[str, Any]:
    return {
        "id": change.id,
        "project": change.project,
        "ref": change.ref,
        "sha": change.sha,
        "title": change.title,
        "state": change.state,
        "source": change.source,
        "review": change.review,
        "url": change.url or None,
        "owner": change.owner or None,
        "depends_on": json.loads(change.depends_on),
    }


@dataclass(frozen=True)
class Related:
    """The rows an item's document shows besides the item: loaded per item for one
    document, in a few bulk queries for the status document."""

    changes: dict[int, ChangeRow]
    #: scratch builds by key
    scratch: dict[str, BuildRow]
    #: final builds by id, and the drafts of items promoting one (``promoting``)
    finals: dict[int, BuildRow]
    #: (item id, attempt) -> its job runs in order
    jobs: dict[tuple[int, int], list[JobRunRow]]
    #: item id -> purpose -> (named build, package) -> (build, reused), for items whose
    #: set has several members (``gate.item_builds``; scratch: the current attempt's)
    sets: dict[int, dict[str, dict[Member, tuple[BuildRow, bool]]]] = field(default_factory=dict)


#: ids per ``IN (...)`` list (SQLite's default limit on bound variables is far above)
_CHUNK = 500


def _chunks(values: set[Any]) -> Iterator[list[Any]]:
    ordered = sorted(values)
    for start in range(0, len(ordered), _CHUNK):
        yield ordered[start : start + _CHUNK]


def rows_of(
    s: Session, model: type[T], *where: Any, order: Any = None, limit: int | None = None
) -> list[T]:
    """Rows of ``model`` as read-only result rows, not ORM instances.

    A result row has the model's attributes (its columns, by the same names) and
    costs a few microseconds; sqlmodel builds each instance in about a hundred,
    and the status document reads thousands of rows.  Read them, never change
    them: they belong to no session.
    """
    table: Table = model.__table__  # type: ignore[attr-defined]
    query = sa_select(*table.columns).where(*where)
    if order is not None:
        query = query.order_by(order)
    if limit is not None:
        query = query.limit(limit)
    return cast(list[T], list(s.connection().execute(query)))


def promoting(item: ItemRow) -> int | None:
    """The draft an item is promoting, if any: a promotion stopped on a backend
    error shows on its draft only (``gate.builds`` ``_promotion_stuck``)."""
    if item.final_build_id is None and item.tip_state == Step.RUNNING:
        return item.draft_build_id
    return None


def related(s: Session, items: Sequence[ItemRow]) -> Related:
    """Everything the documents of ``items`` show, in a handful of queries whatever their
    number (not three per item: ``GET /api/status`` reads hundreds)."""
    change_ids = {i.change_id for i in items}
    keys = {i.build_key for i in items if i.build_key}
    final_ids = {i.final_build_id for i in items if i.final_build_id}
    final_ids |= {d for i in items if (d := promoting(i))}
    item_ids = {i.id for i in items if i.id is not None}
    changes: dict[int, ChangeRow] = {}
    for ids in _chunks(change_ids):
        changes.update(
            (c.id, c) for c in rows_of(s, ChangeRow, col(ChangeRow.id).in_(ids)) if c.id is not None
        )
    scratch: dict[str, BuildRow] = {}
    for chunk in _chunks(keys):
        for b in rows_of(
            s,
            BuildRow,
            BuildRow.purpose == "scratch",
            col(BuildRow.key).in_(chunk),
            order=col(BuildRow.id),
        ):
            scratch.setdefault(b.key, b)  # the first, as a lookup by key finds it
    finals: dict[int, BuildRow] = {}
    for ids in _chunks(final_ids):
        finals.update(
            (b.id, b) for b in rows_of(s, BuildRow, col(BuildRow.id).in_(ids)) if b.id is not None
        )
    attempts = {i.id: i.attempt for i in items}
    jobs: dict[tuple[int, int], list[JobRunRow]] = {}
    for ids in _chunks(item_ids):
        for j in rows_of(s, JobRunRow, col(JobRunRow.item_id).in_(ids), order=col(JobRunRow.id)):
            if attempts.get(j.item_id) == j.attempt:
                jobs.setdefault((j.item_id, j.attempt), []).append(j)
    return Related(changes=changes, scratch=scratch, finals=finals, jobs=jobs, sets=_sets(s, items))


def _sets(
    s: Session, items: Sequence[ItemRow]
) -> dict[int, dict[str, dict[Member, tuple[BuildRow, bool]]]]:
    """The build sets of ``items`` (``Related.sets``), in two queries."""
    attempts = {i.id: i.attempt for i in items if i.id is not None}
    entries: list[ItemBuildRow] = []
    for ids in _chunks(set(attempts)):
        entries += rows_of(
            s, ItemBuildRow, col(ItemBuildRow.item_id).in_(ids), order=col(ItemBuildRow.id)
        )
    # a post item's final builds are its own whatever the attempt; the others: this attempt's
    entries = [e for e in entries if e.purpose == "final" or attempts.get(e.item_id) == e.attempt]
    builds: dict[int, BuildRow] = {}
    for ids in _chunks({e.build_id for e in entries}):
        builds.update((b.id, b) for b in rows_of(s, BuildRow, col(BuildRow.id).in_(ids)) if b.id)
    sets: dict[int, dict[str, dict[Member, tuple[BuildRow, bool]]]] = {}
    for e in entries:
        build = builds.get(e.build_id)
        if build is not None:
            member = (e.build_name, e.package)
            by_member = sets.setdefault(e.item_id, {}).setdefault(e.purpose, {})
            by_member.pop(member, None)  # the latest entry wins
            by_member[member] = (build, e.reused)
    return sets


def _first_of(builds: Mapping[Member, BuildRow], name: str) -> BuildRow | None:
    """The named build ``name``'s first package's build in a set."""
    return next((b for m, b in builds.items() if m[0] == name), None)


def item_doc(
    rt: Runtime, s: Session, item: ItemRow, position: int | None, outside_window: bool = False
) -> dict[str, Any]:
    """One item's document (``ItemDoc``), read from the database now."""
    return item_doc_of(rt, item, position, related(s, [item]), outside_window)


def item_doc_of(
    rt: Runtime, item: ItemRow, position: int | None, rel: Related, outside_window: bool = False
) -> dict[str, Any]:
    """One item's document from rows already loaded (:func:`related`)."""
    change = rel.changes.get(item.change_id)
    scratch = rel.scratch.get(item.build_key) if item.build_key else None
    final = rel.finals.get(item.final_build_id) if item.final_build_id else None
    named = rel.sets.get(item.id or 0, {})
    scratch_set = {m: b for m, (b, _) in named.get("scratch", {}).items()} or None
    finals = named.get("final", {})
    draft = rel.finals.get(d) if (d := promoting(item)) else None
    members = list(dict.fromkeys([*named.get("scratch", {}), *finals]))
    names = list(dict.fromkeys(m[0] for m in members))
    packages = {m[1] for m in members}
    jobs = rel.jobs.get((item.id, item.attempt), []) if item.id is not None else []
    spec_name = f"{item.id}-{item.attempt}"
    # a build whose watch stopped on a backend error holds the item up: say so; so
    # does a draft whose promotion stopped on one (gate.builds _promotion_stuck)
    drafts = [b for b, _ in named.get("draft", {}).values()] or ([draft] if draft else [])
    stuck = next(
        (
            b.error
            for b in (final, scratch, *drafts)
            if b is not None and b.error and (b.state == BuildState.RUNNING or b in drafts)
        ),
        "",
    )
    failure = item_view(item, scratch, scratch_set).failure or stuck or None
    return {
        "id": item.id,
        "position": position,
        "queue": item.queue,
        "kind": item.kind,
        "state": "stuck: backend error"
        if stuck and item.active
        else item_label(item, scratch, outside_window, scratch_set),
        "change": change_doc(change) if change else None,
        "attempt": item.attempt,
        "base": {"generation": item.base_generation, "ahead": json.loads(item.base_ahead)}
        if item.base_generation is not None
        else None,
        "merge": {"state": item.merge, "commit": item.merge_commit, "tree": item.merge_tree},
        "build": build_doc(rt, scratch),
        "final_build": build_doc(rt, final),
        "builds": {
            name: {
                "build": build_doc(rt, _first_of(scratch_set or {}, name)),
                "final_build": build_doc(
                    rt, _first_of({m: b for m, (b, _) in finals.items()}, name)
                ),
                # its own speculative repository: <item>-<attempt>/<build>/<arch>/
                "speculative_repo": f"{rt.config.base_url}/speculative/{spec_name}/{name}/"
                if item.tested_state and _speculative_kept(rt, item, spec_name)
                else None,
            }
            for name in names
        }
        if len(names) > 1
        else None,
        "packages": [
            {
                "build_name": m[0],
                "package": m[1],
                "build": build_doc(rt, (scratch_set or {}).get(m)),
                "reused": named.get("scratch", {}).get(m, (None, False))[1],
                "final_build": build_doc(rt, finals.get(m, (None, False))[0]),
                "final_reused": finals.get(m, (None, False))[1],
            }
            for m in members
        ]
        if len(packages) > 1
        else None,
        "jobs": [
            {
                "name": j.name,
                "arch": j.arch,
                "stage": j.stage,
                "try_number": j.try_number,
                "tries": j.tries,
                "build": j.build,
                "flaky": bool(flaky_note(j)),
                "state": j.state,
                "summary": j.summary,
                "details": json.loads(j.details),
                "warnings": json.loads(j.warnings),
                "log_url": log_url(rt, j.log_path),
                "started_at": _iso(j.started_at),
                "finished_at": _iso(j.finished_at),
            }
            for j in jobs
        ],
        "flaky": flaky_notes(jobs),
        "tip": {"step": item.tip, "state": item.tip_state},
        "speculative_repo": f"{rt.config.base_url}/speculative/{spec_name}/"
        if item.tested_state and _speculative_kept(rt, item, spec_name)
        else None,
        "failure": failure,
        "log_tail": failure_log(rt, failure, item_builds(scratch, final, named), jobs),
        "bootstrap": item.bootstrap,
        "forced_by": item.forced_by,
        "result": item.result,
        "generation": item.generation,
        "enqueued_at": _iso(item.enqueued_at),
        "attempt_started_at": _iso(item.attempt_started_at),
        "finished_at": _iso(item.finished_at),
    }


def _speculative_kept(rt: Runtime, item: ItemRow, name: str) -> bool:
    """An active item's repository is served while it is tested; a finished item's
    while ``speculative_retention`` keeps it (``gate.speculative_retention``)."""
    return item.active or (rt.state_dir / "speculative" / name).is_dir()


#: the tables :func:`status` reads (with a margin: generations, projects): a commit
#: that wrote none of them leaves the document as it is (``gate.web.live.Commits``).
#: Reading another table in the document means naming it here.
TABLES = frozenset(
    t.__tablename__
    for t in (
        ItemRow,
        ChangeRow,
        BuildRow,
        JobRunRow,
        QueueRow,
        GenerationRow,
        ProjectRow,
        ItemBuildRow,
    )
)


class ItemDocs:
    """The item documents of the last status document, each with the rows it was made
    from: an item none of whose rows changed is not made again.

    The rows are result rows (:func:`rows_of`: tuples of column values), so "changed"
    is tuple equality over every column the document reads: the item, its change,
    builds and job runs, and whether its speculative tree is on disk.  A document is
    the same function of the same rows (:func:`item_doc_of`): this saves the work,
    never a change.  Used by one build at a time (``gate.web.live.StatusCache``).
    """

    def __init__(self) -> None:
        self._docs: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self._next: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self._base_url = ""
        self.made = 0

    def begin(self, rt: Runtime) -> None:
        if rt.config.base_url != self._base_url:  # every URL in the documents changes
            self._docs, self._base_url = {}, rt.config.base_url
        self._next = {}

    def doc(
        self,
        rt: Runtime,
        item: ItemRow,
        position: int | None,
        rel: Related,
        outside_window: bool = False,
    ) -> dict[str, Any]:
        key = (
            outside_window,
            tuple(item),
            rel.changes.get(item.change_id),
            rel.scratch.get(item.build_key) if item.build_key else None,
            rel.finals.get(item.final_build_id) if item.final_build_id else None,
            rel.finals.get(d) if (d := promoting(item)) else None,
            tuple(rel.jobs.get((item.id or 0, item.attempt), ())),
            tuple(
                (purpose, member, tuple(b), reused)
                for purpose, by_member in rel.sets.get(item.id or 0, {}).items()
                for member, (b, reused) in by_member.items()
            ),
            bool(item.tested_state) and _speculative_kept(rt, item, f"{item.id}-{item.attempt}"),
        )
        cached = self._docs.get(item.id or 0)
        if cached is not None and cached[0] == key:
            doc = cached[1]
        else:
            doc = item_doc_of(rt, item, None, rel, outside_window)
            self.made += 1
        self._next[item.id or 0] = (key, doc)
        return doc if position is None else {**doc, "position": position}

    def end(self) -> None:
        """Keep only the items of this document."""
        self._docs, self._next = self._next, {}


def status(
    rt: Runtime,
    s: Session,
    recent: int = 20,
    backends: dict[str, dict[str, Any]] | None = None,
    memo: ItemDocs | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The status document (``StatusDoc``): a fixed number of queries per queue.

    ``backends``: what :func:`backends_doc` said, when the caller read it already
    (``GET /api/status`` does so on the event loop: the backends keep it in memory).
    ``memo``: the item documents of the last call, to make again only what changed.
    ``config``: ``rt.config_status`` as the caller read it (likewise kept in memory).
    """
    memo = memo or ItemDocs()
    memo.begin(rt)
    queues = []
    for name, cfg in rt.config.queues.items():
        qrow = s.get(QueueRow, name)
        arches = rt.config.arches_of(name)
        active = rows_of(s, ItemRow, ItemRow.queue == name, col(ItemRow.active))
        ordered = queue_order((view_of(r), r.seq) for r in active)  # as active_items orders
        by_id = {r.id: r for r in active}
        items = [by_id[v.id] for v in ordered]
        waiting = waiting_items(s, name, items)
        finished = rows_of(
            s,
            ItemRow,
            ItemRow.queue == name,
            col(ItemRow.active).is_(False),
            order=col(ItemRow.finished_at).desc(),
            limit=recent,
        )
        rel = related(s, [*items, *finished])
        queues.append(
            {
                "name": name,
                "repo": cfg.repo,
                "projects": list(cfg.projects),
                "window": qrow.window if qrow else None,
                "generation": qrow.generation if qrow else None,
                "items": [
                    memo.doc(rt, item, i, rel, item.id in waiting) for i, item in enumerate(items)
                ],
                "recent": [memo.doc(rt, item, None, rel) for item in finished],
                "held_back": held_back(s, items, rel),
                "arches": list(arches),
                "pipeline": stages_of(cfg.pipeline, cfg.jobs),
                "flaky_jobs": flaky_jobs(
                    s,
                    name,
                    [j.name for j in cfg.jobs],
                    cfg.flaky,
                    len(arches),
                    len(rt.config.builds_of(name)),
                ),
            }
        )
    memo.end()
    return {
        "queues": queues,
        "backends": backends_doc(rt) if backends is None else backends,
        "config": rt.config_status.model_dump(mode="json") if config is None else config,
    }


def backends_doc(rt: Runtime) -> dict[str, dict[str, Any]]:
    """What each backend says of itself (kept in memory by the backend, read per request)."""
    return {
        name: health
        for name, backend in rt.backends.items()
        if (health := backend.status()) is not None
    }


def held_back(s: Session, items: list[ItemRow], rel: Related | None = None) -> list[dict[str, Any]]:
    """Blocked post items: where git and the repository disagree, and why."""
    out = []
    for item in items:
        # only a post item can be blocked: the others need no view (hundreds queued)
        if item.kind != ItemKind.POST or not view_of(item).blocked:
            continue
        change = rel.changes.get(item.change_id) if rel else s.get(ChangeRow, item.change_id)
        out.append(
            {
                "item": item.id,
                "project": item.project,
                "commit": change.sha if change else None,
                "bootstrap": item.bootstrap,
                "reason": item.failure,
                "git_and_repository": "the project is missing from the repository"
                if item.bootstrap
                else "the branch has commits the repository was not built from",
                "actions": ["publish", "dequeue", "retry"],
            }
        )
    return out


def repo_doc(rt: Runtime, s: Session, name: str) -> dict[str, Any] | None:
    publisher = rt.publishers.get(name)
    if publisher is None:
        return None
    current = publisher.current()
    history = s.exec(
        select(GenerationRow)
        .where(GenerationRow.repo == name)
        .order_by(col(GenerationRow.number).desc())
        .limit(20)
    ).all()
    url = rt.config.publishers[name].url or f"{rt.config.base_url}/repos/{name}"
    return {
        "name": name,
        "url": url,
        "current": None
        if current is None
        else {
            "number": current.number,
            "path": str(current.path),
            "produced_by": current.manifest.get("produced_by"),
            "created": current.manifest.get("created"),
            # the publisher's cached state: no re-reading of state.json per request
            "packages": sorted(publisher.state(current.number).nevras()),
            "builds": publisher.state(current.number).nvrs(),
        },
        "kept": publisher.generations(),
        "history": [
            {
                "number": g.number,
                "kind": g.kind,
                "items": json.loads(g.items),
                "package_count": g.packages,
                "created_at": _iso(g.created_at),
            }
            for g in history
        ],
    }
