"""The status page's pieces on plain documents: steps, why an item waits, ETAs, the
filter, escaping of hostile input, the diff of two generations.  (The page in a real
browser against a real daemon: tests/test_status_page_browser.py.)"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from gate.demo_world import World
from gate.model import ItemState
from gate.web.eta import Durations, duration_text, estimate_queue
from gate.web.page import matches, safe_href
from gate.web.progress import segments, speculative_base, why_waiting
from repo_state.state import Artifact, BuildEntry, RepoState
from repo_state.state_diff import diff_states
from tests.conftest import NOVA_1201
from tests.served import ClientFactory, served

NOW = 1_800_000_000.0


def iso(seconds_ago: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(NOW - seconds_ago, UTC).isoformat()


def item(
    id: int,
    state: str,
    project: str = "nova",
    ahead: tuple[int, ...] | None = (),
    **more: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": id,
        "queue": "liberty",
        "kind": "gate",
        "state": state,
        "position": 0,
        "change": {"id": id + 100, "project": project, "title": f"change {id}", "review": None},
        "base": None if ahead is None else {"generation": 3, "ahead": list(ahead)},
        "merge": {"state": "none"},
        "build": None,
        "final_build": None,
        "jobs": [],
        "tip": {"step": "none", "state": "none"},
        "failure": None,
        "enqueued_at": iso(60),
    }
    doc.update(more)
    return doc


# -- the progress bar -----------------------------------------------------------------------
def test_a_gate_item_shows_each_step_in_order_with_its_state() -> None:
    doc = item(
        1,
        ItemState.TESTING,
        merge={"state": "passed"},
        build={"state": "passed", "nvr": "nova-12.0.1-1"},
        jobs=[{"name": "repoclosure", "state": "running"}],
    )
    bar = [(s.label, s.state) for s in segments(doc, ["repoclosure", "smoke"])]
    assert bar == [
        ("speculative merge", "passed"),
        ("scratch build", "passed"),
        ("job repoclosure", "running"),
        ("job smoke", "none"),
        ("final build", "none"),
        ("merge", "none"),
        ("publish", "none"),
    ]


def test_a_job_is_one_step_per_arch_and_build_and_a_failed_run_shows_failed() -> None:
    """The last run of a name used to decide the job's step: aarch64's failure showed as
    passed when x86_64's run came after it.  Each run is a step now; its last try decides."""

    def run(name: str, arch: str, state: str, build: str = "", try_number: int = 1) -> Any:
        return {
            "name": name,
            "arch": arch,
            "build": build,
            "state": state,
            "try_number": try_number,
        }

    two_arches = item(
        1,
        ItemState.FAILING,
        jobs=[
            run("install", "aarch64", "failed"),
            run("install", "x86_64", "passed"),
            run("smoke", "x86_64", "failed", try_number=1),
            run("smoke", "x86_64", "running", try_number=2),  # a retry: running again
        ],
    )
    bar = [(s.label, s.state) for s in segments(two_arches, ["install", "smoke", "later"])]
    assert [b for b in bar if b[0].startswith("job ")] == [
        ("job install aarch64", "failed"),
        ("job install x86_64", "passed"),
        ("job smoke x86_64", "running"),
        ("job later", "none"),
    ]
    # several named builds: each build's run is a step of its own (one arch: not named)
    two_builds = item(
        2,
        ItemState.FAILING,
        jobs=[
            run("install", "x86_64", "failed", "el10"),
            run("install", "x86_64", "passed", "el9"),
        ],
    )
    assert [(s.label, s.state) for s in segments(two_builds, ["install"]) if "job" in s.label] == [
        ("job install el10", "failed"),
        ("job install el9", "passed"),
    ]


def test_at_the_tip_the_steps_before_the_current_one_passed() -> None:
    doc = item(1, ItemState.PUBLISHING, tip={"step": "publish", "state": "failed"})
    states = {s.label: s.state for s in segments(doc, [])}
    assert states["final build"] == "passed" and states["merge"] == "passed"
    assert states["publish"] == "failed"


