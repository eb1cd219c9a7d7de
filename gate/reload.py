"""Reload without a restart: ``SIGHUP``, ``rpmgate reload`` (``POST /api/admin/reload``)
and each new commit of the config repository.

A reload reads the configuration again, checks it as ``rpmgate check-config``
does (offline), then checks it against the running gate, and only then
applies it, all at once:

* **live**: projects and queues added; a queue's ``jobs``, ``window`` and
  ``poll_interval``; a project's build settings (``spec``, ``lookaside``,
  ``scm_url``: a blocked bootstrap is tried again); ``auth``, ``health``; a
  publisher added (with its queue);
* **refused while items are queued** (the list of items is in the answer):
  removing a project or a queue, moving a project to another queue, changing
  a project's ``git``, ``name``, ``branch``, ``source``, ``package`` or
  ``packages``, or a queue's ``repo``, ``backend``, ``target`` or ``builds``;
* **refused, needs a restart** (the running parts were built from them):
  ``state_dir``, ``database_url``, ``listen``, ``sandbox``, ``public_url``,
  ``config_repo``, ``sources``, ``backends``, and a publisher changed.

A refused configuration leaves the running one in force; the refusal is
logged, answered (422: the document is invalid, 409: it conflicts with the
running gate) and kept in :class:`~gate.config_status.ConfigStatus`, which
``/healthz`` and the status document show.

The swap happens between two iterations of the gate loop (it takes the lock
each iteration holds) and is synchronous (no ``await`` between the first and
the last assignment), so an iteration of the loop (ingest, plan, execute)
runs with one configuration from start to end, and no stage ever sees a mix.
Work already running keeps the settings it started with (a job started before
the reload runs its old command); what starts after uses the new ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from gate import config_check
from gate.config import Config, ConfigError, load_config
from gate.config_check import Finding
from gate.config_status import ConfigRefusal, ConfigStatus, digest_of, now_iso
from gate.registry import PUBLISHERS
from gate.runtime import Runtime
from repo_state.db import session
from repo_state.models import ItemRow, QueueRow

log = logging.getLogger("rpmgate")

#: top-level keys the running parts were built from, and why they need a restart
RESTART_KEYS: dict[str, str] = {
    "state_dir": "clones, the RPM pool and the database live there",
    "database_url": "the database connection is opened at start",
    "listen": "the HTTP server is bound at start",
    "sandbox": "the build sandbox is set up at start",
    "public_url": "review systems were given it at start",
    "config_repo": "the repository followed is chosen at start",
    "sources": "review systems are connected (and their webhook routes added) at start",
    "backends": "build backends are built at start and run builds now",
}
#: a project's keys that name what its queued items are (their branch, merges, package)
PROJECT_IDENTITY = ("git", "name", "branch", "source", "package", "packages")
#: a queue's keys that name what its queued items are built and published with
QUEUE_IDENTITY = ("repo", "backend", "target", "builds")


class ReloadDoc(BaseModel):
    """The answer of ``POST /api/admin/reload`` (200, 409 and 422 alike)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    applied: bool
    #: the configuration read is the one in force already (nothing to do)
    unchanged: bool = False
    #: what changed, one line each (when applied)
    changes: list[str] = []
    #: why it was refused (``key: what is wrong; what would be right``)
    findings: list[str] = []
    #: probable mistakes that did not stop it (a bare ``$VAR``)
    warnings: list[str] = []
    config: ConfigStatus


