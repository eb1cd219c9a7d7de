"""kojid's buildroot tasks: ``rebuildSRPM``, ``buildSRPMFromSCM`` and ``buildArch``.

Ported from builder/kojid at koji commit 2083513a (RebuildSRPM.handler,
BuildSRPMFromSCMTask.handler, BuildArchTask.handler, class BuildRoot and
BuildRootLogs), with ``rpmbuild`` standing in for mock: the same macros a
koji mock config sets (``%vendor``/``%packager``/``%distribution`` from
kojid.conf, ``rpm.macro.*`` from the build tag's extra), the same result
dicts, the same log files uploaded to ``work/tasks/<id % 10000>/<id>/``
(``mock_config.log``, ``mock_output.log``, ``root.log``, ``build.log``,
``state.log``, ``hw_info.log``, ``installed_pkgs.log``, and
``noarch_rpmdiff.json`` for noarch RPMs), and the same failure texts, whose
"see <log>" part follows mock's exit status (BuildRoot._mockResult).
"""

# Error texts are copied from koji's source, %-formatting included, so that
# they can be grepped for there.
# ruff: noqa: UP031

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import koji
import koji.util

from tests.fakekoji.rpmheader import noarch_hash, read_header
from tests.fakekoji.scm import SCM, git_environment
from tests.fakekoji.state import Task
from tests.rpmfactory import FAST_RPMBUILD_DEFINES

if TYPE_CHECKING:
    from tests.fakekoji.builder import FakeBuilder

# mockbuild: a failed rpmbuild inside ``mock --rebuild``/``--buildsrpm`` is exit 10
MOCK_BUILD_FAILURE = 10


def mock_result(returncode: int, logfile: str | None = None) -> str:
    """builder/kojid BuildRoot._mockResult (with koji.util.parseStatus)."""
    rv = -returncode if returncode < 0 else returncode << 8  # a waitpid status
    if logfile:
        pass
    elif os.WIFEXITED(rv) and os.WEXITSTATUS(rv) == 10:
        logfile = "build.log"
    elif os.WIFEXITED(rv) and os.WEXITSTATUS(rv) == 1:
        logfile = "build.log or root.log"
    else:
        logfile = "root.log"
    return koji.util.parseStatus(rv, "mock") + "; see %s for more information" % logfile