def test_a_post_item_has_no_speculative_merge_nor_scratch_build() -> None:
    doc = item(1, ItemState.FINAL_BUILD, kind="post", tip={"step": "final_build", "state": "none"})
    assert [s.label for s in segments(doc, ["repoclosure"])] == [
        "final build",
        "job repoclosure",
        "publish",
    ]
    assert segments(doc, [])[0].state == "running"


def test_the_scratch_build_is_one_step_per_arch_where_the_backend_knows_them() -> None:
    def shown(build: dict[str, Any] | None, backends: dict[str, Any]) -> list[tuple[str, str]]:
        bar = segments(item(1, ItemState.BUILDING, build=build), [], backends)
        return [(s.label, s.state) for s in bar if s.label.startswith("scratch build")]

    # Koji, running: its task's buildArch children as the watcher saw them (task ids are
    # strings once the document went through JSON); other children are not arches
    koji = {
        "koji": {
            "tasks": {
                "7": {
                    "state": "OPEN",
                    "children": {
                        "buildArch x86_64": "CLOSED",
                        "buildArch aarch64": "OPEN",
                        "buildArch ppc64le": "FAILED",
                        "tagBuild noarch": "FREE",
                    },
                }
            }
        }
    }
    running = {"state": "running", "backend": "koji", "task": "7", "arches": []}
    assert shown(running, koji) == [
        ("scratch build aarch64", "running"),
        ("scratch build ppc64le", "failed"),
        ("scratch build x86_64", "passed"),
    ]
    # no child yet (the SRPM is being built), or a backend that does not say: one step
    assert shown({**running, "task": "8"}, koji) == [("scratch build", "running")]
    assert shown({**running, "backend": "local", "task": "8"}, {}) == [("scratch build", "running")]
    # passed: the arches its RPMs are for, whatever the backend
    passed = {"state": "passed", "backend": "local", "task": "9", "arches": ["noarch"]}
    assert shown(passed, {}) == [("scratch build noarch", "passed")]
    # failed, or not started: one step
    assert shown({**passed, "state": "failed", "arches": []}, {}) == [("scratch build", "failed")]
    assert shown(None, koji) == [("scratch build", "none")]


# -- why it waits ---------------------------------------------------------------------------
def test_why_an_item_waits() -> None:
    head = item(1, ItemState.TESTING)
    passed = item(2, ItemState.PASSED, ahead=(1,), build={"state": "passed"})
    head_building = {**head, "state": ItemState.BUILDING, "build": {"state": "running"}}
    built = item(3, ItemState.BUILT, ahead=(1, 2), build={"state": "passed"})
    queue = {1: head_building, 2: passed, 3: built}
    assert why_waiting(head, 0, queue) == ""  # working, not waiting
    assert why_waiting(passed, 1, queue) == (
        "waiting for the tip: 1 item ahead must be through first"
    )
    assert why_waiting({**passed, "base": {"generation": 3, "ahead": []}}, 0, {}) == (
        "passed; waiting for the tip to start"
    )
    assert why_waiting(built, 2, queue) == "waiting for the builds ahead: item 1 (nova)"
    # a draft final build done ahead of the tip waits for the tip as a passed item does
    drafted = {**passed, "state": ItemState.DRAFT_BUILT}
    assert why_waiting(drafted, 1, queue) == why_waiting(passed, 1, queue)
    assert why_waiting({**drafted, "state": ItemState.DRAFT_BUILD}, 1, queue) == ""  # building
    outside = item(4, ItemState.OUTSIDE_WINDOW, ahead=None)
    assert "outside the window (2 items are tested at once)" in why_waiting(outside, 3, queue, 2)
    retry = item(5, ItemState.PUBLISH_RETRY, failure="createrepo_c: disk full")
    assert why_waiting(retry, 0, {}) == (
        "merged in git, publishing is retried: createrepo_c: disk full"
    )


