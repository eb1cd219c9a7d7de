"""kojid's SCM handling: koji/daemon.py ``class SCM`` at koji commit 2083513a.

URL parsing, the ``allowed_scms`` / ``build_from_scm`` checks, the git
checkout command sequence and ``get_source`` are ported line for line (texts
included) from the kojid the fake follows.  Only where the commands run
differs: the fake maps SCM URLs to local repositories with git's own
``url.<base>.insteadOf`` (set through ``GIT_CONFIG_*`` environment variables),
so every command in ``checkout.log`` and in a fault is kojid's exact argv
while git fetches over ``file://``, the smart transport, which (like a real
git server and unlike a plain-path clone) only hands out reachable objects.
``GIT_ALLOW_PROTOCOL=file`` keeps an unmapped host from reaching the network.
"""

# Error texts are copied from koji's source, %-formatting included, so that
# they can be grepped for there.
# ruff: noqa: UP031

from __future__ import annotations

import asyncio
import os
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import koji

# koji/daemon.py SCM.types
TYPES = {
    "CVS": ("cvs://",),
    "CVS+SSH": ("cvs+ssh://",),
    "GIT": ("git://", "git+http://", "git+https://", "git+rsync://"),
    "GIT+SSH": ("git+ssh://",),
    "SVN": ("svn://", "svn+http://", "svn+https://"),
    "SVN+SSH": ("svn+ssh://",),
}

#: runs one checkout command: (argv, cwd) -> exit status; output goes to checkout.log
Runner = Callable[[list[str], Path], Awaitable[int]]


def is_scm_url(url: str, strict: bool = False) -> bool:
    """koji/daemon.py SCM.is_scm_url: a prefix test on the listed schemes only."""
    schemes = [s for t in TYPES for s in TYPES[t]]
    for scheme in schemes:
        if url.startswith(scheme):
            return True
    if strict:
        raise koji.GenericError(
            "Invalid scheme in scm url. Valid schemes are: %s" % " ".join(sorted(schemes))
        )
    return False


