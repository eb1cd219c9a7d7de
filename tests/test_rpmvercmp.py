"""The pure-Python rpmvercmp port, checked against rpm 4.18 itself.

rpm is the oracle twice over: ``rpm.vercmp()`` in rpm's embedded Lua for
version ordering (many comparisons per ``rpm --eval``, since a process spawn
costs more than thousands of comparisons), and rpm's own dependency check
(``rpm -U --test`` on real packages) for Provides/Requires range overlap.
"""

from __future__ import annotations

import random
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gate.jobs.rpmvercmp import (
    EVR,
    Dep,
    compare_evr,
    parse_evr,
    rpmvercmp,
    satisfies,
)
from tests.rpmfactory import build_rpm


def _lua_string(text: str) -> str:
    # Decimal escapes keep any byte safe inside a Lua string literal.
    return '"' + "".join(f"\\{ord(c):03d}" for c in text) + '"'


def rpm_vercmp_many(pairs: Sequence[tuple[str, str]]) -> list[int]:
    """``rpm.vercmp(a, b)`` for every pair, in one ``rpm --eval`` call."""
    if not pairs:
        return []
    body = ",\n".join(f"{{{_lua_string(a)}, {_lua_string(b)}}}" for a, b in pairs)
    script = (
        f"local pairs_ = {{\n{body}\n}}\n"
        "for _, p in ipairs(pairs_) do print(rpm.vercmp(p[1], p[2]) .. ' ') end\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        path = Path(f.name)
    try:
        out = subprocess.run(
            ["rpm", "--eval", f'%{{lua: dofile("{path}")}}'],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        path.unlink()
    results = [int(tok) for tok in out.split()]
    assert len(results) == len(pairs), out
    return results


# rpm's own table (tests/rpmvercmp.at) plus the cases the gate cares about.
VERCMP_TABLE = [
    ("1.0", "1.0", 0),
    ("1.0", "2.0", -1),
    ("2.0.1", "2.0", 1),
    ("2.0.1a", "2.0.1", 1),
    ("5.5p1", "5.5p10", -1),
    ("10xyz", "10.1xyz", -1),
    ("xyz.4", "8", -1),
    ("xyz.4", "2", -1),
    ("6.0.rc1", "6.0", 1),
    ("10b2", "10a1", 1),
    ("1.0a", "1.0aa", -1),
    ("10.0001", "10.1", 0),
    ("10.0001", "10.0039", -1),
    ("4.999.9", "5.0", -1),
    ("20101122", "20101121", 1),
    ("2.0", "2_0", 0),
    ("a+", "a_", 0),
    ("_+", "_", 0),
    # the gate's own list
    ("1.0", "1.0.0", -1),
    ("1.01", "1.1", 0),
    ("1.a", "1.1", -1),
    ("1.1", "1.a", 1),
    ("1a", "1.a", 0),
    ("12.0.1", "12.0.0", 1),
    ("99999999999999999999999", "99999999999999999999998", 1),
    # tilde: before everything, even the end of the string
    ("1.0~rc1", "1.0", -1),
    ("1.0", "1.0~rc1", 1),
    ("1.0~rc1", "1.0~rc2", -1),
    ("1.0~rc1~git123", "1.0~rc1", -1),
    ("1.0~", "1.0", -1),
    ("1.0~rc1", "1.0~", 1),
    # caret: after the end of the string, before anything else
    ("1.0^", "1.0", 1),
    ("1.0^git1", "1.0", 1),
    ("1.0^git1", "1.0^git2", -1),
    ("1.0^git1", "1.01", -1),
    ("1.0^20160101", "1.0.1", -1),
    ("1.0^20160102", "1.0^20160101^git1", 1),
    ("1.0~rc1^git1", "1.0~rc1", 1),
    ("1.0^git1~pre", "1.0^git1", -1),
]


@pytest.mark.parametrize(("a", "b", "expected"), VERCMP_TABLE)
def test_rpmvercmp_table(a: str, b: str, expected: int) -> None:
    assert rpmvercmp(a, b) == expected
    assert rpmvercmp(b, a) == -expected


def test_rpmvercmp_table_agrees_with_rpm() -> None:
    assert rpm_vercmp_many([(a, b) for a, b, _ in VERCMP_TABLE]) == [e for _, _, e in VERCMP_TABLE]


# Random strings over the interesting alphabet, and structured versions built
# from a few segments and separators so that near-equal pairs are common.
_raw_versions = st.text(alphabet="abzAZ0123456789.~^_", min_size=1, max_size=12)
_segments = st.sampled_from(["0", "1", "01", "2", "10", "001", "a", "b", "rc", "Z", ""])
_separators = st.sampled_from([".", "~", "^", "_", "", ".."])
_structured_versions = (
    st.lists(st.tuples(_separators, _segments), min_size=1, max_size=5)
    .map(lambda parts: "".join(sep + seg for sep, seg in parts))
    .filter(bool)
)
versions = st.one_of(_raw_versions, _structured_versions)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(versions, versions), min_size=1, max_size=150))
def test_rpmvercmp_matches_rpm(pairs: list[tuple[str, str]]) -> None:
    assert [rpmvercmp(a, b) for a, b in pairs] == rpm_vercmp_many(pairs)