def test_an_item_tested_with_a_failing_item_ahead_is_told_it_will_be_reset() -> None:
    failing = item(1, ItemState.FAILING, "horizon", failure="rpmbuild failed in %build")
    behind = item(2, ItemState.TESTING, "python-django", ahead=(1,))
    queue = {1: failing, 2: behind}
    assert why_waiting(behind, 1, queue) == (
        "an item ahead, item 1 (horizon), is failing: this item will be reset and "
        "re-tested without it"
    )
    # once reset onto a base without it, there is nothing to wait for
    reset = item(2, ItemState.TESTING, "python-django", ahead=())
    assert why_waiting(reset, 1, queue) == ""
    # the failing item itself: rejected at the head, or once the items ahead are through
    assert (
        why_waiting(failing, 0, queue) == "failing: rpmbuild failed in %build; it leaves the queue"
    )
    assert "once the items ahead are through" in why_waiting(failing, 3, queue)


def test_the_base_names_the_generation_and_the_items_ahead() -> None:
    assert speculative_base(item(3, ItemState.TESTING, ahead=(1, 2))) == "generation 3 + items 1, 2"
    assert speculative_base(item(3, ItemState.TESTING, ahead=())) == "generation 3"
    assert speculative_base(item(3, ItemState.OUTSIDE_WINDOW, ahead=None)) == "not yet tested"


# -- ETA ------------------------------------------------------------------------------------
HISTORY = Durations.of(
    [
        ("merge", "nova", 2.0),
        ("scratch", "nova", 30.0),
        ("scratch", "nova", 40.0),  # median 35
        ("job", "repoclosure", 10.0),
        ("final", "nova", 50.0),
        ("tip", "nova", 5.0),
        ("scratch", "ceilometer", 20.0),
    ]
)


def test_eta_adds_the_medians_of_the_steps_left_and_waits_for_the_item_ahead() -> None:
    fresh = item(1, ItemState.MERGING, ahead=())
    # 2 merge + 35 build + 10 job + 50 final + 5 merge and publish
    assert estimate_queue([fresh], HISTORY, ["repoclosure"], 20, NOW) == {1: 102.0}
    building = item(
        1,
        ItemState.BUILDING,
        ahead=(),
        merge={"state": "passed"},
        build={"state": "running", "created_at": iso(20)},
    )
    # 15 s of the build left, then 10 + 50 + 5
    assert estimate_queue([building], HISTORY, ["repoclosure"], 20, NOW) == {1: 80.0}
    # ceilometer behind: its own build (2 + 20) ends before nova's (at 15 s): its
    # job starts at 15 s and ends at 25, then it waits for nova to be through (80),
    # then its final build: ceilometer has none on record, any project's median stands in
    behind = item(2, ItemState.MERGING, "ceilometer", ahead=(1,))
    assert estimate_queue([building, behind], HISTORY, ["repoclosure"], 20, NOW) == {
        1: 80.0,
        2: 80.0 + 50 + 5,
    }


def test_a_job_run_on_two_arches_is_through_when_its_slowest_run_is() -> None:
    """The x86_64 run passed, the aarch64 run of the same job started 4 s ago: the job
    is not done (10 s median: 6 s left), whichever run the document lists last."""
    built = {"merge": {"state": "passed"}, "build": {"state": "passed", "created_at": iso(50)}}
    x86 = {"name": "repoclosure", "arch": "x86_64", "state": "passed", "try_number": 1}
    arm = {"name": "repoclosure", "arch": "aarch64", "state": "running", "try_number": 1}
    arm["started_at"] = iso(4)
    for jobs in ([arm, x86], [x86, arm]):
        testing = item(1, ItemState.TESTING, ahead=(), jobs=jobs, **built)
        # 6 s of the aarch64 run left, then 50 final + 5 merge and publish
        assert estimate_queue([testing], HISTORY, ["repoclosure"], 20, NOW) == {1: 61.0}


