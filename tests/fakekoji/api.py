"""The hub calls the fake implements, with Koji's names, signatures and faults.

Each public method is an XML-RPC method, called with the positional and
``__starstar`` keyword arguments the client sent (a mismatch is a
``ParameterError``, as ``koji.util.call_with_argcheck`` makes it on a real hub).
Semantics follow kojihub 1.36 for the parts rpmgate uses; anything else is
"Invalid method", as on a hub without the call.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import koji

from tests.fakekoji.state import Session, Task, User

if TYPE_CHECKING:
    from tests.fakekoji.hub import FakeHub

KOJI_VERSION = "1.36.1"


class HubAPI:
    """RootExports of the fake hub; ``session`` is set per call by the dispatcher."""

    def __init__(self, hub: FakeHub) -> None:
        self._hub = hub
        self._state = hub.state
        self.session: Session | None = None

    # -- plumbing -------------------------------------------------------------

    def _user(self) -> User:
        if self.session is None:
            raise koji.AuthError("Not logged in")
        return self.session.user

    def _task(self, task_id: Any, strict: bool = True) -> Task | None:
        task = self._state.tasks.get(int(task_id))
        if task is None and strict:
            raise koji.GenericError(f"No such task id: {task_id}")
        return task

    def methods(self) -> dict[str, Callable[..., Any]]:
        names = [n for n in dir(self) if not n.startswith("_") and n not in ("methods", "session")]
        return {name: getattr(self, name) for name in names}

    # -- misc -----------------------------------------------------------------

    def getKojiVersion(self) -> str:
        return KOJI_VERSION

    def getAPIVersion(self) -> int:
        return koji.API_VERSION

    def echo(self, *args: Any) -> list[Any]:
        return list(args)

    def getLoggedInUser(self) -> dict[str, Any] | None:
        return self.session.user.info() if self.session else None

    def getUser(
        self,
        userInfo: Any = None,
        strict: bool = False,
        krb_princs: bool = True,
        groups: bool = False,
    ) -> dict[str, Any] | None:
        if userInfo is None:
            return self.getLoggedInUser()
        for user in self._state.users.values():
            if userInfo in (user.id, user.name, user.krb_principal):
                return user.info()
        if strict:
            raise koji.GenericError(f"No such user: {userInfo!r}")
        return None

    def exclusiveSession(self, force: bool = False) -> None:
        self._user()

    # -- targets and tags -----------------------------------------------------

    def getBuildTarget(self, info: Any, event: Any = None, strict: bool = False) -> dict | None:
        target = (
            self._state.targets.get(info)
            if isinstance(info, str)
            else next((t for t in self._state.targets.values() if t.id == info), None)
        )
        if target is None:
            if strict:
                raise koji.GenericError(f"No such build target: {info}")
            return None
        return target.info(self._state.tags)

    def getBuildConfig(self, tag: Any, event: Any = None) -> dict[str, Any]:
        found = (
            self._state.tags.get(tag)
            if isinstance(tag, str)
            else next((t for t in self._state.tags.values() if t.id == tag), None)
        )
        if found is None:
            raise koji.GenericError(f"Invalid tagInfo: {tag!r}")
        return found.info()

    def listTags(
        self,
        build: Any = None,
        package: Any = None,
        perms: bool = True,
        queryOpts: dict | None = None,
        pattern: str | None = None,
    ) -> list[dict]:
        tags = list(self._state.tags.values())
        if build is not None:
            found = self._state.find_build(build)
            if found is None:
                raise koji.GenericError(f"No such build: {build}")
            tags = [t for t in tags if found.id in t.builds]
        return [t.info() for t in sorted(tags, key=lambda t: t.id)]

    def tagBuild(self, tag: Any, build: Any, force: bool = False, fromtag: Any = None) -> int:
        user = self._user()
        if tag not in self._state.tags:
            raise koji.GenericError(f"No such tag: {tag}")
        found = self._state.find_build(build)
        if found is None:
            raise koji.GenericError(f"No such build: {build}")
        perm = self._state.tags[tag].perm
        if perm and perm not in user.perms and "admin" not in user.perms:
            raise koji.ActionNotAllowed(f"{perm} permission required (tag {tag})")
        task = self._state.new_task(
            "tagBuild", [self._state.tags[tag].id, found.id, force, None], user.id
        )
        self._hub.builder.schedule(task)
        return task.id

    # -- builds ---------------------------------------------------------------

    def build(
        self,
        src: str,
        target: str,
        opts: dict | None = None,
        priority: int | None = None,
        channel: str | None = None,
    ) -> int:
        user = self._user()
        opts = dict(opts or {})
        if target not in self._state.targets:
            raise koji.GenericError(f"No such build target: {target}")
        if not isinstance(src, str) or not src:
            raise koji.ParameterError(f"Invalid source: {src!r}")
        task = self._state.new_task(
            "build", [src, target, opts], user.id, label=os.path.basename(src)
        )
        if priority:
            task.priority += int(priority)
        self._hub.builder.schedule(task)
        return task.id

    def getBuild(self, buildInfo: Any, strict: bool = False) -> dict[str, Any] | None:
        found = self._state.find_build(buildInfo)
        if found is None:
            if strict:
                raise koji.GenericError(f"No such build: {buildInfo}")
            return None
        return found.info()

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
    ) -> list:
        builds = sorted(self._state.builds.values(), key=lambda b: b.id)
        if taskID is not None:
            builds = [b for b in builds if b.task_id == int(taskID)]
        if state is not None:
            builds = [b for b in builds if b.state == int(state)]
        if prefix:
            builds = [b for b in builds if b.name.startswith(prefix)]
        return [b.info() for b in builds]

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
    ) -> list[dict[str, Any]]:
        if buildID is None:
            raise koji.ParameterError("buildID is required by this hub")
        found = self._state.builds.get(int(buildID))
        rpms = list(found.rpms) if found else []
        if arches:
            wanted = [arches] if isinstance(arches, str) else list(arches)
            rpms = [r for r in rpms if r["arch"] in wanted]
        return rpms

    def listBuildRPMs(self, build: Any) -> list[dict[str, Any]]:
        found = self._state.find_build(build)
        if found is None:
            raise koji.GenericError(f"No such build: {build}")
        return list(found.rpms)

    # -- tasks ----------------------------------------------------------------

    def getTaskInfo(self, task_id: Any, request: bool = False, strict: bool = False) -> Any:
        if isinstance(task_id, (list, tuple)):
            return [self.getTaskInfo(t, request, strict) for t in task_id]
        task = self._task(task_id, strict)
        return task.info(request) if task else None

    def getTaskChildren(self, task_id: int, request: bool = False, strict: bool = False) -> list:
        if self._task(task_id, strict) is None:
            return []
        return [child.info(request) for child in self._state.children(int(task_id))]

    def getTaskRequest(self, taskId: int) -> list[Any]:
        task = self._task(taskId)
        assert task is not None
        return list(task.request)

    def getTaskResult(self, task_id: int, raise_fault: bool = True) -> Any:
        task = self._task(task_id)
        assert task is not None
        name = koji.TASK_STATES[task.state]
        if name == "CANCELED":
            raise koji.GenericError(f"Task {task.id} is canceled")
        if name not in ("CLOSED", "FAILED"):
            raise koji.GenericError(f"Task {task.id} is currently {name}")
        if isinstance(task.result, koji.Fault):
            if raise_fault:
                raise task.result
            return {"faultCode": task.result.faultCode, "faultString": task.result.faultString}
        return task.result

    def listTaskOutput(
        self, taskID: int, stat: bool = False, all_volumes: bool = False, strict: bool = False
    ) -> Any:
        task = self._task(taskID, strict)
        if task is None:
            return {} if stat or all_volumes else []
        taskdir = self._hub.task_dir(task.id)
        files: list[Path] = (
            sorted(p for p in taskdir.rglob("*") if p.is_file()) if taskdir.is_dir() else []
        )
        names = [str(p.relative_to(taskdir)) for p in files]
        if not stat and not all_volumes:
            return names
        out: dict[str, Any] = {}
        for name, path in zip(names, files, strict=True):
            st = path.stat()
            info = {
                "st_size": str(st.st_size),
                "st_atime": st.st_atime,
                "st_mtime": st.st_mtime,
                "st_ctime": st.st_ctime,
            }
            if all_volumes:
                out[name] = {"DEFAULT": info} if stat else ["DEFAULT"]
            else:
                out[name] = info
        return out

    def listTasks(self, opts: dict | None = None, queryOpts: dict | None = None) -> list[dict]:
        opts = dict(opts or {})
        queryOpts = dict(queryOpts or {})
        tasks = list(self._state.tasks.values())
        if "method" in opts:
            methods = opts["method"] if isinstance(opts["method"], list) else [opts["method"]]
            tasks = [t for t in tasks if t.method in methods]
        if "owner" in opts:
            owners = opts["owner"] if isinstance(opts["owner"], list) else [opts["owner"]]
            ids = {self._state.users[o].id if isinstance(o, str) else int(o) for o in owners}
            tasks = [t for t in tasks if t.owner in ids]
        if "state" in opts:
            tasks = [t for t in tasks if t.state in {int(s) for s in opts["state"]}]
        if "parent" in opts:
            tasks = [t for t in tasks if t.parent == opts["parent"]]
        if "createdAfter" in opts:
            tasks = [t for t in tasks if t.create_ts > float(opts["createdAfter"])]
        order = queryOpts.get("order", "id")
        tasks.sort(key=lambda t: t.id, reverse=order.startswith("-"))
        offset = int(queryOpts.get("offset") or 0)
        limit = queryOpts.get("limit")
        tasks = tasks[offset : offset + int(limit)] if limit else tasks[offset:]
        decode = opts.get("decode", False)
        out = []
        for task in tasks:
            info = task.info(request=True)
            if not decode:
                info["request"] = koji.xmlrpcplus.dumps(tuple(task.request), methodname="build")
            out.append(info)
        return out

    def cancelTask(self, task_id: int, recurse: bool = True) -> None:
        user = self._user()
        task = self._task(task_id)
        assert task is not None
        if task.owner != user.id and "admin" not in user.perms:
            raise koji.ActionNotAllowed(f"Cannot cancel task {task.id}, not owner")
        self._state.cancel(task, recurse=recurse)
        self._hub.builder.kill(task.id)

    # -- uploads --------------------------------------------------------------

    def checkUpload(
        self,
        path: str,
        name: str,
        verify: str | None = None,
        tail: Any = None,
        volume: str | None = None,
    ) -> dict[str, Any] | None:
        self._user()
        target = self._hub.upload_path(path, name)
        if not target.exists():
            return None
        data = target.read_bytes()
        result: dict[str, Any] = {"size": len(data), "mtime": target.stat().st_mtime}
        if verify == "adler32":
            result["hexdigest"] = "%08x" % (zlib.adler32(data) & 0xFFFFFFFF)
        elif verify:
            raise koji.GenericError(f"Unsupported verify type: {verify}")
        return result

    def uploadFile(
        self,
        path: str,
        name: str,
        size: int,
        md5sum: Any,
        offset: int,
        data: str,
        volume: str | None = None,
    ) -> bool:
        """The pre-1.7 base64 upload path (used only when ``checkUpload`` is missing)."""
        self._user()
        target = self._hub.upload_path(path, name, create=True)
        if offset == -1:
            digest = hashlib.new(md5sum[0], target.read_bytes()).hexdigest()
            return digest == md5sum[1] and target.stat().st_size == size
        contents = base64.b64decode(data)
        with open(target, "r+b" if target.exists() else "wb") as fh:
            fh.seek(offset)
            fh.write(contents)
            fh.truncate()
        return True
