"""A fake Gerrit for tests: real bare repositories, the REST API, stream-events, webhooks.

``state`` holds projects, changes and votes and emits Gerrit's events;
``server`` answers the REST API and posts events as the webhooks plugin;
``ssh`` serves ``gerrit stream-events``.  :func:`accounts` and :func:`push`
are the test's hands: the people who upload, review and approve.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.fakegerrit.state import Account, GerritState, git

#: the gate's bot account's HTTP password in tests
BOT_PASSWORD = "bot-http-password"


def accounts(state: GerritState) -> dict[str, Account]:
    """An uploader, a core reviewer who approves, and the gate's bot (Verified, Submit)."""
    made = {
        "packager": Account(1000001, "packager", "Pat Packager", "pat@example.org", "pw1"),
        "core": Account(
            1000002,
            "core",
            "Core Reviewer",
            "core@example.org",
            "pw2",
            may_vote={"Code-Review": (-2, 2), "Workflow": (-1, 1)},
        ),
        "rpmgate": Account(
            1000003,
            "rpmgate",
            "rpmgate",
            "rpmgate@example.org",
            BOT_PASSWORD,
            may_vote={"Verified": (-1, 1)},
            may_submit=True,
            may_stream_events=True,
        ),
    }
    for account in made.values():
        state.add_account(account)
    return made


def new_change_id() -> str:
    return "I" + uuid.uuid4().hex + uuid.uuid4().hex[:8]


def push(
    state: GerritState,
    workdir: Path,
    project: str,
    message: str,
    *,
    change_id: str | None = None,
    branch: str = "main",
    uploader: str = "packager",
) -> tuple[int, int]:
    """``git push origin HEAD:refs/for/<branch>`` of what is committed in ``workdir``'s
    HEAD (amended to carry the Change-Id footer), then Gerrit's receive: (change, patch set)."""
    change_id = change_id or new_change_id()
    git(workdir, "commit", "-q", "--amend", "-m", f"{message}\n\nChange-Id: {change_id}\n")
    git(workdir, "push", "-q", "origin", f"HEAD:refs/for/{branch}")
    created = state.receive(project, state.account(uploader))
    return created[-1]


def commit_file(workdir: Path, name: str, text: str, *, on: str = "origin/main") -> str:
    """A commit on top of ``on`` in a work clone of the project (not pushed yet)."""
    git(workdir, "fetch", "-q", "origin", "+refs/heads/*:refs/remotes/origin/*")
    git(workdir, "checkout", "-q", "--detach", on)
    (workdir / name).write_text(text)
    git(workdir, "add", "-A")
    git(workdir, "commit", "-q", "-m", f"edit {name}")
    return git(workdir, "rev-parse", "HEAD")