class Refused(Exception):
    """A configuration the gate will not apply; ``status`` is the HTTP answer's."""

    def __init__(self, status: int, findings: list[str]) -> None:
        super().__init__("; ".join(findings))
        self.status = status
        self.findings = findings


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A configuration read for a reload, and the config repository commit it came from."""

    config: Config
    commit: str | None = None


#: reads the configuration again: the file (and the config repository's head)
Loader = Callable[[], Awaitable[Candidate]]


def file_loader(path: Path) -> Loader:
    async def load() -> Candidate:
        return Candidate(await asyncio.to_thread(load_config, path))

    return load


# -- checks ---------------------------------------------------------------------------------


def restart_findings(old: Config, new: Config) -> list[Finding]:
    """What differs in keys only a restart applies."""
    findings = []
    for key, why in RESTART_KEYS.items():
        if getattr(old, key) != getattr(new, key):
            findings.append(
                Finding(key, f"changed, and only a restart applies it ({why})", _restart_fix())
            )
    for name, pub in new.publishers.items():
        if name in old.publishers and old.publishers[name] != pub:
            findings.append(
                Finding(
                    f"publishers.{name}",
                    "changed, and only a restart applies it (its repository is open)",
                    _restart_fix(),
                )
            )
    return findings


def _restart_fix() -> str:
    return "restart the daemon to apply it, or put back the running value to reload the rest"


def queued_findings(engine: Engine, old: Config, new: Config) -> list[Finding]:
    """What the new configuration would take away from queued (active) items."""
    with session(engine) as s:
        rows = s.exec(
            select(ItemRow.id, ItemRow.queue, ItemRow.project)
            .where(col(ItemRow.active))
            .order_by(col(ItemRow.id))
        ).all()
    problems: dict[tuple[str, str], list[str]] = {}

    def note(key: str, problem: str, item: int | None, project: str) -> None:
        problems.setdefault((key, problem), []).append(f"item {item} ({project})")

    for item, queue, project in rows:
        if queue not in new.queues:
            note(f"queues.{queue}", "removed while it has queued items", item, project)
        elif project not in new.projects:
            note(f"projects.{project}", "removed while it has queued items", item, project)
        elif project not in new.queues[queue].projects:
            note(
                f"queues.{queue}.projects",
                f"{project} taken out of the queue while it has queued items",
                item,
                project,
            )
        else:
            before, after = old.projects.get(project), new.projects[project]
            for key in PROJECT_IDENTITY:
                if before is not None and getattr(before, key) != getattr(after, key):
                    note(
                        f"projects.{project}.{key}",
                        "changed while the project has queued items",
                        item,
                        project,
                    )
            was, now = old.queues.get(queue), new.queues[queue]
            for key in QUEUE_IDENTITY:
                if was is not None and getattr(was, key) != getattr(now, key):
                    note(
                        f"queues.{queue}.{key}",
                        "changed while the queue has queued items",
                        item,
                        project,
                    )
    return [
        Finding(
            key,
            f"{problem}: {', '.join(items)}",
            "wait until they are done, or dequeue them (rpmgate dequeue ITEM), then reload",
        )
        for (key, problem), items in problems.items()
    ]


def changes_between(old: Config, new: Config) -> list[str]:
    """What a reload changes, one line each (logged and answered)."""
    lines = []
    for section in ("projects", "queues", "publishers"):
        before: dict[str, Any] = getattr(old, section)
        after: dict[str, Any] = getattr(new, section)
        lines += [f"{section}.{n}: added" for n in after if n not in before]
        lines += [f"{section}.{n}: removed" for n in before if n not in after]
        for name in after:
            if name in before and before[name] != after[name]:
                keys = [
                    k for k in type(after[name]).model_fields
                    if getattr(before[name], k) != getattr(after[name], k)
                ]  # fmt: skip
                lines.append(f"{section}.{name}: {', '.join(keys)} changed")
    for key in ("auth", "health"):
        if getattr(old, key) != getattr(new, key):
            lines.append(f"{key}: changed")
    return lines


# -- applying -------------------------------------------------------------------------------


def holders(root: object) -> Iterator[object]:
    """Every object of the gate's own modules reachable from ``root`` by attributes,
    dict values and list items (each once): the parts that may hold the config."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            stack += list(obj.values())
            continue
        if isinstance(obj, list | tuple | set | frozenset):
            stack += list(obj)
            continue
        module = type(obj).__module__
        if not module.startswith(("gate.", "publishers.")) or isinstance(obj, Config):
            continue
        yield obj
        attrs = getattr(obj, "__dict__", None)
        if attrs is not None:
            stack += list(attrs.values())


