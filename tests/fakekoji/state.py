"""What the fake hub knows: users, sessions, targets, tags, tasks and builds.

Records are shaped like the dicts the real hub returns (``getTaskInfo``,
``getBuild``, ``listRPMs``), with Koji's numeric state codes, so the client
library and our backend read them exactly as they would read a real hub's.
Everything here runs on the hub's event loop thread; tests read it from
their own thread, which is safe for the plain reads they do.
"""

from __future__ import annotations

import itertools
import secrets
import time
import xmlrpc.client
from dataclasses import dataclass, field
from typing import Any

import koji

TASK_OPEN_STATES = (
    koji.TASK_STATES["FREE"],
    koji.TASK_STATES["OPEN"],
    koji.TASK_STATES["ASSIGNED"],
)
TASK_DONE_STATES = (
    koji.TASK_STATES["CLOSED"],
    koji.TASK_STATES["CANCELED"],
    koji.TASK_STATES["FAILED"],
)


def _timestr(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}+00:00"


@dataclass
class User:
    id: int
    name: str
    password: str | None = None
    krb_principal: str | None = None
    perms: set[str] = field(default_factory=set)

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": koji.USER_STATUS["NORMAL"],
            "usertype": koji.USERTYPES["NORMAL"],
            "krb_principals": [self.krb_principal] if self.krb_principal else [],
        }


@dataclass
class Session:
    id: int
    key: str
    user: User
    authtype: int
    #: the last call number the hub processed for this session (sequence check)
    lastcall: int | None = None
    expired: bool = False

    def sinfo(self) -> dict[str, Any]:
        return {"session-id": self.id, "session-key": self.key, "header-auth": True}


@dataclass
class Target:
    id: int
    name: str
    build_tag: str
    dest_tag: str

    def info(self, tags: dict[str, Tag]) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "build_tag": tags[self.build_tag].id,
            "build_tag_name": self.build_tag,
            "dest_tag": tags[self.dest_tag].id,
            "dest_tag_name": self.dest_tag,
        }


@dataclass
class Tag:
    id: int
    name: str
    arches: str = "x86_64"
    extra: dict[str, Any] = field(default_factory=dict)
    #: package names on the tag's package list (non-scratch builds need one)
    packages: set[str] = field(default_factory=set)
    #: build ids tagged here
    builds: set[int] = field(default_factory=set)
    #: permission a user needs to tag into it (None: anyone)
    perm: str | None = None

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "arches": self.arches,
            "extra": dict(self.extra),
            "locked": False,
            "perm": self.perm,
            "perm_id": None,
            "maven_support": False,
            "maven_include_all": False,
        }


@dataclass
class Task:
    id: int
    method: str
    arch: str
    owner: int
    request: list[Any]
    parent: int | None = None
    label: str | None = None
    state: int = koji.TASK_STATES["FREE"]
    #: the return value, or an xmlrpc Fault for a failed task
    result: Any = None
    create_ts: float = field(default_factory=time.time)
    start_ts: float | None = None
    completion_ts: float | None = None
    host_id: int | None = None
    priority: int = 20

    @property
    def done(self) -> bool:
        return self.state in TASK_DONE_STATES

    def info(self, request: bool = False) -> dict[str, Any]:
        info = {
            "id": self.id,
            "state": self.state,
            "create_time": _timestr(self.create_ts),
            "create_ts": self.create_ts,
            "start_time": _timestr(self.start_ts),
            "start_ts": self.start_ts,
            "completion_time": _timestr(self.completion_ts),
            "completion_ts": self.completion_ts,
            "channel_id": 1,
            "host_id": self.host_id,
            "parent": self.parent,
            "label": self.label,
            "waiting": None,
            "awaited": None,
            "owner": self.owner,
            "method": self.method,
            "arch": self.arch,
            "priority": self.priority,
            "weight": 1.0,
        }
        if request:
            info["request"] = list(self.request)
        return info


@dataclass
class Build:
    id: int
    package_id: int
    name: str
    version: str
    release: str
    epoch: int | None
    owner: User
    task_id: int | None
    state: int = koji.BUILD_STATES["BUILDING"]
    source: str | None = None
    extra: dict[str, Any] | None = None
    create_ts: float = field(default_factory=time.time)
    completion_ts: float | None = None
    rpms: list[dict[str, Any]] = field(default_factory=list)

    @property
    def nvr(self) -> str:
        return f"{self.name}-{self.version}-{self.release}"

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "build_id": self.id,
            "package_id": self.package_id,
            "package_name": self.name,
            "name": self.name,
            "version": self.version,
            "release": self.release,
            "epoch": self.epoch,
            "nvr": self.nvr,
            "state": self.state,
            "task_id": self.task_id,
            "owner_id": self.owner.id,
            "owner_name": self.owner.name,
            "volume_id": 0,
            "volume_name": "DEFAULT",
            "source": self.source,
            "extra": self.extra,
            "draft": False,
            "cg_id": None,
            "cg_name": None,
            "creation_event_id": self.id,
            "creation_time": _timestr(self.create_ts),
            "creation_ts": self.create_ts,
            "start_time": _timestr(self.create_ts),
            "start_ts": self.create_ts,
            "completion_time": _timestr(self.completion_ts),
            "completion_ts": self.completion_ts,
        }


