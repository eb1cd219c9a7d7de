"""The tail of a failed log shown on its item (gate/web/log_tails.py): bounded, read
only from the gate's own files, of what failed (not of a retried try)."""

from __future__ import annotations

from pathlib import Path

from gate.web.log_tails import (
    LINE_CHARS,
    TAIL_BYTES,
    TAIL_LINES,
    failed_logs,
    item_builds,
    local_log,
    read_tail,
)
from repo_state.models import BuildRow, JobRunRow


def test_the_tail_is_the_last_lines_within_the_last_bytes(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_text("".join(f"line {n}\n" for n in range(1, 101)) + "\n\n")
    assert read_tail(log) == [f"line {n}" for n in range(81, 101)]  # trailing blanks dropped
    assert read_tail(log, lines=3) == ["line 98", "line 99", "line 100"]
    # a long log is read from its end only; the line cut by the window is left out
    log.write_text("x" * 10_000 + "\nerror: Bad exit status\n")
    assert read_tail(log) == ["error: Bad exit status"]
    # one huge last line: cut to LINE_CHARS, never the whole window
    log.write_text("y" * (TAIL_BYTES * 3))
    (only,) = read_tail(log)
    assert len(only) == LINE_CHARS and only.endswith("…")
    # control characters (a terminal's colours) are dropped; invalid UTF-8 replaced
    log.write_bytes(b"\x1b[31merror:\x1b[0m bad \xff byte\n")
    assert read_tail(log) == ["[31merror:[0m bad \ufffd byte"]
    assert len(read_tail(log, lines=TAIL_LINES)) == 1
    assert read_tail(tmp_path / "missing.log") == []


def test_only_the_gates_own_files_are_read(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "logs").mkdir(parents=True)
    own = state / "logs" / "1.log"
    own.write_text("ok\n")
    outside = tmp_path / "secret"
    outside.write_text("no\n")
    (state / "logs" / "link.log").symlink_to(outside)
    assert local_log(state, str(own)) == own.resolve()
    assert local_log(state, str(state / "logs" / ".." / ".." / "secret")) is None
    assert local_log(state, str(state / "logs" / "link.log")) is None
    assert local_log(state, "https://koji.example/work/tasks/1/build.log") is None
    assert local_log(state, "") is None
    assert local_log(state, str(state / "logs")) is None  # a directory


def _run(name: str, state: str, try_number: int = 1, tries: int = 1, **more: str) -> JobRunRow:
    return JobRunRow(
        item_id=1,
        attempt=1,
        name=name,
        state=state,
        try_number=try_number,
        tries=tries,
        log_path=f"/s/{name}-{try_number}.log",
        arch=more.get("arch", "x86_64"),
        build=more.get("build", ""),
        summary=more.get("summary", ""),
    )


def test_the_failed_log_is_a_failed_build_else_a_run_whose_last_try_failed() -> None:
    passed = BuildRow(purpose="scratch", state="passed", log="/s/scratch.log")
    failed = BuildRow(purpose="final", state="failed", log="/s/final.log")
    assert failed_logs(item_builds(passed, failed, {}), []) == [("final build", "/s/final.log")]
    runs = [
        _run("smoke", "failed", 1, 3),  # retried: not what failed the item
        _run("smoke", "passed", 2, 3),
        _run("install", "failed", summary="interrupted; run again"),  # a restart
        _run("install", "failed", arch="aarch64", build="el9"),
        _run("install", "canceled", arch="x86_64", build="el9"),
    ]
    assert failed_logs(item_builds(passed, None, {}), runs) == [
        ("job install (el9, aarch64)", "/s/install-1.log")
    ]
    # several named builds: each is named
    el9 = BuildRow(purpose="scratch", state="passed", log="/s/el9.log")
    el10 = BuildRow(purpose="scratch", state="failed", log="/s/el10.log")
    sets = {"scratch": {("el9", "nova"): (el9, False), ("el10", "nova"): (el10, False)}}
    assert failed_logs(item_builds(el9, None, sets), []) == [
        ("scratch build (el10)", "/s/el10.log")
    ]
