"""Koji final builds from SCM when the project lives on a review system.

The projects give no ``scm_url``: the URL kojid checks out is the review
system connection's (Gerrit's ``scm`` template, ``git+{url}/{name}.git`` by
default; GitLab's https clone URL), with the gate's build commit as its
fragment.  The fake kojid (its SCM port, tests/fakekoji/scm.py) maps only that
URL's prefix to the world's bare repositories, the very ones the fake review
system serves, so a build from any other URL would fail at ``git clone``.
"""

from __future__ import annotations

import sys
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlmodel import col, select

from gate.cli import main
from gate.daemon import Gate
from gate.demo_world import INITIAL, World, git
from repo_state.db import session
from repo_state.models import BuildRow
from tests.conftest import NOVA_1201
from tests.fakegerrit import BOT_PASSWORD, push
from tests.fakegitlab import FakeGitLab
from tests.fakekoji import FakeKoji
from tests.gerrit_world import (
    ClientFactory,
    GerritWorld,
    ServerFactory,
    gate_served,
    gerrit_source,
    settle,
    start_fake,
    use_gerrit,
)
from tests.invariants import check_invariants, failure_of, results
from tests.koji_gate import SOURCES_CMD, koji_config_doc, start_hub
from tests.served import served
from tests.test_gate_koji import TwoKnobSpec
from tests.test_gitlab_gate import SOURCE, TOKEN, connection, open_and_approve, path_of

pytestmark = pytest.mark.slow

ALL = ["nova", "ceilometer", "horizon", "python-django"]


@pytest.fixture
def hub(tmp_path: Path, world: World) -> Iterator[FakeKoji]:
    fk = start_hub(tmp_path / "hub", world)
    yield fk
    fk.stop()


def serve_gerrit_to_kojid(fk: FakeKoji, g: GerritWorld, world: World) -> str:
    """kojid reaches the Gerrit's repositories, and only them: ``<gerrit>/rpms/<name>.git``.

    ``allowed_scms`` entries are ``host:repository[:use_common[:source_cmd]]``
    split on ``:`` (koji/daemon.py SCM.assert_allowed_by_config), so a host
    with a port is matched by a glob on its name.  The SCM URL prefix of the
    plain-git setup (``git.example.com``) is dropped.
    """
    host = urllib.parse.urlsplit(g.url).hostname
    fk.hub.builder.scm_roots.clear()
    fk.hub.builder.scm_roots[f"{g.url}/rpms/"] = world.remotes
    fetch = ",".join([sys.executable, str(SOURCES_CMD), str(world.lookaside)])
    fk.hub.builder.allowed_scms = f"{host}*:/rpms/*:no:{fetch}"
    return f"git+{g.url}/rpms"


def gerrit_koji_doc(world: World, fk: FakeKoji, g: GerritWorld) -> dict[str, Any]:
    """The world on the fake Gerrit, built in Koji from SCM, with no project ``scm_url``."""
    doc = koji_config_doc(world, fk, "scm")
    for project in doc["projects"].values():
        del project["scm_url"]
    doc["sources"] = {"review": gerrit_source(g)}
    use_gerrit(doc, "review", ALL)
    return doc


def scm_builds(fk: FakeKoji) -> dict[str, tuple[str, str | None]]:
    """Every build Koji made from SCM, by NVR: the URL submitted, and the source
    kojid recorded from its checkout (koji/daemon.py SCM.get_source)."""

    def collect() -> dict[str, tuple[str, str | None]]:
        found = {}
        for build in fk.hub.state.builds.values():
            task = fk.hub.state.tasks[build.task_id]
            if "://" in task.request[0]:
                found[build.nvr] = (task.request[0], build.source)
        return found

    return fk.run(collect)


def final_rows(gate: Gate, project: str) -> list[BuildRow]:
    with session(gate.engine) as s:
        rows = s.exec(
            select(BuildRow)
            .where(BuildRow.purpose == "final", BuildRow.project == project)
            .order_by(col(BuildRow.id))
        ).all()
    return list(rows)


#: what Gerrit must let the gate's account do on its build branches (project.config
#: ``[access "refs/heads/rpmgate/builds/*"]``): create them, move them (forced),
#: delete them, push the tested merge commits, which the gate commits as itself
#: (rpmgate@localhost, not the account's email)
BUILD_BRANCH_RIGHTS = (
    ("create", False),
    ("push", True),
    ("delete", False),
    ("pushMerge", False),
    ("forgeCommitter", False),
)


