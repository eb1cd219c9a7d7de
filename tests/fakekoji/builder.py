"""The fake hub's build host: kojid's task manager and its ``build``/``tagBuild`` tasks.

Tasks go through the states a real hub and kojid give them (kojihub/
scheduler.py assigns, kojid opens): FREE -> ASSIGNED -> OPEN -> CLOSED/FAILED,
or CANCELED.  ``build`` is builder/kojid BuildTask.handler at koji commit
2083513a, step for step: target lookup ("unknown build target"), the
``build_from_srpm``/``build_from_repo_id``/``build_rpm`` policies before any
child, an ``srpm`` child (``rebuildSRPM`` or ``buildSRPMFromSCM``), the
package-list check, ``getArchList``, ``initBuild``, one ``buildArch`` child per
arch (``choose_taskarch``), then ``moveBuildToScratch`` or ``completeBuild``
and a ``tag`` child.  Waiting follows koji/tasks.py BaseTaskHandler.wait, so
``waiting``/``awaited`` and the fail-fast cancel of sibling arches are what a
real hub shows.  The child tasks themselves live in buildroot.py.

Configuration that is kojid.conf on a real builder is a plain attribute here
(``allowed_scms``, ``allowed_scms_use_policy``, ``build_arch_can_fail``, ...);
hub policies are ``hub.policies``.
"""

# Error texts are copied from koji's source, %-formatting included, so that
# they can be grepped for there.
# ruff: noqa: UP031

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import signal
import xmlrpc.client
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import koji
import koji.util

from tests.fakekoji import buildroot
from tests.fakekoji.hostapi import HostCalls, fault_of
from tests.fakekoji.rpmheader import read_header
from tests.fakekoji.scm import is_scm_url
from tests.fakekoji.state import Task

if TYPE_CHECKING:
    from tests.fakekoji.hub import FakeHub

#: how often a waiting parent polls its children (kojid sleeps until SIGUSR2)
_POLL = 0.02

# koji/tasks.py BaseTaskHandler._taskWeight of each handler class
_WEIGHTS = {
    "build": 0.2,
    "buildArch": 1.5,
    "rebuildSRPM": 1.0,
    "buildSRPMFromSCM": 1.0,
    "tagBuild": 1.0,
}

# kojid.conf as the tests' builder has it (kojid's own default is '': no SCM at all)
DEFAULT_ALLOWED_SCMS = "git.example.com:/rpms/*:no:"


@dataclass(frozen=True)
class Failure:
    """An injected task failure: tasks of ``method`` for ``package``/``arch`` fail;
    ``build_tag``: only ``buildArch`` tasks in that build tag (one target's builds)."""

    method: str
    message: str
    package: str = "*"
    arch: str = "*"
    code: int = koji.BuildError.faultCode
    build_tag: str = "*"

    def matches(self, method: str, package: str, arch: str, build_tag: str = "") -> bool:
        return (
            self.method == method
            and self.package in ("*", package)
            and self.arch in ("*", arch)
            and self.build_tag in ("*", build_tag)
        )


