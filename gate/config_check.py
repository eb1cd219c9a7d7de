"""What ``rpmgate check-config`` checks beyond the models: values that parse but cannot work.

The models (gate/config.py) check types and shapes one key at a time.  This
module checks what a value means on this host and in the world, and reports
every problem at once, each naming the key, what is wrong and what would be
right:

- :func:`offline_findings` has no side effects: nothing is created, nothing
  contacted, no program run.  ``rpmgate run`` runs it before starting anything
  and refuses to start on an error.
- :func:`online_findings` (``check-config --online``) asks the world: each git
  remote answers for its branch and has the spec file, each lookaside base
  answers, the database accepts a connection, the port can be bound, each Koji
  hub answers (and logs in, and knows the targets).

Values are never passed where a program could read them as an option, and a
URL's password is never printed.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import json
import os
import pwd
import re
import socket
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from gate.config import Config
from gate.merger import git_environment
from gate.registry import BACKENDS, entry_point
from repo_state.db import engine_url

#: seconds a single online probe (one git call, one HTTP request, one hub call) may take
ONLINE_TIMEOUT = 20.0

#: URL schemes git fetches from by itself (transports that need a remote helper
#: program, ``ext::`` above all, are refused)
GIT_SCHEMES = ("https", "http", "ssh", "git", "file", "git+ssh", "ssh+git")
#: git's scp-like syntax: ``[user@]host:path``, no slash before the colon, not ``::``
_SCP_LIKE = re.compile(r"^(?:[A-Za-z0-9._~+-]+@)?[A-Za-z0-9][A-Za-z0-9.-]*:(?!:)(?!//)\S*$")
#: koji/daemon.py ``SCM.types``: the URL prefixes kojid builds from
KOJI_SCM_SCHEMES = (
    "cvs://",
    "cvs+ssh://",
    "git://",
    "git+http://",
    "git+https://",
    "git+rsync://",
    "git+ssh://",
    "svn://",
    "svn+http://",
    "svn+https://",
    "svn+ssh://",
)
LOOKASIDE_SCHEMES = ("http", "https", "file")
#: the database dialects rpmgate's schema and migrations are tested on, and their drivers
DATABASES = {"sqlite": ("pysqlite",), "postgresql": ("psycopg2",)}
_DRIVER_PACKAGES = {"psycopg2": "psycopg2", "psycopg": "psycopg", "pg8000": "pg8000"}


@dataclass(frozen=True)
class Finding:
    """One problem: the key, what is wrong, what would be right."""

    key: str
    problem: str
    fix: str = ""
    #: a probable mistake that does not stop the daemon (``$VAR`` left as written)
    warning: bool = False
    #: about this host's files (a path missing or not writable here), not the value's
    #: shape: the same file may be right on the host it is meant for
    host: bool = False

    def __str__(self) -> str:
        text = f"{self.key}: {self.problem}"
        if self.fix:
            text += f"; {self.fix}"
        return f"{text} (warning)" if self.warning else text


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if not f.warning]


def report(source: object, findings: list[Finding]) -> str:
    """The findings as ``check-config`` prints them (like a config error's lines)."""
    head = "invalid configuration" if errors(findings) else "warnings"
    return "\n".join([f"{source}: {head}", *(f"  {f}" for f in findings)])


# -- offline -------------------------------------------------------------------------


def offline_findings(config: Config) -> list[Finding]:
    """Every problem that can be seen without touching anything outside this process."""
    findings = [_note(note) for note in config.notes]
    findings += _public_url(config)
    findings += _database_url(config)
    findings += _directory("state_dir", Path(config.state_dir))
    for name, pub in config.publishers.items():
        root = getattr(pub, "root", None)
        if isinstance(root, Path):
            findings += _directory(f"publishers.{name}.root", root)
    for name, project in config.projects.items():
        findings += _git_location(f"projects.{name}.git", project.git)
        if project.scm_url is not None:
            findings += _scm_url(f"projects.{name}.scm_url", project.scm_url)
        if project.lookaside is not None:
            findings += _lookaside(f"projects.{name}.lookaside", project.lookaside.url)
            if project.lookaside.cache_dir is not None:
                key = f"projects.{name}.lookaside.cache_dir"
                findings += _directory(key, project.lookaside.cache_dir)
    for name, backend in config.backends.items():
        # each backend checks its own section (gate/drivers.py registers the check)
        check = BACKENDS.get(backend.type).check
        if check is not None:
            findings += entry_point(check)(config, name, backend)
    if config.config_repo is not None:
        findings += _git_location("config_repo.git", config.config_repo.git)
    findings += _sandbox_user(config)
    findings += _job_timeouts(config)
    findings += _window_decrease(config)
    return findings


def _window_decrease(config: Config) -> list[Finding]:
    """A ``decrease_factor`` written for Zuul's halving, read as a linear decrease.

    The window's ``decrease_type`` defaults to ``linear`` (Zuul's default is
    ``exponential``): a config that sets only ``decrease_factor: 2``, as Zuul's
    ``window-decrease-factor``, gets ``-2`` per failure instead of ``/2``.
    """
    findings = []
    for qname, queue in config.queues.items():
        given = queue.window.model_fields_set
        if "decrease_factor" in given and "decrease_type" not in given:
            factor = queue.window.decrease_factor
            findings.append(
                Finding(
                    f"queues.{qname}.window.decrease_factor",
                    f"{factor} is taken off the window per failure (decrease_type "
                    f"defaults to linear), not divided into it as Zuul's default does",
                    f"say decrease_type: linear, or exponential for Zuul's /{factor}",
                    warning=True,
                )
            )
    return findings


def _sandbox_user(config: Config) -> list[Finding]:
    """``sandbox.user`` is an unprivileged account here (a root daemon's builds run as it)."""
    name = config.sandbox.user
    if name is None:
        return []
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        if os.geteuid() != 0:
            return []  # only a root daemon switches users: this may not be its host
        fix = "create the account (the Ansible role creates rpmgate-build) or name another"
        return [Finding("sandbox.user", f"{name!r} does not exist on this host", fix, host=True)]
    if uid == 0:
        fix = "name an unprivileged account (the Ansible role creates rpmgate-build)"
        return [Finding("sandbox.user", f"{name!r} is uid 0: builds must not run as root", fix)]
    return []


def _job_timeouts(config: Config) -> list[Finding]:
    """Jobs allowed to run longer than ``/healthz`` lets a busy queue sit still.

    While a job runs (an external job waiting for its result, a long command)
    its item changes no state; past ``health.stall_after_busy`` the queue is
    reported stalled although the job is within its ``timeout``.
    """
    limit = config.health.stall_after_busy
    findings = []
    for qname, queue in config.queues.items():
        for i, job in enumerate(queue.jobs):
            timeout = getattr(job, "timeout", None)
            if isinstance(timeout, int | float) and timeout > limit:
                findings.append(
                    Finding(
                        f"queues.{qname}.jobs.{i}.timeout",
                        f"job {job.name} may run {timeout:g}s, longer than "
                        f"health.stall_after_busy ({limit:g}s): /healthz would call "
                        "the queue stalled while it waits",
                        f"raise health.stall_after_busy above {timeout:g} or lower the timeout",
                        warning=True,
                    )
                )
    return findings


def _note(note: str) -> Finding:
    key, _, message = note.partition(": ")
    problem, _, fix = message.partition("; ")
    return Finding(key, problem, fix, warning=True)


def _public_url(config: Config) -> list[Finding]:
    if config.public_url is None:
        return []
    return http_url("public_url", config.public_url)


def http_url(key: str, value: str) -> list[Finding]:
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError as exc:
        return [
            Finding(key, f"{_shown(value)!r} is not a URL ({exc})", "write https://host[:port]")
        ]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        guess = _guess_scheme(value, ("http", "https"))
        return [
            Finding(
                key,
                f"{_shown(value)!r} is not an http:// or https:// URL with a host",
                f"write {guess!r}" if guess else "write https://host[:port][/path]",
            )
        ]
    return []


def _guess_scheme(value: str, schemes: tuple[str, ...]) -> str | None:
    """``https://gate:8080`` for ``gate:8080``; ``https://x`` for ``htps://x``."""
    scheme, sep, rest = value.partition("://")
    if sep:
        close = difflib.get_close_matches(scheme.lower(), schemes, n=1, cutoff=0.6)
        return f"{close[0]}://{_shown(rest)}" if close else None
    if value and not value.startswith("/"):
        return f"{schemes[-1]}://{_shown(value)}"
    return None


def _shown(value: str) -> str:
    """``value`` with the user part of any URL in it replaced by ``***``: a token
    may be the user name (``https://${TOKEN}@host``) as well as the password."""
    return re.sub(r"(://)[^/@\s]*@", r"\1***@", value)


def _database_url(config: Config) -> list[Finding]:
    if config.database_url is None:
        return []
    key = "database_url"
    try:
        url = make_url(config.database_url)
    except ArgumentError:
        return [
            Finding(
                key,
                f"{_shown(config.database_url)!r} is not an SQLAlchemy URL",
                "write postgresql://user:${PASSWORD}@host/db or sqlite:////path/rpmgate.db",
            )
        ]
    url = engine_url(config.database_url)
    dialect, _, driver = url.drivername.partition("+")
    if dialect not in DATABASES:
        close = difflib.get_close_matches(dialect, list(DATABASES), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}://?" if close else "use postgresql:// or sqlite:///"
        return [
            Finding(
                key, f"unsupported database {dialect!r} (rpmgate runs on: sqlite, postgresql)", hint
            )
        ]
    driver = driver or DATABASES[dialect][0]
    try:
        url.get_dialect().import_dbapi()
    except NoSuchModuleError:
        return [
            Finding(
                key,
                f"no SQLAlchemy driver {url.drivername!r}",
                f"use {dialect}:// ({_driver(dialect)})",
            )
        ]
    except ImportError:
        return [
            Finding(
                key,
                f"the {driver} driver of {dialect} is not installed",
                f"install it, or use {dialect}+{DATABASES[dialect][0]}:// ({_driver(dialect)})",
            )
        ]
    if dialect == "sqlite" and url.database not in (None, "", ":memory:"):
        return _directory(f"{key} (the SQLite file's directory)", Path(url.database).parent)
    return []


def _driver(dialect: str) -> str:
    """``driver psycopg2 2.9.9, installed`` for ``postgresql``."""
    driver = DATABASES[dialect][0]
    return f"driver {driver}{_installed(driver)}"


def _installed(driver: str) -> str:
    package = _DRIVER_PACKAGES.get(driver)
    if package is None:
        return ", built in"
    try:
        return f" {importlib.metadata.version(package)}, installed"
    except importlib.metadata.PackageNotFoundError:
        return ", not installed"


def _directory(key: str, path: Path) -> list[Finding]:
    """``path`` is a directory the daemon's user can write, or can be created as one."""
    path = Path(path)
    user = daemon_user()

    def bad(problem: str, fix: str) -> list[Finding]:
        return [Finding(key, problem, fix, host=True)]

    if path.exists() or path.is_symlink():
        if not path.is_dir():
            kind = "a broken symlink" if not path.exists() else "not a directory"
            return bad(f"{path} is {kind}", "give a directory (it is created if missing)")
        if not os.access(path, os.W_OK | os.X_OK):
            return bad(
                f"{path} is not writable by {user}",
                f"chown it to the daemon's user or give a directory {user} can write",
            )
        return []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return bad(f"{path} cannot be created: {parent} is not a directory", "give another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        return bad(
            f"{path} does not exist and {user} cannot create it in {parent}",
            f"create it for {user} first, or give a directory {user} can write",
        )
    return []


def daemon_user() -> str:
    try:
        return f"user {pwd.getpwuid(os.geteuid()).pw_name!r}"
    except KeyError:
        return f"uid {os.geteuid()}"


def git_location_kind(value: str) -> str:
    """``url``, ``scp`` or ``path``: how git reads ``value`` (see git-fetch(1), GIT URLS)."""
    if "://" in value:
        return "url"
    if _SCP_LIKE.match(value) and "/" not in value.split(":", 1)[0]:
        return "scp"
    return "path"


def _git_location(key: str, value: str) -> list[Finding]:
    kind = git_location_kind(value)
    if kind == "url":
        scheme = value.split("://", 1)[0].lower()
        if scheme not in GIT_SCHEMES:
            guess = _guess_scheme(value, GIT_SCHEMES)
            return [
                Finding(
                    key,
                    f"unknown scheme {scheme + '://'!r} in {_shown(value)!r} (git fetches over "
                    f"{', '.join(s + '://' for s in GIT_SCHEMES)})",
                    f"did you mean {guess!r}?" if guess else "write https://host/path.git",
                )
            ]
        parts = urllib.parse.urlsplit(value)
        if scheme != "file" and not parts.hostname:
            return [Finding(key, f"{_shown(value)!r} has no host", "write scheme://host/path.git")]
        if scheme == "file":
            return _git_path(key, Path(urllib.parse.unquote(parts.path)))
        return []
    if kind == "scp":
        return []
    if "::" in value:
        return [
            Finding(
                key,
                f"{value!r} names a git remote helper (<transport>::<address>)",
                "use an https://, ssh:// or git:// URL, user@host:path, or a local path",
            )
        ]
    return _git_path(key, Path(value))


def _git_path(key: str, path: Path) -> list[Finding]:
    if not path.is_absolute():
        return [
            Finding(
                key,
                f"{str(path)!r} is neither a URL git knows nor an absolute path",
                "write https://host/path.git, user@host:path, or an absolute path "
                "(a relative one is read against the daemon's working directory)",
            )
        ]
    if not path.is_dir():
        return [
            Finding(
                key,
                f"{path} does not exist" if not path.exists() else f"{path} is not a directory",
                "give the path of a git repository (bare or not), or its URL",
                host=True,
            )
        ]
    if (
        not ((path / "HEAD").is_file() and (path / "objects").is_dir())
        and not (path / ".git").exists()
    ):
        return [
            Finding(
                key,
                f"{path} is not a git repository",
                "give a repository's path (git init --bare)",
                host=True,
            )
        ]
    return []


def _scm_url(key: str, value: str) -> list[Finding]:
    """kojid's rules (koji/daemon.py ``SCM.__init__`` and ``_parse_url``): a known
    prefix, a host, a path, no password; the gate appends ``#<commit>``."""
    if not value.startswith(KOJI_SCM_SCHEMES):
        guess = _guess_scheme(value, tuple(s.removesuffix("://") for s in KOJI_SCM_SCHEMES))
        if value.startswith(("https://", "http://", "ssh://")):
            guess = f"git+{_shown(value)}"
        return [
            Finding(
                key,
                f"{_shown(value)!r} is not an SCM URL kojid builds from (schemes: "
                f"{' '.join(KOJI_SCM_SCHEMES)})",
                f"write {guess!r}" if guess else "write git+https://host/path.git",
            )
        ]
    parts = urllib.parse.urlsplit("http://" + value.split("://", 1)[1])
    if not parts.hostname:
        return [Finding(key, f"{_shown(value)!r} has no host", "write git+https://host/path.git")]
    if not parts.path:
        return [
            Finding(
                key, f"{_shown(value)!r} has no repository path", "write git+https://host/path.git"
            )
        ]
    if parts.password is not None:
        return [
            Finding(
                key,
                "has a user:password, which kojid refuses "
                "(its allow_password_in_scm_url is off by default)",
                "give kojid access another way, or write only user@",
            )
        ]
    return []


def _lookaside(key: str, template: str) -> list[Finding]:
    key = f"{key}.url"
    try:
        template.format(name="n", filename="f", hashtype="sha512", hash="0")
    except (KeyError, IndexError, ValueError) as exc:
        return [
            Finding(
                key,
                f"{template!r} is not a URL template ({type(exc).__name__}: {exc})",
                "use only {name} {filename} {hashtype} {hash}",
            )
        ]
    if template.startswith("/"):
        return []
    scheme, sep, _ = template.partition("://")
    if not sep or scheme.lower() not in LOOKASIDE_SCHEMES:
        guess = _guess_scheme(template, LOOKASIDE_SCHEMES) if sep else None
        return [
            Finding(
                key,
                f"{_shown(template)!r} is not an http://, https:// or file:// URL "
                "or an absolute path",
                f"did you mean {guess!r}?"
                if guess
                else "write https://host/path/{name}/... or /path/{name}/...",
            )
        ]
    if scheme.lower() != "file" and not urllib.parse.urlsplit(template).hostname:
        return [
            Finding(key, f"{_shown(template)!r} has no host", "write https://host/path/{name}/...")
        ]
    return []


# -- online --------------------------------------------------------------------------


def online_findings(config: Config) -> list[Finding]:
    """Ask the world: git remotes, lookaside bases, the database, the port, Koji hubs.

    Probes run in parallel, each bounded by :data:`ONLINE_TIMEOUT`.
    """
    probes: list[Any] = []
    for name, project in config.projects.items():
        packages = config.packages_of(name)
        if packages:  # each package's spec, under its own key
            for package, pkg in packages.items():
                probes.append(
                    (
                        _git_remote,
                        name,
                        project.git,
                        project.branch,
                        pkg.spec,
                        "",
                        f"packages.{package}.spec",
                    )
                )
        else:
            probes.append((_git_remote, name, project.git, project.branch, config.spec_of(name)))
        if project.lookaside is not None:
            probes.append(
                (_lookaside_base, f"projects.{name}.lookaside.url", project.lookaside.url)
            )
    repo = config.config_repo
    if repo is not None:
        probes.append((_git_remote, "", repo.git, repo.branch, repo.path, "config_repo", "path"))
    probes.append((_database, config.db_url, config.database_url is None))
    probes.append((_port, config.listen.host, config.listen.port))
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(probe[0], *probe[1:]) for probe in probes]
        findings = [f for future in futures for f in future.result()]
    for name, backend in config.backends.items():
        check_online = BACKENDS.get(backend.type).check_online
        if check_online is not None:
            findings += entry_point(check_online)(config, name, backend)
    return findings


