"""``rpmgate demo --source gerrit``: the classic case, with the changes on a (fake) Gerrit.

The demo world's bare repositories become projects ``rpms/<name>`` of the fake
Gerrit that rpmgate's own tests use (``tests/fakegerrit``: the REST API,
uploads to ``refs/for/main``, votes, submit into the bare repositories, and
the webhooks plugin posting every event to the gate).  A packager uploads
each change, a core reviewer gives Code-Review +2 and Workflow +1, and the
demo prints what appears on Gerrit: the gate's comments, its Verified votes,
and the submits.  The fake lives in the source tree, so this demo runs from a
clone (``./dev demo --source gerrit``), not from an installed wheel.
"""

from __future__ import annotations

import importlib
import logging
import secrets
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from gate.demo_world import PackageSpec, World, git

#: where the fake Gerrit lives: the checkout this package runs from
CHECKOUT = Path(__file__).resolve().parent.parent


def gerrit_name(project: str) -> str:
    return f"rpms/{project}"


class GerritDemo:
    """A fake Gerrit serving ``world``'s projects on a loopback port."""

    def __init__(self, world: World, port: int, out: Any = None) -> None:
        self.world = world
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.out = out or sys.stdout  # the stdout of now, not of import time
        self.token = secrets.token_urlsafe(32)
        self._runner: web.AppRunner | None = None
        self.changes: dict[str, int] = {}

    @staticmethod
    def available() -> bool:
        return (CHECKOUT / "tests" / "fakegerrit" / "server.py").is_file()

    async def start(self) -> None:
        # every event the fake posts is an accepted delivery: not news in a demo
        logging.getLogger("gate.sources.webhooks").setLevel(logging.WARNING)
        if str(CHECKOUT) not in sys.path:
            sys.path.insert(0, str(CHECKOUT))
        fakes = importlib.import_module("tests.fakegerrit")
        state_module = importlib.import_module("tests.fakegerrit.state")
        server_module = importlib.import_module("tests.fakegerrit.server")
        self._push = fakes.push
        self._password = fakes.BOT_PASSWORD
        self.state = state_module.GerritState(self.url)
        fakes.accounts(self.state)
        for project in self.world.projects:
            self.state.add_project(gerrit_name(project), self.world.remote(project))
        self.state.listeners.append(self._show)
        self.fake = server_module.FakeGerrit(self.state)
        self._runner = web.AppRunner(self.fake.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def source(self, gate_url: str) -> dict[str, Any]:
        """The ``sources.gerrit`` entry, and the webhooks plugin pointed at the gate."""
        self.fake.webhooks.append(f"{gate_url}/api/sources/gerrit/events/{self.token}")
        self.fake.start_webhooks()
        return {
            "type": "gerrit",
            "url": self.url,
            "user": "rpmgate",
            "password": self._password,
            "webhook": {"token": self.token},
        }

    def use_gerrit(self, doc: dict[str, Any]) -> None:
        for project in self.world.projects:
            doc["projects"][project].update(source="gerrit", name=gerrit_name(project))

    def change_url(self, project: str, number: int) -> str:
        return f"{self.url}/c/{gerrit_name(project)}/+/{number}"

    def propose(self, label: str, project: str, spec: PackageSpec, title: str) -> int:
        """A packager uploads ``spec``; a core reviewer approves it.  The change number."""
        work = self.world.workdir(project)
        git(work, "fetch", "-q", "origin", "+refs/heads/main:refs/remotes/origin/main")
        git(work, "checkout", "-q", "--detach", "origin/main")
        self.world._write(project, spec)
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", title)
        number, _ = self._push(self.state, work, gerrit_name(project), f"{label}: {title}")
        self.changes[label] = number
        print(
            f"{label}: {project} {spec.version} uploaded: {self.change_url(project, number)}",
            file=self.out,
        )
        self.state.vote(number, "core", **{"Code-Review": 2, "Workflow": 1})
        return int(number)

    async def delivered(self) -> None:
        await self.fake.delivered()

    def _show(self, event: dict[str, Any]) -> None:
        """Print what a packager sees appear on Gerrit: the gate's votes, comments, submits."""
        change = event.get("change") or {}
        where = f"gerrit change {change.get('number')} ({change.get('project')})"
        if (
            event.get("type") == "comment-added"
            and (event.get("author") or {}).get("username") == "rpmgate"
        ):
            text = str(event.get("comment") or "").replace("\n\n", " | ").replace("\n", " ")
            print(f"          {where}: rpmgate says: {text[:160]}", file=self.out, flush=True)
        elif event.get("type") == "change-merged":
            print(
                f"          {where}: submitted, branch at {str(event.get('newRev'))[:12]}",
                file=self.out,
                flush=True,
            )

    def summary(self) -> list[str]:
        lines = []
        for label, number in sorted(self.changes.items()):
            change = self.state.changes[number]
            votes = ", ".join(
                f"Verified{value:+d} on patch set {ps}"
                for (ps, name, _), value in sorted(change.votes.items())
                if name == "Verified"
            )
            lines.append(
                f"  {label} gerrit change {number}: {change.status}, {votes or 'no Verified vote'}"
            )
        return lines

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
