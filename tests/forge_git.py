"""The git side of the fake forges (tests/fakegithub, tests/fakeforgejo): real bare repositories.

A pull request's head lives where both systems keep it, ``refs/pull/<n>/head``
of the base repository; merging writes a real commit and moves the branch
with a compare-and-swap ``update-ref``, as a server would.  Nothing here knows
rpmgate.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

#: who the fake forges merge as
IDENTITY = {
    "GIT_AUTHOR_NAME": "Fake Forge",
    "GIT_AUTHOR_EMAIL": "noreply@forge.invalid",
    "GIT_COMMITTER_NAME": "Fake Forge",
    "GIT_COMMITTER_EMAIL": "noreply@forge.invalid",
}


def git_sync(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **IDENTITY, "LC_ALL": "C"}
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, check=check, capture_output=True, text=True
    )


async def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(git_sync, repo, *args, check=check)


async def rev(repo: Path, name: str) -> str | None:
    done = await git(repo, "rev-parse", "--verify", "-q", f"{name}^{{commit}}", check=False)
    return done.stdout.strip() if done.returncode == 0 else None


async def has_commit(repo: Path, sha: str) -> bool:
    return await rev(repo, sha) is not None


async def merge(repo: Path, branch: str, head: str, method: str, message: str) -> str | None:
    """Merge ``head`` into ``branch`` the way ``method`` says; the new branch head, or
    None on a conflict.  ``merge``: a merge commit (always, as both forges' buttons
    do); ``squash``: one commit with the merged tree on the branch; ``fast-forward-only``:
    the head itself, when the branch is its ancestor."""
    base = await rev(repo, f"refs/heads/{branch}")
    if base is None:
        return None
    if method == "fast-forward-only":
        ancestor = await git(repo, "merge-base", "--is-ancestor", base, head, check=False)
        if ancestor.returncode != 0:
            return None
        new = head
    else:
        merged = await git(repo, "merge-tree", "--write-tree", base, head, check=False)
        if merged.returncode != 0:
            return None
        tree = merged.stdout.split()[0]
        parents = ["-p", base] + (["-p", head] if method == "merge" else [])
        new = (await git(repo, "commit-tree", tree, *parents, "-m", message)).stdout.strip()
    await git(repo, "update-ref", f"refs/heads/{branch}", new, base)
    return new
