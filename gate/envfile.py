"""Read a systemd ``EnvironmentFile=`` the way systemd reads it.

The daemon's secrets reach it through the unit's ``EnvironmentFile=``
(``/etc/rpmgate/rpmgate.env``, written by the Ansible role), and the config
refers to them as ``${NAME}``.  ``rpmgate check-config --env-file FILE``
validates a config with exactly the variables the service will get, so this
module ports systemd's parser instead of sourcing the file with a shell: the
two disagree on quoting (``sh`` expands ``$X`` in double quotes, systemd keeps
it; ``sh`` runs ``$(…)``; systemd glues ``"a" "b"`` into ``ab``).

Ported from systemd's ``src/basic/env-file.c``, ``parse_env_file_internal()``
(the state machine, state for state), ``load_env_file()`` (later assignments
win), and ``src/core/execute.c``, ``exec_context_load_environment()``, which
runs ``strv_env_clean_with_callback()`` (``src/basic/env-util.c``) over the
result: assignments whose name is not a valid variable name are logged and
ignored, so ``export FOO=bar`` sets nothing (the key is ``"export FOO"``).

Upstream: https://github.com/systemd/systemd/blob/main/src/basic/env-file.c

Version note: this follows systemd >= 254, where a comment ends at the end of
its line.  Before v254 a comment ending in a backslash continued onto the next
line.  The role never writes such a comment, so files it writes read the same
with every version.
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

# src/basic/string-util.h
_WHITESPACE = b" \t\n\r"
_NEWLINE = b"\n\r"
_COMMENTS = b"#;"
# src/basic/escape.h: "must be escaped outside and inside double-quotes"
_SHELL_NEED_ESCAPE = b'"\\`$'

# env_name_is_valid() in src/basic/env-util.c: letters, digits, "_", no leading digit
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class EnvFileError(Exception):
    """systemd would refuse the whole file (the unit fails to start)."""


class _State(enum.Enum):
    PRE_KEY = enum.auto()
    KEY = enum.auto()
    PRE_VALUE = enum.auto()
    VALUE = enum.auto()
    VALUE_ESCAPE = enum.auto()
    SINGLE_QUOTE_VALUE = enum.auto()
    DOUBLE_QUOTE_VALUE = enum.auto()
    DOUBLE_QUOTE_VALUE_ESCAPE = enum.auto()
    COMMENT = enum.auto()
    COMMENT_ESCAPE = enum.auto()


@dataclass(frozen=True)
class EnvironmentFile:
    """What a service gets from one ``EnvironmentFile=``."""

    #: the variables set, later assignments winning
    variables: dict[str, str]
    #: keys systemd logs as invalid and ignores (``export FOO``, ``1X``, ``a-b``)
    ignored: tuple[str, ...] = field(default_factory=tuple)


def parse_assignments(data: bytes, source: str = "<environment file>") -> list[tuple[str, str]]:
    """Every ``(key, value)`` pair the file assigns, in order, invalid names included.

    A port of ``parse_env_file_internal()``; the comments name its states.
    Raises :class:`EnvFileError` where ``load_env_file()`` fails: an embedded
    NUL byte (``read_full_stream_full()`` refuses it) or a key or value that
    is not valid UTF-8 (``check_utf8ness_and_warn()``).
    """
    if b"\0" in data:
        raise EnvFileError(f"{source}: contains a NUL byte")
    pairs: list[tuple[str, str]] = []
    key = bytearray()
    value = bytearray()
    # index where a run of trailing whitespace starts, or None (SIZE_MAX upstream)
    last_key_whitespace: int | None = None
    last_value_whitespace: int | None = None
    line = 1
    state = _State.PRE_KEY

    def push(chomp_value: bool) -> None:
        k = key[:last_key_whitespace] if last_key_whitespace is not None else key
        v = (
            value[:last_value_whitespace]
            if chomp_value and last_value_whitespace is not None
            else value
        )
        pairs.append((_utf8(bytes(k), source, line, "key"), _utf8(bytes(v), source, line, "value")))

    for c in data:
        ch = bytes((c,))
        if state is _State.PRE_KEY:
            if ch in _COMMENTS:
                state = _State.COMMENT
            elif ch not in _WHITESPACE:
                state = _State.KEY
                last_key_whitespace = None
                key.append(c)
        elif state is _State.KEY:
            if ch in _NEWLINE:
                # a line without "=" assigns nothing
                state = _State.PRE_KEY
                line += 1
                key.clear()
            elif ch == b"=":
                state = _State.PRE_VALUE
                last_value_whitespace = None
            else:
                if ch not in _WHITESPACE:
                    last_key_whitespace = None
                elif last_key_whitespace is None:
                    last_key_whitespace = len(key)
                key.append(c)
        elif state is _State.PRE_VALUE:
            if ch in _NEWLINE:
                state = _State.PRE_KEY
                push(chomp_value=False)
                line += 1
                key.clear()
                value.clear()
            elif ch == b"'":
                state = _State.SINGLE_QUOTE_VALUE
            elif ch == b'"':
                state = _State.DOUBLE_QUOTE_VALUE
            elif ch == b"\\":
                state = _State.VALUE_ESCAPE
            elif ch not in _WHITESPACE:
                state = _State.VALUE
                value.append(c)
        elif state is _State.VALUE:
            # quotes are literal here: only a value's first character can open them
            if ch in _NEWLINE:
                state = _State.PRE_KEY
                push(chomp_value=True)
                line += 1
                key.clear()
                value.clear()
            elif ch == b"\\":
                state = _State.VALUE_ESCAPE
                last_value_whitespace = None
            else:
                if ch not in _WHITESPACE:
                    last_value_whitespace = None
                elif last_value_whitespace is None:
                    last_value_whitespace = len(value)
                value.append(c)
        elif state is _State.VALUE_ESCAPE:
            state = _State.VALUE
            # an escaped newline (a continuation line) is dropped entirely
            if ch not in _NEWLINE:
                value.append(c)
        elif state is _State.SINGLE_QUOTE_VALUE:
            if ch == b"'":
                state = _State.PRE_VALUE
            else:
                value.append(c)
        elif state is _State.DOUBLE_QUOTE_VALUE:
            if ch == b'"':
                state = _State.PRE_VALUE
            elif ch == b"\\":
                state = _State.DOUBLE_QUOTE_VALUE_ESCAPE
            else:
                value.append(c)
        elif state is _State.DOUBLE_QUOTE_VALUE_ESCAPE:
            state = _State.DOUBLE_QUOTE_VALUE
            if ch in _SHELL_NEED_ESCAPE:
                value.append(c)
            elif c != ord("\n"):
                # like the shell: a backslash before another character stays
                value += b"\\" + ch
        elif state is _State.COMMENT:
            if ch == b"\\":
                state = _State.COMMENT_ESCAPE
            elif ch in _NEWLINE:
                state = _State.PRE_KEY
                line += 1
        elif state is _State.COMMENT_ESCAPE:
            # systemd >= 254: the comment still ends with its line (see the module docstring)
            if ch in _NEWLINE:
                state = _State.PRE_KEY
                line += 1
            else:
                state = _State.COMMENT

    if state in (
        _State.PRE_VALUE,
        _State.VALUE,
        _State.VALUE_ESCAPE,
        _State.SINGLE_QUOTE_VALUE,
        _State.DOUBLE_QUOTE_VALUE,
        _State.DOUBLE_QUOTE_VALUE_ESCAPE,
    ):
        # end of file inside an assignment (even inside open quotes) still assigns
        push(chomp_value=state is _State.VALUE)
    return pairs


def parse(data: bytes, source: str = "<environment file>") -> EnvironmentFile:
    """The environment a unit gets from ``data``: ``load_env_file()``, then the exec-time clean-up.

    ``exec_context_load_environment()`` drops assignments that are not valid
    (``env_assignment_is_valid()``): a name that is not a variable name, or an
    assignment longer than ``ARG_MAX``.
    """
    variables: dict[str, str] = {}
    ignored: list[str] = []
    arg_max = os.sysconf("SC_ARG_MAX")
    for key, value in parse_assignments(data, source):
        if _NAME.match(key) and len(key.encode()) + 1 + len(value.encode()) < arg_max:
            variables[key] = value  # a later assignment wins (strv_env_replace_consume)
        else:
            ignored.append(key)
    return EnvironmentFile(variables=variables, ignored=tuple(ignored))


def load(path: Path | str) -> EnvironmentFile:
    """Read ``path`` as ``EnvironmentFile=path`` would; :class:`EnvFileError` if unreadable."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise EnvFileError(f"{path}: cannot read: {exc.strerror}") from None
    return parse(data, str(path))


def _utf8(raw: bytes, source: str, line: int, what: str) -> str:
    """Decode as ``utf8_is_valid()`` accepts (src/basic/utf8.c): strict, no noncharacters."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or any(_is_noncharacter(ch) for ch in text):
        # never quote the value: it may be a secret
        raise EnvFileError(f"{source}:{line}: invalid UTF-8 in a {what}")
    return text


def _is_noncharacter(ch: str) -> bool:
    # unichar_is_valid(): U+FDD0..U+FDEF and U+xxFFFE/U+xxFFFF are refused
    point = ord(ch)
    return 0xFDD0 <= point <= 0xFDEF or (point & 0xFFFE) == 0xFFFE
