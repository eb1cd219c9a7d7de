"""The hub calls the fake implements: kojihub/kojihub.py RootExports at koji commit 2083513a.

Each public method is an XML-RPC method, called with the positional and
``__starstar`` keyword arguments the client sent (a mismatch is a
``ParameterError`` with Python's own text, as ``koji.util.call_with_argcheck``
makes it on a real hub; staticmethod exports carry the module function's name,
e.g. ``get_build()``).  Every method names the kojihub function it follows;
anything not here is "Invalid method", as on a hub without the call.
Answers to queries without ``ORDER BY`` come back in a shuffled order.
"""

# Error texts are copied from koji's source, %-formatting included, so that
# they can be grepped for there.
# ruff: noqa: UP031

from __future__ import annotations

import os
import time
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import koji
import koji.util
import koji.xmlrpcplus

from tests.fakekoji.query import db_error, glob_to_like, like, query_opts, timestamp
from tests.fakekoji.state import PERMISSIONS, Build, Session, Tag, Task, User
from tests.fakekoji.uploads import UploadExports

if TYPE_CHECKING:
    from tests.fakekoji.hub import FakeHub

#: koji/_version.py at commit 2083513a (the hub's Koji-Version header)
KOJI_VERSION = "1.35.3"
#: the koji commit whose kojihub/kojid this fake follows
KOJI_COMMIT = "2083513aab6ed193215efebb21823d905e02f339"

_TASK_COLUMNS = [
    "id", "state", "create_time", "create_ts", "start_time", "start_ts", "completion_time",
    "completion_ts", "channel_id", "host_id", "parent", "label", "waiting", "awaited", "owner",
    "method", "arch", "priority", "weight", "request", "result", "owner_name", "owner_type",
]  # fmt: skip
_BUILD_COLUMNS = list(
    Build(0, 0, "n", "v", "r", None, User(0, "u"), None).row()  # listBuilds select aliases
)
_RPM_COLUMNS = [
    "id", "name", "version", "release", "nvr", "arch", "epoch", "draft", "payloadhash", "size",
    "buildtime", "build_id", "buildroot_id", "external_repo_id", "external_repo_name",
    "metadata_only", "extra",
]  # fmt: skip
_TAG_COLUMNS = [
    "id", "name", "arches", "locked", "maven_support", "maven_include_all", "perm_id", "perm",
]  # fmt: skip


def convert_value(value: Any, cast: type, check_only: bool = False) -> Any:
    """kojihub/kojihub.py convert_value (ParameterError texts)."""
    if value is None:
        raise koji.ParameterError(f"Invalid type, expected type {cast}")
    if check_only:
        if not isinstance(value, cast):
            raise koji.ParameterError(
                f"Invalid type for value '{value}': {type(value)}, expected type {cast}"
            )
        return value
    try:
        return cast(value)
    except (ValueError, TypeError):
        raise koji.ParameterError(
            f"Invalid type for value '{value}': {type(value)}, expected type {cast}"
        ) from None