class BuildRoot:
    """builder/kojid class BuildRoot, as far as files and faults show it."""

    def __init__(self, builder: FakeBuilder, task: Task, tag: dict[str, Any], arch: str) -> None:
        self.builder = builder
        self.task = task
        self.config = builder.hub.api.getBuildConfig(tag["id"])
        repo_id = builder.state.tags[self.config["name"]].repo_id
        assert repo_id is not None
        # HostExports.newBuildRoot: an id from its own sequence, not the task id
        self.record = builder.state.new_buildroot(task.id, koji.canonArch(arch), repo_id)
        self.id = self.record.id
        self.arch = arch
        self.name = "%s-%s-%s" % (self.config["name"], self.id, repo_id)
        self.taskdir = builder.hub.task_dir(task.id)
        self.taskdir.mkdir(parents=True, exist_ok=True)
        self.logs: list[str] = []

    def log(self, name: str, text: str) -> Path:
        """BuildRoot.incremental_log / single_log: a log in the task's upload dir."""
        path = self.taskdir / name
        with open(path, "a") as fh:
            fh.write(text)
        if name not in self.logs:
            self.logs.append(name)
        return path

    def init(self) -> None:
        """BuildRoot._writeMockConfig + init: mock_config.log and mock's own logs."""
        macros = {
            "%_topdir": "/builddir/build",
            "%_host_cpu": self.arch,
            "%vendor": self.builder.vendor,
            "%packager": self.builder.packager,
            "%distribution": self.builder.distribution,
            **self.tag_macros(),
        }
        config = [f"config_opts['root'] = '{self.name}'"]
        config += [f"config_opts['macros']['{k}'] = '{v}'" for k, v in macros.items()]
        self.log("mock_config.log", "\n".join(config) + "\n")
        self.log("mock_output.log", f"INFO: mock.py version (fake) starting for {self.name}\n")
        self.log("root.log", f"DEBUG: buildroot {self.name} ({self.arch}) initialized\n")
        self.log("state.log", "Start: init plugins\nFinish: init plugins\nStart: chroot init\n")
        self.log("hw_info.log", "CPU info:\nArchitecture: %s\n" % self.arch)
        self.log("installed_pkgs.log", "rpm-build\nbash\n")
        self.record.state = koji.BR_STATES["BUILDING"]

    def tag_macros(self) -> dict[str, str]:
        # _writeMockConfig: rpm.macro.X in the tag's extra -> %X, value str()'d
        return {
            "%" + key[10:]: str(value)
            for key, value in self.config["extra"].items()
            if key.startswith("rpm.macro.")
        }

    def defines(self, topdir: Path) -> list[str]:
        macros: dict[str, str] = {**FAST_RPMBUILD_DEFINES, "_topdir": str(topdir)}
        macros.update(
            vendor=self.builder.vendor,
            packager=self.builder.packager,
            distribution=self.builder.distribution,
        )
        macros.update({k[1:]: v for k, v in self.tag_macros().items()})
        out: list[str] = []
        for key, value in macros.items():
            out += ["--define", f"{key} {value}"]
        return out

    async def mock(self, argv: list[str], log: str = "build.log", cwd: Path | None = None) -> int:
        """One mock invocation; its command goes to mock_output.log, its output to ``log``."""
        self.log("mock_output.log", "$ " + " ".join(argv) + "\n")
        self.log(log, "")
        rc = await self.builder.run_process(self.task, argv, self.taskdir / log, cwd=cwd)
        self.log("state.log", f"Finish: {argv[0]} (exit {rc})\n")
        return rc

    def expire(self) -> None:
        self.record.state = koji.BR_STATES["EXPIRED"]

    def relpaths(self, names: list[str]) -> list[str]:
        up = koji.pathinfo.taskrelpath(self.task.id)
        return ["%s/%s" % (up, f) for f in self.builder.state.unordered(names)]


async def rebuild_srpm(
    builder: FakeBuilder, task: Task, srpm: str, build_tag: Any, opts: dict | None = None
) -> dict[str, Any]:
    """builder/kojid RebuildSRPM.handler."""
    opts = opts or {}
    if not opts.get("repo_id"):
        raise koji.BuildError("A repo id must be provided")
    tag = builder.hub.api.getTag(build_tag, strict=True)
    broot = BuildRoot(builder, task, tag, builder.noarch_buildroot_arch(tag))
    broot.init()
    # TaskHandler.localPath: "<topdir>/<relpath>" as a string (a URL's // survives)
    fn = "%s/work/%s" % (builder.hub.topdir, srpm)
    if not os.path.exists(fn):
        raise koji.BuildError("Input SRPM file missing: %s" % fn)
    with tempfile.TemporaryDirectory(prefix="fakekoji-srpm-") as tmp:
        top = Path(tmp)
        srpmdir = top / "srpm"
        srpmdir.mkdir()
        shutil.copy(fn, srpmdir)  # as kojid does (a directory here is an IsADirectoryError)
        local = str(srpmdir / os.path.basename(srpm))
        rc = await broot.mock(["rpmbuild", "-rs", "--nodeps", *broot.defines(top), local])
        if rc:
            broot.expire()
            # a failing ``mock --chroot -- rpmbuild`` exits with rpmbuild's status
            raise koji.BuildError("error building srpm, %s" % mock_result(rc))
        return _upload_srpm(broot, top)


