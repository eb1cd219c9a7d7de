"""Who may approve a pull request by command: a user with commit access.

Pagure's own rule for merging (``pagure/utils.py`` ``is_repo_committer``): the
project's main admin (``owner``), a user listed as ``admin`` or ``commit``, or
a member of a group listed as ``admin`` or ``commit``.  ``collaborator`` access
is limited to some branches and ``ticket`` is no commit access at all: neither
approves.  Pagure's ``EXTERNAL_COMMITTER`` (Fedora's provenpackager) does not
show in the API: name such groups in ``approval.extra_groups``.

The check is made when a command comes in (the intake, which may await the
API), and its answer is stored with the delivery, so parsing stays a pure
function of what was stored and a restart does not ask again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from gate.faults import is_transient
from gate.sources.pagure.client import PagureClient, PagureError

log = logging.getLogger(__name__)

#: access levels that carry commit rights (pagure/lib/model.py Project.access_users)
USER_LEVELS = ("owner", "admin", "commit")
#: seconds the check may take: it runs while Pagure waits for the web-hook's answer
CHECK_TIMEOUT = 20.0
GROUP_LEVELS = ("admin", "commit")


@dataclass(frozen=True)
class Authority:
    user: str
    may_approve: bool
    why: str

    def as_json(self) -> dict[str, Any]:
        return {"user": self.user, "may_approve": self.may_approve, "why": self.why}


def _names(access: Any, level: str) -> list[str]:
    if not isinstance(access, dict):
        return []
    names = access.get(level)
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


async def check(
    client: PagureClient, project: str, user: str, extra_groups: tuple[str, ...] = ()
) -> Authority:
    """Whether ``user`` has commit access to ``project`` now, asked of the API.

    Never raises: a fault is an answer (``may_approve`` False, ``why`` says what
    failed, so the packager can be told to try again)."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            return await _check(client, project, user, extra_groups)
    except PagureError as exc:
        return Authority(user, False, f"could not check commit access: {exc.message or exc.code}")
    except Exception as exc:
        if not is_transient(exc):
            log.exception("checking %s's commit access to %s", user, project)
        return Authority(user, False, f"could not check commit access ({type(exc).__name__})")


async def _check(
    client: PagureClient, project: str, user: str, extra_groups: tuple[str, ...]
) -> Authority:
    doc = await client.project(project)
    users = doc.get("access_users")
    for level in USER_LEVELS:
        if user in _names(users, level):
            return Authority(user, True, f"{level} of {project}")
    groups = [
        (level, group)
        for level in GROUP_LEVELS
        for group in _names(doc.get("access_groups"), level)
    ]
    groups += [("extra", group) for group in extra_groups]
    for level, group in groups:
        try:
            members = await client.group_members(group)
        except PagureError as exc:
            if exc.status == 404:  # ENOGROUP: a group that is gone grants nothing
                continue
            raise
        if user in members:
            what = "member of" if level == "extra" else f"member of {level} group"
            return Authority(user, True, f"{what} {group}")
    return Authority(user, False, f"{user} has no commit access to {project}")
