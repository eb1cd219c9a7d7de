"""The hub's ``host.*`` calls the fake kojid makes: kojihub/kojihub.py HostExports.

The fake builder runs in the hub's process, so it calls these directly
instead of over XML-RPC; each function names the HostExports method (and the
kojihub helpers behind it) whose effect on the hub's records and on the top
directory it reproduces: task waits, ``initBuild``/``new_build``/
``recycle_build``, ``completeBuild``/``import_build``, ``failBuild``,
``moveBuildToScratch`` and ``tagBuild``.
"""

# Error texts are copied from koji's source, %-formatting included, so that
# they can be grepped for there.
# ruff: noqa: UP031

from __future__ import annotations

import json
import os
import shutil
import time
import xmlrpc.client
from pathlib import Path
from typing import TYPE_CHECKING, Any

import koji

from tests.fakekoji.rpmheader import noarch_hash, read_header
from tests.fakekoji.state import Build, Task

if TYPE_CHECKING:
    from tests.fakekoji.hub import FakeHub


def move_and_symlink(src: Path, dst: Path, create_dir: bool = False) -> None:
    """koji/util.py move_and_symlink(relative=True): move, leave a relative symlink."""
    if create_dir:
        dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(src, dst)
    os.symlink(os.path.relpath(dst, src.parent), src)