def _git_env() -> dict[str, str]:
    # what the daemon's git gets (its ssh, proxy and credential settings, nothing else)
    env = git_environment()
    # never wait for a password or a host key prompt (ext:: is refused by _git)
    env.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="/bin/false")
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    return env


def _git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-c", "protocol.ext.allow=never", *args],
        capture_output=True,
        text=True,
        timeout=ONLINE_TIMEOUT,
        env=_git_env(),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def _git_remote(
    project: str, url: str, branch: str, spec: str, section: str = "", file_key: str = "spec"
) -> list[Finding]:
    """``git ls-remote`` for the branch, then a shallow fetch of its head into a
    temporary bare repository to see that the spec file is there (``git archive
    --remote`` would be lighter, but most hosts refuse it: GitHub, GitLab over HTTP).
    ``section``: the keys' prefix (default ``projects.<project>``); ``file_key``:
    the key that names the file."""
    section = section or f"projects.{project}"
    key = f"{section}.git"
    ref = f"refs/heads/{branch}"
    try:
        listed = _git("ls-remote", "--end-of-options", url, ref)
        if listed.returncode != 0:
            return [
                Finding(key, f"git ls-remote {_shown(url)} failed: {_last_line(listed.stderr)}")
            ]
        if ref not in listed.stdout.split():
            return [
                Finding(
                    f"{section}.branch",
                    f"{_shown(url)} has no branch {branch!r}",
                    "give a branch the repository has",
                )
            ]
        with tempfile.TemporaryDirectory(prefix="rpmgate-check-") as tmp:
            repo = Path(tmp)
            init = _git("init", "--quiet", "--bare", tmp)
            if init.returncode != 0:
                return [Finding(key, f"git init failed: {_last_line(init.stderr)}")]
            fetched = _git(
                "fetch", "--quiet", "--depth=1", "--no-tags", "--end-of-options", url, ref, cwd=repo
            )
            if fetched.returncode != 0:
                return [
                    Finding(key, f"git fetch of {branch!r} failed: {_last_line(fetched.stderr)}")
                ]
            tree = _git("ls-tree", "--name-only", "FETCH_HEAD", "--", spec, cwd=repo)
            if tree.returncode != 0 or spec not in tree.stdout.splitlines():
                return [
                    Finding(
                        f"{section}.{file_key}",
                        f"no file {spec!r} at the head of {branch!r}",
                        "give the file's path inside the repository",
                    )
                ]
    except subprocess.TimeoutExpired:
        return [Finding(key, f"{_shown(url)} did not answer within {ONLINE_TIMEOUT:.0f} s")]
    return []


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return _shown(lines[-1]) if lines else "no message"


