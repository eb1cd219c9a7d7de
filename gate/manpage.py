"""``rpmgate man``: the rpmgate(1) manual page, written from the command's own parser.

Everything in the page comes from :func:`gate.cli.build_parser`: each
subcommand's help, usage and options as ``rpmgate SUB --help`` prints them, so
the page cannot drift from the command.  Nothing is shipped pre-generated:
``rpmgate man > rpmgate.1`` (or ``rpmgate man | man -l -``) writes the page of
the installed version; the Ansible role or a package build can do so at install
time.  Output is troff with the ``man`` macros (``man 7 groff_man``).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

#: what the page says besides the parser: where the client finds its gate
_FILES = (
    "~/.config/rpmgate/config",
    "client profiles: [name] sections with url = and token = "
    "($XDG_CONFIG_HOME/rpmgate/config when XDG_CONFIG_HOME is set); "
    "-p/--profile picks one, [default] otherwise",
)
_ENVIRONMENT = (
    ("RPMGATE_URL", "the gate's URL when no --url or --profile is given"),
    ("RPMGATE_TOKEN", "the API token when no --token or --profile is given"),
)


def escape(text: str) -> str:
    """Text as troff reads it literally: backslashes, and a leading ``.`` or ``'``."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(
        "\\&" + line if line.startswith((".", "'")) else line for line in text.splitlines()
    )


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each subcommand's name and parser, in the order ``--help`` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices.items())
    return {}


def _helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._get_subactions()}
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    lines = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue  # -h is on every command; the subcommands have sections of their own
        if action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            names = ", ".join(f"\\fB{escape(o)}\\fR" for o in action.option_strings)
            if action.nargs != 0:
                metavar = action.metavar or (
                    "{" + ",".join(map(str, action.choices)) + "}"
                    if action.choices
                    else action.dest.upper()
                )
                names += f" \\fI{escape(str(metavar))}\\fR"
        else:
            names = f"\\fI{escape(str(action.metavar or action.dest))}\\fR"
        lines += [".TP", names, escape(action.help or "")]
    return lines


def _first_line(text: str | None) -> str:
    """A docstring's first line without its reStructuredText quoting."""
    return (text or "").strip().splitlines()[0].replace("``", "") if text else ""


def render(parser: argparse.ArgumentParser, version: str = "") -> str:
    """The whole page."""
    prog = parser.prog
    helps = _helps(parser)
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    lines = [
        f'.TH {prog.upper()} 1 "{date}" "{escape(prog)} {escape(version)}" "User Commands"',
        ".SH NAME",
        f"{escape(prog)} \\- {escape(_first_line(parser.description))}",
        ".SH SYNOPSIS",
        f"\\fB{escape(prog)}\\fR [\\fIoptions\\fR] \\fIcommand\\fR [\\fIarguments\\fR]",
        ".SH OPTIONS",
        *_options(parser),
        ".SH COMMANDS",
    ]
    for name, sub in subcommands(parser).items():
        usage = " ".join(sub.format_usage().removeprefix("usage: ").split())
        lines += [
            f".SS {escape(name)}",
            escape(helps.get(name, "")),
            ".PP",
            f"\\fB{escape(usage)}\\fR",
            *_options(sub),
        ]
    lines += [".SH FILES", ".TP", f"\\fI{escape(_FILES[0])}\\fR", escape(_FILES[1])]
    lines += [".SH ENVIRONMENT"]
    for var, meaning in _ENVIRONMENT:
        lines += [".TP", f"\\fB{var}\\fR", escape(meaning)]
    lines += [
        ".SH EXIT STATUS",
        "0 when the command did what was asked; 1 when the gate refused it, an item or "
        "change ended other than merged, or the gate could not be reached; 2 for an "
        "invalid configuration (run, check\\-config).",
        ".SH SEE ALSO",
        "\\fBkoji\\fR(1), \\fBregister\\-python\\-argcomplete\\fR(1); docs/api.md of rpmgate",
        "",
    ]
    return "\n".join(lines)