class SCM:
    """koji/daemon.py SCM (kojid's copy), for git URLs end to end."""

    def __init__(self, url: str, allow_password: bool = False) -> None:
        if not is_scm_url(url, strict=True):
            raise koji.GenericError("Invalid SCM URL: %s" % url)
        self.url = url
        scheme, user, password, host, path, query, fragment = self._parse_url(allow_password)
        self.scheme = scheme
        self.user = f"{user}:{password}" if password is not None else user
        self.host = host
        self.repository = path
        self.module = query
        self.revision = fragment
        self.use_common = True
        self.source_cmd: list[str] | None = ["make", "sources"]
        self.scmtype = next(t for t, schemes in TYPES.items() if self.scheme in schemes)
        self.sourcedir: str | None = None

    def get_info(self) -> dict[str, Any]:
        keys = ["url", "scheme", "user", "host", "repository", "module", "revision", "scmtype"]
        return {k: getattr(self, k) for k in keys}

    def _parse_url(self, allow_password: bool = False) -> tuple:
        """koji/daemon.py SCM._parse_url."""
        scheme = self.url.split("://")[0] + "://"
        dummyurl = self.url.replace(scheme, "http://", 1)
        parsed_url = urllib.parse.urlparse(dummyurl)
        path = parsed_url.path
        params = parsed_url.params
        query = parsed_url.query
        fragment = parsed_url.fragment
        user = None
        password = None
        userhost = parsed_url.netloc.split("@")
        if len(userhost) > 2:
            raise koji.GenericError("Invalid username@hostname specified: %s" % userhost)
        if not userhost:
            raise koji.GenericError(
                "Unable to parse SCM URL: %s . Could not find the netloc element." % self.url
            )
        if parsed_url.username:
            user = parsed_url.username
        if parsed_url.password:
            password = parsed_url.password
        if password is not None and not allow_password:
            raise koji.GenericError(
                "username:password format not supported: %s:%s" % (user, password)
            )
        netloc = userhost[-1]
        if not path:
            raise koji.GenericError(
                "Unable to parse SCM URL: %s . Could not find the path element." % self.url
            )
        path = os.path.normpath(path)
        path = path.rstrip("/")
        query = query.rstrip("/")
        if path.startswith("//"):
            path = "/" + path.strip("/")
        if params:
            raise koji.GenericError(
                "Unable to parse SCM URL: %s . Params element %s should be empty."
                % (self.url, params)
            )
        if not fragment:
            raise koji.GenericError(
                "Unable to parse SCM URL: %s . Could not find the fragment element." % self.url
            )
        return scheme, user, password, netloc, path, query, fragment

    # -- allowed? -------------------------------------------------------------

    def assert_allowed(
        self,
        allowed: str,
        evaluate: Callable[[dict[str, Any]], str | None],
        by_config: bool = True,
        by_policy: bool = False,
        policy_data: dict[str, Any] | None = None,
    ) -> None:
        """koji/daemon.py SCM.assert_allowed; ``evaluate`` is evalPolicy('build_from_scm', data)."""
        if by_config:
            self.assert_allowed_by_config(allowed or "")
        if by_policy:
            self.assert_allowed_by_policy(evaluate, **(policy_data or {}))

    def assert_allowed_by_config(self, allowed: str) -> None:
        """koji/daemon.py SCM.assert_allowed_by_config: kojid.conf ``allowed_scms``."""
        is_allowed = False
        for allowed_scm in allowed.split():
            scm_tuple = allowed_scm.split(":")
            if len(scm_tuple) < 2:
                continue
            host_pat = scm_tuple[0]
            repo_pat = scm_tuple[1]
            invert = False
            if host_pat.startswith("!"):
                invert = True
                host_pat = host_pat[1:]
            if fnmatch(self.host, host_pat) and fnmatch(self.repository, repo_pat):
                if invert:
                    break
                is_allowed = True
                if len(scm_tuple) >= 3 and scm_tuple[2].lower() in ("no", "off", "false", "0"):
                    self.use_common = False
                if len(scm_tuple) >= 4:
                    self.source_cmd = scm_tuple[3].split(",") if scm_tuple[3] else None
                break
        if not is_allowed:
            raise koji.BuildError(
                "%s:%s is not in the list of allowed SCMs" % (self.host, self.repository)
            )

    def assert_allowed_by_policy(
        self, evaluate: Callable[[dict[str, Any]], str | None], **extra_data: Any
    ) -> None:
        """koji/daemon.py SCM.assert_allowed_by_policy: the hub's ``build_from_scm`` policy."""
        policy_data = {}
        for k, v in self.get_info().items():
            policy_data[re.sub(r"^(scm_?)?", "scm_", k)] = v
        policy_data.update(extra_data)
        result = (evaluate(policy_data) or "").split()
        is_allowed = result and result[0].lower() in ("yes", "true", "allow", "allowed")
        if not is_allowed:
            raise koji.BuildError(
                "SCM: %s:%s is not allowed, reason: %s"
                % (self.host, self.repository, " ".join(result[1:]) or None)
            )
        applied = result[1:]
        self.use_common = len(applied) != 0 and applied[0].lower() == "use_common"
        idx = 1 if self.use_common else 0
        self.source_cmd = applied[idx:] or self.source_cmd
        if self.source_cmd and self.source_cmd[0].lower() == "none":
            self.source_cmd = None

    # -- checkout -------------------------------------------------------------

    async def checkout(self, scmdir: Path, run: Runner, logname: str = "checkout.log") -> str:
        """koji/daemon.py SCM.checkout for GIT and GIT+SSH: clone -n, fetch, reset, common."""
        if self.scmtype not in ("GIT", "GIT+SSH"):
            raise koji.BuildError("Unknown SCM type: %s" % self.scmtype)
        if self.scmtype == "GIT+SSH" and not self.user:
            raise koji.BuildError(
                "No user specified for repository access scheme: %s" % self.scheme
            )
        if self.scmtype == "GIT":
            scheme = self.scheme.split("+")[1] if "+" in self.scheme else self.scheme
            if self.user:
                gitrepo = "%s%s@%s%s" % (scheme, self.user, self.host, self.repository)
            else:
                gitrepo = "%s%s%s" % (scheme, self.host, self.repository)
        else:
            gitrepo = "git+ssh://%s@%s%s" % (self.user, self.host, self.repository)
        commonrepo = os.path.dirname(gitrepo) + "/common"
        checkout_path = os.path.basename(self.repository)
        if self.repository.endswith("/.git"):
            checkout_path = os.path.basename(self.repository[:-5])
            commonrepo = os.path.dirname(gitrepo[:-5]) + "/common/.git"
        elif self.repository.endswith(".git"):
            checkout_path = os.path.basename(self.repository[:-4])
            commonrepo = os.path.dirname(gitrepo[:-4]) + "/common.git"
        rev = self.revision[7:] if self.revision.startswith("origin/") else self.revision
        sourcedir = "%s/%s" % (scmdir, checkout_path)
        module_checkout_cmd = ["git", "clone", "-n", gitrepo, sourcedir]
        common_checkout_cmd = ["git", "clone", commonrepo, "common"]
        update_checkout_cmds = [
            ["git", "fetch", "origin", "%s:KOJI_FETCH_HEAD" % rev],
            ["git", "reset", "--hard", "KOJI_FETCH_HEAD"],
        ]
        update_recovery_cmd = ["git", "reset", "--hard", self.revision]
        update_checkout_dir = Path(sourcedir)
        if self.module:
            sourcedir = "%s/%s" % (sourcedir, self.module)

        async def _run(cmd: list[str], chdir: Path) -> None:
            if await run(cmd, chdir):
                raise koji.BuildError(
                    'Error running %s command "%s", see %s for details'
                    % (self.scmtype, " ".join(cmd), logname)
                )

        await _run(module_checkout_cmd, scmdir)
        try:
            for cmd in update_checkout_cmds:
                await _run(cmd, update_checkout_dir)
        except Exception:
            # use old-style checkout, e.g. for shortened refs
            await _run(update_recovery_cmd, update_checkout_dir)
        if self.use_common:
            await _run(common_checkout_cmd, scmdir)
            if not os.path.exists("%s/../common" % sourcedir):
                destdir = os.path.split(sourcedir)[0]
                path_comps = destdir[len(str(scmdir)) + 1 :]
                rel_path = "../" * len(path_comps.split("/"))
                os.symlink(rel_path + "common", "%s/../common" % sourcedir)
        self.sourcedir = sourcedir
        return sourcedir

    async def get_source(self) -> dict[str, str]:
        """koji/daemon.py SCM.get_source: the URL with ``git rev-parse HEAD`` as fragment."""
        r = {"url": self.url, "source": ""}
        if self.scmtype.startswith("GIT"):
            proc = await asyncio.create_subprocess_exec(
                "git",
                "rev-parse",
                "HEAD",
                cwd=self.sourcedir,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise koji.GenericError("Error getting commit hash for git")
            fragment = out.decode().strip()
            scheme = self.scheme[:-3]
            r["source"] = urllib.parse.urlunsplit(
                [scheme, self.host, self.repository, self.module, fragment]
            )
        else:
            r["source"] = self.url
        return r


def git_environment(roots: dict[str, Path], extra: dict[str, str]) -> dict[str, str]:
    """Environment for kojid's git commands: URL prefixes rewritten to ``file://`` roots."""
    config: list[tuple[str, str]] = []
    for prefix, root in roots.items():
        base = Path(root).resolve().as_uri().rstrip("/") + "/"
        config.append((f"url.{base}.insteadOf", prefix if prefix.endswith("/") else prefix + "/"))
    config.extend(extra.items())
    env = {
        "GIT_CONFIG_COUNT": str(len(config)),
        "GIT_ALLOW_PROTOCOL": "file",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "LC_ALL": "C",
    }
    for i, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env