async def build_srpm_from_scm(
    builder: FakeBuilder, task: Task, url: str, build_tag: Any, opts: dict | None = None
) -> dict[str, Any]:
    """builder/kojid BuildSRPMFromSCMTask.handler."""
    opts = opts or {}
    scm = SCM(url, allow_password=builder.allow_password_in_scm_url)
    channel = next(c for c in builder.state.channels.values() if c.id == task.channel_id)
    scm.assert_allowed(
        allowed=builder.allowed_scms,
        evaluate=lambda data: builder.hub.policies.evaluate("build_from_scm", data),
        by_config=builder.allowed_scms_use_config,
        by_policy=builder.allowed_scms_use_policy,
        policy_data={
            "user_id": task.owner,
            "channel": channel.name,
            "scratch": opts.get("scratch"),
        },
    )
    if not opts.get("repo_id"):
        raise koji.BuildError("A repo id must be provided")
    tag = builder.hub.api.getTag(build_tag, strict=True)
    broot = BuildRoot(builder, task, tag, builder.noarch_buildroot_arch(tag))
    broot.init()
    with tempfile.TemporaryDirectory(prefix="fakekoji-scm-") as tmp:
        # kojid: scmdir = broot.tmpdir() + '/scmroot', inside the mock root
        scmdir = Path(tmp) / broot.name / "root" / "chroot_tmpdir" / "scmroot"
        scmdir.mkdir(parents=True)
        logfile = broot.taskdir / "checkout.log"  # uploaded, but not listed in 'logs'
        env = git_environment(builder.scm_roots, builder.git_config)

        async def run(cmd: list[str], cwd: Path) -> int:
            return await builder.run_process(task, cmd, logfile, cwd=cwd, env=env, count=False)

        sourcedir = await scm.checkout(scmdir, run)
        source = await scm.get_source()
        spec_files = glob.glob("%s/*.spec" % sourcedir)
        if not spec_files:  # support_rpm_source_layout
            spec_files = glob.glob("%s/SPECS/*.spec" % sourcedir)
        if len(spec_files) == 0:
            raise koji.BuildError("No spec file found")
        elif len(spec_files) > 1:
            base = os.path.basename(sourcedir)
            options = (f"{sourcedir}/{base}.spec", f"{sourcedir}/SPECS/{base}.spec")
            spec_file = next((s for s in options if s in spec_files), None)
            if not spec_file:
                raise koji.BuildError(
                    "Multiple spec files found but none is matching SCM checkout dir name: %s"
                    % spec_files
                )
        else:
            spec_file = spec_files[0]
        _spec_sanity_checks(spec_file)
        # BuildRoot.build_srpm: source_cmd in the chroot, then mock --buildsrpm
        if scm.source_cmd:
            rc = await broot.mock(list(scm.source_cmd), log="root.log", cwd=Path(sourcedir))
            if rc:
                broot.expire()
                raise koji.BuildError("error retrieving sources, %s" % mock_result(rc))
        sources_dir = sourcedir
        if os.path.isdir("%s/SOURCES" % sourcedir):
            sources_dir = "%s/SOURCES" % sourcedir
        top = Path(tmp) / "build"
        argv = ["rpmbuild", "-bs", "--nodeps", *broot.defines(top)]
        argv += ["--define", f"_sourcedir {sources_dir}", spec_file]
        rc = await broot.mock(argv)
        if rc:
            broot.expire()
            raise koji.BuildError("error building srpm, %s" % mock_result(MOCK_BUILD_FAILURE))
        result = _upload_srpm(broot, top)
    result["source"] = source
    return result


def _spec_sanity_checks(filename: str) -> None:
    """builder/kojid BuildSRPMFromSCMTask.spec_sanity_checks (``re.match``: start of file)."""
    spec = Path(filename).read_text()
    for tag in ("Packager", "Distribution", "Vendor"):
        if re.match("%s:" % tag, spec, re.M):
            raise koji.BuildError("%s is not allowed to be set in spec file" % tag)
    for tag in ("packager", "distribution", "vendor"):
        if re.match(r"%%define\s+%s\s+" % tag, spec, re.M):
            raise koji.BuildError("%s is not allowed to be defined in spec file" % tag)


def _upload_srpm(broot: BuildRoot, top: Path) -> dict[str, Any]:
    """The end of RebuildSRPM/BuildSRPMFromSCMTask.handler: check, upload, result."""
    srpms = glob.glob("%s/SRPMS/*.src.rpm" % top)
    if len(srpms) == 0:
        raise koji.BuildError("No srpms found in %s" % top)
    elif len(srpms) > 1:
        raise koji.BuildError("Multiple srpms found in %s: %s" % (top, ", ".join(srpms)))
    srpm = Path(srpms[0])
    h = read_header(srpm)
    srpm_name = "%(name)s-%(version)s-%(release)s.src.rpm" % h
    if srpm_name != srpm.name:
        raise koji.BuildError("srpm name mismatch: %s != %s" % (srpm_name, srpm.name))
    shutil.move(srpm, broot.taskdir / srpm_name)
    broot.expire()
    uploadpath = koji.pathinfo.taskrelpath(broot.task.id)
    return {
        "srpm": "%s/%s" % (uploadpath, srpm_name),
        "logs": broot.relpaths(broot.logs),
        "brootid": broot.id,
        "source": {"source": srpm_name, "url": srpm_name},
    }