def test_no_estimate_without_history_nor_for_a_failing_item() -> None:
    fresh = item(1, ItemState.MERGING, ahead=())
    assert estimate_queue([fresh], Durations(), ["repoclosure"], 20, NOW) == {1: None}
    no_job_history = Durations.of([(s, k, t) for (s, k), t in HISTORY.by_key.items()])
    assert estimate_queue([fresh], no_job_history, ["smoke"], 20, NOW) == {1: None}
    failing = item(1, ItemState.FAILING, ahead=())
    behind = item(2, ItemState.MERGING, ahead=(1,))
    etas = estimate_queue([failing, behind], HISTORY, ["repoclosure"], 20, NOW)
    assert etas == {1: None, 2: 102.0}  # the item behind: reset, as if it came first


def test_an_item_outside_the_window_starts_when_the_item_a_window_ahead_is_through() -> None:
    first = item(1, ItemState.MERGING, ahead=())
    waiting = item(2, ItemState.OUTSIDE_WINDOW, ahead=None)
    etas = estimate_queue([first, waiting], HISTORY, ["repoclosure"], 1, NOW)
    assert etas == {1: 102.0, 2: 204.0}


def test_durations_read_as_people_say_them() -> None:
    assert [duration_text(s) for s in (4.4, 59.6, 200, 7300)] == [
        "4s",
        "1m 00s",
        "3m 20s",
        "2h 01m",
    ]


# -- the filter -----------------------------------------------------------------------------
def test_the_filter_finds_a_change_by_project_id_owner_or_nvr() -> None:
    doc = item(
        7,
        ItemState.TESTING,
        build={"state": "passed", "nvr": "nova-12.0.1-1"},
        change={
            "id": 42,
            "project": "nova",
            "title": "Update to 12.0.1",
            "owner": "alice",
            "review": "1234",
            "sha": "0123456789abcdef",
        },
    )
    for query in ("nova", "NOVA", "42", "#42", "7", "1234", "alice", "nova-12.0.1", "0123456"):
        assert matches(doc, query), query
    for query in ("horizon", "43", "bob", "nova-12.0.2", "012345", "nova bob"):
        assert not matches(doc, query), query
    assert matches(doc, "nova alice")


def test_only_web_and_same_site_urls_become_links() -> None:
    assert safe_href("https://review.example.org/c/1") == "https://review.example.org/c/1"
    assert safe_href("/api/changes/1") == "/api/changes/1"
    for bad in ("javascript:alert(1)", "JaVaScRiPt:x", "data:text/html,x", "//evil.example", ""):
        assert safe_href(bad) is None, bad
    assert safe_href("https://x.example/\r\nSet-Cookie: a") is None
    assert safe_href(None) is None


# -- flaky jobs -----------------------------------------------------------------------------
def _bare_page() -> Any:
    """A page over no runtime: only what render_queue reads (the queue's job names),
    and no database (no step durations: no ETA)."""
    from gate.web.page import Page

    class FakeRuntime:
        class config:
            queues: dict[str, Any] = {}

    page = Page(FakeRuntime(), lambda: (b"{}", ""))  # type: ignore[arg-type]
    page._durations_at = float("inf")
    return page


def test_the_page_shows_flaky_passes_on_their_items_and_the_queues_flaky_jobs() -> None:
    from gate.web.page import render_queue

    note = "install-test (el9, x86_64): flaky: passed on try 2 of 3"
    queue = {
        "name": "liberty",
        "repo": "liberty",
        "window": 20,
        "generation": 4,
        "items": [item(1, ItemState.TESTING, flaky=[note])],
        "recent": [{**item(2, ItemState.PASSED, flaky=[note]), "result": "merged"}],
        "held_back": [],
        "flaky_jobs": [
            {
                "job": "install-test",
                "runs": 10,
                "flaky": 3,
                "rate": 0.3,
                "threshold": 0.2,
                "summary": "install-test: 3 of its last 10 runs passed only on a retry "
                "(30%, more than 20%)",
            }
        ],
    }
    html = render_queue(queue, _bare_page(), "")
    start = html.index('id="item-1"')
    card = html[start : html.index("</div></li>", start)]
    assert f"<li>{note}</li>" in card
    recent = html[html.index('<tr class="result merged" data-item="2">') :]
    assert f"<li>{note}</li>" in recent
    assert (
        '<div class="flaky-jobs"><h3>Flaky jobs</h3><ul class="flaky">'
        '<li data-job="install-test">install-test: 3 of its last 10 runs passed only on a '
        "retry (30%, more than 20%)</li></ul></div>"
    ) in html
    # nothing flaky: nothing said
    calm = render_queue({**queue, "flaky_jobs": [], "items": [], "recent": []}, _bare_page(), "")
    assert "flaky" not in calm


