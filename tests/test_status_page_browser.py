"""The status page in a real browser (Debian's chromium driven by Playwright) against the
real daemon (``rpmgate run``: real git, rpmbuild, createrepo_c, SQLite).

One daemon for the module; the tests run in order, each moving the gate on.  A job
that waits for a file (``tests.test_web_api.held_queue``) keeps items in the queue
for as long as a test looks at them.  Screenshots go to ``test-artifacts/status-page/``
(``RPMGATE_TEST_ARTIFACTS`` elsewhere).  Without chromium (``/usr/bin/chromium``, or
``RPMGATE_CHROMIUM``) the tests skip; ``./dev setup`` installs it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, Page, expect, sync_playwright

from gate.demo_world import PackageSpec, World
from tests.conftest import CEILO_801, HORIZON_BROKEN, NOVA_1201
from tests.daemon import Daemon, free_port
from tests.test_web_api import held_queue, release

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("RPMGATE_CHROMIUM", "/usr/bin/chromium"))
WAIT = 90_000  # ms: a change through rpmbuild, jobs and createrepo_c on a busy machine
NOVA_1202 = PackageSpec("nova", "12.0.2", lookaside=True)
CEILO_802 = PackageSpec("ceilometer", "8.0.2", requires=("nova >= 12.0.1",))
HOSTILE = '"><script>alert(1)</script><img src=x onerror="alert(2)">'

if not CHROMIUM.exists():
    pytest.skip(
        f"chromium is not installed ({CHROMIUM}; ./dev setup installs it)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def artifacts() -> Path:
    root = Path(
        os.environ.get("RPMGATE_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts")
    )
    out = root / "status-page"
    out.mkdir(parents=True, exist_ok=True)
    return out


class Gate:
    """The daemon, its world and the hold directory of its held job."""

    def __init__(self, daemon: Daemon, world: World, hold: Path) -> None:
        self.daemon, self.world, self.hold = daemon, world, hold
        self.base = daemon.base

    def propose(self, project: str, spec: PackageSpec, title: str) -> int:
        """Propose and approve a change; its item's id once the gate enqueued it."""
        ref = self.world.propose(project, spec, title)
        status, _ = self.daemon.post(
            "/api/changes", {"project": project, "ref": ref, "title": title, "approve": True}
        )
        assert status == 202
        deadline = time.time() + 60
        while time.time() < deadline:
            for item in self.daemon.get("/api/status")["queues"][0]["items"]:
                if (item["change"] or {}).get("title") == title:
                    return int(item["id"])
            time.sleep(0.1)
        raise AssertionError(f"{title} was not enqueued")

    def release(self, what: int | str) -> None:
        release(self.hold, what)

    def wait_idle(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while self.daemon.busy():
            assert time.time() < deadline, "the gate did not finish"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    root = tmp_path_factory.mktemp("page")
    world = World(root / "world").create()
    hold = root / "hold"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    doc = world.config(
        listen={"host": "127.0.0.1", "port": port},
        public_url=base,
        queues=held_queue(world, hold),
    )
    config_path = root / "rpmgate.yaml"
    config_path.write_text(yaml.safe_dump(doc))
    daemon = Daemon(config_path, base, root / "daemon.log")
    daemon.start()
    try:
        deadline = time.time() + 120
        while not daemon.get("/api/repos/liberty")["current"] or daemon.busy():
            assert time.time() < deadline, "bootstrap did not finish"
            time.sleep(0.2)
        yield Gate(daemon, world, hold)
    finally:
        release(hold, "all")
        daemon.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        # Debian's chromium: Playwright never downloads a browser here
        chromium = p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()


def card(page: Page, title: str) -> Any:
    return page.locator("li.item", has_text=title)


def result_row(page: Page, title: str) -> Any:
    return page.locator("tr.result", has_text=title)


def test_the_page_shows_the_queue_and_follows_it_live(
    gate: Gate, page: Page, artifacts: Path
) -> None:
    page.goto(gate.base + "/")
    expect(page.locator("#live")).to_have_text("live", timeout=10_000)
    expect(page.locator("section.queue h2")).to_contain_text("liberty")
    page.evaluate("window.stillTheSamePage = true")  # gone if the page were reloaded

    a = gate.propose("nova", NOVA_1201, "A: nova 12.0.1")
    b = gate.propose("ceilometer", CEILO_801, "B: ceilometer 8.0.1")
    # both appear without a reload, B behind A and tested on top of it
    expect(card(page, "A: nova 12.0.1")).to_be_visible(timeout=WAIT)
    expect(card(page, "B: ceilometer 8.0.1")).to_contain_text(
        f"tested with generation 1 + item {a}", timeout=WAIT
    )
    assert page.locator("li.item").nth(0).get_attribute("data-item") == str(a)
    gate.release(b)  # B's jobs pass; A's wait: B waits for the tip
    b_card = card(page, "B: ceilometer 8.0.1")
    expect(b_card.locator(".why")).to_have_text(
        "waiting for the tip: 1 item ahead must be through first", timeout=WAIT
    )
    expect(b_card.locator(".seg.passed")).to_have_count(4)  # merge, build, two jobs
    # the local backend built it for one arch (the demo's packages are noarch)
    expect(b_card.locator('.seg.passed[title^="scratch build noarch:"]')).to_have_count(1)
    expect(b_card.locator(".eta")).to_be_visible()  # a time, or "no estimate"
    expect(card(page, "A: nova 12.0.1").locator(".seg.running")).to_have_count(1)
    page.screenshot(path=artifacts / "live-queue.png", full_page=True)

    gate.release(a)
    for title in ("A: nova 12.0.1", "B: ceilometer 8.0.1"):
        expect(result_row(page, title).locator(".state")).to_have_text("merged", timeout=WAIT)
    expect(result_row(page, "A: nova 12.0.1")).to_contain_text("generation 2")
    expect(result_row(page, "B: ceilometer 8.0.1")).to_contain_text("generation 3")
    expect(page.locator("li.item")).to_have_count(0)
    assert page.evaluate("window.stillTheSamePage") is True
    assert int(page.locator("body").get_attribute("data-refreshes") or 0) > 0
    page.screenshot(path=artifacts / "after-merge.png", full_page=True)


def test_eta_and_why_waiting_once_the_steps_have_history(
    gate: Gate, page: Page, artifacts: Path
) -> None:
    e = gate.propose("nova", NOVA_1202, "E: nova 12.0.2")
    f = gate.propose("ceilometer", CEILO_802, "F: ceilometer 8.0.2")
    page.goto(gate.base + "/")
    gate.release(f)
    f_card = card(page, "F: ceilometer 8.0.2")
    expect(f_card.locator(".why")).to_contain_text("waiting for the tip", timeout=WAIT)
    # every step of E has run successfully before (A and B): it has an estimate
    eta = card(page, "E: nova 12.0.2").locator(".eta")
    expect(eta).to_have_text(re.compile(r"^ETA \d+(s|m \d\ds|h \d\dm)$"))
    expect(f_card.locator(".eta")).to_contain_text("ETA ")
    expect(card(page, "E: nova 12.0.2").locator(".elapsed")).to_have_text(
        re.compile(r"^\d+s|\d+m \d\ds$")
    )
    page.screenshot(path=artifacts / "eta.png", full_page=True)
    gate.release(e)
    expect(result_row(page, "F: ceilometer 8.0.2").locator(".state")).to_have_text(
        "merged", timeout=WAIT
    )


def test_the_filter_finds_a_change_with_and_without_javascript(
    gate: Gate, page: Page, browser: Browser
) -> None:
    page.goto(gate.base + "/")
    page.fill("#q", "ceilometer")
    page.wait_for_url("**/?q=ceilometer", timeout=10_000)
    rows = page.locator("tr.result")
    expect(rows).to_have_count(3, timeout=10_000)  # the bootstrap, B and F
    for text in rows.all_inner_texts():
        assert "ceilometer" in text
    # by NVR, typed in the form and sent without JavaScript: the server filters
    context = browser.new_context(java_script_enabled=False)
    try:
        tab = context.new_page()
        tab.goto(gate.base + "/")
        expect(tab.locator("#live")).to_have_text("snapshot")
        tab.fill("#q", "nova-12.0.2")
        tab.press("#q", "Enter")
        tab.wait_for_url("**/?q=nova-12.0.2")
        expect(tab.locator("tr.result")).to_have_count(1)
        expect(tab.locator("tr.result")).to_contain_text("E: nova 12.0.2")
        # by change id
        change = gate.daemon.get("/api/status")["queues"][0]["recent"][0]["change"]
        tab.goto(f"{gate.base}/?q=%23{change['id']}")
        expect(tab.locator("tr.result")).to_have_count(1)
        expect(tab.locator("tr.result")).to_contain_text(change["title"])
        tab.goto(f"{gate.base}/?q=no-such-package")
        expect(tab.locator("section.queue")).to_contain_text("No recent results match.")
    finally:
        context.close()


def test_a_rejected_item_shows_why_and_links_to_its_log(
    gate: Gate, page: Page, artifacts: Path
) -> None:
    page.goto(gate.base + "/")
    gate.propose("horizon", HORIZON_BROKEN, "C: horizon 9.0.1")
    row = result_row(page, "C: horizon 9.0.1")
    expect(row.locator(".state")).to_have_text("rejected", timeout=WAIT)
    expect(row).to_contain_text("rpmbuild failed in %build: setup.py: No module named pbr")
    # the tail of the build log, folded under the reason; it opens without a script
    tail = row.locator("details.tail")
    expect(tail.locator("summary")).to_contain_text("of the scratch build log")
    tail.locator("summary").click()
    expect(tail.locator("pre")).to_be_visible()
    expect(tail.locator("pre")).to_contain_text("error: setup.py: No module named pbr")
    page.screenshot(path=artifacts / "rejected.png", full_page=True)
    with page.expect_navigation():
        row.get_by_role("link", name="scratch build log").click()
    response = page.context.request.get(page.url)
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    expect(page.locator("body")).to_contain_text("error: setup.py: No module named pbr")
    page.screenshot(path=artifacts / "rejected-log.png")


def test_the_repository_page_lists_generations_and_diffs_two(
    gate: Gate, page: Page, artifacts: Path
) -> None:
    page.goto(gate.base + "/")
    page.get_by_role("link", name="liberty").last.click()
    expect(page).to_have_url(f"{gate.base}/repositories/liberty")
    rows = page.locator("table.generations tbody tr")
    expect(rows).to_have_count(5)  # the bootstrap, A, B, E, F
    expect(rows.first).to_contain_text("5 (current)")
    expect(rows.first).to_contain_text("F: ceilometer 8.0.2")
    # the latest against the one before it, then any two
    expect(page.locator(".diff-result")).to_contain_text("ceilometer-8.0.1-1 → ceilometer-8.0.2-1")
    page.select_option("select[name=from]", "1")
    page.select_option("select[name=to]", "5")
    page.get_by_role("button", name="Compare").click()
    expect(page).to_have_url(f"{gate.base}/repositories/liberty?from=1&to=5")
    diff = page.locator(".diff-result")
    expect(diff).to_contain_text("nova-12.0.0-1 → nova-12.0.2-1")
    expect(diff).to_contain_text("ceilometer-8.0.0-1 → ceilometer-8.0.2-1")
    expect(diff).not_to_contain_text("horizon")  # C was rejected: horizon did not change
    page.screenshot(path=artifacts / "repository.png", full_page=True)
    assert page.goto(f"{gate.base}/repositories/nowhere").status == 404  # type: ignore[union-attr]


def test_hostile_titles_are_shown_as_text_and_run_nothing(
    gate: Gate, page: Page, browser: Browser, artifacts: Path
) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(gate.base + "/")
    item = gate.propose(
        "horizon", PackageSpec("horizon", "9.0.3", requires=("python-django-compat",)), HOSTILE
    )
    title = page.locator(f"#item-{item} .title")
    expect(title).to_have_text(HOSTILE, timeout=WAIT)
    assert page.locator("main script, main img").count() == 0
    # the same on a phone: readable, nothing wider than the screen
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        tab = phone.new_page()
        tab.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        tab.goto(gate.base + "/")
        expect(tab.locator(f"#item-{item} .title")).to_have_text(HOSTILE)
        width = tab.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width}px wide on a 390px screen"
        tab.screenshot(path=artifacts / "phone.png")
    finally:
        phone.close()
    gate.release(item)
    expect(result_row(page, HOSTILE).locator(".state")).to_have_text("merged", timeout=WAIT)
    assert dialogs == []
