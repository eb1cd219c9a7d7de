"""The status document: queues -> items, each with its change, base, builds, jobs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, select

from gate.flaky import flaky_note, flaky_notes
from gate.item_builds import Member
from gate.items import view_of
from gate.model import BuildState, ItemKind, ItemState, outside_window
from gate.pipeline import stages_of
from gate.queue_view import item_view
from gate.reporting import file_url
from gate.runtime import Runtime
from gate.web.live import Encoded, Written
from gate.web.log_tails import failure_log, item_builds
from gate.web.status_rows import Related, Shown, StatusRows, promoting, related
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
    """The item documents of the last status document, each with its JSON and what it
    was made from: an item none of whose rows changed is neither made nor encoded again.

    An item's rows are :class:`~gate.web.status_rows.Shown`, whose stamp changes
    whenever any row its document reads was read again
    (:class:`~gate.web.status_rows.StatusRows`); the key adds what else the
    document depends on: whether the window leaves the item waiting, and whether
    its speculative tree is on disk.  A document is the same function of the same
    rows (:func:`item_doc_of`): this saves the work, never a change.  Used by one
    build at a time (``gate.web.live.StatusCache``).
    """

    def __init__(self) -> None:
        self._docs: dict[int, _ItemDoc] = {}
        self._next: dict[int, _ItemDoc] = {}
        self._base_url = ""
        self.made = 0

    def begin(self, rt: Runtime) -> None:
        if rt.config.base_url != self._base_url:  # every URL in the documents changes
            self._docs, self._base_url = {}, rt.config.base_url
        self._next = {}

    def doc(
        self, rt: Runtime, shown: Shown, position: int | None, outside_window: bool = False
    ) -> tuple[dict[str, Any], str]:
        """The item's document at ``position``, and its JSON (``json.dumps`` of it)."""
        item = shown.row
        key = (
            outside_window,
            shown.stamp,
            bool(item.tested_state) and _speculative_kept(rt, item, f"{item.id}-{item.attempt}"),
        )
        made = self._docs.get(item.id or 0)
        if made is None or made.key != key:
            made = _ItemDoc(key, item_doc_of(rt, item, None, shown.rel, outside_window))
            self.made += 1
        self._next[item.id or 0] = made
        return made.at(position)

    def end(self) -> None:
        """Keep only the items of this document."""
        self._docs, self._next = self._next, {}


class _ItemDoc:
    """An item document made with no position, and its JSON around the position's value."""

    def __init__(self, key: tuple[Any, ...], doc: dict[str, Any]) -> None:
        self.key, self.doc = key, doc
        text = json.dumps(doc)
        #: ``{"id": 7, "position": `` and what follows ``null``: the document's keys keep
        #: their order (``item_doc_of`` puts ``position`` second), so splicing a number
        #: in is ``json.dumps`` of the positioned document
        self.head = json.dumps({"id": doc["id"], "position": None})[: -len("null}")]
        if not text.startswith(self.head + "null"):
            raise ValueError("an item document starts with its id and position")
        self.tail = text[len(self.head) + len("null") :]
        self._at: tuple[int | None, dict[str, Any], str] = (None, doc, text)

    def at(self, position: int | None) -> tuple[dict[str, Any], str]:
        """The document at ``position`` and its JSON (the last one asked for is kept)."""
        if self._at[0] != position:
            doc = self.doc if position is None else {**self.doc, "position": position}
            text = f"{self.head}{'null' if position is None else f'{position:d}'}{self.tail}"
            self._at = (position, doc, text)
        return self._at[1], self._at[2]


def status(
    rt: Runtime,
    s: Session,
    recent: int = 20,
    backends: dict[str, dict[str, Any]] | None = None,
    memo: ItemDocs | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The status document (``StatusDoc``), read from the database now: a fixed number
    of queries per queue (:func:`status_encoded` has the arguments)."""
    return status_encoded(rt, s, recent, backends, memo, config).document


def status_encoded(
    rt: Runtime,
    s: Session,
    recent: int = 20,
    backends: dict[str, dict[str, Any]] | None = None,
    memo: ItemDocs | None = None,
    config: dict[str, Any] | None = None,
    rows: StatusRows | None = None,
    written: Written | None = None,
) -> Encoded:
    """The status document and its JSON, joined from each item's (made once per change).

    ``backends``: what :func:`backends_doc` said, when the caller read it already
    (``GET /api/status`` does so on the event loop: the backends keep it in memory).
    ``memo``: the item documents of the last call, to make again only what changed.
    ``config``: ``rt.config_status`` as the caller read it (likewise kept in memory).
    ``rows`` and ``written``: the rows kept since the last call and what was committed
    since (``gate.web.status_rows``); without them, everything is read.
    """
    rows = rows or StatusRows()
    rows.refresh(s, written or Written(everything=True))
    memo = memo or ItemDocs()
    memo.begin(rt)
    queues, encoded, shown = [], [], []
    for name, cfg in rt.config.queues.items():
        qrow = s.get(QueueRow, name)
        arches = rt.config.arches_of(name)
        items, waiting = rows.active(name, qrow.window if qrow else 0)
        finished = rows.finished(s, name, recent)
        shown += [f.row.id or 0 for f in finished]
        item_docs = [memo.doc(rt, item, i, item.row.id in waiting) for i, item in enumerate(items)]
        recent_docs = [memo.doc(rt, item, None) for item in finished]
        queue = {
            "name": name,
            "repo": cfg.repo,
            "projects": list(cfg.projects),
            "window": qrow.window if qrow else None,
            "generation": qrow.generation if qrow else None,
            "items": [d for d, _ in item_docs],
            "recent": [d for d, _ in recent_docs],
            "held_back": _held_back(items),
            "arches": list(arches),
            "pipeline": stages_of(cfg.pipeline, cfg.jobs),
            "flaky_jobs": rows.flaky(
                s,
                name,
                [j.name for j in cfg.jobs],
                cfg.flaky,
                len(arches),
                len(rt.config.builds_of(name)),
            ),
        }
        queues.append(queue)
        lists = {"items": item_docs, "recent": recent_docs}
        encoded.append(
            "{"
            + ", ".join(
                f"{json.dumps(key)}: "
                + (
                    "[" + ", ".join(text for _, text in lists[key]) + "]"
                    if key in lists
                    else json.dumps(value)
                )
                for key, value in queue.items()
            )
            + "}"
        )
    memo.end()
    rows.forget_others(shown)
    document = {
        "queues": queues,
        "backends": backends_doc(rt) if backends is None else backends,
        "config": rt.config_status.model_dump(mode="json") if config is None else config,
    }
    body = (
        '{"queues": ['
        + ", ".join(encoded)
        + f'], "backends": {json.dumps(document["backends"])}, '
        + f'"config": {json.dumps(document["config"])}}}'
    )
    return Encoded(document=document, body=body.encode())


def backends_doc(rt: Runtime) -> dict[str, dict[str, Any]]:
    """What each backend says of itself (kept in memory by the backend, read per request)."""
    return {
        name: health
        for name, backend in rt.backends.items()
        if (health := backend.status()) is not None
    }


def _held_back(items: Sequence[Shown]) -> list[dict[str, Any]]:
    """Blocked post items: where git and the repository disagree, and why."""
    out = []
    for shown in items:
        item = shown.row
        # only a post item can be blocked
        if item.kind != ItemKind.POST or not shown.view.blocked:
            continue
        change = shown.rel.changes.get(item.change_id)
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
