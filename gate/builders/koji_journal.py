"""The Koji backend's own record of what it submitted, written before it matters.

One JSON file per (purpose, key).  The *intent* (source, target, upload
directory) is written before the SRPM is uploaded and the ``build`` call is
made; the task id is written as soon as the hub returns it, before
:meth:`KojiBackend.submit` returns.  After ``kill -9`` the intent is what lets
``recover`` find a task whose id never reached the disk (by the task's source
in ``listTasks``), and the task id is what keeps a second ``submit`` of the
same key from building twice.  Writes are atomic (temporary file, fsync,
rename, fsync of the directory).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from repo_state.durable import write_atomically

_SAFE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


@dataclass
class Submission:
    """One build the backend set out to submit."""

    purpose: str
    key: str
    project: str
    target: str
    #: what ``build()`` is given: ``<upload_dir>/<srpm>`` or an SCM URL
    source: str
    scratch: bool
    commit: str
    tree: str
    #: when the intent was recorded (bounds the ``listTasks`` search)
    intent_at: float
    #: the upload directory (SRPM builds); None for SCM builds
    upload_dir: str | None = None
    nvr: str | None = None
    task_id: int | None = None
    #: a final build found complete or building on the hub and taken over
    adopted: bool = False
    #: task ids of earlier attempts (canceled or failed) for the same purpose and key
    previous: list[int] = field(default_factory=list)
    #: a draft build (``build(..., {'draft': True})``); None in journals written before
    #: the field: then the purpose says it
    draft: bool | None = None

    def __post_init__(self) -> None:
        if self.draft is None:
            self.draft = self.purpose == "draft"

    def matches(self, src: str, target: str, scratch: bool, draft: bool = False) -> bool:
        """Is a task with this ``build`` request the one this intent submitted?

        A draft and a final build of one commit from SCM have the same source
        and target and are both non-scratch: only the request's ``draft`` option
        tells them apart (kojihub ``build()`` keeps ``opts`` in the task request).
        """
        if target != self.target or scratch != self.scratch or draft != self.draft:
            return False
        if self.upload_dir is not None:
            return os.path.dirname(src) == self.upload_dir
        return src == self.source


class SubmissionJournal:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, purpose: str, key: str) -> Path:
        name = key if _SAFE.match(key) else hashlib.sha256(key.encode()).hexdigest()
        return self.root / f"{purpose}-{name}.json"

    def load(self, purpose: str, key: str) -> Submission | None:
        try:
            data = json.loads(self.path(purpose, key).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return Submission(**data)

    def save(self, record: Submission) -> None:
        text = json.dumps(asdict(record), indent=2, sort_keys=True) + "\n"
        write_atomically(self.path(record.purpose, record.key), text)

    def forget_task(self, task_id: int) -> int:
        """Make ``task_id`` an earlier attempt in every record naming it (a task whose
        outcome the hub can no longer report): the next ``submit`` of that key
        builds anew instead of taking the task over.  Returns how many records."""
        changed = 0
        for path in sorted(self.root.glob("*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("task_id") != task_id:
                continue
            record = Submission(**data)
            record.previous = [*record.previous, task_id]
            record.task_id, record.nvr, record.adopted = None, None, False
            self.save(record)
            changed += 1
        return changed
