"""Refs and shas from outside: the validator agrees with git, and git never sees an option."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate.refs import InvalidRef, check_branch, check_ref, ref_problem

# Characters that matter to git's rules, plus ordinary ones and a non-ASCII letter.
_ALPHABET = st.sampled_from(list("ab/.-_@{}~^:?*[\\ \t\x7f\x01é09lock"))


def _git_accepts(ref: str) -> bool:
    result = subprocess.run(["git", "check-ref-format", ref], capture_output=True)
    return result.returncode == 0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(_ALPHABET, max_size=24))
def test_ref_rules_agree_with_git_check_ref_format(tail: str) -> None:
    ref = "refs/" + tail
    if "\x00" in ref:
        return
    assert (ref_problem(ref) is None) == _git_accepts(ref), ref


@pytest.mark.parametrize(
    "ref",
    [
        "refs/heads/main",
        "refs/changes/45/12345/3",
        "refs/pull/17/head",
        "refs/merge-requests/4/head",
        "refs/heads/update-12.0.1",
        "refs/heads/é",
    ],
)
def test_ordinary_refs_are_accepted(ref: str) -> None:
    assert check_ref(ref) == ref
    assert _git_accepts(ref)


@pytest.mark.parametrize(
    "ref",
    [
        "--upload-pack=touch /tmp/x; false",
        "-oProxyCommand=touch /tmp/x",
        "-",
        "main",
        "HEAD",
        "HEAD~1",
        "origin/main",
        "refs/heads/a..b",
        "refs/heads/x.lock",
        "refs/heads/",
        "refs//x",
        "refs/heads/@{u}",
        "refs/heads/a b",
        "refs/heads/.hidden",
        "refs/x\\y",
        "refs/" + "a" * 1100,
        "abc123",
        "0" * 39,
        "",
    ],
)
def test_options_revisions_and_bad_names_are_refused(ref: str) -> None:
    with pytest.raises(InvalidRef):
        check_ref(ref)


def test_full_shas_are_accepted_and_lower_cased() -> None:
    assert check_ref("A" * 40) == "a" * 40
    assert check_ref("b" * 64) == "b" * 64


@pytest.mark.parametrize("branch", ["-x", "--upload-pack=x", "a..b", "a b", "x.lock", ""])
def test_bad_branch_names_are_refused(branch: str) -> None:
    with pytest.raises(InvalidRef):
        check_branch(branch)


def test_ordinary_branch_names_are_accepted() -> None:
    for branch in ("main", "f41", "c9s", "stable/2024.1", "rawhide"):
        assert check_branch(branch) == branch
