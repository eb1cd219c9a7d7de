"""``rpmgate watch`` of a change or a review, shell completion and the man page."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gate.cli import build_parser, main
from gate.client import ClientError, Watched, watch_change, watched
from gate.demo_world import World
from gate.manpage import render, subcommands
from tests.conftest import HORIZON_BROKEN, NOVA_1201
from tests.served import ClientFactory, served
from tests.test_cli import config_home, rpmgate, write_profiles  # noqa: F401  (a fixture)
from tests.test_web_api import propose

RPMGATE = Path(sys.executable).with_name("rpmgate")


def test_watch_targets_are_items_changes_or_reviews() -> None:
    assert watched("12") == watched("item:12") == Watched("item", "12")
    assert watched("change:5") == Watched("change", "5")
    assert watched("https://review.example.com/c/nova/+/123/") == Watched(
        "review", "https://review.example.com/c/nova/+/123"
    )
    assert watched("review:nova!7") == Watched("review", "nova!7")
    for bad in ("", "change:x", "-1", "item:", "nova"):
        with pytest.raises(ClientError, match="give an item id"):
            watched(bad)


def _item(item_id: int, state: str, result: str | None = None, attempt: int = 1) -> dict[str, Any]:
    return {
        "id": item_id,
        "state": result or state,
        "attempt": attempt,
        "base": {"generation": 3, "ahead": []},
        "result": result,
        "failure": None,
        "generation": 4 if result == "merged" else None,
        "jobs": [],
        "tip": {"step": "none", "state": "none"},
    }


def _change(change_id: int, url: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": change_id,
        "project": "nova",
        "state": "queued",
        "url": url,
        "review": "123",
        "items": items,
    }


class ScriptedGate:
    """Answers each GET with the next document of a scripted sequence of gate states."""

    def __init__(self, states: list[dict[str, dict[str, Any]]]) -> None:
        self.states, self.polls = states, 0

    def get(self, path: str) -> Any:
        state = self.states[min(self.polls, len(self.states) - 1)]
        if path == "/api/status":
            changes = [c for p, c in state.items() if p.startswith("/api/changes/")]
            return {"queues": [{"items": [{"change": c} for c in changes], "recent": []}]}
        self.polls += 1  # a poll ends with the change's document
        return state[path]


def test_watching_a_review_follows_its_newest_revision_across_resets_and_re_enqueues() -> None:
    url = "https://review.example.com/c/nova/+/123"
    old = _change(5, url, [_item(9, "testing")])
    gate = ScriptedGate(
        [
            {"/api/changes/5": old},
            {"/api/changes/5": {**old, "items": [_item(9, "testing", attempt=2)]}},  # a reset
            # a new revision: a new change row, and its item, in the queue
            {
                "/api/changes/5": {**old, "items": [_item(9, "", "dequeued")]},
                "/api/changes/7": _change(7, url, [_item(11, "building")]),
            },
            {"/api/changes/7": _change(7, url, [_item(11, "", "rejected")])},
            {"/api/changes/7": _change(7, url, [_item(11, "", "rejected"), _item(12, "queued")])},
            {
                "/api/changes/7": _change(
                    7, url, [_item(11, "", "rejected"), _item(12, "", "merged")]
                )
            },
        ]
    )
    lines: list[str] = []
    # a rejected item ends the watch (exit 1), as `rpmgate watch` of it would
    doc = watch_change(gate, watched(url + "/"), lines.append, sleep=lambda _: None)  # type: ignore[arg-type]
    assert doc["id"] == 11 and doc["result"] == "rejected"
    text = [re.sub(r"^\d\d:\d\d:\d\d ", "", line) for line in lines]
    assert text[0].startswith("change 5 item 9 nova: testing; attempt 1 on generation 3")
    assert text[1].startswith("change 5 item 9 nova: testing; attempt 2")
    assert text[2:4] == ["change 7 nova: now item 11", text[3]]
    assert text[3].startswith("change 7 item 11 nova: building")
    assert text[-1] == "item 11 rejected"
    # watched later, after a re-enqueue: the change's current item, to its end
    gate.polls = 4
    lines.clear()
    doc = watch_change(gate, Watched("change", "7"), lines.append, sleep=lambda _: None)  # type: ignore[arg-type]
    assert doc["id"] == 12 and lines[-1] == "item 12 merged: published in generation 4"
    assert "change 7 item 12 nova: queued" in lines[0]


@pytest.mark.slow
async def test_watch_follows_a_change_to_merged_or_rejected_with_exit_0_or_1(
    world: World,
    aiohttp_client: ClientFactory,
    config_home: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with served(world, aiohttp_client) as (_, client):
        url = str(client.make_url("")).rstrip("/")
        write_profiles(config_home, f"[test]\nurl = {url}\n")
        good = await propose(client, world, "nova", NOVA_1201, "A")
        bad = await propose(client, world, "horizon", HORIZON_BROKEN, "C")
        capsys.readouterr()
        for accepted, code, last in (
            (good, 0, "merged: published in generation"),
            (bad, 1, "rejected: rpmbuild failed in %build"),
        ):
            delivery = await (await client.get(f"/api/deliveries/{accepted['delivery']}")).json()
            while delivery["state"] == "pending":
                delivery = await (
                    await client.get(f"/api/deliveries/{accepted['delivery']}")
                ).json()
            change = int(re.search(r"change (\d+)", delivery["result"]).group(1))  # type: ignore[union-attr]
            assert (
                await rpmgate("watch", f"change:{change}", "-p", "test", "--interval", "0.2")
                == code
            )
            lines = capsys.readouterr().out.splitlines()
            assert len(lines) >= 2, lines
            assert all(
                re.match(rf"\d\d:\d\d:\d\d change {change} item \d+ ", ln) for ln in lines[:-1]
            )
            assert last in lines[-1]


def _complete(line: str, env: dict[str, str] | None = None) -> list[str]:
    """What bash offers after ``line``, through the script ``rpmgate completion bash``
    prints, run by bash as a user's shell runs it."""
    script = (
        'eval "$("$RPMGATE" completion bash)"\n'
        'COMP_LINE="$LINE"; COMP_POINT=${#LINE}; read -ra COMP_WORDS <<< "$LINE"\n'
        '[[ "$LINE" == *" " ]] && COMP_WORDS+=("")\n'
        "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
        '_python_argcomplete "$RPMGATE"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    out = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, **(env or {}), "RPMGATE": str(RPMGATE), "LINE": line},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [w.strip() for w in out.stdout.splitlines() if w.strip()]


def test_bash_completes_subcommands_options_and_profile_names(tmp_path: Path) -> None:
    assert _complete(f"{RPMGATE} wa") == ["watch"]
    assert {"check-config", "completion", "man", "status", "watch"} <= set(_complete(f"{RPMGATE} "))
    assert "--interval" in _complete(f"{RPMGATE} watch --")
    (tmp_path / "rpmgate").mkdir()
    (tmp_path / "rpmgate" / "config").write_text("[default]\nurl = x\n[prod]\nurl = y\n")
    offered = _complete(f"{RPMGATE} status -p ", {"XDG_CONFIG_HOME": str(tmp_path)})
    assert sorted(offered) == ["default", "prod"]


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_prints_argcompletes_script_for_the_shell(
    shell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    assert "_python_argcomplete" in script and "rpmgate" in script
    if shutil.which(shell):
        subprocess.run([shell, "-n"], input=script, text=True, check=True)


def test_the_man_page_has_every_subcommand_and_option(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert main(["man"]) == 0
    page = capsys.readouterr().out
    names = list(subcommands(parser))
    assert {"run", "watch", "status", "completion", "man"} <= set(names)
    for name, sub in subcommands(parser).items():
        assert f".SS {name.replace('-', chr(92) + '-')}\n" in page, name
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option.replace("-", "\\-") in page, (name, option)
    assert page == render(parser, page.split('"')[3].split(" ", 1)[1])
    if shutil.which("groff"):
        checked = subprocess.run(
            ["groff", "-man", "-Tutf8", "-ww", "-z"], input=page, text=True, capture_output=True
        )
        assert checked.returncode == 0 and checked.stderr == "", checked.stderr
