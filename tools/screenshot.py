"""Regenerate docs/status-page.png: the status page of a demo gate caught mid-flight.

    .venv/bin/python tools/screenshot.py [--out docs/status-page.png] [--width 1100]

Builds the demo's world in a temporary directory, runs the real daemon on
127.0.0.1 (local rpmbuild, createrepo_c, SQLite) with a job that waits for a
file, lets nova 12.0.1 through (so the steps have history and ETAs), then
holds ceilometer, a broken horizon, python-django and nova 12.0.2 in the queue
and photographs the page with Debian's chromium through Playwright (never a
downloaded browser).  Needs what ``./dev setup`` installs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright

from gate.config import parse_config
from gate.daemon import Gate
from gate.demo import _free_port
from gate.demo_world import CLASSIC_CHANGES, PackageSpec, World
from gate.web.app import make_app
from gate.web.server import limits_of, serve

CHROMIUM = "/usr/bin/chromium"
HELD = 'until [ -e "$HOLD_DIR/all" ] || [ -e "$HOLD_DIR/$RPMGATE_ITEM" ]; do sleep 0.05; done'


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


async def _items(base: str) -> list[dict[str, Any]]:
    status = await asyncio.to_thread(_get, f"{base}/api/status")
    items: list[dict[str, Any]] = status["queues"][0]["items"]
    return items


async def _until(base: str, title: str, state: str) -> int:
    """The id of the item titled ``title`` once it is in ``state``."""
    for _ in range(3000):
        for item in await _items(base):
            if (item["change"] or {}).get("title") == title and item["state"] == state:
                return int(item["id"])
        await asyncio.sleep(0.1)
    raise SystemExit(f"{title} never reached {state!r}")


async def take(out: Path, width: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="rpmgate-screenshot-"))
    world = World(root / "world").create()
    hold = root / "hold"
    hold.mkdir()
    (hold / "all").touch()  # the bootstrap and the first change go through
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    doc = world.config(listen={"host": "127.0.0.1", "port": port}, public_url=base)
    doc["queues"]["liberty"]["jobs"] = [
        "repoclosure",
        {"name": "smoke", "timeout": 600, "env": {"HOLD_DIR": str(hold)}, "command": HELD},
    ]
    gate = Gate(parse_config(doc))
    served = await serve(make_app(gate.runtime), "127.0.0.1", port, limits_of(gate.config.listen))
    labelled = {label: (project, spec, title) for label, project, spec, title in CLASSIC_CHANGES}
    try:
        await gate.start()
        await gate.wait_idle(600)

        async def propose(project: str, spec: PackageSpec, title: str) -> None:
            ref = world.propose(project, spec, title)
            body = {"project": project, "ref": ref, "title": title, "approve": True}
            await asyncio.to_thread(_post, f"{base}/api/changes", body)

        project, spec, title = labelled["A"]
        await propose(project, spec, f"{title}")
        await gate.wait_idle(600)
        (hold / "all").unlink()  # from here on, each item's job waits to be released
        for label in "BCD":
            project, spec, title = labelled[label]
            await propose(project, spec, title)
        await propose("nova", PackageSpec("nova", "12.0.2", lookaside=True), "Update to 12.0.2")
        await _until(base, labelled["C"][2], "failing")
        nova = await _until(base, "Update to 12.0.2", "testing")
        (hold / str(nova)).touch()
        await _until(base, "Update to 12.0.2", "passed, waiting for the tip")
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM)
            page = await browser.new_page(viewport={"width": width, "height": 900})
            await page.goto(f"{base}/")
            await page.wait_for_selector("#live.on")
            await page.screenshot(path=str(out), full_page=True)
            await browser.close()
        print(f"wrote {out}")
        (hold / "all").touch()
        await gate.wait_idle(600)
    finally:
        (hold / "all").touch()
        await gate.stop()
        await served.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(__file__).resolve().parent.parent / "docs" / "status-page.png"
    parser.add_argument("--out", type=Path, default=default)
    parser.add_argument("--width", type=int, default=1100)
    args = parser.parse_args(argv)
    asyncio.run(take(args.out, args.width))
    return 0


if __name__ == "__main__":
    sys.exit(main())
