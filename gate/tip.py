"""The tip protocol, steps 1 and 2: final build, then merge in git.

Only the head item runs it.  Each step is recorded before it starts and after
it ends, and is safe to repeat:

* final build: keyed by (project, tree, target) so a restart re-attaches to
  the same build; the backend adopts a final build of the same sources and
  refuses an NVR already built from other sources, as Koji does;
* merge: a fast-forward push of the tested merge commit through the project's
  review system; after a crash, "is the commit on the branch already?"
  decides whether it happened.

Step 3, publishing, is ``gate.publishing``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from sqlalchemy.engine import Engine
from sqlmodel import Session

from gate import item_builds, transitions
from gate.build_matrix import DEFAULT_BUILD
from gate.builders.base import BackendError
from gate.builds import Builds, final_key
from gate.config import Config
from gate.deliveries import store_delivery
from gate.events import Refused
from gate.faults import backoff, is_transient, until_it_answers, until_it_lands
from gate.item_builds import Member
from gate.items import Items, step_owner
from gate.merger import GitError, Merger
from gate.model import BuildState, ItemKind, ItemView, TipStep
from gate.package_builds import Made, ensure_packages
from gate.package_plan import MissingSpec
from gate.packages import PackageOrderError
from gate.plumbing import Plumbing
from gate.reviews import mergeable_now
from gate.sources.base import ChangeSource, MergeOutcome
from repo_state.db import session
from repo_state.models import BuildRow, ChangeRow, ItemBuildRow, ItemRow, ProjectRow

log = logging.getLogger(__name__)


def bootstrap_failure(item: ItemView, failure: str) -> str:
    """How a failed final build reads on a bootstrap item (it stays, blocked)."""
    if not (failure and item.bootstrap):
        return failure
    return (
        f"blocked: bootstrap of {item.project} failed: {failure}; it is built again when "
        f"the project's configuration changes, or with `rpmgate retry {item.id}`"
    )


def _set_failure(rows: dict[Member, BuildRow]) -> str:
    """Why a set of final (or draft) builds failed, "" when none did: the first
    failure in the set's order, naming its build or package when there are several."""
    for member, row in rows.items():
        if row.state != BuildState.PASSED:
            log_note = f" (log: {row.log})" if row.log else ""
            failure = f"final build failed: {row.reason}{log_note}"
            return item_builds.named_failure(member, rows, failure)
    return ""


def record_branch_head(s: Session, project: str, commit: str) -> None:
    row = s.get(ProjectRow, project) or ProjectRow(name=project)
    row.branch_head = commit
    s.add(row)