def test_a_failed_item_shows_the_tail_of_its_failed_log_under_the_reason() -> None:
    from gate.web.page import render_queue

    tail = {
        "label": "scratch build",
        "log_url": "/files/logs/build-7.log",
        "lines": ["+ python3 setup.py build", "error: setup.py: No module named pbr"],
    }
    reason = "rpmbuild failed in %build: setup.py: No module named pbr"
    failing = item(1, ItemState.FAILING, failure=reason, log_tail=tail)
    queue = {
        "name": "liberty",
        "repo": "liberty",
        "window": 20,
        "generation": 4,
        "items": [failing],
        "recent": [
            {**item(2, ItemState.FAILING, failure=reason, log_tail=tail), "result": "rejected"}
        ],
        "held_back": [],
    }
    html = render_queue(queue, _bare_page(), "")
    shown = (
        '<details class="tail" data-tail="{}"{}>'
        "<summary>last 2 lines of the scratch build log</summary>"
        "<pre>+ python3 setup.py build\nerror: setup.py: No module named pbr</pre>"
        '<p class="links"><a href="/files/logs/build-7.log">the whole log</a></p></details>'
    )
    # on the queued item: open, after the reason; in the recent results: folded
    start = html.index('id="item-1"')
    card = html[start : html.index("</div></li>", start)]
    assert card.index(reason) < card.index(shown.format(1, " open"))
    recent = html[html.index('data-item="2"') :]
    assert shown.format(2, "") in recent
    # no tail (nothing failed, or a Koji log): nothing shown
    quiet = render_queue(
        {**queue, "items": [item(3, ItemState.TESTING)], "recent": []}, _bare_page(), ""
    )
    assert "<details" not in quiet