_epochs = st.one_of(st.none(), st.integers(0, 3))
_releases = st.one_of(st.just(""), st.sampled_from(["~", ".", "_", "0", "~rc1"]), versions)


def _evr_text(epoch: int | None, version: str, release: str) -> str:
    return (f"{epoch}:" if epoch is not None else "") + version + (f"-{release}" if release else "")


evr_strings = st.builds(_evr_text, _epochs, versions, _releases)
# Pairs that share a version, so that epochs and releases decide.
_same_version_pairs = st.builds(
    lambda v, e1, r1, e2, r2: (_evr_text(e1, v, r1), _evr_text(e2, v, r2)),
    versions,
    _epochs,
    _releases,
    _epochs,
    _releases,
)
evr_pairs = st.one_of(st.tuples(evr_strings, evr_strings), _same_version_pairs)


@settings(max_examples=40, deadline=None)
@given(st.lists(evr_pairs, min_size=1, max_size=150))
def test_compare_evr_matches_rpm(pairs: list[tuple[str, str]]) -> None:
    assert [compare_evr(a, b) for a, b in pairs] == rpm_vercmp_many(pairs)


EVR_TABLE = [
    ("1.0-1", "0:1.0-1", 0),
    ("1:0.1", "9.9", 1),
    ("1.0", "1.0-1", -1),
    ("1.0", "1.0-~", -1),  # any release sorts after none, even one that sorts first
    ("1.0-1", "1.0-1~bp", 1),
    ("2:1.0", "1:2.0-5", 1),
]


@pytest.mark.parametrize(("a", "b", "expected"), EVR_TABLE)
def test_compare_evr_table(a: str, b: str, expected: int) -> None:
    assert compare_evr(a, b) == expected
    assert compare_evr(b, a) == -expected


def test_compare_evr_table_agrees_with_rpm() -> None:
    assert rpm_vercmp_many([(a, b) for a, b, _ in EVR_TABLE]) == [e for _, _, e in EVR_TABLE]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.0", EVR(0, "1.0", "")),
        ("1.0-1", EVR(0, "1.0", "1")),
        ("2:1.0-1.el9", EVR(2, "1.0", "1.el9")),
        ("0:12.0.1", EVR(0, "12.0.1", "")),
        (":1.0", EVR(0, "1.0", "")),
        ("1.0-rc-1", EVR(0, "1.0-rc", "1")),
        ("a:1.0", EVR(0, "a:1.0", "")),
    ],
)
def test_parse_evr(text: str, expected: EVR) -> None:
    assert parse_evr(text) == expected


def test_evr_objects_sort_like_rpm() -> None:
    assert EVR(1, "0.1") > parse_evr("9.9-9")
    assert sorted(map(parse_evr, ["1.0", "1.0~rc1", "1:0.5", "1.0^git"])) == [
        parse_evr("1.0~rc1"),
        parse_evr("1.0"),
        parse_evr("1.0^git"),
        parse_evr("1:0.5"),
    ]


# (provide, require, rpm's verdict) -- each verdict is re-checked with rpm below.
SATISFIES_TABLE = [
    (Dep("nova", "EQ", "12.0.0-1"), Dep("nova", "GE", "12.0.1"), False),
    (Dep("nova", "EQ", "12.0.1-1"), Dep("nova", "GE", "12.0.1"), True),
    (Dep("nova", "EQ", "12.0.1-1"), Dep("nova", "EQ", "12.0.1"), True),
    (Dep("nova", "EQ", "12.0.1-1"), Dep("nova", "GT", "12.0.1"), False),
    (Dep("nova", "EQ", "12.0.1-1"), Dep("nova", "LT", "12.0.1"), False),
    (Dep("nova", "EQ", "12.0.1-1"), Dep("nova", "LE", "12.0.1"), True),
    (Dep("nova", "EQ", "12.0.1-2"), Dep("nova", "GT", "12.0.1-1"), True),
    (Dep("nova", "EQ", "12.0.1-1"), Dep("nova", "EQ", "12.0.1-2"), False),
    (Dep("nova", "EQ", "12.0.1"), Dep("nova", "EQ", "12.0.1-2"), True),
    # rpm's quirk: a side without release that allows EQUAL matches any release
    (Dep("nova", "EQ", "12.0.1"), Dep("nova", "GT", "12.0.1-2"), True),
    (Dep("nova", "", ""), Dep("nova", "GE", "99"), True),
    (Dep("nova", "EQ", "1.0-1"), Dep("nova", "", ""), True),
    (Dep("nova", "EQ", "1:1.0-1"), Dep("nova", "GE", "2.0"), True),
    (Dep("nova", "EQ", "1.0-1"), Dep("nova", "GE", "1:0.5"), False),
    (Dep("nova", "EQ", "0:1.0-1"), Dep("nova", "EQ", "1.0"), True),
    (Dep("nova", "EQ", "1.0~rc1-1"), Dep("nova", "GE", "1.0"), False),
    (Dep("nova", "EQ", "1.0^git1-1"), Dep("nova", "GT", "1.0"), True),
    (Dep("nova", "GE", "2.0"), Dep("nova", "LT", "3.0"), True),
    (Dep("nova", "LT", "2.0"), Dep("nova", "GE", "2.0"), False),
    (Dep("nova", "LE", "2.0"), Dep("nova", "GE", "2.0"), True),
    (Dep("nova", "GT", "2.0"), Dep("nova", "GT", "1.0"), True),
    (Dep("nova", "EQ", "1.0-1"), Dep("glance", "EQ", "1.0-1"), False),
]