@dataclass(eq=False)
class Tip:
    engine: Engine
    plumbing: Plumbing
    config: Config
    items: Items
    builds: Builds
    merger: Merger
    source_of: Callable[[str], ChangeSource]

    # -- step 1: the final build -----------------------------------------------------------
    def final_build(self, queue: str, item_id: int) -> None:
        item = self.items.step(item_id, transitions.final_build_started)
        assert item is not None
        self.plumbing.spawn(
            self._final_build(queue, item_id, item.attempt),
            f"final-{item_id}",
            item_id,
            owns=(step_owner("tip", item_id),),
        )

    async def _final_build(self, queue: str, item_id: int, attempt: int) -> None:
        with session(self.engine) as s:
            item = s.get(ItemRow, item_id)
            assert item is not None
            change = s.get(ChangeRow, item.change_id)
            assert change is not None
        if item.kind == ItemKind.POST:
            # already merged: build the pushed commit itself
            project = self.config.projects[item.project]
            result = await self.merger.speculative_merge(item.project, project.git, change.sha, [])
            commit, tree = result.commit, result.tree
            await until_it_lands(
                partial(self.items.update, item_id, merge_commit=commit, merge_tree=tree),
                f"item {item_id}",
            )
        else:
            commit, tree = item.merge_commit or "", item.merge_tree or ""
        self.plumbing.emit("item", item=item_id, project=item.project, state="final-build")
        # one final build per named build and package (gate.item_builds)
        try:
            made = await self._ensure_set(queue, item_id, item.project, "final", commit, tree)
        except (MissingSpec, PackageOrderError) as exc:  # a pushed tree that cannot build
            failure = f"final build failed: cannot build: {exc}"
            await until_it_lands(
                lambda: self.items.step(
                    item_id,
                    lambda v: transitions.final_build_finished(v, bootstrap_failure(v, failure)),
                    attempt,
                ),
                f"item {item_id}",
            )
            return
        await self._record_set(item_id, attempt, made, "final")
        row = next(iter(made.values())).row
        digest = self.config.build_digest(item.project)
        await until_it_lands(
            partial(self.items.update, item_id, final_build_id=row.id, config_digest=digest),
            f"item {item_id}",
        )
        await self.await_final(item_id, attempt, row.id or 0)

    async def await_final(self, item_id: int, attempt: int, build_id: int) -> None:
        """Wait for the item's final builds (``build_id``: the first named build's) and
        record their outcome: passed when all passed, failed as soon as one failed."""
        rows = await self._await_set(item_id, attempt, "final", build_id)
        failure = _set_failure(rows)
        item = await until_it_lands(
            lambda: self.items.step(
                item_id,
                lambda v: transitions.final_build_finished(v, bootstrap_failure(v, failure)),
                attempt,
            ),
            f"item {item_id}",
        )
        if item is None:
            return
        self.plumbing.emit(
            "item",
            item=item_id,
            project=item.project,
            state="final-built" if not failure else "final-failed",
            nvr=next(iter(rows.values())).nvr,
            reason=failure,
        )

    async def _ensure_set(
        self, queue: str, item_id: int, project: str, purpose: str, commit: str, tree: str
    ) -> dict[Member, Made]:
        """The item's final (or draft) builds: per named build, its packages in order
        (``gate.package_builds``: an unchanged package reuses its final build)."""
        qcfg = self.config.queues[queue]
        made: dict[Member, Made] = {}
        for build_name, target in self.config.builds_of(queue).items():
            for m in await ensure_packages(
                self.builds,
                purpose=purpose,
                key_of=partial(final_key, project, tree, target, build_name),
                project=project,
                backend=qcfg.backend,
                commit=commit,
                tree=tree,
                target=target,
                includes=[item_id],
                what=f"{purpose} build {build_name} of item {item_id}",
            ):
                made[(build_name, m.package)] = m
        return made

    async def _record_set(
        self, item_id: int, attempt: int, made: dict[Member, Made], purpose: str
    ) -> None:
        """The item's builds of ``purpose``, one per (named build, package)
        (``gate.item_builds``); a set of one is the item's own column only."""
        if len(made) < 2:
            return

        def record() -> None:
            with session(self.engine) as s:
                for member, m in made.items():
                    item_builds.record(
                        s, item_id, attempt, member, purpose, m.row.id or 0, reused=m.reused
                    )
                s.commit()

        await until_it_lands(record, f"{purpose} builds of item {item_id}")

    async def _await_set(
        self, item_id: int, attempt: int, purpose: str, build_id: int
    ) -> dict[Member, BuildRow]:
        """The builds of ``purpose`` of the item's set once none runs, or one failed."""
        ids = await until_it_lands(
            partial(self._set_ids, item_id, attempt, purpose, build_id), f"item {item_id}"
        )
        try:
            while True:
                rows = {
                    member: await until_it_lands(
                        partial(self._build, e.build_id), f"item {item_id}"
                    )
                    for member, e in ids.items()
                }
                running = [r.id or 0 for r in rows.values() if r.state == BuildState.RUNNING]
                ended = [r for r in rows.values() if r.state != BuildState.RUNNING]
                if not running or any(r.state != BuildState.PASSED for r in ended):
                    return rows
                waits = [asyncio.ensure_future(self.builds.finished(i)) for i in running]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
        except asyncio.CancelledError:
            # the item left the tip (a dequeue): a final build held on a backend error
            # (a serial tip's build kojid could not tag) is let go, or /healthz would fail
            # for it and a restart would tag a build of a change that is not merged
            if purpose == "final" and not self.plumbing.stopping:
                self.builds.let_go_of_stuck([e.build_id for e in ids.values()])
            raise

    def _set_ids(
        self, item_id: int, attempt: int, purpose: str, build_id: int
    ) -> dict[Member, ItemBuildRow]:
        """The item's set of ``purpose`` (an item without one: its own column's build)."""
        with session(self.engine) as s:
            found = item_builds.entries(s, item_id, attempt, purpose)
            item = s.get(ItemRow, item_id)
        if found:
            return found
        name = next(iter(self.config.builds_of(item.queue))) if item else DEFAULT_BUILD
        package = self.config.package_of(item.project) if item else ""
        member = (name, package)
        return {
            member: ItemBuildRow(
                item_id=item_id,
                attempt=attempt,
                build_name=name,
                package=package,
                purpose=purpose,
                build_id=build_id,
            )
        }

    def _build(self, build_id: int) -> BuildRow:
        with session(self.engine) as s:
            row = s.get(BuildRow, build_id)
            assert row is not None
            return row

    # -- drafts: step 1 ahead of the tip ------------------------------------------------------
    def draft_build(self, queue: str, item_id: int) -> None:
        """The final build of the item's tested tree, started as a draft before the tip."""
        item = self.items.step(item_id, transitions.draft_started)
        assert item is not None
        self.plumbing.spawn(
            self._draft(queue, item_id, item.attempt),
            f"draft-{item_id}",
            item_id,
            owns=(step_owner("draft", item_id),),
        )

    async def _draft(self, queue: str, item_id: int, attempt: int) -> None:
        item = await until_it_lands(partial(self.items.get, item_id), f"item {item_id}")
        tree = item.merge_tree or ""
        self.plumbing.emit("item", item=item_id, project=item.project, state="draft-build")
        # keyed by the tree: a new attempt on the same tree gets this draft back;
        # one per named build and package (an unchanged package reuses its final build)
        made = await self._ensure_set(
            queue, item_id, item.project, "draft", item.merge_commit or "", tree
        )
        await self._record_set(item_id, attempt, made, "draft")
        row = next(iter(made.values())).row
        updated = await until_it_lands(
            partial(self.items.update, item_id, attempt, draft_build_id=row.id),
            f"item {item_id}",
        )
        if updated is None:
            return  # reset meanwhile: the draft is left unpromoted
        await self.await_draft(item_id, attempt, row.id or 0)

    async def await_draft(self, item_id: int, attempt: int, build_id: int) -> None:
        rows = await self._await_set(item_id, attempt, "draft", build_id)
        failure = _set_failure(rows)
        item = await until_it_lands(
            lambda: self.items.step(
                item_id, lambda v: transitions.draft_finished(v, failure), attempt
            ),
            f"item {item_id}",
        )
        if item is not None:
            self.plumbing.emit(
                "item",
                item=item_id,
                project=item.project,
                state="draft-built" if not failure else "final-failed",
                nvr=next(iter(rows.values())).nvr,
                reason=failure,
            )

    def promote(self, queue: str, item_id: int) -> None:
        """Tip step 1 with a draft: promote it (a metadata operation), then as a final
        build that finished."""
        item = self.items.step(item_id, transitions.promote_started)
        assert item is not None
        self.plumbing.spawn(
            self._promote(item_id, item.attempt),
            f"promote-{item_id}",
            item_id,
            owns=(step_owner("tip", item_id),),
        )

    async def _promote(self, item_id: int, attempt: int) -> None:
        item = await until_it_lands(partial(self.items.get, item_id), f"item {item_id}")
        assert item.draft_build_id is not None
        self.plumbing.emit("item", item=item_id, project=item.project, state="promote")
        drafts = await until_it_lands(
            partial(self._set_ids, item_id, attempt, "draft", item.draft_build_id),
            f"item {item_id}",
        )
        # every draft of the set is promoted (a reused final build serves as it is);
        # the first's final build is the item's own column
        finals: dict[Member, Made] = {}
        for member, entry in drafts.items():
            if entry.reused:
                reused = await until_it_lands(
                    partial(self._build, entry.build_id), f"item {item_id}"
                )
                finals[member] = Made(member[1], reused, reused=True)
            else:
                try:
                    promoted = await self.builds.promote(entry.build_id)
                except BackendError:
                    # the gate's fault, not the change's (a locked tag: the draft's
                    # error says why, /healthz fails on it): the item waits at the
                    # tip, its step owned by this task, until a restart promotes again
                    await self._held_at_tip(entry.build_id)
                    raise AssertionError("unreachable") from None  # pragma: no cover
                finals[member] = Made(member[1], promoted)
        await self._record_set(item_id, attempt, finals, "final")
        final = next(iter(finals.values())).row
        digest = self.config.build_digest(item.project)
        await until_it_lands(
            partial(
                self.items.update, item_id, attempt, final_build_id=final.id, config_digest=digest
            ),
            f"item {item_id}",
        )
        await self.await_final(item_id, attempt, final.id or 0)

    async def _held_at_tip(self, draft_id: int) -> None:
        """Wait for ever: a restart promotes again, a dequeue or reset cancels this
        task, and then the draft is no longer stuck in a promotion (its error would
        fail /healthz for an item that left the tip)."""
        try:
            await asyncio.Event().wait()
        finally:
            if not self.plumbing.stopping:  # a restart clears it (Reconciler)
                try:
                    self.builds.clear_promotion_errors(draft_id)
                except Exception:
                    log.exception("draft %s: its promotion error stays until a restart", draft_id)

    # -- step 2: the merge ---------------------------------------------------------------------
    def merge_change(self, queue: str, item_id: int) -> None:
        item = self.items.step(item_id, transitions.push_started)
        assert item is not None
        self.plumbing.spawn(
            self._merge(item_id), f"merge-{item_id}", owns=(step_owner("tip", item_id),)
        )

    async def _merge(self, item_id: int) -> None:
        item = self.items.get(item_id)
        assert item.merge_commit
        source = self.source_of(item.project)
        change = self._change(item)
        tries = 0
        while True:
            try:
                result = await self._merge_through(source, item, change)
                break
            except Exception as exc:
                if not is_transient(exc):  # the remote said no (a hook, permissions)
                    if not isinstance(exc, GitError):
                        raise
                    result = MergeOutcome(False, exc.stderr or str(exc))
                    break
                tries += 1  # the remote or the review system is down: later
                log.warning("item %s: merge failed (try %d): %s", item_id, tries, exc)
                await backoff(tries)
        if result.ok:
            await self._merged(item, change, result.head or item.merge_commit)
            return
        await until_it_lands(
            lambda: self.items.step(
                item_id, lambda v: transitions.push_finished(v, f"merge refused: {result.reason}")
            ),
            f"item {item_id}",
        )
        self.plumbing.emit(
            "item",
            item=item_id,
            project=item.project,
            state="merge-refused",
            reason=result.reason,
            commit=item.merge_commit,
        )

    async def _merge_through(
        self, source: ChangeSource, item: ItemRow, change: ChangeRow
    ) -> MergeOutcome:
        """Merge the tested commit; a review is read again first, and merged only if
        it is still what was tested, open and approved (events are hints)."""
        assert item.merge_commit
        if change.review is None:
            return await source.merge(item.project, item.merge_commit)
        try:
            review = await source.read_review(item.project, change.review)
        except Refused as exc:  # gone, or the gate may no longer read it: not merged
            return MergeOutcome(False, str(exc))
        if review.merged:
            # merged already: by this gate before a crash, or by someone else
            head = await source.branch_head(item.project)
            return MergeOutcome(True, head=head)
        why = mergeable_now(review, change)
        if why:
            return MergeOutcome(False, why)
        return await source.merge(item.project, item.merge_commit, review)

    async def _merged(self, item: ItemRow, change: ChangeRow, head: str) -> None:
        """The branch is at ``head`` now.  If that is not the tested tree (the review
        system made its own merge), what is on the branch was not tested: the item
        is done in git, and the head goes through the post-item rules instead."""
        item_id = item.id or 0
        tested = item.merge_tree
        if head != item.merge_commit:
            url = self.config.projects[item.project].git
            tree = await until_it_answers(
                lambda: self.merger.tree_of(item.project, url, head), f"tree of {head[:12]}"
            )
            if tree != tested:
                await self._merged_untested(item, change, head, tree or "")
                return
        await until_it_lands(lambda: self._record_merged(item_id, head), f"item {item_id} merged")
        await until_it_lands(
            lambda: self.items.step(item_id, lambda v: transitions.push_finished(v, "")),
            f"item {item_id}",
        )
        self.plumbing.emit(
            "item", item=item_id, project=item.project, state="merged", reason="", commit=head
        )

    async def _merged_untested(
        self, item: ItemRow, change: ChangeRow, head: str, tree: str
    ) -> None:
        item_id = item.id or 0
        source = self.config.projects[item.project].source
        reason = (
            f"merged by {source} as {head[:12]}, whose tree {tree[:12]} is not the tested "
            f"tree {(item.merge_tree or '')[:12]}: the branch head is built, tested and "
            "published as a post item instead"
        )
        log.warning("item %s (%s): %s", item_id, item.project, reason)

        def record() -> None:
            with session(self.engine) as s:
                row = s.get(ChangeRow, change.id)
                if row is not None:
                    row.state = "merged"
                    s.add(row)
                    s.commit()
            # a durable request to look at the branch: the head becomes a post item
            store_delivery(
                self, "api", "ref.updated", {"project": item.project}, f"merged-untested-{item_id}"
            )

        await until_it_lands(record, f"item {item_id} merged untested")
        # its commit is superseded by the head the review system made (a post item)
        self.items.dequeue(item.queue, item_id, "superseded", reason)

    def wake(self) -> None:
        """(``store_delivery`` wakes the loop through the stage storing it.)"""
        self.plumbing.wake()

    def _change(self, item: ItemRow) -> ChangeRow:
        with session(self.engine) as s:
            change = s.get(ChangeRow, item.change_id)
        assert change is not None
        return change

    def _record_merged(self, item_id: int, head: str) -> None:
        with session(self.engine) as s:
            row = s.get(ItemRow, item_id)
            assert row is not None
            record_branch_head(s, row.project, head)
            # the commit on the branch: the tested one, or the review system's own
            # commit of the tested tree (checked in _merged)
            row.merge_commit = head
            s.add(row)
            change = s.get(ChangeRow, row.change_id)
            if change is not None:
                change.state = "merged"
                s.add(change)
            s.commit()

    # -- recovery ---------------------------------------------------------------------------------
    def resume_draft(self, item: ItemRow) -> None:
        """A draft left running with no task: watch its build again, or ask again."""
        assert item.id is not None
        if item.draft_build_id is None:
            self.items.step(item.id, transitions.draft_not_started, item.attempt)
            return
        self.plumbing.spawn(
            self.await_draft(item.id, item.attempt, item.draft_build_id),
            f"draft-{item.id}",
            item.id,
            owns=(step_owner("draft", item.id),),
        )

    async def resume(self, item: ItemRow) -> None:
        """A tip step left running with no task (a crash, a fault): decide from the world
        what already happened, and go on from there."""
        assert item.id is not None
        if item.tip == TipStep.FINAL_BUILD:
            if item.final_build_id is None:
                # (a promotion records its final build only once it is over: the
                # draft is promoted again, which is idempotent)
                self.items.step(item.id, transitions.final_build_not_started)
            else:
                self.plumbing.spawn(
                    self.await_final(item.id, item.attempt, item.final_build_id),
                    f"final-{item.id}",
                    item.id,
                    owns=(step_owner("tip", item.id),),
                )
        elif item.tip == TipStep.MERGE:
            commit = item.merge_commit or ""
            source = self.source_of(item.project)
            change = self._change(item)
            if change.review is not None:
                try:
                    merged = (await source.read_review(item.project, change.review)).merged
                except Refused:  # unreadable: the merge, done again, refuses with the reason
                    merged = False
                if merged:
                    await self._merged(item, change, await source.branch_head(item.project))
                else:
                    self.items.step(item.id, transitions.push_not_done)
            elif await source.is_merged(item.project, commit):
                await self._merged(item, change, commit)
            else:
                self.items.step(item.id, transitions.push_not_done)
        elif item.tip == TipStep.PUBLISH:
            self.items.step(item.id, transitions.publish_interrupted)