class RootExports(UploadExports):
    """RootExports of the fake hub; ``session`` is set per call by the dispatcher."""

    def __init__(self, hub: FakeHub) -> None:
        self._hub = hub
        self._state = hub.state
        #: the caller's session when it is logged in (None: anonymous or expired)
        self.session: Session | None = None

    # -- plumbing -------------------------------------------------------------

    def _user(self) -> User:
        """kojihub/auth.py Session.assertLogin."""
        if self.session is None:
            raise koji.ActionNotAllowed("you must be logged in for this operation")
        return self.session.user

    def _has_perm(self, perm: str) -> bool:
        """kojihub/auth.py Session.hasPerm: False when not logged in; admin is not every perm."""
        return self.session is not None and perm in self.session.user.perms

    def _task(self, task_id: Any) -> Task | None:
        """kojihub/kojihub.py Task(id): the id goes through convert_value(cast=int)."""
        return self._state.tasks.get(convert_value(task_id, int))

    def methods(self) -> dict[str, Callable[..., Any]]:
        skip = {"methods", "session", "task_result", "get_build_record", "get_tag_record",
                "assert_tag_access"}  # fmt: skip
        names = [n for n in dir(self) if not n.startswith("_") and n not in skip]
        return {name: getattr(self, name) for name in names}

    # -- misc -----------------------------------------------------------------

    def getKojiVersion(self) -> str:
        """RootExports.getKojiVersion: koji.__version__ (``hub.koji_version`` plays an
        older hub; hubs before 1.23 have no such call: ``None`` makes it unknown)."""
        version = getattr(self._hub, "koji_version", KOJI_VERSION)
        if version is None:
            raise koji.GenericError("Invalid method: getKojiVersion")
        return str(version)

    def getAPIVersion(self) -> int:
        """RootExports.getAPIVersion: koji.API_VERSION."""
        return koji.API_VERSION

    def echo(self, *args: Any) -> list[Any]:
        return list(args)

    # -- users and permissions ------------------------------------------------

    def getLoggedInUser(self) -> dict[str, Any] | None:
        """RootExports.getLoggedInUser: get_user + authtype + krb_principal."""
        if self.session is None:
            return None
        me = self.session.user.info()
        me["authtype"] = self.session.authtype
        me["krb_principal"] = me["krb_principals"][0] if me.get("krb_principals") else None
        return me

    def getUser(
        self,
        userInfo: Any = None,
        strict: bool = False,
        krb_princs: bool = True,
        groups: bool = False,
    ) -> dict[str, Any] | None:
        """kojihub/kojihub.py get_user."""
        if userInfo is None:
            if self.session is None:
                raise koji.GenericError("No user provided")
            userInfo = self.session.user.id
        users = list(self._state.users.values())
        if isinstance(userInfo, dict):
            if userInfo.get("id") is not None and not isinstance(userInfo["id"], int):
                raise koji.GenericError("Invalid type for userid: %s" % type(userInfo["id"]))
            found = [
                u
                for u in users
                if userInfo.get("id") in (None, u.id)
                and (not userInfo.get("name") or userInfo["name"] == u.name)
                and (
                    not userInfo.get("krb_principal")
                    or userInfo["krb_principal"] == u.krb_principal
                )
            ]
        elif isinstance(userInfo, int) and not isinstance(userInfo, bool):
            found = [u for u in users if u.id == userInfo]
        elif isinstance(userInfo, str):
            found = [u for u in users if userInfo in (u.name, u.krb_principal)]
        else:
            raise koji.GenericError("Invalid type for userInfo: %s" % type(userInfo))
        if not found:
            if strict:
                raise koji.GenericError("No such user: %r" % (userInfo,))
            return None
        info = found[0].info(krb_princs)
        if groups:
            info["groups"] = []
        return info

    def hasPerm(self, perm: str, strict: bool = False) -> bool:
        """RootExports.hasPerm."""
        if strict and perm not in PERMISSIONS:
            raise koji.GenericError("No such permission %s defined" % perm)
        return self._has_perm(perm)

    def getPerms(self) -> list[str]:
        """RootExports.getPerms -> Session.getPerms ([] when not logged in)."""
        return sorted(self.session.user.perms) if self.session else []

    def getAllPerms(self) -> list[dict[str, Any]]:
        """RootExports.getAllPerms (ordered by id)."""
        return [
            {"id": i, "name": name, "description": None}
            for i, name in enumerate(PERMISSIONS, start=1)
        ]

    def exclusiveSession(self, force: bool = False) -> None:
        self._user()

    # -- targets, tags, policies ----------------------------------------------

    def getBuildTarget(self, info: Any, event: Any = None, strict: bool = False) -> dict | None:
        """kojihub/kojihub.py get_build_target."""
        target = self._state.target_by(info)
        if target is None:
            if strict:
                raise koji.GenericError("No such build target: %s" % info)
            return None
        return target.info(self._state.tags)

    def get_tag_record(self, tagInfo: Any, strict: bool = False) -> Tag | None:
        tag = self._state.tag_by(tagInfo)
        if tag is None and strict:
            raise koji.GenericError("No such tagInfo: %r" % (tagInfo,))
        return tag

    def getTag(
        self, tagInfo: Any, strict: bool = False, event: Any = None, blocked: bool = False
    ) -> dict[str, Any] | None:
        """kojihub/kojihub.py get_tag (+ query_event when an event is given)."""
        tag = self.get_tag_record(tagInfo, strict)
        if tag is None:
            return None
        info = tag.info(self._state.perm_id(tag.perm))
        if event is not None:
            info["query_event"] = event
        return info

    def getBuildConfig(self, tag: Any, event: Any = None) -> dict[str, Any]:
        """RootExports.getBuildConfig: arches and extra inherited, ``config_inheritance``."""
        info = self.getTag(tag, strict=True, event=event, blocked=True)
        assert info is not None
        info["config_inheritance"] = {"extra": {}, "arches": None}
        record = self._state.tag_by(info["id"])
        assert record is not None
        for ancestor in self._state.inheritance(record):
            if info["arches"] is None and ancestor.arches is not None:
                info["arches"] = ancestor.arches
                info["config_inheritance"]["arches"] = {"id": ancestor.id, "name": ancestor.name}
            for key, value in ancestor.extra.items():
                if key not in info["extra"]:
                    info["extra"][key] = value
                    info["config_inheritance"]["extra"][key] = {
                        "id": ancestor.id,
                        "name": ancestor.name,
                    }
        return info

    def listTags(
        self,
        build: Any = None,
        package: Any = None,
        perms: bool = True,
        queryOpts: dict | None = None,
        pattern: str | None = None,
    ) -> Any:
        """kojihub/kojihub.py list_tags: no ``extra``; in no particular order."""
        if build is not None and package is not None:
            raise koji.GenericError("only one of build and package may be specified")
        tags = sorted(self._state.tags.values(), key=lambda t: t.id)
        if build is not None:
            found = self.get_build_record(build)
            if found is None:
                raise koji.GenericError("No such build: %s" % build)
            tags = [t for t in tags if found.id in t.builds]
        if package is not None:
            if package not in self._state.packages and package not in self._state.packages.values():
                raise koji.GenericError("No such package: %s" % package)
            name = (
                package
                if isinstance(package, str)
                else next(n for n, i in self._state.packages.items() if i == package)
            )
            tags = [t for t in tags if name in t.packages or name in t.blocked]
        if pattern is not None:
            tags = [t for t in tags if like(glob_to_like(pattern), t.name)]
        rows = []
        for t in tags:
            row = t.row(self._state.perm_id(t.perm), perms)
            if package is not None:
                entry = self._state.package_entry(t, name)
                assert entry is not None
                row.update(
                    owner_id=entry["owner_id"],
                    owner_name=entry["owner_name"],
                    blocked=entry["blocked"],
                    extra_arches=None,
                )
            rows.append(row)
        columns = _TAG_COLUMNS if perms else _TAG_COLUMNS[:6]
        return query_opts(self._state.unordered(rows), queryOpts, columns)

    def getPackageConfig(self, tag: Any, pkg: Any, event: Any = None) -> dict[str, Any] | None:
        """RootExports.getPackageConfig: readPackageList(inherit=True) entry or None."""
        found = self._state.tag_by(tag)
        name = (
            pkg
            if isinstance(pkg, str)
            else next((n for n, i in self._state.packages.items() if i == pkg), None)
        )
        if found is None or name is None or name not in self._state.packages:
            return None
        return self._state.package_entry(found, name)

    def evalPolicy(self, name: str, data: dict[str, Any]) -> str | None:
        """RootExports.evalPolicy = eval_policy."""
        return self._hub.policies.evaluate(name, data)

    def assert_tag_access(self, tag: Tag, user: User, force: bool) -> None:
        """kojihub/kojihub.py assert_tag_access / check_tag_access: the reasons are
        kojihub's texts, ``return (False, override, "tag is locked")`` and
        ``"tag requires %s permission" % needed_perm``, raised as
        ``koji.ActionNotAllowed(reason)`` unless an admin forces (rpmgate tells
        them from the ``tag`` policy's refusals by these texts:
        gate.builders.koji_tagging)."""
        override = "admin" in user.perms
        reason = None
        if tag.locked:
            reason = "tag is locked"
        elif tag.perm and tag.perm not in user.perms:
            reason = "tag requires %s permission" % tag.perm
        if reason and not (override and force):
            raise koji.ActionNotAllowed(reason)

    def tagBuild(self, tag: Any, build: Any, force: bool = False, fromtag: Any = None) -> int:
        """RootExports.tagBuild: call-time checks, then a tagBuild task at priority 10."""
        user = self._user()
        found = self.get_build_record(build, strict=True)
        assert found is not None
        tag_rec = self.get_tag_record(tag, strict=True)
        assert tag_rec is not None
        fromtag_id = self.get_tag_record(fromtag, strict=True).id if fromtag else None  # type: ignore[union-attr]
        if found.state != koji.BUILD_STATES["COMPLETE"]:
            raise koji.TagError(
                "build %s not complete: state %s" % (found.nvr, koji.BUILD_STATES[found.state])
            )
        self.assert_tag_access(tag_rec, user, force)
        entry = self._state.package_entry(tag_rec, found.name)
        pkg_error = None
        if entry is None:
            pkg_error = "Package %s not in list for %s" % (found.name, tag_rec.name)
        elif entry["blocked"]:
            pkg_error = "Package %s blocked in %s" % (found.name, tag_rec.name)
        if pkg_error:
            if force and self._has_perm("admin"):
                tag_rec.packages.add(found.name)
            else:
                raise koji.TagError(pkg_error)
        policy_data = {
            "tag": tag_rec.id,
            "build": found.id,
            "fromtag": fromtag_id,
            "user_id": user.id,
            "operation": "tag" if fromtag is None else "move",
        }
        self._hub.policies.assert_policy("tag", policy_data)
        task = self._state.new_task(
            "tagBuild", [tag_rec.id, found.id, force, fromtag_id], user.id, priority=10
        )
        self._hub.builder.schedule(task)
        return task.id

    # -- builds ---------------------------------------------------------------

    def build(
        self,
        src: Any,
        target: Any,
        opts: dict | None = None,
        priority: int | None = None,
        channel: str | None = None,
    ) -> int:
        """RootExports.build: the target is NOT checked here (kojid fails the task)."""
        user = self._user()
        if not opts:
            opts = {}
        convert_value(src, str, check_only=True)
        task_priority = None
        if priority:
            if priority < 0 and not self._has_perm("admin"):
                raise koji.ActionNotAllowed("only admins may create high-priority tasks")
            task_priority = koji.PRIO_DEFAULT + priority
        channel_id = None
        if channel:
            # make_task: the channel policy's 'has req_channel :: req'
            found = (
                self._state.channels.get(channel)
                if isinstance(channel, str)
                else next((c for c in self._state.channels.values() if c.id == channel), None)
            )
            if found is None:
                raise koji.GenericError("No such channel: %s" % channel)
            if not found.enabled:
                raise koji.GenericError("Channel %s is disabled." % channel)
            channel_id = found.id
        task = self._state.new_task(
            "build", [src, target, opts], user.id, priority=task_priority, channel_id=channel_id
        )
        self._hub.builder.schedule(task)
        return task.id

    def get_build_record(self, buildInfo: Any, strict: bool = False) -> Build | None:
        """kojihub/kojihub.py find_build_id + get_build, as a record."""
        if isinstance(buildInfo, int):
            found = self._state.builds.get(buildInfo)
            if found is None and strict:
                raise koji.GenericError("No such build: %s" % buildInfo)
            return found
        if isinstance(buildInfo, str):
            data = koji.parse_NVR(buildInfo)
        elif isinstance(buildInfo, dict):
            data = buildInfo
        else:
            raise koji.GenericError("Invalid type for argument: %r" % type(buildInfo))
        if not ("name" in data and "version" in data and "release" in data):
            raise koji.GenericError("did not provide name, version, and release")
        found = self._state.find_build(
            {"name": data["name"], "version": data["version"], "release": data["release"]}
        )
        if found is None and strict:
            raise koji.GenericError("No such build: %r" % (buildInfo,))
        return found

    def getBuild(self, buildInfo: Any, strict: bool = False) -> dict[str, Any] | None:
        """kojihub/kojihub.py get_build: ``id`` and ``build_id``, promoter fields, draft."""
        found = self.get_build_record(buildInfo, strict)
        return found.info() if found else None

    def promoteBuild(self, build: Any, force: bool = False) -> dict[str, Any]:
        """kojihub/kojihub.py _promote_build (RootExports.promoteBuild, Koji >= 1.34):
        a COMPLETE draft becomes the build of its target release, keeping its id;
        refused when the target NVR exists; policy ``draft_promotion`` (``force``
        only for admins); the files move to the new path, the old one a symlink."""
        user = self._user()
        binfo = self.get_build_record(build, strict=True)
        assert binfo is not None
        err = f"Cannot promote build {binfo.nvr}. Reason: {{}}"
        if not binfo.draft:
            raise koji.GenericError(err.format("Not a draft build"))
        state = koji.BUILD_STATES[binfo.state]
        if state != "COMPLETE":
            raise koji.GenericError(err.format(f"state ({state}) is not COMPLETE."))
        target_release = koji.parse_target_release(binfo.release)
        old = self._state.find_build(
            {"name": binfo.name, "version": binfo.version, "release": target_release}
        )
        if old is not None:
            raise koji.GenericError(err.format(f"Target build exists: {old.nvr}(#{old.id})"))
        if force and not self._has_perm("admin"):
            raise koji.ActionNotAllowed("only admins may force")
        if not force:
            policy_data = {"build": binfo.id, "target_release": target_release, "user_id": user.id}
            self._hub.policies.assert_policy("draft_promotion", policy_data)
        old_path = self._hub.build_dir(binfo)
        binfo.draft, binfo.release = False, target_release
        binfo.promoter, binfo.promotion_ts = user, time.time()
        for rpm in binfo.rpms:  # rpminfo.draft follows build.draft (ON UPDATE CASCADE)
            rpm["draft"] = False
        new_path = self._hub.build_dir(binfo)
        if old_path.exists():  # safer_move, then ensure_volume_backlink
            new_path.parent.mkdir(parents=True, exist_ok=True)
            old_path.rename(new_path)
            old_path.symlink_to(new_path)
        return binfo.info()

    def deleteBuild(self, build: Any, strict: bool = True, min_ref_age: int = 604800) -> Any:
        """kojihub/kojihub.py delete_build (RootExports.deleteBuild) and _delete_build.

        ``context.session.assertPerm('admin')`` first (kojihub/auth.py assertPerm:
        "admin permission required (logged in as <name>)"); a DELETED build
        returns None; build_references(lazy=True) refuses a tagged build
        ("Cannot delete build, tagged: <refs>"), or returns False when not
        ``strict``.  (The fake's buildroots record no installed RPMs, so the
        buildroot references -- ``rpms``, ``last_used`` against ``min_ref_age``
        -- never arise here.)  Then: state DELETED, the build directory
        removed, and a promoted build's old draft path (a symlink) with it.
        """
        if not self._has_perm("admin"):
            msg = "admin permission required"
            if self.session is not None:
                msg += " (logged in as %s)" % self.session.user.name
            else:
                msg += " (user not logged in)"
            raise koji.ActionNotAllowed(msg)
        binfo = self.get_build_record(build, strict=True)
        assert binfo is not None
        if binfo.state == koji.BUILD_STATES["DELETED"]:
            return None
        refs = [
            {"tag_id": t.id, "name": t.name}
            for t in sorted(self._state.tags.values(), key=lambda t: t.id)
            if binfo.id in t.builds
        ][:10]
        if refs:
            if strict:
                raise koji.GenericError("Cannot delete build, tagged: %s" % refs)
            return False
        binfo.state = koji.BUILD_STATES["DELETED"]
        self._state.writes += 1
        builddir = self._hub.build_dir(binfo)
        if not binfo.draft:  # _delete_build_symlinks: the path it had as a draft
            draft_path = builddir.parent / koji.gen_draft_release(binfo.release, binfo.id)
            if draft_path.is_symlink():
                draft_path.unlink()
        if builddir.exists():
            koji.util.rmtree(str(builddir))
        return True

    def untagBuild(self, tag: Any, build: Any, strict: bool = True, force: bool = False) -> None:
        """RootExports.untagBuild: assertLogin, the ``tag`` policy (operation
        ``untag``), then _untag_build: assert_tag_access and _direct_untag_build
        ("build %s not in tag %s" when ``strict`` and it is not)."""
        user = self._user()
        tag_rec = self.get_tag_record(tag, strict=True)
        assert tag_rec is not None
        binfo = self.get_build_record(build, strict=True)
        assert binfo is not None
        if force and not self._has_perm("admin"):
            raise koji.ActionNotAllowed("only admins may force")
        if not force:
            policy_data = {
                "tag": None,
                "build": binfo.id,
                "fromtag": tag_rec.id,
                "operation": "untag",
                "user_id": user.id,
            }
            self._hub.policies.assert_policy("tag", policy_data)
        self.assert_tag_access(tag_rec, user, force)
        if binfo.id not in tag_rec.builds:
            if strict:
                raise koji.TagError("build %s not in tag %s" % (binfo.nvr, tag_rec.name))
            return
        tag_rec.builds.discard(binfo.id)
        self._state.writes += 1

    def findBuildID(self, X: Any, strict: bool = False) -> int | None:
        """kojihub/kojihub.py find_build_id."""
        if isinstance(X, int):
            return X
        found = self.get_build_record(X, strict)
        return found.id if found else None

    def listBuilds(
        self,
        packageID: Any = None,
        userID: Any = None,
        taskID: Any = None,
        prefix: str | None = None,
        state: Any = None,
        volumeID: Any = None,
        source: str | None = None,
        createdBefore: Any = None,
        createdAfter: Any = None,
        completeBefore: Any = None,
        completeAfter: Any = None,
        type: str | None = None,
        typeInfo: Any = None,
        queryOpts: dict | None = None,
        pattern: str | None = None,
        cgID: Any = None,
        draft: Any = None,
        promotedBefore: Any = None,
        promotedAfter: Any = None,
        promoter: Any = None,
    ) -> Any:
        """RootExports.listBuilds: rows with ``build_id`` and no ``id``, in no order."""
        builds = sorted(self._state.builds.values(), key=lambda b: b.id)
        if packageID is not None:
            name = (
                packageID
                if isinstance(packageID, str)
                else next((n for n, i in self._state.packages.items() if i == packageID), None)
            )
            if name is None or name not in self._state.packages:
                return []
            builds = [b for b in builds if b.name == name]
        if userID is not None:
            user = self.getUser(userID)
            if not user:
                return []
            builds = [b for b in builds if b.owner.id == user["id"]]
        if promoter is not None:
            user = self.getUser(promoter)
            if not user:
                return []
            builds = [b for b in builds if b.promoter is not None and b.promoter.id == user["id"]]
        if volumeID is not None and _db_int(volumeID) != 0:
            builds = []  # every build is on the DEFAULT volume (id 0)
        if taskID is not None:
            if taskID == -1:
                builds = [b for b in builds if b.task_id is not None]
            else:
                builds = [b for b in builds if b.task_id == _db_int(taskID)]
        if source is not None:
            builds = [b for b in builds if like(glob_to_like(source), b.source)]
        if prefix:
            builds = [b for b in builds if like(prefix + "%", b.name)]
        if pattern:
            builds = [b for b in builds if like(glob_to_like(pattern), b.nvr)]
        if state is not None:
            builds = [b for b in builds if b.state == _db_int(state)]
        for value, attr, newer in (
            (createdBefore, "create_ts", False),
            (createdAfter, "create_ts", True),
            (completeBefore, "completion_ts", False),
            (completeAfter, "completion_ts", True),
            (promotedBefore, "promotion_ts", False),
            (promotedAfter, "promotion_ts", True),
        ):
            if value:
                limit = timestamp(value)
                builds = [
                    b
                    for b in builds
                    if getattr(b, attr) is not None
                    and (getattr(b, attr) > limit if newer else getattr(b, attr) < limit)
                ]
        if cgID:
            return []
        if type not in (None, "rpm"):
            if type in ("maven", "win", "image"):
                builds = []
            else:
                raise koji.GenericError("unsupported build type: %s" % type)
        if draft is not None:
            builds = [b for b in builds if b.draft is bool(draft)]
        rows = [b.row() for b in builds]
        return query_opts(self._state.unordered(rows), queryOpts, _BUILD_COLUMNS)

    def listRPMs(
        self,
        buildID: Any = None,
        buildrootID: Any = None,
        imageID: Any = None,
        componentBuildrootID: Any = None,
        hostID: Any = None,
        arches: Any = None,
        queryOpts: dict | None = None,
        draft: Any = None,
    ) -> Any:
        """kojihub/kojihub.py list_rpms: every RPM without filters; in no order."""
        rpms = [dict(r) for _, r in sorted(self._state.rpms.items())]
        if buildID is not None:
            rpms = [r for r in rpms if r["build_id"] == _db_int(buildID)]
        if buildrootID is not None:
            rpms = [r for r in rpms if r["buildroot_id"] == _db_int(buildrootID)]
        if componentBuildrootID is not None or imageID is not None:
            rpms = []
        if hostID is not None:
            rpms = [r for r in rpms if r["buildroot_id"] is not None and _db_int(hostID) == 1]
        if arches is not None:
            if isinstance(arches, (list, tuple)):
                rpms = [r for r in rpms if r["arch"] in arches]
            elif isinstance(arches, str):
                rpms = [r for r in rpms if r["arch"] == arches]
            else:
                raise koji.GenericError('Invalid type for "arches" parameter: %s' % type(arches))
        if draft is not None:
            rpms = [r for r in rpms if r["draft"] is bool(draft)]
        return query_opts(self._state.unordered(rpms), queryOpts, _RPM_COLUMNS)

    def listBuildRPMs(self, build: Any) -> Any:
        """RootExports.listBuildRPMs: a missing int id is [], a missing NVR a fault."""
        if not isinstance(build, int):
            build = self.findBuildID(build, strict=True)
        return self.listRPMs(buildID=build)

    # -- tasks ----------------------------------------------------------------

    def getTaskInfo(self, task_id: Any, request: bool = False, strict: bool = False) -> Any:
        """RootExports.getTaskInfo -> Task.getInfo (strict: 'query returned no rows')."""
        if isinstance(task_id, (list, tuple)):
            return [self.getTaskInfo(t, request, strict) for t in task_id]
        task = self._task(task_id)
        if task is None:
            if strict:
                raise koji.GenericError("query returned no rows")
            return None
        return task.info(request)

    def getTaskChildren(self, task_id: Any, request: bool = False, strict: bool = False) -> list:
        """RootExports.getTaskChildren -> Task.getChildren: no ORDER BY."""
        task = self._task(task_id)
        if strict and task is None:
            raise koji.GenericError("query returned no rows")
        tid = convert_value(task_id, int)
        children = [c.info(request) for c in self._state.children(tid)]
        return self._state.unordered(children)

    def getTaskRequest(self, taskId: Any) -> list[Any]:
        """RootExports.getTaskRequest -> Task.getRequest (singleValue strict)."""
        task = self._task(taskId)
        if task is None:
            raise koji.GenericError("query returned no rows")
        return list(task.request)

    def task_result(self, task_id: int, raise_fault: bool = True) -> Any:
        """kojihub/kojihub.py Task.getResult."""
        task = self._task(task_id)
        if task is None:
            raise koji.GenericError("No such task")
        name = koji.TASK_STATES[task.state]
        if name == "CANCELED":
            raise koji.GenericError("Task %i is canceled" % task.id)
        if name not in ("CLOSED", "FAILED"):
            raise koji.GenericError("Task %i is not finished" % task.id)
        if isinstance(task.result, xmlrpc.client.Fault):
            if raise_fault:
                raise xmlrpc.client.Fault(task.result.faultCode, task.result.faultString)
            return {"faultCode": task.result.faultCode, "faultString": task.result.faultString}
        return task.result

    def getTaskResult(self, taskId: Any, raise_fault: bool = True) -> Any:
        """RootExports.getTaskResult(taskId, raise_fault=True)."""
        return self.task_result(taskId, raise_fault)

    def taskFinished(self, taskId: Any) -> bool:
        """RootExports.taskFinished -> Task.isFinished."""
        task = self._task(taskId)
        if task is None:
            raise koji.GenericError("query returned no rows")
        return task.done

    def listTaskOutput(
        self, taskID: Any, stat: bool = False, all_volumes: bool = False, strict: bool = False
    ) -> Any:
        """kojihub/kojihub.py list_task_output: os.walk of the task dir, symlinks followed."""
        if strict:
            try:
                found = self._task(taskID)
            except Exception:
                found = None
            if found is None:
                raise koji.GenericError("Task doesn't exist")
        result: Any = {} if stat or all_volumes else []
        taskdir = self._hub.topdir / "work" / koji.pathinfo.taskrelpath(taskID)
        if not taskdir.is_dir():
            return result
        found_files = []
        for path, _dirs, files in os.walk(taskdir):
            for filename in files:
                relpath = path[len(str(taskdir)) + 1 :]
                found_files.append((os.path.join(relpath, filename), Path(path) / filename))
        for relname, full in self._state.unordered(sorted(found_files)):
            if stat:
                st = os.stat(full)  # follows symlinks; a dangling one is a fault 1
                info = {
                    "st_size": str(st.st_size),
                    "st_atime": st.st_atime,
                    "st_mtime": st.st_mtime,
                    "st_ctime": st.st_ctime,
                }
                result[relname] = {"DEFAULT": info} if all_volumes else info
            elif all_volumes:
                result[relname] = ["DEFAULT"]
            else:
                result.append(relname)
        return result

    def listTasks(self, opts: dict | None = None, queryOpts: dict | None = None) -> Any:
        """RootExports.listTasks: SQL semantics of each option, no default order."""
        opts = dict(opts or {})
        queryOpts = dict(queryOpts or {})
        tasks = sorted(self._state.tasks.values(), key=lambda t: t.id)
        for f in ("arch", "state"):
            for key, negate in ((f, False), ("not_" + f, True)):
                if key in opts:
                    value = opts[key]
                    if not isinstance(value, (list, tuple)):
                        # '<f> IN %(f)s' with a scalar
                        raise db_error("SyntaxError", f'syntax error at or near "{value}"')
                    tasks = [t for t in tasks if (getattr(t, f) in value) is not negate]
        for f, attr in (
            ("owner", "owner"),
            ("host_id", "host_id"),
            ("channel_id", "channel_id"),
            ("parent", "parent"),
        ):
            for key, negate in ((f, False), ("not_" + f, True)):
                if key not in opts:
                    continue
                value = opts[key]
                if value is None:
                    tasks = [t for t in tasks if (getattr(t, attr) is None) is not negate]
                elif isinstance(value, list):
                    wanted = {_db_int(v) for v in value}
                    tasks = [t for t in tasks if (getattr(t, attr) in wanted) is not negate]
                else:
                    wanted_one = _db_int(value)
                    tasks = [t for t in tasks if (getattr(t, attr) == wanted_one) is not negate]
        if "method" in opts:
            tasks = [t for t in tasks if t.method == opts["method"]]
        for key, attr, newer in (
            ("createdBefore", "create_ts", False),
            ("createdAfter", "create_ts", True),
            ("startedBefore", "start_ts", False),
            ("startedAfter", "start_ts", True),
            ("completeBefore", "completion_ts", False),
            ("completeAfter", "completion_ts", True),
            ("completedBefore", "completion_ts", False),
            ("completedAfter", "completion_ts", True),
        ):
            if opts.get(key) is not None:
                limit = timestamp(opts[key])
                tasks = [
                    t
                    for t in tasks
                    if getattr(t, attr) is not None
                    and (getattr(t, attr) > limit if newer else getattr(t, attr) < limit)
                ]
        rows = []
        for task in tasks:
            row = task.info()
            row["request"] = task.request_xml()
            row["result"] = task.result_xml()
            if not queryOpts.get("countOnly"):
                owner = self._state.user_by_id(task.owner)
                row["owner_name"] = owner.name if owner else None
                row["owner_type"] = owner.usertype if owner else None
            rows.append(row)
        result = query_opts(self._state.unordered(rows), queryOpts, _TASK_COLUMNS)
        if queryOpts.get("countOnly") or queryOpts.get("asList"):
            return result
        if opts.get("decode"):
            for row in result:
                for key in ("request", "result"):
                    if row[key]:
                        try:
                            row[key] = list(koji.xmlrpcplus.loads(row[key])[0])
                        except xmlrpc.client.Fault as fault:
                            # the Fault object; it marshals as its __dict__
                            row[key] = {
                                "faultCode": fault.faultCode,
                                "faultString": fault.faultString,
                            }
        return result

    def _may_cancel(self, task_id: Any) -> Task:
        """RootExports.cancelTask's check: owner (verifyOwner), host, or admin."""
        tid = convert_value(task_id, int)
        task = self._state.tasks.get(tid)
        owner_ok = False
        if self.session is not None:
            if task is None:
                raise koji.GenericError("No such task: %i" % tid)
            owner_ok = task.owner == self.session.user.id
        if not owner_ok and not self._has_perm("admin"):
            raise koji.ActionNotAllowed("Cannot cancel task, not owner")
        if task is None:
            # an admin's cancel of a missing task fails in Task.cancel's getInfo
            raise koji.GenericError("query returned no rows")
        return task

    def cancelTask(self, task_id: Any, recurse: bool = True) -> None:
        """RootExports.cancelTask: no assertLogin; Task.cancel cancels BUILDING builds."""
        task = self._may_cancel(task_id)
        self._state.cancel(task, recurse=recurse)
        self._hub.builder.kill(task.id)

    def cancelTaskChildren(self, task_id: Any) -> None:
        """RootExports.cancelTaskChildren."""
        self._user()
        task = self._may_cancel(task_id)
        for child in self._state.children(task.id):
            self._state.cancel(child, recurse=True)
        self._hub.builder.kill(task.id)


# RootExports exports that are staticmethod aliases of module functions: Python's
# own "f() got an unexpected keyword argument" text names the module function
for _export, _function in {
    "getBuild": "get_build",
    "findBuildID": "find_build_id",
    "listRPMs": "list_rpms",
    "listTags": "list_tags",
    "getTag": "get_tag",
    "getUser": "get_user",
    "getBuildTarget": "get_build_target",
    "listTaskOutput": "list_task_output",
    "evalPolicy": "eval_policy",
}.items():
    getattr(RootExports, _export).__qualname__ = _function

#: the old name of the class
HubAPI = RootExports


def _db_int(value: Any) -> int:
    """An ``%(x)i`` parameter as PostgreSQL casts it: ints and digit strings only."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise db_error(
            "InvalidTextRepresentation", f'invalid input syntax for type integer: "{value}"'
        ) from None