async def build_arch(
    builder: FakeBuilder,
    task: Task,
    pkg: str,
    root: Any,
    arch: str,
    keep_srpm: bool,
    opts: dict | None = None,
) -> dict[str, Any]:
    """builder/kojid BuildArchTask.handler."""
    opts = opts or {}
    if not opts.get("repo_id"):
        raise koji.BuildError("A repo id must be provided")
    fn = "%s/work/%s" % (builder.hub.topdir, pkg)
    if not os.path.exists(fn):
        raise koji.BuildError("SRPM file missing: %s" % fn)
    h = read_header(Path(fn))
    if not h["sourcepackage"]:
        raise koji.BuildError("not a source package")
    # BuildArchTask.updateWeight: 1.5 + 0.75 per hour of the package's average build
    avg = builder.host.average_build_duration(h["name"])
    if avg and avg > 0:
        builder.host.set_weight(task, 1.5 + min(18.0, avg / 4800.0))
    tag = builder.hub.api.getTag(root, strict=True)
    # noarch: find_arch(arch, host, tag, preferred_arch=<the task's arch>)
    br_arch = arch if arch != "noarch" else builder.noarch_buildroot_arch(tag, task.arch)
    broot = BuildRoot(builder, task, tag, br_arch)
    broot.init()
    with tempfile.TemporaryDirectory(prefix="fakekoji-arch-") as tmp:
        top = Path(tmp)
        # mock --rebuild: the srpm is rebuilt with the buildroot's macros, then built
        argv = ["rpmbuild", "-ra", "--nodeps", "--target", arch, *broot.defines(top)]
        if await broot.mock([*argv, fn]):
            broot.expire()
            raise koji.BuildError(
                "error building package (arch %s), %s" % (arch, mock_result(MOCK_BUILD_FAILURE))
            )
        # mock's result dir holds the rpms and, from --rebuild, the srpm it rebuilt
        resultdir = top / "result"
        resultdir.mkdir()
        for path in [*top.glob("RPMS/*/*.rpm"), *top.glob("SRPMS/*.src.rpm")]:
            shutil.move(path, resultdir / path.name)
        rpm_files = [
            f.name
            for f in resultdir.iterdir()
            if f.name.endswith(".rpm") and not f.name.endswith(".src.rpm")
        ]
        srpm_files = [f.name for f in resultdir.glob("*.src.rpm")]
        log_files = list(broot.logs)
        hashes = {f: noarch_hash(resultdir / f) for f in rpm_files if f.endswith(".noarch.rpm")}
        if hashes:
            # for noarch rpms compute rpmdiff hash
            payload = {str(task.id): hashes}
            broot.log("noarch_rpmdiff.json", json.dumps(payload, indent=2, sort_keys=True))
            log_files = list(broot.logs)
        for f in rpm_files:
            shutil.move(resultdir / f, broot.taskdir / f)
        if keep_srpm:
            if len(srpm_files) == 0:
                raise koji.BuildError("no srpm files found for task %i" % task.id)
            if len(srpm_files) > 1:
                raise koji.BuildError(
                    "multiple srpm files found for task %i: %s" % (task.id, srpm_files)
                )
            # srpm_sanity_checks
            fields = read_header(resultdir / srpm_files[0])
            for key in ("packager", "vendor", "distribution"):
                if not fields[key]:
                    raise koji.BuildError("The build system failed to set the %s tag" % key)
            shutil.move(resultdir / srpm_files[0], broot.taskdir / srpm_files[0])
    ret = {
        "rpms": broot.relpaths(rpm_files),
        "srpms": broot.relpaths(srpm_files) if keep_srpm else [],
        "logs": broot.relpaths(log_files),
        "brootid": broot.id,
    }
    broot.expire()
    return ret
