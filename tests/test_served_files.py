"""What the gate serves beside the API: logs a browser shows, dnf .repo files, and the
failure reason a packager reads instead of rpmbuild's "Bad exit status"."""

from __future__ import annotations

import configparser
from typing import Any

from yarl import URL

from gate.builders.srpm import failure_reason
from gate.demo_world import World
from tests.served import ClientFactory, served

#: the tail of a real `rpmbuild --rebuild` whose %build fails (rpm 4.18), as the
#: demo's broken horizon change makes it
BROKEN_BUILD_LOG = """\
Executing(%prep): /bin/sh -e /var/tmp/rpm-tmp.Wq3xHc
+ umask 022
+ cd /build/BUILD
+ exit 0
Executing(%build): /bin/sh -e /var/tmp/rpm-tmp.dvOCnM
+ umask 022
+ cd /build/BUILD
+ echo 'error: setup.py: No module named pbr'
error: setup.py: No module named pbr
+ exit 1
error: Bad exit status from /var/tmp/rpm-tmp.dvOCnM (%build)


RPM build errors:
    Bad exit status from /var/tmp/rpm-tmp.dvOCnM (%build)
"""

MAKE_FAILS_LOG = """\
Executing(%build): /bin/sh -e /var/tmp/rpm-tmp.AAAAAA
+ umask 022
+ make -j4
make: *** No rule to make target 'all'.  Stop.
+ RPM_EC=2
error: Bad exit status from /var/tmp/rpm-tmp.AAAAAA (%build)

RPM build errors:
    Bad exit status from /var/tmp/rpm-tmp.AAAAAA (%build)
"""

SILENT_INSTALL_LOG = """\
Executing(%install): /bin/sh -e /var/tmp/rpm-tmp.BBBBBB
+ umask 022
+ false
error: Bad exit status from /var/tmp/rpm-tmp.BBBBBB (%install)
"""

SPEC_ERROR_LOG = """\
error: line 7: Unknown tag: Lisence: MIT
"""


def test_a_failed_rpmbuild_is_explained_by_its_first_error_line_and_section() -> None:
    assert failure_reason(BROKEN_BUILD_LOG) == (
        "rpmbuild failed in %build: setup.py: No module named pbr"
    )


def test_without_an_error_line_the_failing_sections_last_output_explains_it() -> None:
    assert failure_reason(MAKE_FAILS_LOG) == (
        "rpmbuild failed in %build: make: *** No rule to make target 'all'.  Stop."
    )
    assert failure_reason(SILENT_INSTALL_LOG) == "rpmbuild failed in %install: + false"


def test_a_spec_rpm_cannot_parse_names_its_line_and_no_section() -> None:
    assert failure_reason(SPEC_ERROR_LOG, "rpmbuild -bs") == (
        "rpmbuild -bs failed: line 7: Unknown tag: Lisence: MIT"
    )
    assert failure_reason("") == "rpmbuild failed: no output"
    assert len(failure_reason("error: " + "x" * 10_000)) < 600


def _repo_sections(text: str) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    return {name: dict(parser[name]) for name in parser.sections()}


async def test_dnf_repo_files_for_the_published_and_a_speculative_repository(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with served(world, aiohttp_client, start=False) as (gate, client):
        resp = await client.get("/repos/liberty/liberty.repo")
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
        repo = _repo_sections(await resp.text())["liberty"]
        base = gate.config.base_url
        assert repo["baseurl"] == f"{base}/repos/liberty/current/$basearch/"
        assert repo["enabled"] == "1"

        (gate.state_dir / "speculative" / "7-2").mkdir(parents=True)
        resp = await client.get("/speculative/7-2/rpmgate-7.repo")
        assert resp.status == 200
        repo = _repo_sections(await resp.text())["rpmgate-7"]
        assert repo["baseurl"] == f"{base}/speculative/7-2/$basearch/"

        for path in (
            "/repos/nope/nope.repo",  # no such repository
            "/repos/liberty/other.repo",  # not its name
            "/speculative/7-2/rpmgate-8.repo",  # not its item
            "/speculative/07-2/rpmgate-07.repo",  # not how the gate names it
            "/speculative/7-3/rpmgate-7.repo",  # not on disk
            "/speculative/9999999999999999999-1/rpmgate-9999999999999999999.repo",
        ):
            resp = await client.get(path)
            assert resp.status == 404, path
            assert (await resp.json()) == {"error": "no such file"}


async def test_build_and_job_logs_are_served_as_utf8_text(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with served(world, aiohttp_client) as (_, client):
        resp = await client.get("/api/status")
        recent: list[dict[str, Any]] = (await resp.json())["queues"][0]["recent"]
        urls = [
            url
            for item in recent
            for url in [
                (item["final_build"] or {}).get("log_url"),
                *(job["log_url"] for job in item["jobs"]),
            ]
            if url
        ]
        assert any("/files/builds/local/logs/" in u for u in urls), urls
        assert any("/files/logs/jobs/" in u for u in urls), urls
        for url in urls:
            resp = await client.get(URL(url).path)
            assert resp.status == 200, url
            assert resp.headers["Content-Type"] == "text/plain; charset=utf-8", url
