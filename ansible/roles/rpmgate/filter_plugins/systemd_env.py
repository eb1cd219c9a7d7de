"""Jinja filter ``systemd_env_quote``: a value for a systemd ``EnvironmentFile=``.

    {{ value | systemd_env_quote(name) }}

Every value is written double-quoted, with ``"``, ``\\``, `````` ` `````` and ``$``
escaped by a backslash.  That is how systemd's own writer quotes
(``write_env_var()`` in src/basic/env-file.c), and its reader
(``parse_env_file_internal()``, same file) gives back exactly the original:

* inside double quotes every character is literal except ``"`` (ends the
  value) and ``\\``; a backslash before one of ``"\\`$`` (``SHELL_NEED_ESCAPE``)
  yields that character, so the four escapes round-trip;
* spaces, tabs, ``#``, ``;``, ``'``, ``=`` and leading or trailing blanks are
  plain characters inside the quotes, and a newline stays a newline;
* systemd never expands ``$VAR`` in an ``EnvironmentFile=`` (only the
  ``merge_env_file()`` variant used elsewhere does).

The same text means the same to a POSIX shell (``set -a; . rpmgate.env``),
where the same four characters are the special ones inside double quotes.

https://github.com/systemd/systemd/blob/main/src/basic/env-file.c

Refused, naming the variable but never the value: names systemd ignores
(``env_name_is_valid()``: letters, digits, ``_``, no leading digit), values
with a NUL byte (the file would be refused), and values that are not valid
UTF-8 to systemd (``utf8_is_valid()`` refuses noncharacters such as U+FFFE),
which would make the unit fail to start.  gate/envfile.py reads these files
the same way, and tests/test_ansible.py checks the pair byte for byte.
"""

from __future__ import annotations

import re

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # imported outside Ansible, by tests/test_ansible.py with plain Jinja
    AnsibleFilterError = ValueError  # type: ignore[assignment,misc]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NEED_ESCAPE = re.compile(r'(["\\`$])')


def systemd_env_quote(value: object, name: str = "") -> str:
    """``value`` double-quoted for systemd's EnvironmentFile= parser (see the module doc)."""
    what = f"rpmgate_environment.{name}" if name else "an environment value"
    if name and not _NAME.match(name):
        raise AnsibleFilterError(
            f"{what}: not a variable name systemd accepts (letters, digits, _; no leading digit)"
        )
    if value is None:
        value = ""  # YAML's empty value (also what Ansible makes of !unsafe ""): KEY=""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise AnsibleFilterError(f"{what}: must be a string (got {type(value).__name__})")
    text = str(value)
    if "\0" in text:
        raise AnsibleFilterError(f"{what}: contains a NUL character")
    for ch in text:
        point = ord(ch)
        if 0xD800 <= point <= 0xDFFF or 0xFDD0 <= point <= 0xFDEF or (point & 0xFFFE) == 0xFFFE:
            raise AnsibleFilterError(
                f"{what}: contains a character systemd refuses (U+{point:04X})"
            )
    return '"' + _NEED_ESCAPE.sub(r"\\\1", text) + '"'


class FilterModule:
    """Ansible's entry point for the filters of this role."""

    def filters(self) -> dict[str, object]:
        return {"systemd_env_quote": systemd_env_quote}