class HubState:
    """Every record of the fake hub, with deterministic ids."""

    def __init__(self, first_task_id: int = 1000) -> None:
        self._task_ids = itertools.count(first_task_id)
        self._build_ids = itertools.count(500)
        self._rpm_ids = itertools.count(7000)
        self._session_ids = itertools.count(1)
        self._ids = itertools.count(1)
        self.users: dict[str, User] = {}
        self.sessions: dict[int, Session] = {}
        self.tags: dict[str, Tag] = {}
        self.targets: dict[str, Target] = {}
        self.tasks: dict[int, Task] = {}
        self.builds: dict[int, Build] = {}
        self.packages: dict[str, int] = {}

    # -- setup ----------------------------------------------------------------

    def add_user(
        self,
        name: str,
        password: str | None = None,
        krb_principal: str | None = None,
        perms: set[str] | None = None,
    ) -> User:
        user = User(len(self.users) + 1, name, password, krb_principal, set(perms or ()))
        self.users[name] = user
        return user

    def add_tag(self, name: str, arches: str = "x86_64", **extra: Any) -> Tag:
        tag = Tag(next(self._ids), name, arches, dict(extra))
        self.tags[name] = tag
        return tag

    def add_target(self, name: str, build_tag: str, dest_tag: str) -> Target:
        for tag in (build_tag, dest_tag):
            if tag not in self.tags:
                self.add_tag(tag)
        target = Target(next(self._ids), name, build_tag, dest_tag)
        self.targets[name] = target
        return target

    # -- sessions -------------------------------------------------------------

    def new_session(self, user: User, authtype: int) -> Session:
        session = Session(next(self._session_ids), secrets.token_hex(8), user, authtype)
        self.sessions[session.id] = session
        return session

    def user_by_id(self, user_id: int) -> User | None:
        return next((u for u in self.users.values() if u.id == user_id), None)

    # -- tasks ----------------------------------------------------------------

    def new_task(
        self,
        method: str,
        request: list[Any],
        owner: int,
        arch: str = "noarch",
        parent: int | None = None,
        label: str | None = None,
    ) -> Task:
        task = Task(next(self._task_ids), method, arch, owner, list(request), parent, label)
        self.tasks[task.id] = task
        return task

    def children(self, task_id: int) -> list[Task]:
        return sorted((t for t in self.tasks.values() if t.parent == task_id), key=lambda t: t.id)

    def start(self, task: Task) -> None:
        task.state = koji.TASK_STATES["OPEN"]
        task.start_ts = time.time()
        task.host_id = 1

    def close(self, task: Task, result: Any = None) -> None:
        task.state = koji.TASK_STATES["CLOSED"]
        task.result = result
        task.completion_ts = time.time()

    def fail(self, task: Task, fault: xmlrpc.client.Fault) -> None:
        if task.done:
            return
        task.state = koji.TASK_STATES["FAILED"]
        task.result = fault
        task.completion_ts = time.time()

    def cancel(self, task: Task, recurse: bool = True) -> bool:
        """Koji's Task.cancel: True if canceled (now or before), False if it had finished."""
        if task.state == koji.TASK_STATES["CANCELED"]:
            return True
        if task.done:
            return False
        task.state = koji.TASK_STATES["CANCELED"]
        task.completion_ts = time.time()
        if recurse:
            for child in self.children(task.id):
                self.cancel(child, recurse=True)
        return True

    # -- builds ---------------------------------------------------------------

    def package_id(self, name: str) -> int:
        return self.packages.setdefault(name, next(self._ids))

    def new_build(
        self,
        name: str,
        version: str,
        release: str,
        epoch: int | None,
        owner: User,
        task_id: int | None,
        source: str | None = None,
    ) -> Build:
        extra = {"source": {"original_url": source}} if source else None
        build = Build(
            next(self._build_ids),
            self.package_id(name),
            name,
            version,
            release,
            epoch,
            owner,
            task_id,
            source=source,
            extra=extra,
        )
        self.builds[build.id] = build
        return build

    def find_build(self, info: Any) -> Build | None:
        if isinstance(info, dict):
            info = info.get("id") or info.get("nvr") or info.get("build_id")
        if isinstance(info, int):
            return self.builds.get(info)
        if isinstance(info, str):
            if info.isdigit():
                return self.builds.get(int(info))
            matches = [b for b in self.builds.values() if b.nvr == info]
            # Koji keeps one build row per NVR; a failed build's NVR may be reused,
            # in which case the newest row is the one getBuild returns.
            return max(matches, key=lambda b: b.id) if matches else None
        return None

    def new_rpm_id(self) -> int:
        return next(self._rpm_ids)
