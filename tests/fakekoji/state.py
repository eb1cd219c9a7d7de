"""What the fake hub knows: users, sessions, channels, tags, tasks, builds, RPMs.

Records mirror kojihub's tables (``schemas/schema.sql``) and give back the
dicts the real queries select, key for key, with Koji's numeric state codes:
``Task.info`` is ``Task.fields`` (kojihub/kojihub.py class Task), ``Build.info``
is ``get_build``'s select list and ``Build.row`` is ``RootExports.listBuilds``'s.
Everything here runs on the hub's event loop thread; tests read it from their
own thread, which is safe for the plain reads they do.
"""

from __future__ import annotations

import datetime
import itertools
import random
import secrets
import string
import time
import xmlrpc.client
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import koji
import koji.xmlrpcplus

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

# schemas/schema.sql: the permissions and channels a fresh hub database holds
PERMISSIONS = (
    "admin",
    "appliance",
    "dist-repo",
    "host",
    "image",
    "image-import",
    "livecd",
    "maven-import",
    "repo",
    "sign",
    "tag",
    "target",
    "win-admin",
    "win-import",
    "draft-promoter",
)
CHANNELS = ("default", "createrepo", "maven", "livecd", "appliance", "vm", "image", "livemedia")


def timestr(ts: float | None) -> str | None:
    """A TIMESTAMPTZ as kojixmlrpc's Marshaller sends it: ``datetime.isoformat(' ')``.

    (koji/xmlrpcplus.py ExtendedMarshaller.dump_datetime; microseconds are left
    out when they are 0, as ``isoformat`` does.)
    """
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(" ")


@dataclass
class User:
    id: int
    name: str
    password: str | None = None
    krb_principal: str | None = None
    perms: set[str] = field(default_factory=set)
    usertype: int = koji.USERTYPES["NORMAL"]
    status: int = koji.USER_STATUS["NORMAL"]

    def info(self, krb_princs: bool = True) -> dict[str, Any]:
        """kojihub/kojihub.py get_user: id, name, status, usertype (+ krb_principals)."""
        info: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "usertype": self.usertype,
        }
        if krb_princs:
            info["krb_principals"] = [self.krb_principal] if self.krb_principal else []
        return info


@dataclass
class Session:
    id: int
    key: str
    user: User
    authtype: int
    #: sessions.callnum: the call number of the last request that committed a write
    callnum: int | None = None
    expired: bool = False
    closed: bool = False
    master: int | None = None
    exclusive: bool = False

    # the old name, kept for tests that read it
    @property
    def lastcall(self) -> int | None:
        return self.callnum

    def sinfo(self) -> dict[str, Any]:
        """kojihub/auth.py Session.createSession's return value."""
        return {"session-id": self.id, "session-key": self.key, "header-auth": True}


@dataclass
class Channel:
    id: int
    name: str
    enabled: bool = True


@dataclass
class Repo:
    id: int
    tag_id: int
    create_event: int
    state: int = koji.REPO_STATES["READY"]


@dataclass
class Tag:
    id: int
    name: str
    arches: str | None = "x86_64"
    extra: dict[str, Any] = field(default_factory=dict)
    #: package names on the tag's own package list (non-scratch builds need one)
    packages: set[str] = field(default_factory=set)
    #: package names blocked on the tag's own list
    blocked: set[str] = field(default_factory=set)
    #: build ids actively tagged here (tag_listing, active)
    builds: set[int] = field(default_factory=set)
    #: build ids ever tagged here (tag_listing history; recycle_build refuses them)
    history: set[int] = field(default_factory=set)
    #: permission a user needs to tag into it (None: anyone)
    perm: str | None = None
    locked: bool = False
    #: inheritance parents, highest priority first (tag names)
    parents: list[str] = field(default_factory=list)
    #: current repo id (what kojira would have made for this tag)
    repo_id: int | None = None

    def info(self, perm_id: int | None) -> dict[str, Any]:
        """kojihub/kojihub.py get_tag: the tag_config row plus ``extra``."""
        return {
            "id": self.id,
            "name": self.name,
            "perm_id": perm_id,
            "perm": self.perm,
            "arches": self.arches,
            "locked": self.locked,
            "maven_support": False,
            "maven_include_all": False,
            "extra": dict(self.extra),
        }

    def row(self, perm_id: int | None, perms: bool) -> dict[str, Any]:
        """kojihub/kojihub.py list_tags: no ``extra``; ``perm_id``/``perm`` only with perms."""
        row: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "arches": self.arches,
            "locked": self.locked,
            "maven_support": False,
            "maven_include_all": False,
        }
        if perms:
            row["perm_id"] = perm_id
            row["perm"] = self.perm
        return row


