"""The tail of the log that failed an item: its last lines, shown on the item.

The item's ``failure`` is the first error line (``gate.builders.srpm.failure_reason``
for rpmbuild, a job's summary); the tail is the context around it, read from
the end of the failed build's or job run's log as the gate wrote it under
``state_dir`` (a Koji build's log is a link to the hub: no tail, the link
stays).  Bounded: at most :data:`TAIL_LINES` lines from the last
:data:`TAIL_BYTES` bytes, each line cut at :data:`LINE_CHARS`, control
characters dropped; the page escapes it like any other value.

A failed row's log is complete (its outcome is recorded after its log is
closed), so the tail is a function of the rows it was read for, as the
status document's item cache assumes (``gate.web.status.ItemDocs``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gate.item_builds import Member
from gate.reporting import file_url
from gate.runtime import Runtime
from repo_state.models import BuildRow, JobRunRow

#: lines of a tail at most
TAIL_LINES = 20
#: bytes read from the end of a log at most (so a tail is never larger)
TAIL_BYTES = 4096
#: characters of one line at most (a compiler command line is not cut into the rest)
LINE_CHARS = 300
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def read_tail(path: Path, lines: int = TAIL_LINES, max_bytes: int = TAIL_BYTES) -> list[str]:
    """The last ``lines`` non-blank-ended lines of ``path`` within its last ``max_bytes``;
    [] when it cannot be read."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            start = max(0, end - max_bytes)
            f.seek(start)
            text = f.read(max_bytes).decode("utf-8", errors="replace")
    except OSError:
        return []
    found = text.splitlines()
    if start > 0 and len(found) > 1:
        found = found[1:]  # cut in the middle of a line
    while found and not found[-1].strip():
        found.pop()
    return [_clean(line) for line in found[-lines:]] if lines > 0 else []


def _clean(line: str) -> str:
    line = _CONTROL.sub("", line.replace("\t", "    "))
    return line if len(line) <= LINE_CHARS else line[: LINE_CHARS - 1] + "…"


def local_log(state_dir: Path, path: str) -> Path | None:
    """``path`` if it is a file the gate wrote under ``state_dir`` (what ``/files/``
    serves), else None (a URL, another directory, ``..``)."""
    if not path or path.startswith(("http://", "https://")):
        return None
    root = state_dir.resolve()
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError):
        return None
    return resolved if resolved.is_relative_to(root) and resolved.is_file() else None


def _member_label(purpose: str, member: Member, members: Sequence[Member]) -> str:
    """``scratch build``, ``final build (el10)``, ``scratch build of foo-doc (el10)``."""
    build_name, package = member
    builds = len({m[0] for m in members}) > 1
    packages = len({m[1] for m in members}) > 1
    label = f"{purpose} build" + (f" of {package}" if packages else "")
    return label + (f" ({build_name})" if builds else "")


def _job_label(row: JobRunRow) -> str:
    where = ", ".join(w for w in (row.build, row.arch) if w)
    return f"job {row.name}" + (f" ({where})" if where else "")


def failed_logs(
    builds: Iterable[tuple[str, BuildRow | None]], jobs: Sequence[JobRunRow]
) -> list[tuple[str, str]]:
    """(label, log path) of what failed, in the order to look at: the failed builds,
    then the job runs whose last try failed (a retried try, an interrupted or a
    cancelled run failed nothing)."""
    out = [(label, b.log) for label, b in builds if b is not None and b.state == "failed"]
    for row in jobs:
        if (
            row.state == "failed"
            and row.try_number >= row.tries
            and not row.summary.startswith("interrupted")
        ):
            out.append((_job_label(row), row.log_path))
    return out


def item_builds(
    scratch: BuildRow | None,
    final: BuildRow | None,
    sets: Mapping[str, Mapping[Member, tuple[BuildRow, bool]]],
) -> list[tuple[str, BuildRow | None]]:
    """The item's builds with their labels: each member of its build sets where it has
    several (named builds, packages: ``gate.item_builds``), else its own two."""
    members = list(dict.fromkeys(m for by_member in sets.values() for m in by_member))
    drafts = [b for b, _ in (sets.get("draft") or {}).values()]
    if len(members) < 2:  # (a draft is the final build, made before the tip)
        return [("scratch build", scratch), ("final build", final)] + [
            ("final build", d) for d in drafts
        ]
    return [
        (_member_label("scratch" if purpose == "scratch" else "final", member, members), build)
        for purpose in ("scratch", "draft", "final")
        for member, (build, _) in (sets.get(purpose) or {}).items()
    ]


def failure_log(
    rt: Runtime,
    failure: str | None,
    builds: Iterable[tuple[str, BuildRow | None]],
    jobs: Sequence[JobRunRow],
) -> dict[str, Any] | None:
    """The item document's ``log_tail`` (``LogTail``): the last lines of the first log of
    what failed it, or None (no failure, or nothing failed with a log the gate keeps)."""
    if not failure:
        return None
    for label, path in failed_logs(builds, jobs):
        local = local_log(rt.state_dir, path)
        lines = read_tail(local) if local is not None else []
        if lines:
            return {
                "label": label,
                "log_url": file_url(rt.state_dir, rt.config.base_url, path),
                "lines": lines,
            }
    return None
