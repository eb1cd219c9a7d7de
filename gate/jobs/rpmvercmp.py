"""RPM version comparison and dependency range overlap, in pure Python.

A port of three pieces of rpm (4.18) that repoclosure needs without the rpm
Python bindings (which are not installable from PyPI):

- :func:`rpmvercmp` is ``rpmvercmp()`` from ``rpmio/rpmvercmp.c``: versions are
  split into alphanumeric segments, digits beat letters, ``~`` sorts before
  anything (even the end of the string), ``^`` sorts after the end of the
  string but before anything else.
- :func:`parse_evr` is ``parseEVR()`` from ``lib/rpmver.c``: ``[E:]V[-R]``,
  the epoch being the leading digits before a ``:``, the release whatever
  follows the last ``-``.
- :func:`satisfies` is ``rpmverOverlap()`` from ``lib/rpmver.c``: whether the
  range a Provides describes overlaps the range a Requires asks for.  As in
  rpm, when either side has no release only epoch and version are compared,
  so ``Requires: nova = 12.0.1`` is met by ``nova = 12.0.1-3``.

Every function is checked against rpm itself in ``tests/test_rpmvercmp.py``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

# rpmsenseFlags bits (rpm/rpmds.h); only the comparison sense matters here.
LESS = 1 << 1
GREATER = 1 << 2
EQUAL = 1 << 3

#: How createrepo_c / repodata spell a comparison, and how rpm prints it.
FLAG_BITS: dict[str, int] = {
    "EQ": EQUAL,
    "LT": LESS,
    "GT": GREATER,
    "LE": LESS | EQUAL,
    "GE": GREATER | EQUAL,
}
FLAG_OPERATORS: dict[str, str] = {"EQ": "=", "LT": "<", "GT": ">", "LE": "<=", "GE": ">="}
OPERATOR_FLAGS: dict[str, str] = {op: flag for flag, op in FLAG_OPERATORS.items()}
OPERATOR_FLAGS["=="] = "EQ"
OPERATOR_FLAGS["=<"] = "LE"
OPERATOR_FLAGS["=>"] = "GE"


def _isdigit(c: str) -> bool:
    # rpm's risdigit/risalpha are ASCII-only; str.isdigit() is not.
    return "0" <= c <= "9"


def _isalpha(c: str) -> bool:
    return "a" <= c <= "z" or "A" <= c <= "Z"


def _isalnum(c: str) -> bool:
    return _isdigit(c) or _isalpha(c)


def rpmvercmp(a: str, b: str) -> int:
    """Compare two version (or release) strings as rpm does: -1, 0 or 1."""
    if a == b:
        return 0
    i = j = 0
    la, lb = len(a), len(b)
    while i < la or j < lb:
        # Separators (anything but alnum, ~ and ^) only delimit segments.
        while i < la and not _isalnum(a[i]) and a[i] not in "~^":
            i += 1
        while j < lb and not _isalnum(b[j]) and b[j] not in "~^":
            j += 1
        ca = a[i] if i < la else ""
        cb = b[j] if j < lb else ""

        # Tilde sorts before everything else, the end of the string included.
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i += 1
            j += 1
            continue

        # Caret is like tilde, except that the end of the string sorts before it.
        if ca == "^" or cb == "^":
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != "^":
                return 1
            if cb != "^":
                return -1
            i += 1
            j += 1
            continue

        if not (ca and cb):
            break

        # Take the longest all-digit or all-letter segment of each side.
        segment_test = _isdigit if _isdigit(ca) else _isalpha
        isnum = segment_test is _isdigit
        ei = i
        while ei < la and segment_test(a[ei]):
            ei += 1
        ej = j
        while ej < lb and segment_test(b[ej]):
            ej += 1
        seg_a, seg_b = a[i:ei], b[j:ej]

        # Different segment types: a number is always newer than letters.
        if not seg_b:
            return 1 if isnum else -1

        if isnum:
            seg_a = seg_a.lstrip("0")
            seg_b = seg_b.lstrip("0")
            if len(seg_a) != len(seg_b):
                return 1 if len(seg_a) > len(seg_b) else -1
        if seg_a != seg_b:
            return 1 if seg_a > seg_b else -1
        i, j = ei, ej

    # All segments equal but the separators differed: the longer one wins.
    rest_a, rest_b = i < la, j < lb
    if not rest_a and not rest_b:
        return 0
    return -1 if not rest_a else 1


@dataclass(frozen=True, order=False)
class EVR:
    """``[epoch:]version[-release]``; ``release`` is "" when not given."""

    epoch: int
    version: str
    release: str = ""

    def __str__(self) -> str:
        text = f"{self.epoch}:{self.version}" if self.epoch else self.version
        return f"{text}-{self.release}" if self.release else text

    def __lt__(self, other: EVR) -> bool:
        return compare_evr(self, other) < 0

    def __le__(self, other: EVR) -> bool:
        return compare_evr(self, other) <= 0

    def __gt__(self, other: EVR) -> bool:
        return compare_evr(self, other) > 0

    def __ge__(self, other: EVR) -> bool:
        return compare_evr(self, other) >= 0


_EPOCH = re.compile(r"(\d*):")


def parse_evr(text: str) -> EVR:
    """Split ``"E:V-R"`` as rpm does; a missing epoch is 0, a missing release ""."""
    epoch = 0
    match = _EPOCH.match(text)
    if match:
        epoch = int(match.group(1) or 0)
        text = text[match.end() :]
    version, sep, release = text.rpartition("-")
    if not sep:
        return EVR(epoch, text, "")
    return EVR(epoch, version, release)


def _as_evr(value: EVR | str) -> EVR:
    return value if isinstance(value, EVR) else parse_evr(value)


def compare_evr(a: EVR | str, b: EVR | str) -> int:
    """Order two EVRs: epoch, then version, then release.

    This is what ``rpm.vercmp()`` (rpm's ``rpmverCmp``) does: a missing epoch
    is 0, and when versions are equal an EVR with a release sorts after one
    without (``1.0 < 1.0-0``).  To decide whether a Provides meets a Requires
    use :func:`satisfies`, which ignores the release when one side has none.
    """
    ea, eb = _as_evr(a), _as_evr(b)
    if ea.epoch != eb.epoch:
        return 1 if ea.epoch > eb.epoch else -1
    rc = rpmvercmp(ea.version, eb.version)
    if rc or ea.release == eb.release:
        return rc
    if ea.release and eb.release:
        return rpmvercmp(ea.release, eb.release)
    return 1 if ea.release else -1


class Dep(NamedTuple):
    """One Provides or Requires entry: ``name [flags evr]``.

    ``flags`` is spelled as in repodata (``EQ``, ``LT``, ``GT``, ``LE``,
    ``GE``) or "" for an unversioned entry; ``evr`` is an :class:`EVR`, an
    ``"E:V-R"`` string, or "".
    """

    name: str
    flags: str = ""
    evr: EVR | str = ""

    def __str__(self) -> str:
        operator = FLAG_OPERATORS.get(self.flags or "")
        if not operator or not self.evr:
            return self.name
        return f"{self.name} {operator} {self.evr}"


def sense_bits(flags: str | int | None) -> int:
    """The LESS/GREATER/EQUAL bits of a repodata flag name (or rpm's integer flags)."""
    if not flags:
        return 0
    if isinstance(flags, int):
        return flags & (LESS | GREATER | EQUAL)
    try:
        return FLAG_BITS[flags]
    except KeyError:
        raise ValueError(f"unknown dependency flags {flags!r}") from None


def ranges_overlap(a_flags: int, a: EVR, b_flags: int, b: EVR) -> bool:
    """rpm's ``rpmverOverlap``: do ``(a_flags a)`` and ``(b_flags b)`` share a version?"""
    # A missing epoch is 0 (rpm compares a present one only when it is > 0).
    sense = (a.epoch > b.epoch) - (a.epoch < b.epoch)
    if sense == 0:
        sense = rpmvercmp(a.version, b.version)
        if sense == 0:
            if a.release and b.release:
                sense = rpmvercmp(a.release, b.release)
            elif (a.release and b_flags & EQUAL) or (b.release and a_flags & EQUAL):
                # The side without a release matches any release when it allows EQUAL.
                return True
    if sense < 0:
        return bool(a_flags & GREATER or b_flags & LESS)
    if sense > 0:
        return bool(a_flags & LESS or b_flags & GREATER)
    return bool(
        (a_flags & EQUAL and b_flags & EQUAL)
        or (a_flags & LESS and b_flags & LESS)
        or (a_flags & GREATER and b_flags & GREATER)
    )


def satisfies(provide: Sequence[object], require: Sequence[object]) -> bool:
    """Whether ``provide = (name, flags, evr)`` meets ``require = (name, flags, evr)``.

    Names must be equal.  An unversioned entry on either side always matches
    (``Provides: foo`` meets ``Requires: foo >= 2``, as in rpm); otherwise the
    two version ranges must overlap (rpm's ``rpmdsCompare``).
    """
    p_name, p_flags, p_evr = provide
    r_name, r_flags, r_evr = require
    if p_name != r_name:
        return False
    p_bits = sense_bits(p_flags)  # type: ignore[arg-type]
    r_bits = sense_bits(r_flags)  # type: ignore[arg-type]
    if not (p_bits and r_bits and p_evr and r_evr):
        return True
    return ranges_overlap(p_bits, _as_evr(p_evr), r_bits, _as_evr(r_evr))  # type: ignore[arg-type]
