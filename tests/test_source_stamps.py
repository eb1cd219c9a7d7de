"""Source stamps: every generation records, for every package, the project and commit its
published build came from; the API serves it and ``rpmgate repo diff`` compares two.

Real git, real rpmbuild, the gate's own HTTP app (tests/served.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from gate.demo_world import World
from gate.web.generations import GenerationDoc
from tests.conftest import CEILO_801, NOVA_1201
from tests.served import ClientFactory, served
from tests.test_cli import rpmgate, write_profiles

pytestmark = pytest.mark.slow


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "config"
    (home / "rpmgate").mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    for name in ("RPMGATE_URL", "RPMGATE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return home


async def _generation(client: Any, number: int) -> dict[str, Any]:
    response = await client.get(f"/api/repos/liberty/generations/{number}")
    assert response.status == 200, await response.text()
    doc: dict[str, Any] = await response.json()
    GenerationDoc.model_validate(doc)
    return doc


async def test_generations_record_the_whole_source_stamp_and_repo_diff_compares_two(
    world: World,
    aiohttp_client: ClientFactory,
    config_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with served(world, aiohttp_client) as (gate, client):
        url = str(client.make_url("")).rstrip("/")
        write_profiles(config_home, f"[test]\nurl = {url}\n")
        publisher = gate.publishers["liberty"]
        before = publisher.current()
        assert before is not None
        first = await _generation(client, before.number)
        heads = {p: world.branch_head(p) for p in world.config()["projects"]}
        # after the bootstrap, every package's build came from its project's head
        assert {e["project"]: e["commit"] for e in first["source_stamp"]} == heads
        assert first["current"] is True

        for project, spec, title in (("nova", NOVA_1201, "A"), ("ceilometer", CEILO_801, "B")):
            ref = world.propose(project, spec, title)
            assert await rpmgate("propose", project, ref, "--approve", "-p", "test", "--wait") == 0
        await gate.wait_idle(180)
        after = publisher.current()
        assert after is not None and after.number >= before.number + 2
        last = await _generation(client, after.number)
        stamp = {e["project"]: e for e in last["source_stamp"]}
        # the whole stamp, not only the producing change: every project is there
        assert set(stamp) == set(heads)
        for project in heads:
            assert stamp[project]["commit"] == world.branch_head(project), project
        assert stamp["nova"]["nvr"] == "nova-12.0.1-1"
        unchanged = {p for p in heads if p not in ("nova", "ceilometer")}
        assert unchanged and all(stamp[p]["commit"] == heads[p] for p in unchanged)

        # the OpenAPI document describes it
        spec = await (await client.get("/api/openapi.json")).json()
        assert "/api/repos/{name}/generations/{number}" in spec["paths"]
        assert "GenerationDoc" in spec["components"]["schemas"]
        for bad in ("0", "x", "-1", "99999999999999999999", str(after.number + 1)):
            response = await client.get(f"/api/repos/liberty/generations/{bad}")
            assert response.status == 404, bad
            assert "error" in await response.json()
        assert (await client.get("/api/repos/nope/generations/1")).status == 404

        capsys.readouterr()
        argv = ("repo", "diff", "liberty", str(before.number), str(after.number), "-p", "test")
        assert await rpmgate(*argv) == 0
        out = capsys.readouterr().out
        assert re.match(
            rf"repo liberty: generation {before.number} -> {after.number}, 2 project\(s\) changed",
            out,
        )
        for project in ("nova", "ceilometer"):
            old, new = heads[project][:12], world.branch_head(project)[:12]
            assert f"  {project} {old}..{new}\n" in out, out
        assert "    nova: nova-12.0.0-1 -> nova-12.0.1-1" in out
        assert "horizon" not in out
        # with one repository, its name may be left out
        assert (
            await rpmgate("repo", "diff", str(before.number), str(after.number), "-p", "test") == 0
        )
        assert capsys.readouterr().out == out
        assert await rpmgate("repo", "diff", "1", "x", "-p", "test") == 1
        assert "not a generation number" in capsys.readouterr().err


async def test_a_repository_named_diff_or_show_is_shown_with_repo_show(
    world: World,
    aiohttp_client: ClientFactory,
    config_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``rpmgate repo show NAME`` shows any repository, ``repo diff [NAME] A B`` compares
    two generations, and ``repo NAME`` stays the short form of ``repo show NAME`` for every
    name but the two actions: ``repo diff`` alone is a usage error, not repository diff."""
    doc = world.config()
    doc["publishers"] = {"diff": doc["publishers"]["liberty"]}
    doc["queues"]["liberty"]["repo"] = "diff"
    async with served(world, aiohttp_client, **doc) as (gate, client):
        url = str(client.make_url("")).rstrip("/")
        write_profiles(config_home, f"[test]\nurl = {url}\n")
        current = gate.publishers["diff"].current()
        assert current is not None
        capsys.readouterr()

        assert await rpmgate("repo", "show", "diff", "-p", "test") == 0
        shown = capsys.readouterr().out
        assert re.match(rf"repo diff at generation {current.number} ", shown)
        assert await rpmgate("repo", "show", "diff", "-p", "test", "--json") == 0
        assert '"name": "diff"' in capsys.readouterr().out

        n = str(current.number)
        assert await rpmgate("repo", "diff", "diff", n, n, "-p", "test") == 0
        compared = capsys.readouterr().out
        assert compared.startswith(f"repo diff: generation {n} -> {n}, 0 project(s) changed")
        assert await rpmgate("repo", "diff", n, n, "-p", "test") == 0  # the only repository
        assert capsys.readouterr().out == compared

        # the actions alone are no repository's name: usage, exit 1
        for argv in (("repo", "diff"), ("repo", "show"), ("repo", "show", "a", "b")):
            assert await rpmgate(*argv, "-p", "test") == 1, argv
            assert "usage: rpmgate repo show NAME" in capsys.readouterr().err
        # the short form: any other name; an unknown one is the gate's 404
        assert await rpmgate("repo", "nope", "-p", "test") == 1
        assert "HTTP 404" in capsys.readouterr().err