def _lookaside_base(key: str, template: str) -> list[Finding]:
    """The part of the template before its first placeholder answers."""
    base = template.split("{", 1)[0]
    if not base.startswith(("http://", "https://")):
        path = urllib.parse.unquote(urllib.parse.urlsplit(base).path) if "://" in base else base
        directory = Path(path if path.endswith("/") else os.path.dirname(path) or "/")
        if not directory.is_dir():
            return [
                Finding(key, f"{directory} does not exist", "give the lookaside directory's path")
            ]
        return []
    request = urllib.request.Request(base, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=ONLINE_TIMEOUT):
            return []
    except urllib.error.HTTPError as exc:
        exc.close()
        # a server that answers 403 or 404 for the bare directory answers
        if exc.code < 500:
            return []
        return [Finding(key, f"{base} answers HTTP {exc.code}")]
    except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return [Finding(key, f"{base} does not answer: {reason}")]


def _database(url: str, default: bool) -> list[Finding]:
    key = "state_dir" if default else "database_url"
    parsed: URL = engine_url(url)
    if parsed.get_backend_name() == "sqlite":
        # connecting would create the file; the directory was checked offline
        path = parsed.database
        if path and Path(path).exists() and not os.access(path, os.R_OK | os.W_OK):
            return [
                Finding(
                    key, f"the database file {path} is not readable and writable by {daemon_user()}"
                )
            ]
        return []
    engine = sqlalchemy.create_engine(parsed, connect_args={"connect_timeout": int(ONLINE_TIMEOUT)})
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except Exception as exc:  # any failure is the finding
        detail = str(getattr(exc, "orig", exc)).strip().splitlines()
        return [
            Finding(
                key,
                f"{parsed.render_as_string(hide_password=True)} refuses a connection: "
                f"{_shown(detail[0] if detail else type(exc).__name__)}",
            )
        ]
    finally:
        engine.dispose()
    return []


