"""One named build of an item, package by package: built in order, or reused.

A project of one package gets one build, keyed as it always was.  A project
of several (Packit's monorepo, ``gate/packages.py``) gets one build per
package, in the order :func:`gate.package_plan.plan_at` gives:

- a package whose inputs equal those of an earlier build that passed, on the
  same target and backend, is not built: that build serves (a *reuse*,
  recorded on the item's set, no backend call).  A scratch build may reuse a
  final or a scratch build; a final (or draft) build only a final one, as a
  final build is a release;
- the others are started with the builds of the packages they are built
  after as prerequisites: a build waits for them in its own watch
  (``gate.builds.Builds``), so it is submitted only once they passed, and a
  restart waits again.

Key, target and backend make two builds of a package the same build; the
package's input digest, stored on the build row (``inputs``), is what a later
item's reuse is found by.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from gate.builds import Builds
from gate.faults import until_it_lands
from gate.model import BuildState
from gate.package_plan import plan_at
from gate.packages import PreviousBuild, plan_packages
from repo_state.db import session
from repo_state.models import BuildRow

#: build purposes whose earlier builds a build of ``purpose`` may reuse
REUSABLE = {"scratch": ("final", "scratch"), "final": ("final",), "draft": ("final",)}


@dataclass(frozen=True)
class Made:
    """One package's build of an item's named build."""

    package: str
    row: BuildRow
    #: an earlier build serves (no backend call)
    reused: bool = False


async def ensure_packages(
    builds: Builds,
    *,
    purpose: str,
    key_of: Callable[[str | None], str],
    project: str,
    backend: str,
    commit: str,
    tree: str,
    target: str,
    includes: list[int],
    what: str,
) -> list[Made]:
    """The builds of every package of ``project`` at ``commit`` for ``purpose``, in
    build order; ``key_of(package)`` keys each (``None``: a project of one package,
    whose key is the one it always had).  Raises ``gate.package_plan.MissingSpec``
    and ``gate.packages.PackageOrderError`` for a tree that cannot be built."""
    common = partial(
        builds.ensure,
        purpose=purpose,
        project=project,
        backend=backend,
        commit=commit,
        tree=tree,
        target=target,
        includes=includes,
    )
    config = builds.config
    packages = config.packages_of(project)
    if not packages:
        row = await until_it_lands(partial(common, key=key_of(None)), what)
        return [Made(config.package_of(project), row)]
    git = config.projects[project].git or ""
    planned = await plan_at(builds.merger, project, git, commit, packages, {})
    digests = {step.package: step.digest for step in planned}
    previous = await until_it_lands(
        partial(_previous, builds.engine, project, target, backend, digests, purpose), what
    )
    after = {step.package: set(step.after) for step in planned}
    steps = plan_packages([s.package for s in planned], digests, previous, after)
    made: dict[str, Made] = {}
    for step in steps:
        if step.action == "reuse" and step.reused is not None:
            reused = await until_it_lands(partial(_load, builds.engine, step.reused.build_id), what)
            made[step.package] = Made(step.package, reused, reused=True)
            continue
        row = await until_it_lands(
            partial(
                common,
                key=key_of(step.package),
                package=step.package,
                inputs=step.digest,
                waits_for=[made[p].row.id or 0 for p in step.after],
            ),
            f"{what}, package {step.package}",
        )
        made[step.package] = Made(step.package, row)
    return list(made.values())


def _previous(
    engine: Engine,
    project: str,
    target: str,
    backend: str,
    digests: dict[str, str],
    purpose: str,
) -> dict[str, PreviousBuild]:
    """package -> an earlier build that passed with the inputs it has now (a final
    one first: the published build serves a package nobody changed)."""
    found: dict[str, PreviousBuild] = {}
    with session(engine) as s:
        rows = s.exec(
            select(BuildRow)
            .where(
                BuildRow.project == project,
                BuildRow.target == target,
                BuildRow.backend == backend,
                BuildRow.state == BuildState.PASSED,
                col(BuildRow.purpose).in_(REUSABLE[purpose]),
                col(BuildRow.inputs).in_(list(set(digests.values()))),
            )
            .order_by(col(BuildRow.id).desc())
        ).all()
    for row in sorted(rows, key=lambda r: r.purpose != "final"):  # finals first, stable
        if digests.get(row.package) == row.inputs and row.package not in found:
            found[row.package] = PreviousBuild(row.id or 0, row.inputs, row.nvr)
    return found


def _load(engine: Engine, build_id: int) -> BuildRow:
    with session(engine) as s:
        row = s.get(BuildRow, build_id)
    assert row is not None, f"no build {build_id}"
    return row
