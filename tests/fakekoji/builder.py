"""The fake hub's build host: runs ``build`` and ``tagBuild`` tasks for real.

A ``build`` task gets the children kojid gives it: ``rebuildSRPM`` (uploaded
SRPM) or ``buildSRPMFromSCM`` (git URL), then one ``buildArch`` per arch
(``noarch`` packages get one), each running real ``rpmbuild`` and leaving its
RPMs, ``build.log`` and ``root.log`` in ``work/tasks/<id % 10000>/<id>/``.  A
non-scratch build is then imported: a build record, its RPMs copied under
``packages/<name>/<version>/<release>/<arch>/`` and listed with their
``payloadhash`` (the header's SIGMD5), and a ``tagBuild`` child into the
target's destination tag.  Hub policies a real hub applies by default are
applied too (package list, ``build_from_srpm``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import koji

from tests.fakekoji.state import Build, Task
from tests.rpmfactory import FAST_RPMBUILD_DEFINES

if TYPE_CHECKING:
    from tests.fakekoji.hub import FakeHub

_HEADER_QF = (
    "%{NAME}\\n%{VERSION}\\n%{RELEASE}\\n%{EPOCH}\\n%{ARCH}\\n%{SIGMD5}\\n%{BUILDTIME}\\n"
    "%{SOURCERPM}\\n[%{BUILDARCHS} ]\\n"
)


@dataclass(frozen=True)
class Failure:
    """An injected task failure: tasks of ``method`` for ``package``/``arch`` fail."""

    method: str
    message: str
    package: str = "*"
    arch: str = "*"
    code: int = koji.BuildError.faultCode

    def matches(self, method: str, package: str, arch: str) -> bool:
        return self.method == method and self.package in ("*", package) and self.arch in ("*", arch)


class TaskFailed(Exception):
    def __init__(self, fault: xmlrpc.client.Fault) -> None:
        super().__init__(fault.faultString)
        self.fault = fault


class FakeBuilder:
    def __init__(self, hub: FakeHub, slots: int = 2) -> None:
        self.hub = hub
        self.state = hub.state
        self.slots = slots
        self._sem: asyncio.Semaphore | None = None
        self._jobs: dict[int, asyncio.Task[None]] = {}
        self._open: asyncio.Event | None = None
        #: seconds each task sits in FREE before a "host" takes it
        self.start_delay = 0.0
        #: injected failures, checked before each child task runs
        self.failures: list[Failure] = []
        #: ``git+<prefix>...`` URLs are cloned from the local path mapped to ``prefix``
        self.scm_roots: dict[str, Path] = {}
        #: policy ``build_from_srpm``: may non-admins build non-scratch from an SRPM?
        self.allow_srpm_final = False
        #: rpmbuild runs started, by method
        self.runs: dict[str, int] = {}

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
        runner = self._run_build if task.method == "build" else self._run_tag
        job = asyncio.get_running_loop().create_task(self._guard(task, runner))
        self._jobs[task.id] = job
        job.add_done_callback(lambda _: self._jobs.pop(task.id, None))

    def kill(self, task_id: int) -> None:
        """Stop the job of a canceled task (its rpmbuild process groups die with it)."""
        job = self._jobs.get(task_id)
        if job is not None:
            job.cancel()

    async def shutdown(self) -> None:
        jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)

    # -- tasks ----------------------------------------------------------------

    async def _guard(self, task: Task, runner: Any) -> None:
        try:
            await self._gate().wait()
            if self.start_delay:
                await asyncio.sleep(self.start_delay)
            if task.done:  # canceled while FREE
                return
            self.state.start(task)
            result = await runner(task)
            if not task.done:
                self.state.close(task, result)
        except TaskFailed as exc:
            self.state.fail(task, exc.fault)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.state.fail(task, xmlrpc.client.Fault(1, f"{type(exc).__name__}: {exc}"))

    async def _child(
        self, parent: Task, method: str, arch: str, request: list[Any], package: str, work: Any
    ) -> Any:
        """Run ``work(child)`` as a child task; a failure fails the child and is re-raised."""
        child = self.state.new_task(
            method,
            request,
            parent.owner,
            arch=arch,
            parent=parent.id,
            label=arch if method == "buildArch" else None,
        )
        self.state.start(child)
        try:
            for failure in self.failures:
                if failure.matches(method, package, arch):
                    taskdir = self.hub.task_dir(child.id)
                    taskdir.mkdir(parents=True, exist_ok=True)
                    (taskdir / "build.log").write_text(f"injected failure: {failure.message}\n")
                    (taskdir / "root.log").write_text("fake buildroot ready\n")
                    raise TaskFailed(xmlrpc.client.Fault(failure.code, failure.message))
            result = await work(child)
        except TaskFailed as exc:
            self.state.fail(child, exc.fault)
            raise
        except asyncio.CancelledError:
            self.state.cancel(child)
            raise
        except Exception as exc:
            fault = xmlrpc.client.Fault(1, f"{type(exc).__name__}: {exc}")
            self.state.fail(child, fault)
            raise TaskFailed(fault) from exc
        self.state.close(child, result)
        return result

    async def _run_build(self, task: Task) -> Any:
        src, target_name, opts = task.request
        opts = opts or {}
        scratch = bool(opts.get("scratch"))
        target = self.state.targets[target_name]
        build_tag = self.state.tags[target.build_tag]
        dest_tag = self.state.tags[target.dest_tag]
        dist = build_tag.extra.get("rpm.macro.dist")
        is_scm = "://" in src
        package = await self._package_name(src, is_scm)
        method = "buildSRPMFromSCM" if is_scm else "rebuildSRPM"

        async def make_srpm(child: Task) -> dict[str, Any]:
            return await self._make_srpm(child, src, is_scm, dist)

        srpm_result = await self._child(
            task, method, "noarch", [src, build_tag.id, {"repo_id": 1}], package, make_srpm
        )
        srpm_rel = srpm_result["srpm"]
        srpm = self.hub.topdir / "work" / srpm_rel
        hdr = await self._header(srpm)
        name = hdr["name"]
        build: Build | None = None
        if not scratch:
            owner = self.state.user_by_id(task.owner)
            assert owner is not None
            if not is_scm and not self.allow_srpm_final and "admin" not in owner.perms:
                raise TaskFailed(
                    xmlrpc.client.Fault(
                        koji.ActionNotAllowed.faultCode, "policy violation (build_from_srpm)"
                    )
                )
            if name not in dest_tag.packages:
                raise TaskFailed(
                    xmlrpc.client.Fault(
                        koji.BuildError.faultCode,
                        f"package {name} not in list for tag {dest_tag.name}",
                    )
                )
            nvr = f"{name}-{hdr['version']}-{hdr['release']}"
            existing = self.state.find_build(nvr)
            if existing is not None and koji.BUILD_STATES[existing.state] in (
                "COMPLETE",
                "BUILDING",
            ):
                raise TaskFailed(
                    xmlrpc.client.Fault(
                        koji.GenericError.faultCode,
                        f"Build already exists (id={existing.id}, state="
                        f"{koji.BUILD_STATES[existing.state]}): {existing.info()!r}",
                    )
                )
            build = self.state.new_build(
                name,
                hdr["version"],
                hdr["release"],
                hdr["epoch"],
                owner,
                task.id,
                source=src if is_scm else None,
            )
        try:
            results = await self._build_arches(task, srpm_rel, name, hdr, build_tag, dist)
            if build is not None:
                self._import(build, results)
                build.state = koji.BUILD_STATES["COMPLETE"]
                tag_task = self.state.new_task(
                    "tagBuild", [dest_tag.id, build.id, False, None], task.owner, parent=task.id
                )
                await self._guard(tag_task, self._run_tag)
                if isinstance(tag_task.result, xmlrpc.client.Fault):
                    raise TaskFailed(tag_task.result)
        except BaseException as exc:
            if build is not None and build.state == koji.BUILD_STATES["BUILDING"]:
                cancelled = isinstance(exc, asyncio.CancelledError)
                build.state = koji.BUILD_STATES["CANCELED" if cancelled else "FAILED"]
            raise
        return None

    async def _build_arches(
        self,
        task: Task,
        srpm_rel: str,
        name: str,
        hdr: dict[str, Any],
        build_tag: Any,
        dist: str | None,
    ) -> list[dict[str, Any]]:
        arches = ["noarch"] if "noarch" in hdr["buildarchs"] else build_tag.arches.split()
        jobs = []
        for i, arch in enumerate(arches):
            keep_srpm = i == 0

            async def work(child: Task, arch: str = arch, keep_srpm: bool = keep_srpm) -> Any:
                return await self._build_arch(child, srpm_rel, arch, keep_srpm, dist)

            request = [srpm_rel, build_tag.id, arch, keep_srpm, {"repo_id": 1}]
            jobs.append(
                asyncio.ensure_future(self._child(task, "buildArch", arch, request, name, work))
            )
        # kojid waits with failany: the first failure cancels the other arches;
        # canceling the parent cancels them all (asyncio.wait would leave them running)
        try:
            _, pending = await asyncio.wait(jobs, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            raise
        for job in pending:
            job.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for job in jobs:
            if job.done() and not job.cancelled() and job.exception() is not None:
                raise job.exception()  # type: ignore[misc]
        return [job.result() for job in jobs]

    async def _make_srpm(self, child: Task, src: str, is_scm: bool, dist: str | None) -> dict:
        taskdir = self.hub.task_dir(child.id)
        taskdir.mkdir(parents=True, exist_ok=True)
        log = taskdir / "build.log"
        with tempfile.TemporaryDirectory(prefix="fakekoji-srpm-") as tmp:
            top = Path(tmp)
            defines = self._defines(top, dist)
            if is_scm:
                checkout = await self._checkout(src, top / "checkout", taskdir / "checkout.log")
                specs = sorted(checkout.glob("*.spec"))
                if len(specs) != 1:
                    raise TaskFailed(
                        xmlrpc.client.Fault(
                            koji.BuildError.faultCode,
                            f"expected one spec file in {src}, found {len(specs)}",
                        )
                    )
                argv = [
                    "rpmbuild",
                    "-bs",
                    *defines,
                    "--define",
                    f"_sourcedir {checkout}",
                    str(specs[0]),
                ]
            else:
                uploaded = self.hub.topdir / "work" / src
                if not uploaded.is_file():
                    raise TaskFailed(
                        xmlrpc.client.Fault(
                            koji.GenericError.faultCode, f"No such file: work/{src}"
                        )
                    )
                argv = ["rpmbuild", "-rs", "--nodeps", *defines, str(uploaded)]
            if await self._run(child, argv, log) != 0:
                raise TaskFailed(
                    xmlrpc.client.Fault(
                        koji.BuildError.faultCode,
                        "error building srpm, mock exited with status 1; "
                        "see build.log for more information",
                    )
                )
            produced = sorted((top / "SRPMS").glob("*.src.rpm"))
            if len(produced) != 1:
                raise TaskFailed(
                    xmlrpc.client.Fault(
                        koji.BuildError.faultCode, f"expected one srpm, got {len(produced)}"
                    )
                )
            dest = taskdir / produced[0].name
            shutil.move(produced[0], dest)
        (taskdir / "root.log").write_text(f"fake buildroot for srpm of {src}\n")
        rel = str(dest.relative_to(self.hub.topdir / "work"))
        return {
            "srpm": rel,
            "logs": [str(log.relative_to(self.hub.topdir / "work"))],
            "brootid": child.id,
        }

    async def _checkout(self, src: str, dest: Path, log: Path) -> Path:
        url = src.removeprefix("git+")
        url, _, ref = url.partition("#")
        local = next(
            (
                os.path.join(path, url[len(prefix) :])
                for prefix, path in self.scm_roots.items()
                if url.startswith(prefix)
            ),
            None,
        )
        if local is None:
            raise TaskFailed(
                xmlrpc.client.Fault(
                    koji.BuildError.faultCode,
                    f"Unable to checkout {src}: host is not an allowed SCM",
                )
            )
        for argv in (
            ["git", "clone", "-q", local, str(dest)],
            ["git", "-C", str(dest), "checkout", "-q", ref or "HEAD"],
        ):
            if await self._exec(argv, log) != 0:
                raise TaskFailed(
                    xmlrpc.client.Fault(
                        koji.GenericError.faultCode,
                        f'Error running GIT command "{" ".join(argv[:2])}", '
                        "see checkout.log for details",
                    )
                )
        return dest

    async def _build_arch(
        self, child: Task, srpm_rel: str, arch: str, keep_srpm: bool, dist: str | None
    ) -> dict[str, Any]:
        taskdir = self.hub.task_dir(child.id)
        taskdir.mkdir(parents=True, exist_ok=True)
        log = taskdir / "build.log"
        (taskdir / "root.log").write_text(f"fake buildroot ready for {arch}\n")
        srpm = self.hub.topdir / "work" / srpm_rel
        with tempfile.TemporaryDirectory(prefix="fakekoji-arch-") as tmp:
            top = Path(tmp)
            argv = ["rpmbuild", "--rebuild", "--nodeps", *self._defines(top, dist)]
            if arch != "noarch":
                argv += ["--target", arch]
            if await self._run(child, [*argv, str(srpm)], log) != 0:
                raise TaskFailed(
                    xmlrpc.client.Fault(
                        koji.BuildError.faultCode,
                        f"error building package (arch {arch}), mock exited with status 1; "
                        "see build.log for more information",
                    )
                )
            for rpm in sorted((top / "RPMS").rglob("*.rpm")):
                shutil.move(rpm, taskdir / rpm.name)
        if keep_srpm:
            shutil.copy2(srpm, taskdir / srpm.name)
        work = self.hub.topdir / "work"

        def rel(paths: list[Path]) -> list[str]:
            return [str(p.relative_to(work)) for p in paths]

        rpms = sorted(p for p in taskdir.glob("*.rpm") if not p.name.endswith(".src.rpm"))
        srpms = sorted(taskdir.glob("*.src.rpm"))
        logs = sorted(taskdir.glob("*.log"))
        return {"rpms": rel(rpms), "srpms": rel(srpms), "logs": rel(logs), "brootid": child.id}

    def _import(self, build: Build, results: list[dict[str, Any]]) -> None:
        """Move a finished build's files under packages/ and list its RPMs (host.completeBuild)."""
        work = self.hub.topdir / "work"
        builddir = self.hub.topdir / "packages" / build.name / build.version / build.release
        for result in results:
            for rel in [*result["srpms"], *result["rpms"]]:
                path = work / rel
                info = _read_header_sync(path)
                arch = "src" if info["sourcerpm"] == "(none)" else info["arch"]
                dest = builddir / arch / path.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)
                build.rpms.append(
                    {
                        "id": self.state.new_rpm_id(),
                        "name": info["name"],
                        "version": info["version"],
                        "release": info["release"],
                        "nvr": f"{info['name']}-{info['version']}-{info['release']}",
                        "arch": arch,
                        "epoch": info["epoch"],
                        "payloadhash": info["sigmd5"],
                        "size": dest.stat().st_size,
                        "buildtime": info["buildtime"],
                        "build_id": build.id,
                        "buildroot_id": result["brootid"],
                        "external_repo_id": 0,
                        "external_repo_name": "INTERNAL",
                        "metadata_only": False,
                        "extra": None,
                    }
                )
            for rel in result["logs"]:
                arch = (work / rel).parent.name
                dest = builddir / "data" / "logs" / arch / Path(rel).name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(work / rel, dest)
        build.completion_ts = build.create_ts

    async def _run_tag(self, task: Task) -> None:
        tag_id, build_id = task.request[0], task.request[1]
        tag = next(t for t in self.state.tags.values() if t.id == tag_id)
        build = self.state.builds[build_id]
        if build.name not in tag.packages:
            raise TaskFailed(
                xmlrpc.client.Fault(
                    koji.TagError.faultCode, f"package {build.name} not in list for tag {tag.name}"
                )
            )
        if build.id in tag.builds:
            raise TaskFailed(
                xmlrpc.client.Fault(
                    koji.TagError.faultCode, f"build {build.nvr} already tagged ({tag.name})"
                )
            )
        tag.builds.add(build.id)

    # -- processes ------------------------------------------------------------

    def _defines(self, top: Path, dist: str | None) -> list[str]:
        defines = {**FAST_RPMBUILD_DEFINES, "_topdir": str(top)}
        if dist:
            defines["dist"] = dist
        out: list[str] = []
        for key, value in defines.items():
            out += ["--define", f"{key} {value}"]
        return out

    async def _run(self, task: Task, argv: list[str], log: Path) -> int:
        self.runs[task.method] = self.runs.get(task.method, 0) + 1
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.slots)
        async with self._sem:
            return await self._exec(argv, log)

    async def _exec(self, argv: list[str], log: Path) -> int:
        with open(log, "ab") as out:
            out.write(("$ " + " ".join(argv) + "\n").encode())
            out.flush()
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "LC_ALL": "C"},
                start_new_session=True,
            )
            try:
                return await proc.wait()
            except asyncio.CancelledError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await asyncio.shield(proc.wait())
                raise

    async def _header(self, path: Path) -> dict[str, Any]:
        return await asyncio.to_thread(_read_header_sync, path)

    async def _package_name(self, src: str, is_scm: bool) -> str:
        """The package a build is for, as far as it is known before the SRPM exists."""
        if is_scm:
            return os.path.basename(src.split("#")[0]).removesuffix(".git")
        uploaded = self.hub.topdir / "work" / src
        if uploaded.is_file():
            return (await self._header(uploaded))["name"]
        return os.path.basename(src)


def _read_header_sync(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["rpm", "-qp", "--nosignature", "--qf", _HEADER_QF, str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    name, version, release, epoch, arch, sigmd5, buildtime, sourcerpm, buildarchs = out[:9]
    return {
        "name": name,
        "version": version,
        "release": release,
        "epoch": None if epoch == "(none)" else int(epoch),
        "arch": arch,
        "sigmd5": sigmd5,
        "buildtime": int(buildtime),
        "sourcerpm": sourcerpm,
        "buildarchs": buildarchs.split(),
    }