def over_http(doc: dict[str, Any], g: GerritWorld) -> None:
    """The gate reaches the Gerrit's repositories as Gerrit serves them, by
    authenticated HTTP (``<url>/a/<name>``) as its own account, instead of
    through the file system: the fake then checks its pushes' access rights."""
    parts = urllib.parse.urlsplit(g.url)
    with_password = f"{parts.scheme}://rpmgate:{BOT_PASSWORD}@{parts.netloc}{parts.path}"
    doc["sources"]["review"]["git"] = with_password + "/a/{name}"
    for project in doc["projects"].values():
        del project["git"]


def branches(world: World, project: str) -> list[str]:
    return git(world.remote(project), "for-each-ref", "--format=%(refname)", "refs/heads/").split()


async def test_a_gerrit_change_is_built_in_koji_from_the_connections_scm_url(
    world: World,
    hub: FakeKoji,
    aiohttp_server: ServerFactory,
    aiohttp_client: ClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A change made on the branch head, with Gerrit's default access rights: the
    gate may not create its build branch, and builds the change's own commit."""
    g = await start_fake(world, aiohttp_server, ALL)
    prefix = serve_gerrit_to_kojid(hub, g, world)
    doc = gerrit_koji_doc(world, hub, g)
    over_http(doc, g)
    async with gate_served(doc, aiohttp_client, [g], ["review"]) as (gate, _):
        a = g.upload("nova", NOVA_1201, "A")
        g.approve(a)
        await settle(gate, g)

        assert results(gate) == {"merged": ["A"]}
        sha = g.state.changes[a].current.revision
        [*_, final] = final_rows(gate, "nova")
        assert (final.commit, final.state) == (sha, "passed")
        # kojid checked out the connection's URL of the project at the gate's commit,
        # and recorded that checkout (``git rev-parse HEAD``) as the build's source
        url = f"{prefix}/nova.git#{sha}"
        assert scm_builds(hub)[final.nvr] == (url, url)
        assert final.nvr == "nova-12.0.1-1"
        # submitted on Gerrit, fast-forwarded to the built commit, published
        change = g.state.changes[a]
        assert change.status == "MERGED"
        assert world.branch_head("nova") == sha
        assert gate.publishers["liberty"].state().nvrs()["nova"] == final.nvr
        # the bootstrap's final builds came from the same URLs, at the branch heads
        for project in ALL:
            [first, *_] = final_rows(gate, project)
            assert scm_builds(hub)[first.nvr][0] == f"{prefix}/{project}.git#{first.commit}"
        # Gerrit refused the gate's branches (kojid fetched the commit by its change ref)
        refused = "prohibited by Gerrit: not permitted: create); building the change's own"
        assert f"{refused} commit {sha[:12]}" in caplog.text
        assert branches(world, "nova") == ["refs/heads/main"]
        check_invariants(gate, remotes={p: world.remote(p) for p in ALL})


def test_check_config_takes_a_review_projects_scm_url_from_its_connection(
    world: World, hub: FakeKoji, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``rpmgate check-config`` (koji_checks): a project built from SCM needs an
    ``scm_url`` only when its source gives none: a Gerrit project's comes from the
    connection; a plain-git project, or one on a Pagure whose ``scm_url_template``
    is null (``PagureSource.scm_url`` is None: the build would fail with "the
    project has no SCM URL"), needs its own."""
    doc = koji_config_doc(world, hub, "scm")
    for project in doc["projects"].values():
        del project["scm_url"]
    doc["sources"] = {
        "review": {
            "type": "gerrit",
            "url": "https://review.example.com/r",
            "webhook": {"token": "t" * 40},
        },
        "dist": {"type": "pagure", "url": "https://src.example.org", "scm_url_template": None},
    }
    use_gerrit(doc, "review", ["nova", "ceilometer"])
    doc["projects"]["horizon"].update(source="dist", name="rpms/horizon")
    # python-django: plain git
    path = tmp_path / "rpmgate.yaml"

    def check() -> tuple[int, list[str]]:
        path.write_text(yaml.safe_dump(doc))
        code = main(["check-config", "-c", str(path)])
        out, err = capsys.readouterr()
        return code, [line.strip() for line in (out + err).splitlines() if "scm_url" in line]

    code, said = check()
    assert code != 0
    assert said == [
        "projects.horizon.scm_url: missing: queue 'liberty' builds it from SCM in backend "
        "'koji', and source 'dist' gives no SCM URL for it; set scm_url: "
        "git+https://host/path.git",
        "projects.python-django.scm_url: missing: queue 'liberty' builds it from SCM in "
        "backend 'koji'; set scm_url: git+https://host/path.git",
    ], said

    # with their own scm_url they pass, and nothing asks for the Gerrit projects'
    for project in ("horizon", "python-django"):
        doc["projects"][project]["scm_url"] = f"git+https://git.example.com/rpms/{project}.git"
    code, said = check()
    assert (code, said) == (0, [])


@pytest.fixture
def knob_world(tmp_path: Path) -> World:
    """ceilometer's Release set by two %globals far apart (tests/test_gate_koji.py)."""
    base = TwoKnobSpec("ceilometer", "8.0.0", requires=("nova >= 12.0.0",))
    return World(tmp_path / "world", projects={**INITIAL, "ceilometer": base}).create()


def upload_spec_edit(g: GerritWorld, project: str, edit: Callable[[str], str], title: str) -> int:
    """A packager edits the spec on the branch head and pushes it for review."""
    work = g.world.workdir(project)
    git(work, "fetch", "-q", "origin", "+refs/heads/main:refs/remotes/origin/main")
    git(work, "checkout", "-q", "--detach", "origin/main")
    spec = work / f"{project}.spec"
    spec.write_text(edit(spec.read_text()))
    git(work, "commit", "-q", "-am", title)
    number, _ = push(g.state, work, f"rpms/{project}", title)
    return number


async def two_approved_edits_of_ceilometer(g: GerritWorld, gate: Gate) -> tuple[int, int]:
    """X and Y, both made on the branch head, approved together: Y is tested merged
    onto X, a merge commit only the gate has."""
    x = upload_spec_edit(
        g, "ceilometer", lambda s: s.replace("%global rel 1\n", "%global rel 2\n"), "X"
    )
    y = upload_spec_edit(
        g,
        "ceilometer",
        lambda s: s.replace("%global relsuffix %{nil}", "%global relsuffix .1"),
        "Y",
    )
    g.approve(x)
    g.approve(y)
    await settle(gate, g)
    return x, y


def grant_build_branch_rights(g: GerritWorld, but: str = "") -> None:
    for permission, force in BUILD_BRANCH_RIGHTS:
        if permission != but:
            g.state.grant("rpmgate", permission, "refs/heads/rpmgate/builds/*", force=force)


async def test_a_gerrit_change_that_merges_is_built_from_the_gates_branch_on_gerrit(
    knob_world: World,
    tmp_path: Path,
    aiohttp_server: ServerFactory,
    aiohttp_client: ClientFactory,
) -> None:
    """A change that is not a fast-forward: its tested merge is a commit only the
    gate has; the gate pushes it to its build branch on Gerrit (as its account, over
    HTTP, with the rights Gerrit wants), where kojid fetches it."""
    world = knob_world
    hub = start_hub(tmp_path / "hub", world)
    g = await start_fake(world, aiohttp_server, ALL)
    grant_build_branch_rights(g)
    prefix = serve_gerrit_to_kojid(hub, g, world)
    doc = gerrit_koji_doc(world, hub, g)
    over_http(doc, g)
    async with gate_served(doc, aiohttp_client, [g], ["review"]) as (gate, _):
        x, y = await two_approved_edits_of_ceilometer(g, gate)

        assert results(gate) == {"merged": ["X", "Y"]}
        [*_, final] = final_rows(gate, "ceilometer")
        assert final.nvr == "ceilometer-8.0.0-2.1"
        remote = world.remote("ceilometer")
        # Y's final build is the gate's merge of Y onto X, fetched by kojid from the
        # connection's URL
        revisions = [g.state.changes[n].current.revision for n in (x, y)]
        assert git(remote, "rev-parse", f"{final.commit}^1", f"{final.commit}^2").split() == (
            revisions
        )
        url = f"{prefix}/ceilometer.git#{final.commit}"
        assert scm_builds(hub)[final.nvr] == (url, url)
        # Gerrit submitted both, Y with a merge commit of its own, of the tree Koji built
        assert [g.state.changes[n].status for n in (x, y)] == ["MERGED", "MERGED"]
        head = world.branch_head("ceilometer")
        assert git(remote, "rev-parse", f"{head}^{{tree}}") == git(
            remote, "rev-parse", f"{final.commit}^{{tree}}"
        )
        assert gate.publishers["liberty"].state().nvrs()["ceilometer"] == final.nvr
        # the build branches were created and deleted through Gerrit, which said so
        created, deleted = set(), set()
        for event in g.state.events:
            update = event.get("refUpdate", {})
            if "/rpmgate/" in update.get("refName", ""):
                gone = update["newRev"] == "0" * 40
                (deleted if gone else created).add(update["refName"])
        assert created and created == deleted
        assert all(ref.startswith("refs/heads/rpmgate/builds/") for ref in created)
        assert branches(world, "ceilometer") == ["refs/heads/main"]
        check_invariants(gate, remotes={p: world.remote(p) for p in ALL})
    hub.stop()


@pytest.mark.parametrize(
    ("missing", "refusal"),
    [
        ("create", "prohibited by Gerrit: not permitted: create"),
        ("pushMerge", "you are not allowed to upload merges"),
        ("forgeCommitter", "invalid committer"),
    ],
)
async def test_gerrit_refusing_the_build_branch_fails_the_merge_with_gerrits_reason(
    knob_world: World,
    tmp_path: Path,
    aiohttp_server: ServerFactory,
    aiohttp_client: ClientFactory,
    missing: str,
    refusal: str,
) -> None:
    world = knob_world
    hub = start_hub(tmp_path / "hub", world)
    g = await start_fake(world, aiohttp_server, ALL)
    grant_build_branch_rights(g, but=missing)
    serve_gerrit_to_kojid(hub, g, world)
    doc = gerrit_koji_doc(world, hub, g)
    over_http(doc, g)
    async with gate_served(doc, aiohttp_client, [g], ["review"]) as (gate, _):
        x, y = await two_approved_edits_of_ceilometer(g, gate)

        await gate.plumbing.settle_named("report-")  # the verdicts' events too
        await settle(gate, g)

        # X merges as a fast-forward, its own commit (no branch needed: its review
        # ref makes it fetchable); Y's merge can be on no branch kojid can fetch
        assert results(gate) == {"merged": ["X"], "rejected": ["Y"]}
        failure = failure_of(gate, "Y")
        assert failure.startswith("the tested merge "), failure
        assert "is on no branch the builders can fetch: the repository refused" in failure
        assert refusal in failure, failure
        assert [g.state.changes[n].status for n in (x, y)] == ["MERGED", "NEW"]
        assert branches(world, "ceilometer") == ["refs/heads/main"]
        check_invariants(gate, remotes={p: world.remote(p) for p in ALL})
    hub.stop()


# -- GitLab ---------------------------------------------------------------------------

GITLAB_GIT = "https://gitlab.example.com"


async def test_a_gitlab_merge_request_is_built_in_koji_from_the_connections_scm_url(
    world: World, hub: FakeKoji, aiohttp_client: ClientFactory
) -> None:
    """GitLab's SCM URL is ``git+<git_base>/<path>.git`` when that is https (the gate
    itself clones the projects' ``git:``, the world's bare repositories)."""
    prefix = f"{GITLAB_GIT}/redhat/centos-stream/rpms/"
    hub.hub.builder.scm_roots.clear()
    hub.hub.builder.scm_roots[prefix] = world.remotes
    fetch = ",".join([sys.executable, str(SOURCES_CMD), str(world.lookaside)])
    hub.hub.builder.allowed_scms = f"gitlab.example.com:/redhat/centos-stream/rpms/*:no:{fetch}"
    fake = await FakeGitLab().start()
    try:
        doc = koji_config_doc(world, hub, "scm")
        doc["sources"] = {SOURCE: connection(fake, git_base=GITLAB_GIT)}
        for project, cfg in doc["projects"].items():
            del cfg["scm_url"]
            cfg.update(source=SOURCE, name=path_of(project))
            fake.add_project(path_of(project), world.remote(project), approvals_required=1)
        keys = ("backends", "queues", "projects", "sources")
        async with served(world, aiohttp_client, **{k: doc[k] for k in keys}) as (gate, client):
            for project in world.projects:
                url = str(client.make_url(f"/api/sources/{SOURCE}/webhook"))
                fake.add_hook(path_of(project), url, TOKEN)
            reviewer = fake.add_user("reviewer")
            mr = await open_and_approve(fake, world, "nova", NOVA_1201, "Update", reviewer)
            await gate.wait_idle(180)

            assert results(gate) == {"merged": ["Update"]}
            assert mr.state == "merged"
            [*_, final] = final_rows(gate, "nova")
            assert (final.commit, final.nvr) == (mr.sha, "nova-12.0.1-1")
            url = f"git+{prefix}nova.git#{mr.sha}"
            assert scm_builds(hub)[final.nvr] == (url, url)
            assert gate.publishers["liberty"].state().nvrs()["nova"] == final.nvr
            assert branches(world, "nova") == ["refs/heads/main", "refs/heads/update-nova"]
            check_invariants(gate)
    finally:
        await fake.stop()