@dataclass
class Target:
    id: int
    name: str
    build_tag: str
    dest_tag: str

    def info(self, tags: dict[str, Tag]) -> dict[str, Any]:
        """kojihub/kojihub.py get_build_target."""
        return {
            "id": self.id,
            "name": self.name,
            "build_tag": tags[self.build_tag].id,
            "build_tag_name": self.build_tag,
            "dest_tag": tags[self.dest_tag].id,
            "dest_tag_name": self.dest_tag,
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
    priority: int = koji.PRIO_DEFAULT
    channel_id: int = 1
    waiting: bool | None = None
    awaited: bool | None = None
    # schema.sql: weight FLOAT NOT NULL DEFAULT 1.0
    weight: float = 1.0

    @property
    def done(self) -> bool:
        return self.state in TASK_DONE_STATES

    def info(self, request: bool = False) -> dict[str, Any]:
        """kojihub/kojihub.py Task.fields (+ the decoded request)."""
        info = {
            "id": self.id,
            "state": self.state,
            "create_time": timestr(self.create_ts),
            "create_ts": self.create_ts,
            "start_time": timestr(self.start_ts),
            "start_ts": self.start_ts,
            "completion_time": timestr(self.completion_ts),
            "completion_ts": self.completion_ts,
            "channel_id": self.channel_id,
            "host_id": self.host_id,
            "parent": self.parent,
            "label": self.label,
            "waiting": self.waiting,
            "awaited": self.awaited,
            "owner": self.owner,
            "method": self.method,
            "arch": self.arch,
            "priority": self.priority,
            "weight": self.weight,
        }
        if request:
            info["request"] = list(self.request)
        return info

    def request_xml(self) -> str:
        """task.request as make_task stores it: ``dumps(tuple(arglist), methodname=method)``."""
        return koji.xmlrpcplus.dumps(tuple(self.request), methodname=self.method)

    def result_xml(self) -> str | None:
        """task.result as kojid sends it (koji/daemon.py TaskManager.runTask)."""
        if not self.done or self.state == koji.TASK_STATES["CANCELED"]:
            return None
        if isinstance(self.result, xmlrpc.client.Fault):
            return koji.xmlrpcplus.dumps(self.result)
        return koji.xmlrpcplus.dumps((self.result,), methodresponse=1, allow_none=1)


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
    create_event: int = 0
    create_ts: float = field(default_factory=time.time)
    start_ts: float | None = None
    completion_ts: float | None = None
    draft: bool = False
    #: who promoted the draft and when (kojihub _promote_build: promoter, promotion_time)
    promoter: User | None = None
    promotion_ts: float | None = None
    #: rpminfo rows of this build (also in HubState.rpms)
    rpms: list[dict[str, Any]] = field(default_factory=list)

    @property
    def nvr(self) -> str:
        return f"{self.name}-{self.version}-{self.release}"

    def _common(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "release": self.release,
            "epoch": self.epoch,
            "draft": self.draft,
            "state": self.state,
            "completion_time": timestr(self.completion_ts),
            "promotion_time": timestr(self.promotion_ts),
            "start_time": timestr(self.start_ts),
            "task_id": self.task_id,
            "creation_event_id": self.create_event,
            "creation_time": timestr(self.create_ts),
            "package_id": self.package_id,
            "package_name": self.name,
            "name": self.name,
            "volume_id": 0,
            "volume_name": "DEFAULT",
            "nvr": self.nvr,
            "creation_ts": self.create_ts,
            "start_ts": self.start_ts,
            "completion_ts": self.completion_ts,
            "promotion_ts": self.promotion_ts,
            "owner_id": self.owner.id,
            "owner_name": self.owner.name,
            "promoter_id": self.promoter.id if self.promoter else None,
            "promoter_name": self.promoter.name if self.promoter else None,
            "source": self.source,
            "extra": dict(self.extra) if self.extra is not None else None,
        }

    def info(self) -> dict[str, Any]:
        """kojihub/kojihub.py get_build: ``id`` and ``build_id``, ``cg_id``/``cg_name``."""
        return {
            "id": self.id,
            "build_id": self.id,
            **self._common(),
            "cg_id": None,
            "cg_name": None,
        }

    def row(self) -> dict[str, Any]:
        """kojihub/kojihub.py RootExports.listBuilds: ``build_id`` only, no ``id``, no ``cg_*``."""
        return {"build_id": self.id, **self._common()}


@dataclass
class Buildroot:
    """A standard buildroot (kojihub/kojihub.py HostExports.newBuildRoot)."""

    id: int
    task_id: int
    arch: str
    repo_id: int
    state: int = koji.BR_STATES["INIT"]


class HubState:
    """Every record of the fake hub, with deterministic ids and a seeded shuffle."""

    def __init__(self, first_task_id: int = 1000, seed: int = 4242) -> None:
        self._task_ids = itertools.count(first_task_id)
        self._build_ids = itertools.count(500)
        self._rpm_ids = itertools.count(7000)
        self._buildroot_ids = itertools.count(300)
        self._repo_ids = itertools.count(80)
        self._session_ids = itertools.count(1)
        self._events = itertools.count(100)
        self._ids = itertools.count(1)
        #: drives every "no particular order" answer and kojid's random choices
        self.rng = random.Random(seed)
        #: bumped by every change a real hub would commit (sessions.callnum follows it)
        self.writes = 0
        self.users: dict[str, User] = {}
        self.sessions: dict[int, Session] = {}
        self.channels: dict[str, Channel] = {
            name: Channel(i, name) for i, name in enumerate(CHANNELS, start=1)
        }
        self.tags: dict[str, Tag] = {}
        self.targets: dict[str, Target] = {}
        self.repos: dict[int, Repo] = {}
        self.tasks: dict[int, Task] = {}
        self.builds: dict[int, Build] = {}
        self.rpms: dict[int, dict[str, Any]] = {}
        self.buildroots: dict[int, Buildroot] = {}
        self.packages: dict[str, int] = {}
        #: package name -> owner user name on tag package lists
        self.package_owners: dict[tuple[str, str], str] = {}

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

    def add_tag(
        self,
        name: str,
        arches: str | None = "x86_64",
        parents: list[str] | None = None,
        **extra: Any,
    ) -> Tag:
        tag = Tag(next(self._ids), name, arches, dict(extra), parents=list(parents or ()))
        repo = Repo(next(self._repo_ids), tag.id, self.event())
        self.repos[repo.id] = repo
        tag.repo_id = repo.id
        self.tags[name] = tag
        return tag

    def add_target(
        self, name: str, build_tag: str, dest_tag: str, arches: str | None = None
    ) -> Target:
        """A build target; tags that do not exist yet are made with ``arches``."""
        for tag in (build_tag, dest_tag):
            if tag not in self.tags:
                self.add_tag(tag, arches=arches or "x86_64")
            elif arches is not None:
                self.tags[tag].arches = arches
        target = Target(next(self._ids), name, build_tag, dest_tag)
        self.targets[name] = target
        return target

    def event(self) -> int:
        return next(self._events)

    # -- lookups (kojihub/kojihub.py name_or_id_clause semantics) -------------

    def perm_id(self, perm: str | None) -> int | None:
        return PERMISSIONS.index(perm) + 1 if perm in PERMISSIONS else None

    def user_by_id(self, user_id: int) -> User | None:
        return next((u for u in self.users.values() if u.id == user_id), None)

    def tag_by(self, info: Any) -> Tag | None:
        return _by_name_or_id(info, self.tags)

    def target_by(self, info: Any) -> Target | None:
        return _by_name_or_id(info, self.targets)

    def inheritance(self, tag: Tag) -> list[Tag]:
        """Ancestors in inheritance order (kojihub readFullInheritance, depth first)."""
        out: list[Tag] = []
        seen = {tag.id}

        def walk(t: Tag) -> None:
            for name in t.parents:
                parent = self.tags[name]
                if parent.id not in seen:
                    seen.add(parent.id)
                    out.append(parent)
                    walk(parent)

        walk(tag)
        return out

    def package_entry(self, tag: Tag, package: str) -> dict[str, Any] | None:
        """kojihub readPackageList(tagID, pkgID, inherit=True) for one package."""
        for t in [tag, *self.inheritance(tag)]:
            if package in t.packages or package in t.blocked:
                owner = self.users[self.package_owners.get((t.name, package), "kojiadmin")]
                return {
                    "package_id": self.package_id(package),
                    "package_name": package,
                    "tag_id": t.id,
                    "tag_name": t.name,
                    "extra_arches": None,
                    "blocked": package in t.blocked,
                    "owner_id": owner.id,
                    "owner_name": owner.name,
                }
        return None

    # -- sessions -------------------------------------------------------------

    def new_session(self, user: User, authtype: int, master: int | None = None) -> Session:
        # kojihub/auth.py Session.createSession: key is "<user_id>-<19 random alnum>"
        alnum = string.ascii_letters + string.digits
        key = f"{user.id}-" + "".join(secrets.choice(alnum) for _ in range(19))
        session = Session(next(self._session_ids), key, user, authtype, master=master)
        self.sessions[session.id] = session
        return session

    # -- tasks ----------------------------------------------------------------

    def new_task(
        self,
        method: str,
        request: list[Any],
        owner: int,
        arch: str = "noarch",
        parent: int | None = None,
        label: str | None = None,
        priority: int | None = None,
        channel_id: int | None = None,
    ) -> Task:
        """kojihub/kojihub.py make_task: children default to the parent's values, priority - 1."""
        task = Task(next(self._task_ids), method, arch, owner, list(request), parent, label)
        if parent is not None:
            pdata = self.tasks[parent]
            task.priority = pdata.priority - 1 if priority is None else priority
            task.channel_id = pdata.channel_id if channel_id is None else channel_id
        else:
            task.label = None  # make_task forces label None on top-level tasks
            task.priority = koji.PRIO_DEFAULT if priority is None else priority
            task.channel_id = self.channels["default"].id if channel_id is None else channel_id
        self.tasks[task.id] = task
        self.writes += 1
        return task

    def children(self, task_id: int) -> list[Task]:
        """Direct children by id (for tests; the API answers them in no order)."""
        return sorted((t for t in self.tasks.values() if t.parent == task_id), key=lambda t: t.id)

    def assign(self, task: Task, host_id: int = 1) -> bool:
        """kojihub/kojihub.py Task.lock(host_id, 'ASSIGNED') from the scheduler."""
        if task.state != koji.TASK_STATES["FREE"]:
            return False
        task.state = koji.TASK_STATES["ASSIGNED"]
        task.host_id = host_id
        self.writes += 1
        return True

    def open(self, task: Task, host_id: int = 1) -> bool:
        """kojihub/kojihub.py Task.lock(host_id, 'OPEN'): FREE or ASSIGNED-to-us only."""
        if task.state not in (koji.TASK_STATES["FREE"], koji.TASK_STATES["ASSIGNED"]):
            return False
        task.state = koji.TASK_STATES["OPEN"]
        task.host_id = host_id
        task.start_ts = time.time()
        self.writes += 1
        return True

    # the old name: FREE/ASSIGNED -> OPEN
    start = open

    def close(self, task: Task, result: Any = None) -> None:
        """kojihub/kojihub.py Task.close."""
        task.state = koji.TASK_STATES["CLOSED"]
        task.result = result
        task.completion_ts = time.time()
        self.writes += 1

    def fail(self, task: Task, fault: xmlrpc.client.Fault) -> None:
        """kojihub/kojihub.py Task.fail."""
        if task.done:
            return
        task.state = koji.TASK_STATES["FAILED"]
        task.result = fault
        task.completion_ts = time.time()
        self.writes += 1

    def cancel(self, task: Task, recurse: bool = True) -> bool:
        """kojihub/kojihub.py Task.cancel.

        True if canceled (now or before), False if it had finished (its children
        are then left alone); cancels the task's BUILDING builds (cancel_build).
        """
        if task.state == koji.TASK_STATES["CANCELED"]:
            return True
        if task.done:
            return False
        task.state = koji.TASK_STATES["CANCELED"]
        task.completion_ts = time.time()
        self.writes += 1
        for build in self.builds.values():
            if build.task_id == task.id and build.state == koji.BUILD_STATES["BUILDING"]:
                build.state = koji.BUILD_STATES["CANCELED"]
                build.completion_ts = time.time()
        if recurse:
            for child in self.children(task.id):
                self.cancel(child, recurse=True)
        return True

    # -- builds ---------------------------------------------------------------

    def package_id(self, name: str) -> int:
        return self.packages.setdefault(name, next(self._ids))

    def new_build_id(self) -> int:
        return next(self._build_ids)

    def find_build(self, info: Any) -> Build | None:
        """kojihub/kojihub.py find_build_id + get_build (non-strict, no parse errors)."""
        if isinstance(info, int):
            return self.builds.get(info)
        if isinstance(info, str):
            return next((b for b in self.builds.values() if b.nvr == info), None)
        if isinstance(info, dict) and {"name", "version", "release"} <= set(info):
            nvr = f"{info['name']}-{info['version']}-{info['release']}"
            return next((b for b in self.builds.values() if b.nvr == nvr), None)
        return None

    def new_rpm_id(self) -> int:
        return next(self._rpm_ids)

    def new_buildroot(self, task_id: int, arch: str, repo_id: int) -> Buildroot:
        broot = Buildroot(next(self._buildroot_ids), task_id, arch, repo_id)
        self.buildroots[broot.id] = broot
        return broot

    # -- answers in no particular order ---------------------------------------

    def unordered(self, items: list[Any]) -> list[Any]:
        """Rows of a query without ORDER BY (kojihub/db.py QueryProcessor._order).

        A seeded shuffle that is never the natural (ascending) order for two
        or more rows, so a client that assumes an order fails in tests.
        """
        out = list(items)
        if len(out) < 2:
            return out
        self.rng.shuffle(out)
        if out == list(items):
            out.reverse()
        return out


def _int_or_param(value: Any, message: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise koji.ParameterError(message) from None


class _Named(Protocol):
    id: int


_N = TypeVar("_N", bound=_Named)


def _by_name_or_id(info: Any, table: dict[str, _N]) -> _N | None:
    """kojihub name_or_id_clause: an int id, a name, or a dict with either."""
    if isinstance(info, dict):
        if "id" in info:
            info = _int_or_param(info["id"], f"Invalid name or id value: {info}")
        elif "name" in info:
            info = info["name"]
        else:
            raise koji.ParameterError(f"Invalid name or id value: {info}")
    if isinstance(info, bool) or not isinstance(info, (int, str)):
        raise koji.ParameterError(f"Invalid name or id value: {info}")
    if isinstance(info, int):
        return next((row for row in table.values() if row.id == info), None)
    return table.get(info)