# -- hostile input --------------------------------------------------------------------------
class _Scripts(HTMLParser):
    """Elements and attributes that would run script, as a browser parses the page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "img", "iframe", "svg") and not (
            tag == "script" and dict(attrs).get("src") == "/assets/page.js"
        ):
            self.found.append(tag)
        for name, value in attrs:
            if name.startswith("on") or (value or "").strip().lower().startswith("javascript:"):
                self.found.append(f"{tag}[{name}={value}]")


HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


def test_every_value_from_a_change_is_escaped_in_the_page() -> None:
    from gate.web.page import Page, render_queue

    class FakeRuntime:  # only what render_queue reads: the queue's job names
        class config:
            queues: dict[str, Any] = {}

    page = Page(FakeRuntime(), lambda: (b"{}", ""))  # type: ignore[arg-type]
    page._durations_at = float("inf")  # no database: no history
    hostile = item(
        1,
        ItemState.FAILING,
        HOSTILE,
        failure=HOSTILE,
        change={
            "id": 1,
            "project": HOSTILE,
            "title": HOSTILE,
            "owner": HOSTILE,
            "review": HOSTILE,
            "url": "javascript:alert(3)",
        },
        jobs=[{"name": HOSTILE, "state": "failed", "log_url": "javascript:alert(4)"}],
        speculative_repo='http://x.example/"onmouseover="alert(5)',
        flaky=[HOSTILE],
        log_tail={"label": HOSTILE, "log_url": "javascript:alert(6)", "lines": [HOSTILE]},
    )
    queue = {
        "name": HOSTILE,
        "repo": HOSTILE,
        "window": 20,
        "generation": 1,
        "items": [hostile],
        "recent": [{**hostile, "result": "rejected"}],
        "held_back": [{"item": 1, "project": HOSTILE, "git_and_repository": HOSTILE}],
        "flaky_jobs": [{"job": HOSTILE, "summary": HOSTILE}],
    }
    html = render_queue(queue, page, "")
    parser = _Scripts()
    parser.feed(html)
    assert parser.found == []
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "javascript:" not in html.replace("javascript:alert(3)", "")  # not in an href
    assert not re.search(r'href="javascript', html, re.I)
    # the speculative repo URL is a web URL: linked, its quote escaped
    assert 'href="http://x.example/&quot;onmouseover=&quot;alert(5)"' in html


# -- generations ----------------------------------------------------------------------------
def _entry(name: str, version: str, checksum: str) -> BuildEntry:
    nvr = f"{name}-{version}-1"
    artifact = Artifact(
        name=name,
        epoch=0,
        version=version,
        release="1",
        arch="noarch",
        sourcerpm=f"{nvr}.src.rpm",
        checksum=checksum,
    )
    return BuildEntry(source_name=name, nvr=nvr, artifacts=(artifact,))


def test_the_diff_of_two_generations_names_builds_and_packages() -> None:
    old = RepoState(
        {
            "nova": _entry("nova", "12.0.0", "a"),
            "horizon": _entry("horizon", "9.0.0", "b"),
            "keystone": _entry("keystone", "8.0.0", "k"),
        }
    )
    new = RepoState(
        {
            "nova": _entry("nova", "12.0.1", "c"),
            "keystone": _entry("keystone", "8.0.0", "k2"),  # rebuilt, same NVR
            "ceilometer": _entry("ceilometer", "8.0.1", "d"),
        }
    )
    diff = diff_states(old, new)
    assert diff.added == {"ceilometer": "ceilometer-8.0.1-1"}
    assert diff.removed == {"horizon": "horizon-9.0.0-1"}
    assert diff.changed == {
        "nova": ("nova-12.0.0-1", "nova-12.0.1-1"),
        "keystone": ("keystone-8.0.0-1", "keystone-8.0.0-1"),
    }
    assert diff.packages_added == ["ceilometer-0:8.0.1-1.noarch", "nova-0:12.0.1-1.noarch"]
    assert diff.packages_removed == ["horizon-0:9.0.0-1.noarch", "nova-0:12.0.0-1.noarch"]
    assert diff_states(new, new).empty


@pytest.mark.parametrize("seconds", [0.0, 0.4])
def test_zero_seconds_reads_0s(seconds: float) -> None:
    assert duration_text(seconds) == "0s"


def test_items_behind_a_failing_item_are_estimated_as_if_it_were_gone() -> None:
    first = item(1, ItemState.TESTING, merge={"state": "passed"}, build={"state": "passed"})
    first["jobs"] = [{"name": "repoclosure", "state": "running", "started_at": iso(5)}]
    broken = item(2, ItemState.FAILING, "horizon", ahead=(1,))
    # tested with the failing item: reset, so every step of it starts again
    behind = item(3, ItemState.TESTING, ahead=(1, 2), merge={"state": "passed"})
    behind["build"] = {"state": "passed"}
    etas = estimate_queue([first, broken, behind], HISTORY, ["repoclosure"], 20, NOW)
    # first: 5 s of its job left, 50 final, 5 tip; behind: after first (60 s), its
    # final and tip (its own merge 2 + build 35 + job 10 end before)
    assert etas == {1: 60.0, 2: None, 3: 60.0 + 55}
    # a job failed already: it is as good as failing, even while another still runs
    failed_job = {**first, "jobs": [{"name": "repoclosure", "state": "failed"}]}
    assert estimate_queue([failed_job], HISTORY, ["repoclosure"], 20, NOW) == {1: None}


# -- the routes, on a gate that has not started ---------------------------------------------
async def test_odd_queries_and_names_answer_a_page_or_404_never_a_500(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with served(world, aiohttp_client, start=False) as (_, client):
        for path in (
            "/",
            "/?q=",
            "/?q=" + quote(HOSTILE),
            "/?q=" + "x" * 5000,
            "/?q=%00%ff",
            "/?q=%23",
            "/queues/liberty?q=nova",
            "/repositories/liberty?from=abc&to=-1",
            "/repositories/liberty?from=99999999999999999999&to=1",
        ):
            resp = await client.get(path)
            assert resp.status == 200, path
            assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
            text = await resp.text()
            assert "<script>alert" not in text and "Find my change" in text
        for path in ("/queues/nowhere", "/queues/" + quote(HOSTILE, safe=""), "/repositories/x"):
            resp = await client.get(path)
            assert resp.status == 404, path
            assert "<script>alert" not in await resp.text()
        css = await client.get("/assets/page.css")
        js = await client.get("/assets/page.js")
        assert css.status == js.status == 200
        assert "EventSource" in await js.text()
        assert (await client.get("/assets/../app.py")).status in (403, 404)


# -- rpmgate demo --------------------------------------------------------------------------
@pytest.mark.slow
def test_demo_prints_the_page_url_and_keeps_running_until_interrupted(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gate.cli", "demo", "--keep-running", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen = []
        url = None
        for line in proc.stdout:
            seen.append(line)
            if "the daemon stays up: open" in line:
                url = line.split("open ", 1)[1].split()[0]
                break
        assert url is not None, "".join(seen)
        printed = next(line for line in seen if "status page at" in line)
        assert url in printed  # the URL was given at the start too
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
            html = resp.read().decode()
        assert "Recent results" in html and "rejected" in html and "merged" in html
        # the summary: each change's outcome, C and D each for its own reason
        text = "".join(seen)
        assert "  C rejected  rpmbuild failed in %build: setup.py: No module named pbr\n" in text
        assert (
            "  D rejected  repoclosure: 1 unresolved dependency: horizon-9.0.0-1.noarch "
            "requires python-django-compat\n"
        ) in text
        assert "outcome: as expected (A, B merged in order; C, D rejected, each for" in text
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
        assert proc.returncode == 0, rest
        assert "stopping the daemon" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
async def test_a_change_is_found_by_its_owner_the_token_that_proposed_it(
    world: World, aiohttp_client: ClientFactory
) -> None:
    alice = {"name": "alice", "token": "alice-token-0123456789"}
    async with served(world, aiohttp_client, auth={"api_tokens": [alice]}) as (gate, client):
        ref = world.propose("nova", NOVA_1201, "Update to 12.0.1")
        resp = await client.post(
            "/api/changes",
            json={"project": "nova", "ref": ref, "title": "Update to 12.0.1", "approve": True},
            headers={"Authorization": f"Bearer {alice['token']}"},
        )
        assert resp.status == 202
        await gate.wait_idle(120)
        status = await (await client.get("/api/status")).json()
        change = status["queues"][0]["recent"][0]["change"]
        assert change["title"] == "Update to 12.0.1" and change["owner"] == "alice"
        mine = await (await client.get("/?q=alice")).text()
        assert "Update to 12.0.1" in mine and 'class="owner">by alice<' in mine
        others = await (await client.get("/?q=bob")).text()
        assert "Update to 12.0.1" not in others


def test_the_window_counts_gate_items_and_an_item_outside_it_keeps_its_old_base() -> None:
    post = item(9, ItemState.FINAL_BUILD, kind="post", tip={"step": "none", "state": "none"})
    first = item(1, ItemState.MERGING, ahead=())
    # outside the window although it has a base from before (the window shrank)
    waiting = item(2, ItemState.OUTSIDE_WINDOW, ahead=(1,), merge={"state": "passed"})
    etas = estimate_queue([post, first, waiting], HISTORY, ["repoclosure"], 1, NOW)
    # post: 50 final + 10 job + 5 publish = 65; first: 102 from now, after post (65)
    # only its tip waits: done at max(47, 65) + 55 = 120; waiting: from 120, all of it
    assert etas == {9: 65.0, 1: 120.0, 2: 120.0 + 102}