@pytest.mark.parametrize(("provide", "require", "expected"), SATISFIES_TABLE)
def test_satisfies_table(provide: Dep, require: Dep, expected: bool) -> None:
    assert satisfies(provide, require) is expected


def test_satisfies_accepts_plain_tuples_and_evr_objects() -> None:
    assert satisfies(("nova", "EQ", EVR(0, "12.0.1", "1")), ("nova", "GE", "12.0.1"))
    assert not satisfies(("nova", "EQ", "12.0.0-1"), ("nova", "GE", EVR(0, "12.0.1")))
    assert satisfies(("nova", None, None), ("nova", "GE", "1"))
    with pytest.raises(ValueError):
        satisfies(("nova", "EQ", "1"), ("nova", "NE", "1"))


def test_dep_prints_like_rpm() -> None:
    assert str(Dep("nova", "GE", "12.0.1")) == "nova >= 12.0.1"
    assert str(Dep("nova", "EQ", EVR(1, "2", "3"))) == "nova = 1:2-3"
    assert str(Dep("/usr/bin/nova")) == "/usr/bin/nova"


_OPERATORS = {"EQ": "=", "LT": "<", "GT": ">", "LE": "<=", "GE": ">="}


def _spec_dep(name: str, dep: Dep) -> str:
    if not dep.flags:
        return name
    return f"{name} {_OPERATORS[dep.flags]} {dep.evr}"


def rpm_satisfies_many(cases: Sequence[tuple[Dep, Dep]], workdir: Path) -> list[bool]:
    """rpm's verdict for each (provide, require): real packages, ``rpm -U --test``.

    Case ``i`` becomes ``Provides: capI ...`` on one package and
    ``Requires: capI ...`` on another; rpm names the requires it cannot meet.
    """
    provides = [_spec_dep(f"cap{i}", p) for i, (p, _) in enumerate(cases)]
    requires = [_spec_dep(f"cap{i}", r) for i, (_, r) in enumerate(cases)]
    rpms = workdir / "rpms"
    prov = build_rpm(rpms, "oracle-provider", "1", provides=provides)
    req = build_rpm(rpms, "oracle-requirer", "1", requires=requires)
    dbpath = workdir / "rpmdb"
    dbpath.mkdir()
    proc = subprocess.run(
        ["rpm", "--dbpath", str(dbpath), "-U", "--test", str(prov), str(req)],
        capture_output=True,
        text=True,
        check=False,
    )
    unmet = {
        line.split()[0]
        for line in proc.stderr.splitlines()
        if "is needed by oracle-requirer" in line
    }
    assert proc.returncode == (1 if unmet else 0) or unmet, proc.stderr
    return [f"cap{i}" not in unmet for i in range(len(cases))]


def test_satisfies_table_agrees_with_rpm(tmp_path: Path) -> None:
    cases = [(p, r._replace(name=p.name)) for p, r, _ in SATISFIES_TABLE]
    expected = [e or p.name != r.name for p, r, e in SATISFIES_TABLE]
    assert rpm_satisfies_many(cases, tmp_path) == expected


def test_satisfies_matches_rpm_on_random_ranges(tmp_path: Path) -> None:
    rng = random.Random(20240101)
    evrs = [
        "1.0", "1.0-1", "1.0-2", "0:1.0", "1:1.0", "1:1.0-1", "1.0~rc1", "1.0~rc1-1",
        "1.0^git1", "1.0.1", "1.01", "2.0-1", "1.0-1.el9", "1.0-1~bp",
    ]  # fmt: skip
    flags = ["EQ", "LT", "GT", "LE", "GE"]
    cases = []
    for _ in range(400):
        provide = Dep("x", rng.choice([*flags, "EQ", "EQ", "EQ"]), rng.choice(evrs))
        require = Dep("x", rng.choice([*flags, ""]), rng.choice(evrs))
        if not require.flags:
            require = Dep("x")
        cases.append((provide, require))
    mine = [satisfies(p, r) for p, r in cases]
    theirs = rpm_satisfies_many(cases, tmp_path)
    mismatches = [
        (str(p), str(r), m) for (p, r), m, t in zip(cases, mine, theirs, strict=True) if m != t
    ]
    assert not mismatches
    assert any(mine) and not all(mine)