class FakeBuilder:
    """One build host (id 1) running every task the hub schedules."""

    def __init__(self, hub: FakeHub, slots: int = 2) -> None:
        self.hub = hub
        self.state = hub.state
        self.host = HostCalls(hub)
        self.slots = slots
        self._sem: asyncio.Semaphore | None = None
        self._jobs: dict[int, asyncio.Task[None]] = {}
        self._open: asyncio.Event | None = None
        #: seconds each task sits in FREE before the scheduler assigns it
        self.start_delay = 0.0
        #: seconds an ASSIGNED task waits before the host opens it
        self.open_delay = 0.0
        #: injected failures, checked when a child task starts
        self.failures: list[Failure] = []
        #: SCM URL prefixes (as kojid clones them, e.g. ``https://git.example.com/rpms/``)
        #: mapped to local directories, fetched over ``file://``
        self.scm_roots: dict[str, Path] = {}
        #: extra git configuration for kojid's git commands (``-c`` style pairs)
        self.git_config: dict[str, str] = {}
        # -- kojid.conf -------------------------------------------------------
        #: ``allowed_scms``: space-separated ``host:repository[:use_common[:source_cmd]]``
        self.allowed_scms = DEFAULT_ALLOWED_SCMS
        self.allowed_scms_use_config = True
        #: when True, the hub's ``build_from_scm`` policy decides as well
        self.allowed_scms_use_policy = False
        self.allow_password_in_scm_url = False
        #: ``build_arch_can_fail``: False means fail-fast (failany) across arches
        self.build_arch_can_fail = False
        self.literal_task_arches = ""
        self.packager = "Koji"
        self.vendor = "Koji"
        self.distribution = "Koji"
        #: the host's arches (hosts.arches); noarch tasks get a buildroot of one of them
        self.host_arches = "x86_64 i386 aarch64 ppc64le s390x"
        #: rpmbuild runs started, by method
        self.runs: dict[str, int] = {}

    # -- knobs ----------------------------------------------------------------

    @property
    def allow_srpm_final(self) -> bool:
        """The hub's ``build_from_srpm`` policy allows everyone (True) or is the default."""
        return self.hub.policies.rules.get("build_from_srpm") == "all :: allow"

    @allow_srpm_final.setter
    def allow_srpm_final(self, value: bool) -> None:
        if value:
            self.hub.policies["build_from_srpm"] = "all :: allow"
        else:
            self.hub.policies.reset("build_from_srpm")

    def map_scm_host(self, host: str, root: Path) -> None:
        """Serve ``<scheme>://<host>/<path>`` from ``<root>/<path>`` for every git scheme."""
        for scheme in ("git://", "http://", "https://", "rsync://"):
            self.scm_roots[f"{scheme}{host}/"] = Path(root)

    # -- control (hub loop) -----------------------------------------------------

    def hold(self) -> None:
        """Keep new and waiting tasks in FREE until :meth:`release`."""
        self._gate().clear()

    def release(self) -> None:
        self._gate().set()

    def _gate(self) -> asyncio.Event:
        if self._open is None:
            self._open = asyncio.Event()
            self._open.set()
        return self._open

    def schedule(self, task: Task) -> None:
        job = asyncio.get_running_loop().create_task(self._guard(task))
        self._jobs[task.id] = job
        job.add_done_callback(lambda _: self._jobs.pop(task.id, None))

    def kill(self, task_id: int | None = None) -> None:
        """kojid's TaskManager kills the processes of tasks that are no longer open."""
        for tid, job in list(self._jobs.items()):
            if self.state.tasks[tid].state == koji.TASK_STATES["CANCELED"]:
                job.cancel()

    async def shutdown(self) -> None:
        jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)

    # -- the task manager -----------------------------------------------------

    async def _guard(self, task: Task) -> None:
        """Scheduler + kojid TaskManager.takeTask/runTask for one task."""
        try:
            await self._gate().wait()
            if self.start_delay:
                await asyncio.sleep(self.start_delay)
            if not self.state.assign(task):  # canceled while FREE
                return
            if self.open_delay:
                await asyncio.sleep(self.open_delay)
            if not self.state.open(task):
                return
            self.host.set_weight(task, _WEIGHTS.get(task.method, 1.0))
            result = await self._handler(task)
            if task.state == koji.TASK_STATES["OPEN"]:
                self.state.close(task, result)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if task.state == koji.TASK_STATES["OPEN"]:
                self.state.fail(task, fault_of(exc))
        finally:
            self.kill()

    async def _handler(self, task: Task) -> Any:
        handlers: dict[str, Callable[..., Awaitable[Any]]] = {
            "build": self._build,
            "tagBuild": self._tag_build,
            "rebuildSRPM": self._child(buildroot.rebuild_srpm),
            "buildSRPMFromSCM": self._child(buildroot.build_srpm_from_scm),
            "buildArch": self._child(buildroot.build_arch),
        }
        handler = handlers.get(task.method)
        if handler is None:
            raise koji.GenericError("No handler for method %s" % task.method)
        # the handler gets the decoded request, not the hub's stored copy
        return await handler(task, *copy.deepcopy(task.request))

    def _child(self, handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def run(task: Task, *args: Any) -> Any:
            self._inject(task)
            return await handler(self, task, *args)

        return run

    def _inject(self, task: Task) -> None:
        """Fail the task if a test asked for it, with a buildroot's logs in place."""
        package = self._package_of(task)
        arch = task.label if task.method == "buildArch" else task.arch
        build_tag = ""
        if task.method == "buildArch" and len(task.request) > 1:
            # (buildArch's arglist: srpm, build tag id, arch, keep_srpm, opts)
            tags = {t.id: n for n, t in self.state.tags.items()}
            build_tag = tags.get(task.request[1], "")
        for failure in self.failures:
            if failure.matches(task.method, package, arch or "", build_tag):
                taskdir = self.hub.task_dir(task.id)
                taskdir.mkdir(parents=True, exist_ok=True)
                (taskdir / "mock_output.log").write_text("fake mock\n")
                (taskdir / "root.log").write_text("fake buildroot ready\n")
                (taskdir / "build.log").write_text(f"injected failure: {failure.message}\n")
                raise xmlrpc.client.Fault(failure.code, failure.message)

    def _package_of(self, task: Task) -> str:
        src = str(task.request[0]) if task.request else ""
        if task.method == "buildSRPMFromSCM" or is_scm_url(src):
            return os.path.basename(src.split("#")[0].split("?")[0]).removesuffix(".git")
        path = self.hub.topdir / "work" / src
        if path.is_file():
            return read_header(path)["name"]
        return os.path.basename(src)

    # -- waiting (koji/tasks.py BaseTaskHandler.wait) ---------------------------

    async def subtask(
        self, parent: Task, method: str, arglist: list[Any], label: str | None, arch: str | None
    ) -> int:
        """BaseTaskHandler.subtask -> host.subtask; the new child is scheduled."""
        child = self.host.subtask(parent, method, arglist, label, arch)
        if child.id not in self._jobs and child.state == koji.TASK_STATES["FREE"]:
            self.schedule(child)
        return child.id

    async def wait(
        self, parent: Task, subtasks: list[int], all: bool = False, failany: bool = False
    ) -> dict[int, Any]:
        checked: set[int] = set()
        self.host.task_set_wait(parent, subtasks)
        while True:
            finished, unfinished = self.host.task_wait(parent)
            if not unfinished:
                break
            if finished:
                if all:
                    if failany:
                        for task_id in set(finished) - checked:
                            try:
                                self.hub.api.task_result(task_id)
                                checked.add(task_id)
                            except (koji.GenericError, xmlrpc.client.Fault):
                                # cancelTaskChildren(self.id), then re-raise
                                for child in self.state.children(parent.id):
                                    self.state.cancel(child, recurse=True)
                                self.kill()
                                raise
                else:
                    break
            await asyncio.sleep(_POLL)
        if all:
            finished = subtasks
        return dict(self.host.task_wait_results(parent, finished))

    # -- build (builder/kojid BuildTask) ---------------------------------------

    async def _build(self, task: Task, src: str, target: Any, opts: dict | None = None) -> None:
        """builder/kojid BuildTask.handler."""
        api = self.hub.api
        if opts is None:
            opts = {}
        if opts.get("arch_override") and not opts.get("scratch"):
            raise koji.BuildError("arch_override is only allowed for scratch builds")
        repo_info = None
        if opts.get("repo_id") is not None:
            repo_info = self.state.repos.get(opts["repo_id"])
            if not repo_info:
                raise koji.BuildError("No such repo: %s" % opts["repo_id"])
            repo_state = koji.REPO_STATES[repo_info.state]
            if repo_state not in ("READY", "EXPIRED"):
                raise koji.BuildError("Bad repo: %s (%s)" % (repo_info.id, repo_state))
        if opts.get("custom_user_metadata") and not isinstance(opts["custom_user_metadata"], dict):
            raise koji.BuildError("custom_user_metadata must be serializable to a JSON object")
        target_info = api.getBuildTarget(target) if target else None
        if target_info:
            dest_tag = target_info["dest_tag"]
            build_tag = target_info["build_tag"]
            if repo_info is not None and repo_info.tag_id != build_tag:
                repo_tag = next(t for t in self.state.tags.values() if t.id == repo_info.tag_id)
                raise koji.BuildError(
                    "Repo/Target mismatch: %s/%s" % (repo_tag.name, target_info["build_tag_name"])
                )
        else:
            if repo_info is None:
                raise koji.GenericError("unknown build target: %s" % target)
            build_tag = repo_info.tag_id
            if target is None:
                opts["skip_tag"] = True
                dest_tag = build_tag
            else:
                taginfo = api.getTag(target)
                if not taginfo:
                    raise koji.GenericError("neither tag nor target: %s" % target)
                dest_tag = taginfo["id"]
        policy_data = {
            "user_id": task.owner,
            "source": src,
            "task_id": task.id,
            "build_tag": build_tag,
            "skip_tag": bool(opts.get("skip_tag")),
            "scratch": opts.get("scratch"),
            "draft": opts.get("draft"),
            "from_scm": is_scm_url(src),
            "repo_id": opts.get("repo_id"),
        }
        if target_info:
            policy_data["target"] = target_info["name"]
        if not opts.get("skip_tag"):
            policy_data["tag"] = dest_tag
        if not is_scm_url(src) and not opts.get("scratch"):
            self.hub.policies.assert_policy("build_from_srpm", policy_data)
        if opts.get("repo_id") is not None:
            self.hub.policies.assert_policy("build_from_repo_id", policy_data)
        self.hub.policies.assert_policy("build_rpm", policy_data)
        if not repo_info:
            # getRepo: the build tag's current repo (no waitrepo child: it is READY)
            tag = next(t for t in self.state.tags.values() if t.id == build_tag)
            repo_info = self.state.repos[tag.repo_id]  # type: ignore[index]
        srpm, source = await self._get_srpm(task, src, build_tag, repo_info.id, opts)
        h = self._read_srpm_header(srpm)
        data: dict[str, Any] = {k: h[k] for k in ("name", "version", "release", "epoch")}
        data["task_id"] = task.id
        if source:
            data["source"] = source["source"]
            data["extra"] = {"source": {"original_url": source["url"]}}
        if opts.get("custom_user_metadata"):
            data.setdefault("extra", {})
            data["extra"]["custom_user_metadata"] = opts["custom_user_metadata"]
        pkg_cfg = api.getPackageConfig(dest_tag, data["name"])
        extra_arches = pkg_cfg.get("extra_arches") if pkg_cfg is not None else None
        if not opts.get("skip_tag") and not opts.get("scratch"):
            assert target_info is not None
            if pkg_cfg is None:
                raise koji.BuildError(
                    "package %s not in list for tag %s"
                    % (data["name"], target_info["dest_tag_name"])
                )
            elif pkg_cfg["blocked"]:
                raise koji.BuildError(
                    "package %s is blocked for tag %s"
                    % (data["name"], target_info["dest_tag_name"])
                )
        archlist = self._arch_list(build_tag, h, extra_arches, opts)
        if opts.get("draft"):
            data["draft"] = opts.get("draft")
        build_id = None
        if not opts.get("scratch"):
            build_id = self.host.init_build(data, task)
        failany = opts.get("fail_fast", False) or not self.build_arch_can_fail
        try:
            srpm, rpms, brmap, logs = await self._run_builds(
                task, srpm, build_tag, archlist, repo_info.id, failany
            )
            if opts.get("scratch"):
                self.host.move_build_to_scratch(task, srpm, rpms, logs)
            else:
                assert build_id is not None
                self.host.complete_build(task, build_id, srpm, rpms, brmap, logs)
        except asyncio.CancelledError:
            raise
        except Exception:
            if not opts.get("scratch"):
                assert build_id is not None
                self.host.fail_build(build_id)
            raise
        if not opts.get("skip_tag") and not opts.get("scratch"):
            assert build_id is not None
            # BuildTask.tagBuild
            child = await self.subtask(
                task, "tagBuild", [dest_tag, build_id, False, None, True], "tag", "noarch"
            )
            await self.wait(task, [child])

    async def _get_srpm(
        self, task: Task, src: Any, build_tag: int, repo_id: int, opts: dict
    ) -> tuple[str, dict | None]:
        """BuildTask.getSRPM / getSRPMFromSRPM / getSRPMFromSCM: the ``srpm`` child."""
        if not isinstance(src, str):
            raise koji.BuildError("Invalid source specification: %s" % src)
        if is_scm_url(src):
            method = "buildSRPMFromSCM"
        else:
            buildconfig = self.hub.api.getBuildConfig(build_tag)
            rebuild = buildconfig["extra"].get("rebuild_srpm", True)
            if opts.get("scratch") and opts.get("rebuild_srpm") is not None:
                rebuild = opts.get("rebuild_srpm")
            if not rebuild:
                return src, None
            method = "rebuildSRPM"
        taskarch = self._choose_taskarch("noarch", None, build_tag)
        arglist = [src, build_tag, {"repo_id": repo_id, "scratch": opts.get("scratch")}]
        child = await self.subtask(task, method, arglist, "srpm", taskarch)
        result = (await self.wait(task, [child]))[child]
        return result["srpm"], result.get("source")

    def _read_srpm_header(self, srpm: str) -> dict[str, Any]:
        """BuildTask.readSRPMHeader."""
        h = read_header(self.hub.topdir / "work" / srpm)
        if not h["sourcepackage"]:
            raise koji.BuildError("%s is not a source package" % srpm)
        return h

    def _arch_list(
        self, build_tag: int, h: dict[str, Any], extra: str | None, opts: dict
    ) -> list[str]:
        """BuildTask.getArchList."""
        buildconfig = self.hub.api.getBuildConfig(build_tag)
        arches = buildconfig["arches"]
        if not arches:
            raise koji.BuildError("No arches for tag %(name)s [%(id)s]" % buildconfig)
        tag_archlist = [koji.canonArch(a) for a in arches.split()]
        if extra:
            arches = "%s %s" % (arches, extra)
        archlist = arches.split()
        buildarchs, exclusivearch, excludearch = (
            h["buildarchs"],
            h["exclusivearch"],
            h["excludearch"],
        )
        if buildarchs:
            archlist = buildarchs
        if exclusivearch:
            archlist = [a for a in archlist if a in exclusivearch]
        if excludearch:
            archlist = [a for a in archlist if a not in excludearch]
        if "noarch" not in excludearch and ("noarch" in buildarchs or "noarch" in exclusivearch):
            archlist.append("noarch")
        override = opts.get("arch_override")
        if opts.get("scratch") and override:
            archlist = override.split()
        archdict: dict[str, int] = {}
        for a in archlist:
            if a == "noarch" or koji.canonArch(a) in tag_archlist:
                archdict[a] = 1
        if not archdict:
            raise koji.BuildError("No matching arches were found")
        return list(archdict)

    def _choose_taskarch(self, arch: str, srpm: str | None, build_tag: int) -> str:
        """BuildTask.choose_taskarch."""
        if koji.util.multi_fnmatch(arch, self.literal_task_arches):
            return arch
        if arch != "noarch":
            return koji.canonArch(arch)
        if srpm is None:
            exclusivearch: list[str] = []
            excludearch: list[str] = []
        else:
            h = self._read_srpm_header(srpm)
            exclusivearch, excludearch = h["exclusivearch"], h["excludearch"]
        buildconfig = self.hub.api.getBuildConfig(build_tag)
        noarch_arches = buildconfig.get("extra", {}).get("noarch_arches")
        if exclusivearch or excludearch or noarch_arches:
            tag_arches = [koji.canonArch(a) for a in buildconfig["arches"].split()]
            exclusivearch = [koji.canonArch(a) for a in exclusivearch]
            excludearch = [koji.canonArch(a) for a in excludearch]
            if noarch_arches:
                archlist = [koji.canonArch(a) for a in noarch_arches.split()]
                archlist = [a for a in archlist if a in tag_arches]
            else:
                archlist = list(tag_arches)
            if exclusivearch:
                archlist = [a for a in archlist if a in exclusivearch]
            if excludearch:
                archlist = [a for a in archlist if a not in excludearch]
            if not archlist:
                raise koji.BuildError(
                    "No valid arches were found. tag %r, extra %r,exclusive %r, exclude %r"
                    % (tag_arches, noarch_arches, exclusivearch, excludearch)
                )
            if set(archlist) != set(tag_arches):
                return self.state.rng.choice(archlist)
            return "noarch"
        return "noarch"

    def noarch_buildroot_arch(self, tag: dict[str, Any], preferred: str | None = None) -> str:
        """koji/tasks.py BaseTaskHandler.find_arch('noarch', host, tag, preferred_arch)."""
        if not tag.get("arches"):
            raise koji.BuildError("No arch list for tag: %s" % tag["name"])
        host_arches = {koji.canonArch(a) for a in self.host_arches.split()}
        common = sorted(host_arches & {koji.canonArch(a) for a in tag["arches"].split()})
        if not common:
            raise koji.BuildError(
                "host %s (%s) does not support any arches of tag %s (%s)"
                % ("builder.example.com", self.host_arches, tag["name"], tag["arches"])
            )
        if preferred and preferred in common:
            return preferred
        return self.state.rng.choice(common)

    async def _run_builds(
        self,
        task: Task,
        srpm: str,
        build_tag: int,
        archlist: list[str],
        repo_id: int,
        failany: bool,
    ) -> tuple[str, list[str], dict[str, int], dict[str, list[str]]]:
        """BuildTask.runBuilds: one buildArch per arch, keep_srpm on the first only."""
        subtasks: dict[str, int] = {}
        keep_srpm = True
        for arch in archlist:
            taskarch = self._choose_taskarch(arch, srpm, build_tag)
            subtasks[arch] = await self.subtask(
                task,
                "buildArch",
                [srpm, build_tag, arch, keep_srpm, {"repo_id": repo_id}],
                arch,
                taskarch,
            )
            keep_srpm = False
        results = await self.wait(task, list(subtasks.values()), all=True, failany=failany)
        rpms: list[str] = []
        brmap: dict[str, int] = {}
        logs: dict[str, list[str]] = {}
        built_srpm = None
        for arch, task_id in subtasks.items():
            result = results[task_id]
            brootid = result["brootid"]
            for fn in result["rpms"]:
                rpms.append(fn)
                brmap[fn] = brootid
            for fn in result["logs"]:
                logs.setdefault(arch, []).append(fn)
            if result["srpms"]:
                if built_srpm:
                    raise koji.BuildError("multiple builds returned a srpm.  task %i" % task.id)
                built_srpm = result["srpms"][0]
                brmap[built_srpm] = brootid
        if not built_srpm:
            raise koji.BuildError("could not find a built srpm")
        return built_srpm, rpms, brmap, logs

    # -- tagBuild (builder/kojid TagBuildTask) ---------------------------------

    async def _tag_build(
        self,
        task: Task,
        tag_id: Any,
        build_id: Any,
        force: bool = False,
        fromtag: Any = None,
        ignore_success: bool = False,
    ) -> None:
        """TagBuildTask.handler: getBuild/getTag strict, then host.tagBuild."""
        self._inject(task)
        self.hub.api.getBuild(build_id, strict=True)
        self.hub.api.getTag(tag_id, strict=True)
        self.host.tag_build(task, tag_id, build_id, force)

    # -- processes ------------------------------------------------------------

    async def run_process(
        self,
        task: Task,
        argv: list[str],
        log: Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        count: bool = True,
    ) -> int:
        """Run a command with its output appended to ``log`` (``$ <argv>`` first, as kojid)."""
        if count:
            self.runs[task.method] = self.runs.get(task.method, 0) + 1
            if self._sem is None:
                self._sem = asyncio.Semaphore(self.slots)
            async with self._sem:
                return await self._exec(argv, log, cwd, env)
        return await self._exec(argv, log, cwd, env)

    async def _exec(
        self, argv: list[str], log: Path, cwd: Path | None, env: dict[str, str] | None
    ) -> int:
        with open(log, "ab") as out:
            out.write(("$ " + " ".join(argv) + "\n").encode())
            out.flush()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    cwd=cwd,
                    env={**os.environ, "LC_ALL": "C", **(env or {})},
                    start_new_session=True,
                )
            except FileNotFoundError as exc:
                out.write(f"{exc}\n".encode())
                return 127
            try:
                return await proc.wait()
            except asyncio.CancelledError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await asyncio.shield(proc.wait())
                raise
