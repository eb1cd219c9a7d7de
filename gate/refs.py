"""What a change may name: a full commit sha, or a git ref under ``refs/``.

Every ref and sha the gate is given comes from outside (an API body, a
webhook, a stored delivery) and ends up on a ``git`` command line.  A value
that starts with ``-`` would be read as an option (``--upload-pack=…`` runs a
command), so nothing reaches git that was not accepted here first, and the
merger passes it after ``--end-of-options`` as well.

:func:`check_ref` applies the rules of ``git check-ref-format`` (see
git-check-ref-format(1) and ``check_refname_component`` in git's refs.c)
without running git, plus two of ours: the ref is a full name under
``refs/`` (never a bare branch name or a revision expression such as
``HEAD~3``) and it is at most :data:`MAX_REF_LENGTH` bytes.
``tests/test_refs.py`` compares it with the real ``git check-ref-format``.
"""

from __future__ import annotations

import re

#: longest ref accepted (Gerrit's refs/changes/NN/NNNNNN/NN is ~30 bytes)
MAX_REF_LENGTH = 1024

FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")

# git-check-ref-format(1) rule 4, 5 and 10: no control characters, space, ~ ^ : ? * [ \
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


class InvalidRef(ValueError):
    """The value is neither a full commit sha nor an acceptable ref name."""


def is_full_sha(value: str) -> bool:
    """A 40- (SHA-1) or 64-digit (SHA-256) lower-case hex object name."""
    return FULL_SHA.fullmatch(value) is not None


def ref_problem(ref: str) -> str | None:
    """Why ``ref`` is not an acceptable ref name, or None when it is."""
    if not ref.startswith("refs/"):
        return "must be a full ref name starting with refs/ (or a full commit sha)"
    if len(ref.encode("utf-8", "surrogateescape")) > MAX_REF_LENGTH:
        return f"is longer than {MAX_REF_LENGTH} bytes"
    if _FORBIDDEN_CHARS.search(ref):
        return "contains a space, a control character or one of ~ ^ : ? * [ \\"
    if ".." in ref:
        return "contains '..'"
    if "@{" in ref:
        return "contains '@{'"
    if ref.endswith("/") or ref.endswith("."):
        return "ends with '/' or '.'"
    for component in ref.split("/"):
        if not component:
            return "contains an empty path component ('//')"
        if component.startswith("."):
            return f"has a component starting with '.' ({component!r})"
        if component.endswith(".lock"):
            return f"has a component ending with '.lock' ({component!r})"
    return None


def check_ref(value: str) -> str:
    """``value`` if it is a full sha (returned lower-cased) or a valid ref; else InvalidRef."""
    if FULL_SHA.fullmatch(value.lower()):
        return value.lower()
    problem = ref_problem(value)
    if problem is not None:
        raise InvalidRef(f"{value[:80]!r} is not a commit sha or a ref name: it {problem}")
    return value


def check_branch(branch: str) -> str:
    """A branch name (``main``, ``f41``, ``c9s``) that makes a valid ``refs/heads/<branch>``."""
    problem = ref_problem(f"refs/heads/{branch}")
    if problem is not None or branch.startswith("-"):
        raise InvalidRef(
            f"{branch[:80]!r} is not a valid branch name: it {problem or 'starts with -'}"
        )
    return branch
