"""Speculative repo states: what an item is tested on, and what it publishes.

    published generation  <-  items ahead (post items and committed items by
    their final build, the others by their scratch build)  <-  the item

The same composition with the item's final build is what the tip publishes;
:func:`check_tested` refuses to publish anything else (invariant I2).
"""

from __future__ import annotations

import json

from sqlmodel import Session, select

from gate import item_builds
from gate.builds import build_entry
from gate.items import base_of, view_of
from gate.model import BuildState, ItemKind, normalize_base
from publishers.createrepo import Publisher
from repo_state.models import BuildRow, GenerationRow, ItemRow
from repo_state.state import BuildEntry, RepoState, compose


class UntestedState(Exception):
    """The state about to be published is not the one the item was tested on."""


def item_entries(
    s: Session, item: ItemRow, build_name: str | None = None, own: bool = True
) -> list[BuildEntry] | None:
    """The builds an item contributes to the states of items behind it (None: one is
    not finished).

    ``build_name``: which named build's (``gate.item_builds``): its package
    builds when the item has a set; None, or an item without a set, the item's
    own columns (the queue's own build of the project's only package) -- only
    if ``own``, i.e. ``build_name`` is the queue's own build: an item without a
    set has no build of another name (it was queued before the queue had it).
    """
    # the final builds once it is being merged (or was: a post item); before, the scratch ones
    view = view_of(item)
    final = (view.at_tip or view.kind is ItemKind.POST) and item.final_build_id is not None
    rows: list[BuildRow | None] | None = None
    if build_name is not None:
        found = item_builds.builds_for(s, item, "final" if final else "scratch", build_name)
        rows = list(found) if found is not None else None
    if rows is None:
        if not own:
            return None
        if final:
            rows = [s.get(BuildRow, item.final_build_id)]
        elif item.build_key:
            rows = [
                s.exec(
                    select(BuildRow).where(
                        BuildRow.purpose == "scratch", BuildRow.key == item.build_key
                    )
                ).first()
            ]
        else:
            rows = [None]
    if not rows or any(r is None or r.state != BuildState.PASSED for r in rows):
        return None
    return [build_entry(r) for r in rows if r is not None]


def speculative_state(
    s: Session,
    item: ItemRow,
    publisher: Publisher,
    repo: str,
    *,
    own: bool = True,
    build_name: str | None = None,
    own_build: bool = True,
) -> RepoState:
    """The package set ``item``'s jobs run against (its current attempt).

    ``own=False`` leaves the item's own build out: the *baseline* (published
    generation and everything ahead), which checks compare against to blame an
    item only for what it breaks.  ``build_name``: the state of that named
    build (its publisher is ``publisher``, the items' builds of that name);
    None: the queue's own build, as :func:`item_entries` says; ``own_build``:
    ``build_name`` is the queue's own build.
    """
    base = base_of(item)
    assert base is not None, f"item {item.id} has no attempt"
    producers = {
        g.number: tuple(json.loads(g.items))
        for g in s.exec(select(GenerationRow).where(GenerationRow.repo == repo))
    }
    base = normalize_base(base, producers)
    layers: list[RepoState | BuildEntry] = [published_state(publisher, base.generation)]
    for ahead_id in base.ahead:
        ahead = s.get(ItemRow, ahead_id)
        entries = item_entries(s, ahead, build_name, own_build) if ahead is not None else None
        if entries is None:
            raise LookupError(f"item {ahead_id} ahead of {item.id} has no finished build")
        layers += entries
    if own:
        entries = item_entries(s, item, build_name, own_build)
        if entries is None:
            raise LookupError(f"item {item.id} has no finished build")
        layers += entries
    return compose(layers)


def published_state(publisher: Publisher, generation: int) -> RepoState:
    return publisher.state(generation) if generation else RepoState()


def check_tested(items: list[ItemRow], to_publish: RepoState) -> None:
    """I2: the generation must carry exactly the package set the items' jobs ran on.

    ``items`` publish together (a gate item alone, or the post items at the
    head, each tested on the ones ahead): the last one's repository is the
    batch's.  A post item a release engineer forced past its checks, or one
    recorded before post items were tested, has nothing to compare.
    """
    check_tested_state(items[-1].tested_state, any(i.forced_by for i in items), to_publish)


def check_tested_state(tested_state: str | None, forced: bool, to_publish: RepoState) -> None:
    """I2 for one repository: ``to_publish`` must be ``tested_state`` (RepoState JSON;
    None, or ``forced``: nothing to compare).  A named build's repository is compared
    with its own tested state (``item_build.tested_state``)."""
    if tested_state is None or forced:
        return
    tested = RepoState.from_json(tested_state).nevras()
    published = to_publish.nevras()
    if tested != published:
        missing = sorted(tested - published)[:5]
        extra = sorted(published - tested)[:5]
        raise UntestedState(
            f"refusing to publish an untested state: missing {missing}, unexpected {extra}"
        )
