"""The tip protocol, step 3: publish generation N+1, atomically, in queue order.

Generation N+1 is recorded on the items before the publisher runs, and the
publisher is idempotent for a complete generation N+1, so a restart simply
publishes again.  What is published must be exactly what the items were
tested on (I2, :func:`~gate.speculative.check_tested`).  A publish that fails
after the merge leaves the items at the head: it is retried with backoff
until it succeeds, and items behind, which already include them, keep their
results.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from gate import item_builds, transitions
from gate.builders.base import BuildBackend
from gate.builds import build_entry
from gate.config import Config
from gate.faults import until_it_lands
from gate.items import Items, step_owner, store, view_of
from gate.plumbing import Plumbing
from gate.speculative import check_tested, check_tested_state, published_state
from publishers.createrepo import Publisher
from repo_state.db import session
from repo_state.models import BuildRow, ChangeRow, GenerationRow, ItemRow, QueueRow, utcnow
from repo_state.state import RepoState

log = logging.getLogger(__name__)

PUBLISH_BACKOFF_START = 2.0
PUBLISH_BACKOFF_MAX = 300.0


@dataclass(eq=False)
class Publishing:
    engine: Engine
    plumbing: Plumbing
    config: Config
    items: Items
    publishers: Mapping[str, Publisher]
    backends: Mapping[str, BuildBackend]
    #: the configuration in force (``ConfigStatus.gated_by``), recorded in each manifest
    gated_by: Callable[[], dict[str, object]] = field(default=dict)

    def publish(self, queue: str, item_ids: tuple[int, ...]) -> None:
        with session(self.engine) as s:
            qrow = s.get(QueueRow, queue)
            assert qrow is not None
            for item_id in item_ids:
                item = s.get(ItemRow, item_id)
                assert item is not None
                store(item, transitions.publish_started(view_of(item)))
                item.generation = qrow.generation + 1
                item.publish_attempts += 1
                s.add(item)
            s.commit()
        self.plumbing.spawn(
            self._publish(queue, item_ids),
            f"publish-{'-'.join(map(str, item_ids))}",
            owns=tuple(step_owner("tip", i) for i in item_ids),
        )

    async def _publish(self, queue: str, item_ids: tuple[int, ...]) -> None:
        repos = self.config.repos_of(queue)
        first = next(iter(repos))
        with session(self.engine) as s:
            items = [_get(s, ItemRow, i) for i in item_ids]
            changes = [_get(s, ChangeRow, i.change_id) for i in items]
            # per named build, each item's final build (the first's: the item's own column)
            finals = {
                name: [_finals_of(s, i, name, name == first) for i in items] for name in repos
            }
            reused = {
                e.build_id
                for i in items
                for e in item_builds.entries(s, i.id or 0, None, "final").values()
                if e.reused
            }
            tested = {name: _tested_of(s, items[-1], name) for name in repos if name != first}
        head = items[0]
        assert head.generation
        number = head.generation
        started = time.monotonic()
        published: dict[str, tuple[Path, RepoState]] = {}
        try:
            # one generation per named build's repository, all numbered N+1: a restart
            # between them publishes again, which is a no-op where N+1 is complete
            for name, repo in repos.items():
                publisher = self.publishers[repo]
                state = published_state(publisher, number - 1)
                for item_finals in finals[name]:
                    for final in item_finals:
                        state = state.with_build(build_entry(final))
                if name == first:
                    check_tested(items, state)
                else:
                    forced = any(i.forced_by for i in items)
                    check_tested_state(tested[name], forced, state)
                produced_by = {
                    "kind": head.kind,
                    "queue": queue,
                    "items": list(item_ids),
                    **({"build": name} if len(repos) > 1 else {}),
                    "changes": [
                        {
                            "item": i.id,
                            "project": i.project,
                            "change": c.id,
                            "sha": c.sha,
                            "ref": c.ref,
                            "title": c.title,
                            "nvr": f[0].nvr,
                            "merge_commit": i.merge_commit,
                            **({"forced_by": i.forced_by} if i.forced_by else {}),
                            **(
                                {
                                    "packages": [
                                        {
                                            "package": b.package,
                                            "nvr": b.nvr,
                                            "reused": b.id in reused,
                                        }
                                        for b in f
                                    ]
                                }
                                if len(f) > 1
                                else {}
                            ),
                        }
                        for i, c, f in zip(items, changes, finals[name], strict=True)
                    ],
                    "config": self.gated_by(),
                }
                generation = await asyncio.to_thread(publisher.publish, number, state, produced_by)
                await asyncio.to_thread(publisher.gc)
                published[repo] = (generation.path, state)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(item_ids, head.publish_attempts, exc)
            return
        await until_it_lands(
            lambda: self._record_published(queue, repos, number, head.kind, item_ids, published),
            f"generation {number} of {', '.join(repos.values())}",
        )
        self.plumbing.wake()
        for repo in repos.values():
            self.plumbing.emit(
                "generation",
                repo=repo,
                queue=queue,
                generation=number,
                kind=head.kind,
                items=list(item_ids),
                seconds=time.monotonic() - started,
            )
        published_at = utcnow()
        path = published[repos[first]][0]
        for n, item in enumerate(items):
            final = finals[first][n][0]
            self.plumbing.emit(
                "item",
                item=item.id,
                project=item.project,
                state="published",
                queue=queue,
                kind=item.kind,
                generation=number,
                nvr=final.nvr,
                path=str(path),
                waited=(published_at - item.enqueued_at).total_seconds(),
            )
            for name in repos:
                for built in finals[name][n]:
                    if built.id not in reused:  # a reused build was published before
                        self.plumbing.spawn(self._after_publish(built), f"after-publish-{built.id}")

    def _record_published(
        self,
        queue: str,
        repos: Mapping[str, str],
        number: int,
        kind: str,
        item_ids: tuple[int, ...],
        published: Mapping[str, tuple[Path, RepoState]],
    ) -> None:
        with session(self.engine) as s:
            qrow = s.get(QueueRow, queue)
            assert qrow is not None
            for repo in repos.values():
                if (
                    s.exec(
                        select(GenerationRow).where(
                            GenerationRow.repo == repo, GenerationRow.number == number
                        )
                    ).first()
                    is None
                ):
                    s.add(
                        GenerationRow(
                            repo=repo,
                            number=number,
                            kind=kind,
                            items=json.dumps(list(item_ids)),
                            packages=len(published[repo][1].nevras()),
                        )
                    )
            qrow.generation = max(qrow.generation, number)
            for item_id in item_ids:
                row = _get(s, ItemRow, item_id)
                store(row, transitions.published(view_of(row)))
                s.add(row)
            s.add(qrow)
            s.commit()

    async def _failed(self, item_ids: tuple[int, ...], tries: int, exc: Exception) -> None:
        delay = min(PUBLISH_BACKOFF_MAX, PUBLISH_BACKOFF_START * 2 ** (tries - 1))
        log.warning(
            "publish of items %s failed (attempt %d), retrying in %.0fs: %s",
            item_ids,
            tries,
            delay,
            exc,
        )
        failure = f"publish failed, retrying: {exc}"
        retry_at = time.time() + delay
        for item_id in item_ids:
            await until_it_lands(
                partial(
                    self.items.step,
                    item_id,
                    lambda v: transitions.publish_failed(v, failure, retry_at),
                ),
                f"item {item_id}",
            )
            self.plumbing.emit(
                "item", item=item_id, state="publish-failed", reason=str(exc), retry_in=delay
            )
        self.plumbing.emit("publish-failed", items=list(item_ids), reason=str(exc))

    async def _after_publish(self, final: BuildRow) -> None:
        """Post-publish work of the backend (tagging); a failure is reported, not fatal."""
        try:
            await self.backends[final.backend].after_publish(final.nvr)
        except Exception as exc:
            log.error("after publishing %s: %s", final.nvr, exc)
            self.plumbing.emit(
                "build",
                build=final.id,
                nvr=final.nvr,
                state="after-publish-failed",
                reason=str(exc),
            )


def _finals_of(s: Session, item: ItemRow, build_name: str, first: bool) -> list[BuildRow]:
    """The item's final builds of the named build ``build_name``, its packages in build
    order (``gate.item_builds``); an item without a set: its own ``final_build_id``."""
    rows = item_builds.builds_for(s, item, "final", build_name)
    if rows is None:
        assert first, f"item {item.id} has no final build {build_name}"
        return [_get(s, BuildRow, item.final_build_id or 0)]
    return rows


def _tested_of(s: Session, item: ItemRow, build_name: str) -> str | None:
    """What the item's jobs ran on in the named build ``build_name`` (RepoState JSON)."""
    purpose = item_builds.tested_purpose(item.kind)
    found = item_builds.entries(s, item.id or 0, item.attempt, purpose)
    entry = next((e for m, e in found.items() if m[0] == build_name), None)
    return entry.tested_state if entry is not None else None


T = TypeVar("T", ItemRow, BuildRow, ChangeRow)


def _get(s: Session, table: type[T], key: int) -> T:
    row = s.get(table, key)
    assert row is not None, f"no {table.__name__} {key}"
    return row
