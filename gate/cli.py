# PYTHON_ARGCOMPLETE_OK  (argcomplete's global completion finds this entry point)
"""The ``rpmgate`` command: run the daemon, the demo, and talk to a running gate."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

import argcomplete
from argcomplete.shell_integration import shellcode

from gate import config_check, envfile, manpage
from gate.builders.sandbox import SandboxError
from gate.client import add_client_commands, run_client_command
from gate.config import ConfigError, load_config


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rpmgate")
    except PackageNotFoundError:
        return "unknown (not installed)"


async def _serve(config_path: Path) -> int:
    from gate.config_repo import ConfigRepo
    from gate.daemon import Gate
    from gate.web.app import make_app
    from gate.web.server import limits_of, serve

    repo = ConfigRepo.of(config_path)
    if repo is not None:
        config, status = await repo.initial()
    else:
        config, status = load_config(config_path), None
    findings = config_check.offline_findings(config)
    if config_check.errors(findings):
        raise ConfigError(config_check.report(config_path, findings))
    for finding in findings:
        logging.getLogger("rpmgate").warning("%s: %s", config_path, finding)
    gate = Gate(config, load=repo.candidate if repo is not None else None)
    if status is not None:
        gate.runtime.config_status = status
    if repo is not None and gate.reloader is not None:
        gate.reloader.on_applied.append(repo.record)
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[object]] = set()

    def hangup() -> None:
        # the answer is logged (and kept in the status): nobody waits for it here
        if gate.reloader is not None:
            task = loop.create_task(gate.reloader.reload("SIGHUP"), name="reload")
            reloads.add(task)
            task.add_done_callback(_reloaded)

    def _reloaded(task: asyncio.Task[object]) -> None:
        reloads.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logging.getLogger("rpmgate").error("reload (SIGHUP) failed", exc_info=task.exception())

    # from here on: a SIGHUP (systemctl reload) while starting must not kill the daemon
    loop.add_signal_handler(signal.SIGHUP, hangup)
    try:
        served = await serve(
            make_app(gate.runtime),
            config.listen.host,
            config.listen.port,
            limits_of(config.listen),
            access_log=logging.getLogger("rpmgate.access"),
        )
    except OSError as exc:
        # before the gate starts anything: a port in use stops here, with its key named
        problem, fix = config_check.bind_problem(config.listen.host, config.listen.port, exc)
        raise ConfigError(f"{config_path}: cannot start\n  listen.port: {problem}; {fix}") from None
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await gate.start()
    if repo is not None and gate.reloader is not None:
        gate.follow_config(repo.follow(gate.reloader))
    logging.getLogger("rpmgate").info("listening on %s:%s", config.listen.host, config.listen.port)
    await stop.wait()
    logging.getLogger("rpmgate").info("stopping")
    await served.close()
    await gate.stop()
    return 0


#: what systemd itself puts in every service's environment, next to EnvironmentFile=
_SERVICE_BASE_ENVIRONMENT = (
    "PATH",
    "LANG",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "SYSTEMD_EXEC_PID",
)


def _use_service_environment(env_file: Path) -> None:
    """Make ``${VAR}`` expansion see what the service will see, not this shell.

    The file is read with systemd's rules (:mod:`gate.envfile`), so a value
    with a space, ``$``, quotes or a backslash is checked exactly as the
    daemon will get it, and a variable only this shell has does not hide a
    missing one.  The process exits after the check, so replacing its
    environment is harmless.
    """
    loaded = envfile.load(env_file)
    for key in loaded.ignored:
        # key names only: values may be secrets
        print(
            f"{env_file}: systemd ignores the assignment to {key!r} (not a variable name)",
            file=sys.stderr,
        )
    base = {k: os.environ[k] for k in _SERVICE_BASE_ENVIRONMENT if k in os.environ}
    os.environ.clear()
    os.environ.update({**base, **loaded.variables})


def _check_config(path: Path, online: bool) -> int:
    """Every finding on stderr; exit 2 when one is an error (warnings alone: 0)."""
    config = load_config(path)
    findings = config_check.offline_findings(config)
    if online and not config_check.errors(findings):
        # only values that passed the offline checks reach git, HTTP or a hub
        findings += config_check.online_findings(config)
    if findings:
        print(config_check.report(path, findings), file=sys.stderr)
    if config_check.errors(findings):
        return 2
    checked = "offline and online" if online else "offline"
    print(
        f"{path}: ok ({len(config.projects)} projects, {len(config.queues)} queues; "
        f"checked {checked})"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rpmgate", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"rpmgate {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", type=Path, required=True, help="the config file")
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("-c", "--config", type=Path, required=True, help="the config file")
    check.add_argument(
        "--online",
        action="store_true",
        help="also ask the world: git remotes and spec files, lookaside bases, the "
        "database, the listen port, Koji hubs (login, targets)",
    )
    check.add_argument(
        "--env-file",
        type=Path,
        metavar="FILE",
        help="expand ${VAR} with the variables a unit with EnvironmentFile=FILE "
        "gets (read with systemd's rules), instead of this shell's",
    )

    demo = sub.add_parser("demo", help="gate the classic nova/ceilometer case locally")
    demo.add_argument("--dir", help="build the world here (kept) instead of a temp dir")
    demo.add_argument("--keep", action="store_true", help="keep the temporary world")
    demo.add_argument(
        "--source",
        choices=("git", "gerrit"),
        default="git",
        help="where the changes are proposed: rpmgate's API (git) or a fake Gerrit",
    )
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the daemon and its status page up after the demo, until Ctrl-C",
    )

    completion = sub.add_parser(
        "completion",
        help='print the shell completion script: eval "$(rpmgate completion bash)"',
    )
    completion.add_argument("shell", choices=COMPLETION_SHELLS)
    sub.add_parser("man", help="print the rpmgate(1) manual page (troff): rpmgate man | man -l -")

    add_client_commands(sub)
    reload = sub.add_parser(
        "reload",
        help="make a running gate read its configuration again (as SIGHUP does); "
        "exit 1 if it was refused",
    )
    reload.add_argument("-p", "--profile", help="a [profile] of the client config")
    reload.add_argument("--url", help="gate URL (else the profile, $RPMGATE_URL, [default])")
    reload.add_argument("--token", help="API token (else the profile, $RPMGATE_TOKEN)")
    reload.add_argument("--json", action="store_true", help="the JSON answer")
    return parser


#: the shells argcomplete writes a completion script for
COMPLETION_SHELLS = ("bash", "zsh", "fish", "tcsh")


def _reload(args: argparse.Namespace) -> int:
    """``POST /api/admin/reload``; the outcome on stdout (applied) or stderr (refused)."""
    from gate.client import Client, ClientError, load_profile

    try:
        answer = Client(load_profile(args.profile, args.url, args.token)).post(
            "/api/admin/reload", {}
        )
    except ClientError as exc:
        if exc.status not in (409, 422):
            print(f"rpmgate: {exc}", file=sys.stderr)
            return 1
        answer = json.loads(exc.body)
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
        return 0 if answer["applied"] or answer["unchanged"] else 1
    config = answer["config"]
    where = f" (commit {config['commit'][:12]})" if config.get("commit") else ""
    if answer["unchanged"]:
        print(f"unchanged: configuration {config['version']}{where} is in force")
    elif answer["applied"]:
        print(f"applied: configuration {config['version']}{where}")
        for line in answer["changes"]:
            print(f"  {line}")
    else:
        print(f"refused: configuration {config['version']}{where} stays in force", file=sys.stderr)
        for line in answer["findings"]:
            print(f"  {line}", file=sys.stderr)
    for line in answer["warnings"]:
        print(f"  warning: {line}", file=sys.stderr)
    return 0 if answer["applied"] or answer["unchanged"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argcomplete.autocomplete(parser)  # answers a shell's completion request, then exits
    args = parser.parse_args(argv)
    if args.command == "completion":
        print(shellcode(["rpmgate"], shell=args.shell), end="")
        return 0
    if args.command == "man":
        print(manpage.render(parser, _version()), end="")
        return 0
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "run":
            return asyncio.run(_serve(args.config))
        if args.command == "check-config":
            if args.env_file is not None:
                _use_service_environment(args.env_file)
            return _check_config(args.config, online=args.online)
    except (ConfigError, envfile.EnvFileError, SandboxError) as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "reload":
        return _reload(args)
    if args.command == "demo":
        from gate import demo

        return demo.main(
            args.dir,
            keep=args.keep or bool(args.dir),
            verbose=args.verbose,
            source=args.source,
            keep_running=args.keep_running,
        )
    return run_client_command(args)


if __name__ == "__main__":
    sys.exit(main())