def rebind(root: object, old: Config, new: Config) -> int:
    """Point every part reachable from ``root`` that holds ``old`` at ``new``."""
    count = 0
    for obj in holders(root):
        for name, value in list(getattr(obj, "__dict__", {}).items()):
            if value is old:
                object.__setattr__(obj, name, new)
                count += 1
    return count


def window_rows(engine: Engine, old: Config, new: Config, publishers: dict[str, Any]) -> None:
    """A new queue gets its row (as at start); a queue whose ``window`` changed
    starts again at the new ``window.start``."""
    with session(engine) as s:
        for name, queue in new.queues.items():
            row = s.get(QueueRow, name)
            if row is None:
                current = publishers[queue.repo].current()
                s.add(
                    QueueRow(
                        name=name,
                        window=queue.window.start,
                        generation=current.number if current else 0,
                    )
                )
            elif name in old.queues and old.queues[name].window != queue.window:
                row.window = queue.window.start
                s.add(row)
        s.commit()


def refusal(trigger: str, commit: str | None, findings: list[str]) -> ConfigRefusal:
    return ConfigRefusal(at=now_iso(), trigger=trigger, commit=commit, findings=findings)


def status_after_refusal(status: ConfigStatus, refused: ConfigRefusal) -> ConfigStatus:
    return status.model_copy(update={"last_refused": refused, "newest_refused": True})


def check(old: Config, new: Config) -> list[str]:
    """The warnings of ``new`` as a replacement of ``old``; raises :class:`Refused`.
    (What it would take from queued items is checked when it is applied.)"""
    findings = config_check.offline_findings(new)
    errors = config_check.errors(findings)
    warnings = [str(f) for f in findings if f.warning]
    if errors:
        raise Refused(422, [str(f) for f in errors])
    conflicts = restart_findings(old, new)
    if conflicts:
        raise Refused(409, [str(f) for f in conflicts])
    return warnings


def new_publishers(old: Config, new: Config, pool: Any) -> dict[str, Any]:
    """The publishers a reload adds (built before the swap, so a failure refuses it)."""
    return {
        name: PUBLISHERS.get(cfg.type).create(name, cfg, pool)
        for name, cfg in new.publishers.items()
        if name not in old.publishers
    }


def describe_error(exc: ConfigError) -> list[str]:
    """A config error's lines without its heading (``<file>: invalid configuration``)."""
    lines = [line.strip() for line in str(exc).splitlines()]
    return lines[1:] if len(lines) > 1 else lines


class Target(Protocol):
    """What a reload changes: the gate (``gate.daemon.Gate``)."""

    @property
    def runtime(self) -> Runtime: ...

    #: held by each iteration of the gate loop; the swap takes it
    planning: asyncio.Lock

    def follow_queues(self) -> None:
        """Start a poller for each queue that has none (a new queue, a new interval)."""

    def retry_reconfigured_bootstraps(self) -> None:
        """Try again a blocked bootstrap whose build settings changed."""

    def poll_soon(self, projects: list[str]) -> None:
        """Look at these projects' branches now (a new project's bootstrap)."""