class HostCalls:
    def __init__(self, hub: FakeHub) -> None:
        self.hub = hub
        self.state = hub.state

    @property
    def work(self) -> Path:
        return self.hub.topdir / "work"

    # -- tasks ----------------------------------------------------------------

    def subtask(
        self, parent: Task, method: str, arglist: list[Any], label: str | None, arch: str | None
    ) -> Task:
        """HostExports.subtask: an existing (parent, label) child is returned as it is."""
        if label is not None:
            for child in self.state.children(parent.id):
                if child.label == label:
                    return child
        return self.state.new_task(
            method,
            arglist,
            parent.owner,
            arch=arch if arch is not None else parent.arch,
            parent=parent.id,
            label=label,
        )

    def task_set_wait(self, parent: Task, tasks: list[int] | None) -> None:
        """HostExports.taskSetWait: parent waiting, the awaited children awaited."""
        parent.waiting = True
        for child in self.state.children(parent.id):
            if tasks is None or child.id in tasks:
                child.awaited = True
            elif child.awaited:
                child.awaited = False
        self.state.writes += 1

    def task_wait(self, parent: Task) -> tuple[list[int], list[int]]:
        """HostExports.taskWait: finished awaited children are no longer awaited."""
        finished, unfinished = [], []
        for child in self.state.children(parent.id):
            if child.awaited:
                (finished if child.done else unfinished).append(child.id)
        for task_id in finished:
            self.state.tasks[task_id].awaited = False
        return finished, unfinished

    def task_wait_results(self, parent: Task, tasks: list[int]) -> list[tuple[int, Any]]:
        """HostExports.taskWaitResults: unwait, then each child's getResult (faults raise)."""
        parent.waiting = False
        for child in self.state.children(parent.id):
            child.awaited = False
        return [(task_id, self.hub.api.task_result(task_id)) for task_id in tasks]

    def set_weight(self, task: Task, weight: float) -> None:
        """HostExports.setTaskWeight."""
        task.weight = float(weight)

    def average_build_duration(self, name: str) -> float | None:
        """RootExports.getAverageBuildDuration: completed task builds, completion - creation."""
        spans = [
            b.completion_ts - b.create_ts
            for b in self.state.builds.values()
            if b.name == name
            and b.state == koji.BUILD_STATES["COMPLETE"]
            and b.task_id is not None
            and b.completion_ts is not None
        ]
        return sum(spans) / len(spans) if spans else None

    # -- builds ---------------------------------------------------------------

    def init_build(self, data: dict[str, Any], task: Task) -> int:
        """HostExports.initBuild -> new_build: a BUILDING build, or recycle_build."""
        owner = self.state.user_by_id(task.owner)
        assert owner is not None
        data = dict(data)
        data["owner"] = owner.id
        data["state"] = koji.BUILD_STATES["BUILDING"]
        data["completion_time"] = None
        # new_build: pkg_id, extra as JSON text, defaults
        data["pkg_id"] = self.state.package_id(data["name"])
        extra = data.get("extra")
        data["extra"] = json.dumps(extra) if "extra" in data else None
        if "draft" in data:
            data["draft"] = bool(data["draft"])
        data.setdefault("start_time", "NOW")
        data.setdefault("source", None)
        data.setdefault("task_id", None)
        data.setdefault("volume_id", 0)
        data.setdefault("draft", False)
        nvr = f"{data['name']}-{data['version']}-{data['release']}"
        old = self.state.find_build(nvr)
        now = time.time()
        if old is not None:
            if data["draft"]:
                raise koji.GenericError(f"Target build already exists: {nvr} (id={old.id})")
            self._recycle(old, data, owner, extra, now)
            return old.id
        build_id = self.state.new_build_id()
        release = data["release"]
        if data["draft"]:
            # koji.gen_draft_release: '{target_release},draft_{build_id}'
            release = koji.DRAFT_RELEASE_FORMAT.format(target_release=release, build_id=build_id)
            draft_nvr = f"{data['name']}-{data['version']}-{release}"
            if self.state.find_build(draft_nvr) is not None:
                raise koji.GenericError(
                    "The build already exists: %r"
                    % {"name": data["name"], "version": data["version"], "release": release}
                )
        build = Build(
            build_id,
            data["pkg_id"],
            data["name"],
            data["version"],
            release,
            data["epoch"],
            owner,
            data["task_id"],
            source=data["source"],
            extra=extra,
            create_event=self.state.event(),
            create_ts=now,
            start_ts=now,
            draft=data["draft"],
        )
        self.state.builds[build.id] = build
        self.state.writes += 1
        return build.id

    def _recycle(
        self, old: Build, data: dict[str, Any], owner: Any, extra: Any, now: float
    ) -> None:
        """kojihub/kojihub.py recycle_build: FAILED/CANCELED keep their row and id."""
        st_desc = koji.BUILD_STATES[old.state]
        if st_desc == "BUILDING":
            if data["state"] == old.state and data.get("task_id", "") == old.task_id:
                return
            raise koji.GenericError("Build already in progress (task %d)" % old.task_id)
        if st_desc not in ("FAILED", "CANCELED"):
            raise koji.GenericError(
                "Build already exists (id=%d, state=%s): %r" % (old.id, st_desc, data)
            )
        if any(old.id in t.history for t in self.state.tags.values()):
            raise koji.GenericError("Build already exists. Unable to recycle, has tag history")
        if old.rpms:
            raise koji.GenericError("Build already exists. Unable to recycle, has rpm data")
        old.state = data["state"]
        old.task_id = data["task_id"]
        old.owner = owner
        old.start_ts = now
        old.completion_ts = None
        old.epoch = data["epoch"]
        old.source = data["source"]
        old.extra = extra
        old.create_event = self.state.event()
        old.create_ts = now
        # delete stray files
        builddir = self.hub.build_dir(old)
        if builddir.is_symlink():
            builddir.unlink()
        elif builddir.exists():
            shutil.rmtree(builddir)
        self.state.writes += 1

    def fail_build(self, build_id: int) -> None:
        """HostExports.failBuild: only a BUILDING build, else 'cannot update build'."""
        build = self.state.builds[build_id]
        if build.state != koji.BUILD_STATES["BUILDING"]:
            raise koji.GenericError(
                "cannot update build %i, state: %s" % (build_id, koji.BUILD_STATES[build.state])
            )
        build.state = koji.BUILD_STATES["FAILED"]
        build.completion_ts = time.time()
        self.state.writes += 1

    def check_noarch_rpms(self, rpms: list[str], logs: dict[str, list[str]]) -> list[str]:
        """kojihub/kojihub.py check_noarch_rpms + rpmdiff: keep the first of each noarch name."""
        result: list[str] = []
        noarch: dict[str, list[str]] = {}
        for relpath in rpms:
            if relpath.endswith(".noarch.rpm"):
                name = os.path.basename(relpath)
                if name in noarch:
                    noarch[name].append(relpath)
                    continue
                noarch[name] = [relpath]
            result.append(relpath)
        hashes: dict[str, dict[str, str]] = {}
        for files in logs.values():
            for log in files:
                if os.path.basename(log) == "noarch_rpmdiff.json":
                    hashes.update(json.loads((self.work / log).read_text()))
        for dups in noarch.values():
            first, name = dups[0], os.path.basename(dups[0])
            first_hash = hashes.get(first.split("/")[1], {}).get(name)
            for other in dups[1:]:
                other_hash = hashes.get(other.split("/")[1], {}).get(name)
                if first_hash and first_hash == other_hash:
                    continue
                if noarch_hash(self.work / first) != noarch_hash(self.work / other):
                    raise koji.BuildError(
                        "The following noarch package built differently on different "
                        "architectures: %s\nrpmdiff output was:\n%s" % (name, "(differs)")
                    )
        return result

    def complete_build(
        self,
        task: Task,
        build_id: int,
        srpm: str,
        rpms: list[str],
        brmap: dict[str, int],
        logs: dict[str, list[str]],
    ) -> None:
        """HostExports.completeBuild -> import_build: move files under packages/, list RPMs."""
        for relpath in [srpm, *rpms]:
            if not (self.work / relpath).exists():
                raise koji.GenericError("No such file: %s" % (self.work / relpath))
        rpms = self.check_noarch_rpms(rpms, logs)
        build = self.state.builds[build_id]
        hdr = read_header(self.work / srpm)
        if not hdr["sourcepackage"]:
            raise koji.GenericError("not a source package: %s" % (self.work / srpm))
        release = hdr["release"]
        if build.draft:
            release = koji.DRAFT_RELEASE_FORMAT.format(target_release=release, build_id=build.id)
        for key, value in (
            ("name", hdr["name"]),
            ("version", hdr["version"]),
            ("release", release),
            ("epoch", hdr["epoch"]),
            ("task_id", task.id),
        ):
            if getattr(build, key) != value:
                raise koji.GenericError(
                    "Unable to complete build: %s mismatch (build: %s, rpm: %s)"
                    % (key, getattr(build, key), value)
                )
        if build.state != koji.BUILD_STATES["BUILDING"]:
            raise koji.GenericError(
                "Unable to complete build: state is %s" % koji.BUILD_STATES[build.state]
            )
        build.state = koji.BUILD_STATES["COMPLETE"]
        build.completion_ts = time.time()
        builddir = self.hub.build_dir(build)
        for relpath in [srpm, *rpms]:
            path = self.work / relpath
            info = read_header(path)
            arch = "src" if info["sourcepackage"] else info["arch"]
            # import_rpm: the rpminfo row; import_rpm_file -> _import_archive_file
            row = {
                "id": self.state.new_rpm_id(),
                "name": info["name"],
                "version": info["version"],
                "release": info["release"],
                "nvr": f"{info['name']}-{info['version']}-{info['release']}",
                "arch": arch,
                "epoch": info["epoch"],
                "draft": build.draft,
                "payloadhash": info["sigmd5"],
                "size": path.stat().st_size,
                "buildtime": info["buildtime"],
                "build_id": build.id,
                "buildroot_id": brmap.get(relpath),
                "external_repo_id": 0,
                "external_repo_name": "INTERNAL",
                "metadata_only": False,
                "extra": None,
            }
            final = builddir / arch / path.name
            if final.exists():
                raise koji.GenericError("Error importing archive file, %s already exists" % final)
            move_and_symlink(path, final, create_dir=True)
            build.rpms.append(row)
            self.state.rpms[row["id"]] = row
        for key, files in logs.items():
            for relpath in files:
                # import_build_log(fn, binfo, subdir=<arch key>)
                path = self.work / relpath
                logdir = builddir / "data" / "logs"
                if key:
                    logdir = logdir / key
                final = logdir / path.name
                if final.exists():
                    raise koji.GenericError("Error importing build log. %s already exists." % final)
                move_and_symlink(path, final, create_dir=True)
        self.state.writes += 1

    def move_build_to_scratch(
        self, task: Task, srpm: str, rpms: list[str], logs: dict[str, list[str]]
    ) -> None:
        """HostExports.moveBuildToScratch: scratch/<owner>/task_<parent>/, logs/<arch>/."""
        for relpath in [srpm, *rpms]:
            if not (self.work / relpath).exists():
                raise koji.GenericError("No such file: %s" % (self.work / relpath))
        rpms = self.check_noarch_rpms(rpms, logs)
        owner = self.state.user_by_id(task.owner)
        assert owner is not None
        scratch = self.hub.topdir / "scratch" / owner.name / f"task_{task.id}"
        scratch.mkdir(parents=True, exist_ok=True)
        for relpath in [srpm, *rpms]:
            path = self.work / relpath
            move_and_symlink(path, scratch / path.name)
        for key, files in logs.items():
            logdir = scratch / "logs" / key if key else scratch / "logs"
            logdir.mkdir(parents=True, exist_ok=True)
            for relpath in files:
                path = self.work / relpath
                move_and_symlink(path, logdir / path.name)

    # -- tagging --------------------------------------------------------------

    def tag_build(self, task: Task, tag_info: Any, build_info: Any, force: bool) -> None:
        """HostExports.tagBuild -> _tag_build -> _direct_tag_build, as the task owner."""
        build = self.hub.api.get_build_record(build_info, strict=True)
        tag = self.hub.api.get_tag_record(tag_info, strict=True)
        owner = self.state.user_by_id(task.owner)
        assert owner is not None
        self.hub.policies.assert_policy(
            "tag",
            {
                "tag": tag_info,
                "build": build.id,
                "fromtag": None,
                "user_id": owner.id,
                "operation": "tag",
            },
        )
        entry = self.state.package_entry(tag, build.name)
        # the package-list text uses the raw tag argument (kojid passes the tag id)
        if entry is None:
            pkg_error = "Package %s not in list for %s" % (build.name, tag_info)
        elif entry["blocked"]:
            pkg_error = "Package %s blocked in %s" % (build.name, tag_info)
        else:
            pkg_error = None
        if pkg_error:
            if force and "admin" in owner.perms:
                tag.packages.add(build.name)
            else:
                raise koji.TagError(pkg_error)
        # _tag_build: assert_tag_access as the task owner
        self.hub.api.assert_tag_access(tag, owner, force)
        # _direct_tag_build
        if build.state != koji.BUILD_STATES["COMPLETE"]:
            raise koji.TagError(
                "build %s not complete: state %s" % (build.nvr, koji.BUILD_STATES[build.state])
            )
        if build.id in tag.builds and not force:
            raise koji.TagError("build %s already tagged (%s)" % (build.nvr, tag.name))
        tag.builds.add(build.id)
        tag.history.add(build.id)
        self.state.writes += 1


def fault_of(exc: BaseException) -> xmlrpc.client.Fault:
    """What kojid stores for a failed task (koji/daemon.py TaskManager.runTask).

    A Fault as it is; a koji.GenericError subclass as (faultCode, str(e));
    anything else as fault 1 with the full Python traceback.
    """
    import traceback

    if isinstance(exc, xmlrpc.client.Fault):
        return exc
    if isinstance(exc, koji.GenericError):
        return xmlrpc.client.Fault(exc.faultCode, str(exc))
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return xmlrpc.client.Fault(getattr(exc, "faultCode", 1), tb)