def _port(host: str, port: int) -> list[Finding]:
    if port == 0:
        return []
    findings = []
    for problem, fix in port_problems(host, port):
        if "already in use" in problem and _is_rpmgate(host, port):
            # the daemon this config is for, about to be restarted (the Ansible role)
            findings.append(
                Finding(
                    "listen.port",
                    f"{host}:{port} is in use by a running rpmgate (it answers /healthz)",
                    "it must stop before this config can listen there, as a restart does",
                    warning=True,
                )
            )
        else:
            findings.append(Finding("listen.port", problem, fix))
    return findings


def _is_rpmgate(host: str, port: int) -> bool:
    """Whether ``host:port`` answers ``/healthz`` with rpmgate's document."""
    address = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    netloc = f"[{address}]" if ":" in address else address
    try:
        with urllib.request.urlopen(f"http://{netloc}:{port}/healthz", timeout=5) as resp:
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 503: rpmgate with a failing check
        try:
            doc = json.loads(exc.read())
        except ValueError:
            return False
        finally:
            exc.close()
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and {"ok", "failing", "checks"} <= set(doc)


def port_problems(host: str, port: int) -> Iterator[tuple[str, str]]:
    """What stops the daemon from listening on ``host:port`` (as aiohttp will: with
    SO_REUSEADDR), if anything."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        yield f"listen.host {host!r} does not resolve: {exc.strerror}", "give an address or a name"
        return
    for family, type_, proto, _, address in infos:
        with socket.socket(family, type_, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                yield bind_problem(host, port, exc)
                return


def bind_problem(host: str, port: int, exc: OSError) -> tuple[str, str]:
    """A failure to listen on ``host:port`` in words (problem, fix)."""
    import errno

    if exc.errno == errno.EADDRINUSE:
        return (
            f"{host}:{port} is already in use by another program",
            "stop it or choose another listen.port",
        )
    if exc.errno == errno.EACCES:
        return (
            f"{daemon_user()} may not listen on port {port} (below 1024)",
            "choose a port >= 1024 (a reverse proxy can serve 443)",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{host} is not an address of this host",
            "give one of its addresses, 127.0.0.1 or 0.0.0.0",
        )
    return f"cannot listen on {host}:{port}: {exc.strerror}", "choose another listen.host or port"


def reason_of(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return _shown(text[-1]) if text else type(exc).__name__
