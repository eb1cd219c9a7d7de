"""The ``rpmgate`` client commands against a served gate: profiles, --wait, watch, reads."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from gate.cli import main
from gate.client import BUILTIN_URL, ClientError, Target, load_profile
from gate.demo_world import World
from tests.conftest import HORIZON_BROKEN, NOVA_1201
from tests.served import ClientFactory, served

TOKEN = "s3cret-token-0123456789"


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``$XDG_CONFIG_HOME`` and no RPMGATE_* variables."""
    home = tmp_path / "config"
    (home / "rpmgate").mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    for name in ("RPMGATE_URL", "RPMGATE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return home


def write_profiles(home: Path, text: str) -> Path:
    path = home / "rpmgate" / "config"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert re.fullmatch(r"rpmgate \S+\n", capsys.readouterr().out)


def test_profiles_flags_and_environment_in_that_order(
    config_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_profiles(
        config_home,
        "[default]\nurl = http://default:8080/\n\n[prod]\nurl = https://gate.example.com\n"
        "token = prod-token\n",
    )
    assert load_profile(None, None, None) == Target("http://default:8080")
    assert load_profile("prod", None, None) == Target("https://gate.example.com", "prod-token")
    assert load_profile("prod", "http://other", "t") == Target("http://other", "t")
    monkeypatch.setenv("RPMGATE_URL", "http://env:1")
    monkeypatch.setenv("RPMGATE_TOKEN", "env-token")
    # the environment overrides [default] ...
    assert load_profile(None, None, None) == Target("http://env:1", "env-token")
    # ... but not a profile asked for by name, nor its token
    assert load_profile("prod", None, None) == Target("https://gate.example.com", "prod-token")
    with pytest.raises(ClientError, match=r"no profile \[staging\] \(profiles: default, prod\)"):
        load_profile("staging", None, None)


def test_no_config_file_means_the_environment_or_localhost(config_home: Path) -> None:
    assert load_profile(None, None, None) == Target(BUILTIN_URL)


def test_a_config_file_others_can_read_with_tokens_is_warned_about(
    config_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_profiles(config_home, "[prod]\nurl = https://gate\ntoken = x\n")
    path.chmod(0o644)
    load_profile("prod", None, None)
    assert f"chmod 600 {path}" in capsys.readouterr().err


async def rpmgate(*argv: str) -> int:
    """Run the command in a thread: the served gate answers on this loop meanwhile."""
    return await asyncio.to_thread(main, list(argv))


@pytest.mark.slow
async def test_write_wait_watch_and_read_commands_against_a_served_gate(
    world: World,
    aiohttp_client: ClientFactory,
    config_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with served(world, aiohttp_client, auth={"api_tokens": [TOKEN]}) as (_, client):
        url = str(client.make_url("")).rstrip("/")
        write_profiles(config_home, f"[test]\nurl = {url}\ntoken = {TOKEN}\n")
        capsys.readouterr()

        # a write waits for its delivery's outcome and prints it
        ref = world.propose("nova", NOVA_1201, "A")
        assert (
            await rpmgate(
                "propose", "nova", ref, "--title", "A", "--approve", "-p", "test", "--wait"
            )
            == 0
        )
        out = capsys.readouterr().out
        change_a = int(re.search(r": processed: change (\d+)", out).group(1))  # type: ignore[union-attr]
        broken = world.propose("horizon", HORIZON_BROKEN, "C")
        assert (
            await rpmgate(
                "propose", "horizon", broken, "--title", "C", "--approve", "-p", "test", "--wait"
            )
            == 0
        )
        change_c = int(re.search(r"change (\d+)", capsys.readouterr().out).group(1))  # type: ignore[union-attr]

        # refused at the door: exit 1, the HTTP answer on stderr
        assert await rpmgate("approve", "999999", "-p", "test") == 1
        assert "HTTP 404" in capsys.readouterr().err
        # a write without the token: 401
        assert await rpmgate("approve", str(change_a), "--url", url) == 1
        assert "HTTP 401" in capsys.readouterr().err

        # the change knows its item; watch follows it to its end
        assert await rpmgate("change", str(change_a), "-p", "test", "--json") == 0
        item_a = json.loads(capsys.readouterr().out)["items"][0]["id"]
        assert await rpmgate("watch", str(item_a), "-p", "test", "--interval", "0.2") == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) >= 2
        assert all(f"item {item_a} nova: " in line for line in lines[:-1])
        assert re.fullmatch(rf"item {item_a} merged: published in generation \d+", lines[-1])

        # refused on the delivery: exit 1, the reason printed
        assert await rpmgate("approve", str(change_a), "-p", "test", "--wait") == 1
        refused = capsys.readouterr().out.strip()
        assert refused.endswith(f"(change.approved): refused: change {change_a} is merged already")

        assert await rpmgate("change", str(change_c), "-p", "test", "--json") == 0
        item_c = json.loads(capsys.readouterr().out)["items"][0]["id"]
        assert await rpmgate("watch", str(item_c), "-p", "test", "--interval", "0.2") == 1
        last = capsys.readouterr().out.splitlines()[-1]
        assert last.startswith(f"item {item_c} rejected: rpmbuild failed in %build: ")

        # the reads, as text
        assert await rpmgate("item", str(item_c), "-p", "test") == 0
        out = capsys.readouterr().out
        assert f"item {item_c} horizon (gate)" in out
        assert "log http" in out and "rejected: rpmbuild failed in %build" in out
        # the tail of the failed build's log, under the first-error reason
        shown = out.splitlines()
        at = shown.index("  last lines of the scratch build log:")
        assert "    | error: setup.py: No module named pbr" in shown[at + 1 :]
        assert await rpmgate("item", str(item_c), "-p", "test", "--json") == 0
        doc_c = json.loads(capsys.readouterr().out)
        tail = doc_c["log_tail"]
        assert tail["label"] == "scratch build"
        assert tail["log_url"] == doc_c["build"]["log_url"] and "/files/" in tail["log_url"]
        assert 0 < len(tail["lines"]) <= 20
        assert "error: setup.py: No module named pbr" in tail["lines"]
        assert await rpmgate("change", str(change_a), "-p", "test") == 0
        assert f"change {change_a} nova (merged): A" in capsys.readouterr().out
        assert await rpmgate("repo", "liberty", "-p", "test") == 0
        assert re.match(r"repo liberty at generation \d+ ", capsys.readouterr().out)
        assert await rpmgate("delivery", "1", "-p", "test") == 0
        assert capsys.readouterr().out.startswith("delivery 1 (")
        assert await rpmgate("status", "-p", "test") == 0
        status = capsys.readouterr().out
        assert "recent:" in status
        assert re.search(rf"item {item_a}\s+nova\s+merged gen \d+\s+A", status)
        assert re.search(rf"item {item_c}\s+horizon\s+rejected\s+C", status)