class Reloader:
    """Reads, checks and applies configurations, one at a time."""

    def __init__(self, target: Target, load: Loader) -> None:
        self.target = target
        self.load = load
        self._lock = asyncio.Lock()
        #: called with each candidate applied (the config repository records its commit)
        self.on_applied: list[Callable[[Candidate], None]] = []

    @property
    def runtime(self) -> Runtime:
        return self.target.runtime

    async def reload(self, trigger: str) -> tuple[int, ReloadDoc]:
        """Read, check, apply; (HTTP status, answer).  Never raises for a bad config."""
        async with self._lock:
            rt = self.runtime
            commit: str | None = None
            try:
                candidate = await self.load()
                commit = candidate.commit
                warnings = self._check(candidate.config)
            except ConfigError as exc:
                return self._refuse(trigger, commit, Refused(422, describe_error(exc)))
            except Refused as exc:
                return self._refuse(trigger, commit, exc)
            except CandidateRefused as exc:
                return self._refuse(trigger, exc.commit, Refused(exc.status, exc.findings))
            old = rt.config
            if digest_of(candidate.config) == rt.config_status.digest:
                if commit != rt.config_status.commit:
                    # another commit with the same content: it is the one in force now
                    rt.config_status = rt.config_status.model_copy(
                        update={"commit": commit, "newest_refused": False}
                    )
                    self._applied(candidate)
                log.info("reload (%s): the configuration is unchanged", trigger)
                return 200, ReloadDoc(
                    applied=False, unchanged=True, warnings=warnings, config=rt.config_status
                )
            try:
                added = new_publishers(old, candidate.config, rt.pool)
            except OSError as exc:
                problem = f"cannot open the new repository: {exc}"
                return self._refuse(trigger, commit, Refused(409, [f"publishers: {problem}"]))
            changes = changes_between(old, candidate.config)
            async with self.target.planning:
                # checked under the lock: no item can be enqueued between check and swap
                queued = queued_findings(rt.engine, old, candidate.config)
                if queued:
                    return self._refuse(trigger, commit, Refused(409, [str(f) for f in queued]))
                self._swap(candidate, added)
            for warning in warnings:
                log.warning("reload (%s): %s", trigger, warning)
            log.info(
                "reload (%s): configuration %d applied%s: %s",
                trigger,
                rt.config_status.version,
                f" (commit {commit[:12]})" if commit else "",
                "; ".join(changes) or "no change to projects or queues",
            )
            return 200, ReloadDoc(
                applied=True, changes=changes, warnings=warnings, config=rt.config_status
            )

    def _check(self, new: Config) -> list[str]:
        return check(self.runtime.config, new)

    def _swap(self, candidate: Candidate, added: dict[str, Any]) -> None:
        """Everything at once: no ``await`` from here to the end."""
        rt, new = self.runtime, candidate.config
        old = rt.config
        # the one step that can fail (the database): before anything is swapped, so a
        # fault leaves the old configuration whole (a new queue's row is harmless)
        window_rows(rt.engine, old, new, {**rt.publishers, **added})
        for name in [n for n in rt.publishers if n not in new.publishers]:
            del rt.publishers[name]
        rt.publishers.update(added)
        rebind(self.target, old, new)
        for name, source in rt.sources.items():
            projects = getattr(source, "projects", None)
            if isinstance(projects, dict):
                projects.clear()
                projects.update({p: c for p, c in new.projects.items() if c.source == name})
                source.projects_changed()
        rt.config_status = ConfigStatus(
            version=rt.config_status.version + 1,
            digest=digest_of(new),
            source=rt.config_status.source,
            commit=candidate.commit,
            applied_at=now_iso(),
            last_refused=rt.config_status.last_refused,
            newest_refused=False,
        )
        self.target.follow_queues()
        self.target.retry_reconfigured_bootstraps()
        self.target.poll_soon([p for p in new.projects if p not in old.projects])
        self._applied(candidate)
        rt.plumbing.emit(
            "config", version=rt.config_status.version, commit=candidate.commit, applied=True
        )
        rt.plumbing.wake()

    def _applied(self, candidate: Candidate) -> None:
        for hook in self.on_applied:
            hook(candidate)

    def _refuse(self, trigger: str, commit: str | None, exc: Refused) -> tuple[int, ReloadDoc]:
        rt = self.runtime
        refused = refusal(trigger, commit, exc.findings)
        rt.config_status = status_after_refusal(rt.config_status, refused)
        log.error(
            "reload (%s): configuration%s refused, the running one stays in force:\n  %s",
            trigger,
            f" of commit {commit[:12]}" if commit else "",
            "\n  ".join(exc.findings),
        )
        rt.plumbing.emit("config", version=rt.config_status.version, commit=commit, applied=False)
        return exc.status, ReloadDoc(applied=False, findings=exc.findings, config=rt.config_status)


class CandidateRefused(Exception):
    """A loader's refusal of what it read, before any check (a config repository
    commit that sets host keys, a file it cannot read at that commit)."""

    def __init__(self, status: int, findings: list[str], commit: str | None) -> None:
        super().__init__("; ".join(findings))
        self.status, self.findings, self.commit = status, findings, commit
