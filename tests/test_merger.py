"""The git side of the gate against real repositories.

Each test has a bare "remote" (what a forge serves) and a working clone, a
packager's checkout, that makes commits and pushes them as branches or review
refs.  The merger clones from the remote's local path.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from gate.merger import GitError, Merger, RefNotFound

PACKAGER_ENV = {
    "GIT_AUTHOR_NAME": "Pat Packager",
    "GIT_AUTHOR_EMAIL": "pat@example.org",
    "GIT_COMMITTER_NAME": "Pat Packager",
    "GIT_COMMITTER_EMAIL": "pat@example.org",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **PACKAGER_ENV, **(env or {})},
    )
    return result.stdout.strip()


class Distgit:
    """A bare remote plus a packager's checkout of it."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.remote = root / f"{name}.git"
        self.checkout = root / f"{name}-checkout"
        root.mkdir(parents=True, exist_ok=True)
        git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(self.remote))
        git(root, "init", "--quiet", "--initial-branch=main", str(self.checkout))
        git(self.checkout, "remote", "add", "origin", str(self.remote))
        self._clock = 1_700_000_000
        self.base = self.commit(
            {f"{name}.spec": spec(name, "1.0"), "sources": "tarball\n"}, "initial import"
        )
        self.push(self.base, "refs/heads/main")

    @property
    def url(self) -> str:
        return str(self.remote)

    def commit(self, files: dict[str, str], message: str, *, parent: str | None = None) -> str:
        """Commit ``files`` on top of ``parent`` (default: the checkout's HEAD)."""
        if parent is not None:
            git(self.checkout, "checkout", "--quiet", "--detach", parent)
        for path, content in files.items():
            target = self.checkout / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            git(self.checkout, "add", path)
        self._clock += 60
        when = f"@{self._clock} +0000"
        git(
            self.checkout,
            "commit",
            "--quiet",
            "--no-gpg-sign",
            "-m",
            message,
            env={"GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when},
        )
        return git(self.checkout, "rev-parse", "HEAD")

    def change(self, files: dict[str, str], message: str, *, parent: str, ref: str) -> str:
        """A proposed change: a commit on ``parent`` pushed to a review ref."""
        sha = self.commit(files, message, parent=parent)
        self.push(sha, ref)
        return sha

    def push(self, sha: str, ref: str) -> None:
        git(self.checkout, "push", "--quiet", "--force", "origin", f"{sha}:{ref}")

    def remote_head(self, branch: str = "main") -> str:
        return git(self.remote, "rev-parse", f"refs/heads/{branch}")

    def show(self, rev: str, path: str) -> str:
        return git(self.remote, "show", f"{rev}:{path}")


def spec(name: str, version: str) -> str:
    return f"Name: {name}\nVersion: {version}\nRelease: 1\n"


@pytest.fixture
def nova(tmp_path: Path) -> Distgit:
    return Distgit(tmp_path / "forge", "nova")


@pytest.fixture
def merger(tmp_path: Path) -> Merger:
    return Merger(tmp_path / "merger")


def in_clone(merger: Merger, project: str, *args: str) -> str:
    return git(merger.git_dir(project), *args)


async def test_change_on_branch_head_fast_forwards(merger: Merger, nova: Distgit) -> None:
    change = nova.change(
        {"nova.spec": spec("nova", "1.1")},
        "update to 1.1",
        parent=nova.base,
        ref="refs/changes/01/1/1",
    )

    result = await merger.speculative_merge("nova", nova.url, nova.base, [change])

    assert result.ok
    assert result.commit == change
    assert result.tree == in_clone(merger, "nova", "rev-parse", f"{change}^{{tree}}")


async def test_change_on_older_base_gets_a_merge_commit_by_rpmgate(
    merger: Merger, nova: Distgit
) -> None:
    old_base = nova.base
    head = nova.commit({"sources": "tarball-2\n"}, "new sources", parent=old_base)
    nova.push(head, "refs/heads/main")
    change = nova.change(
        {"nova.spec": spec("nova", "1.1")},
        "update to 1.1",
        parent=old_base,
        ref="refs/changes/01/1/1",
    )

    base = await merger.branch_head("nova", nova.url, "main")
    result = await merger.speculative_merge("nova", nova.url, base, [change])

    assert base == head
    assert result.ok and result.commit not in (head, change)
    parents = in_clone(merger, "nova", "show", "-s", "--format=%P", result.commit).split()
    assert parents == [head, change]
    identity = in_clone(merger, "nova", "show", "-s", "--format=%an <%ae>|%cn <%ce>", result.commit)
    assert identity == "rpmgate <rpmgate@localhost>|rpmgate <rpmgate@localhost>"
    assert in_clone(merger, "nova", "show", f"{result.commit}:sources") == "tarball-2"
    assert (
        in_clone(merger, "nova", "show", f"{result.commit}:nova.spec")
        == spec("nova", "1.1").strip()
    )
    pinned = in_clone(merger, "nova", "rev-parse", f"refs/rpmgate/{result.commit}")
    assert pinned == result.commit


async def test_two_changes_in_one_project_stack_in_order(merger: Merger, nova: Distgit) -> None:
    first = nova.change(
        {"nova.spec": spec("nova", "1.1")},
        "update to 1.1",
        parent=nova.base,
        ref="refs/changes/01/1/1",
    )
    second = nova.change(
        {"fix.patch": "--- a fix\n"}, "add a patch", parent=nova.base, ref="refs/changes/02/2/1"
    )

    result = await merger.speculative_merge("nova", nova.url, nova.base, [first, second])

    assert result.ok
    # the first change fast-forwards, the second merges on top of it
    parents = in_clone(merger, "nova", "show", "-s", "--format=%P", result.commit).split()
    assert parents == [first, second]
    files = in_clone(merger, "nova", "ls-tree", "--name-only", result.commit).split()
    assert files == ["fix.patch", "nova.spec", "sources"]
    assert "1.1" in in_clone(merger, "nova", "show", f"{result.commit}:nova.spec")


async def test_change_already_contained_is_skipped(merger: Merger, nova: Distgit) -> None:
    first = nova.change(
        {"nova.spec": spec("nova", "1.1")},
        "update to 1.1",
        parent=nova.base,
        ref="refs/changes/01/1/1",
    )
    # a dependent change: made on top of the first one
    second = nova.change(
        {"fix.patch": "--- a fix\n"}, "add a patch", parent=first, ref="refs/changes/02/2/1"
    )

    result = await merger.speculative_merge("nova", nova.url, nova.base, [second, first])

    assert result.ok and result.commit == second


async def test_conflict_is_reported_and_the_clone_still_works(
    merger: Merger, nova: Distgit
) -> None:
    first = nova.change(
        {"nova.spec": spec("nova", "1.1")},
        "update to 1.1",
        parent=nova.base,
        ref="refs/changes/01/1/1",
    )
    rival = nova.change(
        {"nova.spec": spec("nova", "2.0")},
        "update to 2.0",
        parent=nova.base,
        ref="refs/changes/02/2/1",
    )

    result = await merger.speculative_merge("nova", nova.url, nova.base, [first, rival])

    assert not result.ok
    assert result.conflict and result.conflict_with == rival
    assert result.files == ("nova.spec",)
    assert result.message == "merge conflict"
    assert not result.commit
    # the clone is usable: the rival alone merges, and so does another change
    other = nova.change(
        {"fix.patch": "--- a fix\n"}, "add a patch", parent=nova.base, ref="refs/changes/03/3/1"
    )
    again = await merger.speculative_merge("nova", nova.url, nova.base, [rival, other])
    assert again.ok
    assert "2.0" in in_clone(merger, "nova", "show", f"{again.commit}:nova.spec")


async def test_change_without_common_history_is_rejected(merger: Merger, nova: Distgit) -> None:
    git(nova.checkout, "checkout", "--quiet", "--orphan", "stray")
    git(nova.checkout, "rm", "--quiet", "-r", "-f", ".")
    stray = nova.commit({"README": "unrelated\n"}, "unrelated root")
    nova.push(stray, "refs/changes/09/9/1")

    result = await merger.speculative_merge("nova", nova.url, nova.base, [stray])

    assert result.conflict and result.conflict_with == stray
    assert "no history" in result.message


async def test_same_inputs_give_the_same_tree_and_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, merger: Merger, nova: Distgit
) -> None:
    first = nova.change(
        {"nova.spec": spec("nova", "1.1")},
        "update to 1.1",
        parent=nova.base,
        ref="refs/changes/01/1/1",
    )
    second = nova.change(
        {"fix.patch": "--- a fix\n"}, "add a patch", parent=nova.base, ref="refs/changes/02/2/1"
    )

    once = await merger.speculative_merge("nova", nova.url, nova.base, [first, second])
    twice = await merger.speculative_merge("nova", nova.url, nova.base, [first, second])
    # a restarted daemon with a fresh clone, later, under a user config that
    # names someone else and wants signed commits
    await asyncio.sleep(1.1)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Someone Else\n\temail = else@example.org\n[commit]\n\tgpgSign = true\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    elsewhere = Merger(tmp_path / "after-crash")
    third = await elsewhere.speculative_merge("nova", nova.url, nova.base, [first, second])

    assert once == twice == third
    assert once.tree and once.commit


async def test_push_fast_forwards_the_branch(merger: Merger, nova: Distgit) -> None:
    change = nova.change(
        {"nova.spec": spec("nova", "1.1")},
        "update to 1.1",
        parent=nova.base,
        ref="refs/changes/01/1/1",
    )
    result = await merger.speculative_merge("nova", nova.url, nova.base, [change])

    pushed = await merger.push("nova", nova.url, result.commit, "main")

    assert pushed.ok and pushed.pushed
    assert nova.remote_head() == result.commit
    # pushing again (a restart after the push) is a no-op that still succeeds
    again = await merger.push("nova", nova.url, result.commit, "main")
    assert again.ok and not again.pushed


async def test_push_is_refused_when_the_branch_moved(merger: Merger, nova: Distgit) -> None:
    change = nova.change(
        {"nova.spec": spec("nova", "1.1")},
        "update to 1.1",
        parent=nova.base,
        ref="refs/changes/01/1/1",
    )
    result = await merger.speculative_merge("nova", nova.url, nova.base, [change])
    direct = nova.commit({"sources": "tarball-2\n"}, "direct push", parent=nova.base)
    nova.push(direct, "refs/heads/main")

    pushed = await merger.push("nova", nova.url, result.commit, "main")

    assert not pushed.ok and not pushed.pushed
    assert pushed.reason == (f"branch main moved to {direct}, which this item was not tested on")
    assert nova.remote_head() == direct


async def test_push_succeeds_when_the_branch_moved_to_a_commit_the_merge_contains(
    merger: Merger, nova: Distgit
) -> None:
    ahead = nova.change(
        {"nova.spec": spec("nova", "1.1")},
        "update to 1.1",
        parent=nova.base,
        ref="refs/changes/01/1/1",
    )
    mine = nova.change(
        {"fix.patch": "--- a fix\n"}, "add a patch", parent=nova.base, ref="refs/changes/02/2/1"
    )
    ahead_result = await merger.speculative_merge("nova", nova.url, nova.base, [ahead])
    my_result = await merger.speculative_merge("nova", nova.url, nova.base, [ahead, mine])
    # the item ahead merges first (by us, or by the review system's submit)
    nova.push(ahead_result.commit, "refs/heads/main")

    pushed = await merger.push("nova", nova.url, my_result.commit, "main")

    assert pushed.ok and pushed.pushed
    assert nova.remote_head() == my_result.commit


async def test_is_on_branch_before_and_after_push(merger: Merger, nova: Distgit) -> None:
    change = nova.change(
        {"nova.spec": spec("nova", "1.1")},
        "update to 1.1",
        parent=nova.base,
        ref="refs/changes/01/1/1",
    )
    other = nova.change(
        {"fix.patch": "--- a fix\n"}, "add a patch", parent=nova.base, ref="refs/changes/02/2/1"
    )
    result = await merger.speculative_merge("nova", nova.url, nova.base, [other, change])

    assert await merger.is_on_branch("nova", nova.url, nova.base, "main")
    assert not await merger.is_on_branch("nova", nova.url, result.commit, "main")
    await merger.push("nova", nova.url, result.commit, "main")
    assert await merger.is_on_branch("nova", nova.url, result.commit, "main")
    assert await merger.is_on_branch("nova", nova.url, change, "main")
    # a commit this clone has never seen is not on the branch
    assert not await merger.is_on_branch("nova", nova.url, "0" * 40, "main")


async def test_resolve_a_ref_a_sha_and_a_missing_ref(merger: Merger, nova: Distgit) -> None:
    change = nova.change(
        {"nova.spec": spec("nova", "1.1")},
        "update to 1.1",
        parent=nova.base,
        ref="refs/changes/01/1/1",
    )
    feature = nova.commit({"fix.patch": "--- a fix\n"}, "add a patch", parent=nova.base)
    nova.push(feature, "refs/heads/feature")

    assert await merger.resolve("nova", nova.url, "refs/changes/01/1/1") == change
    assert await merger.resolve("nova", nova.url, "refs/heads/feature") == feature
    # by id, including a commit no remote ref points at any more
    nova.push(feature, "refs/heads/gone")
    git(nova.remote, "update-ref", "-d", "refs/heads/gone")
    stray = nova.commit({"other": "x\n"}, "never pushed as a branch", parent=nova.base)
    nova.push(stray, "refs/heads/tmp")
    git(nova.remote, "update-ref", "-d", "refs/heads/tmp")
    assert await merger.resolve("nova", nova.url, stray.upper()) == stray

    with pytest.raises(RefNotFound, match="refs/changes/99/99/1 not found"):
        await merger.resolve("nova", nova.url, "refs/changes/99/99/1")
    with pytest.raises(RefNotFound, match="not found"):
        await merger.resolve("nova", nova.url, "1" * 40)
    with pytest.raises(RefNotFound, match="branch nope not found"):
        await merger.branch_head("nova", nova.url, "nope")


async def test_concurrent_merges_in_two_projects(tmp_path: Path, merger: Merger) -> None:
    projects = {name: Distgit(tmp_path / "forge", name) for name in ("nova", "glance")}
    changes = {
        name: [
            repo.change(
                {f"{name}.spec": spec(name, "1.1")},
                "update",
                parent=repo.base,
                ref="refs/changes/01/1/1",
            ),
            repo.change(
                {"fix.patch": f"--- {name} fix\n"},
                "patch",
                parent=repo.base,
                ref="refs/changes/02/2/1",
            ),
        ]
        for name, repo in projects.items()
    }

    results = await asyncio.gather(
        *(
            merger.speculative_merge(name, repo.url, repo.base, changes[name])
            for name, repo in projects.items()
            for _ in range(3)
        )
    )

    assert all(result.ok for result in results)
    nova_results, glance_results = results[:3], results[3:]
    assert len({r.commit for r in nova_results}) == len({r.commit for r in glance_results}) == 1
    assert nova_results[0].commit != glance_results[0].commit
    for name, result in (("nova", nova_results[0]), ("glance", glance_results[0])):
        assert "1.1" in in_clone(merger, name, "show", f"{result.commit}:{name}.spec")


async def test_export_tree_writes_exactly_the_git_tree(
    tmp_path: Path, merger: Merger, nova: Distgit
) -> None:
    # export-ignore would otherwise drop the patch from what we build
    change = nova.change(
        {".gitattributes": "*.patch export-ignore\n", "patches/fix.patch": "--- a fix\n"},
        "add a patch",
        parent=nova.base,
        ref="refs/changes/01/1/1",
    )
    result = await merger.speculative_merge("nova", nova.url, nova.base, [change])
    dest = tmp_path / "export"

    await merger.export_tree("nova", result.commit, dest)

    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == [".gitattributes", "nova.spec", "patches/fix.patch", "sources"]
    assert (dest / "nova.spec").read_text() == spec("nova", "1.0")


async def test_commits_between_lists_direct_pushes_oldest_first(
    merger: Merger, nova: Distgit
) -> None:
    first = nova.commit({"sources": "tarball-2\n"}, "direct 1", parent=nova.base)
    second = nova.commit({"sources": "tarball-3\n"}, "direct 2", parent=first)
    nova.push(second, "refs/heads/main")

    head = await merger.branch_head("nova", nova.url, "main")

    assert await merger.commits_between("nova", nova.url, nova.base, head) == [first, second]
    assert await merger.commits_between("nova", nova.url, head, head) == []


async def test_git_errors_carry_the_command_and_stderr(tmp_path: Path, merger: Merger) -> None:
    with pytest.raises(GitError) as raised:
        await merger.ensure_clone("ghost", str(tmp_path / "no-such-remote.git"))

    assert raised.value.command[:2] == ("git", "fetch")
    assert "no-such-remote.git" in raised.value.stderr
    # the failed clone left nothing behind; a project name with a slash is one directory
    assert not list((tmp_path / "merger").iterdir())
    assert merger.git_dir("rpms/nova").parent == tmp_path / "merger"


async def test_clone_follows_a_changed_url(tmp_path: Path, merger: Merger) -> None:
    old = Distgit(tmp_path / "old-forge", "nova")
    new = Distgit(tmp_path / "new-forge", "nova")
    moved = new.commit({"sources": "tarball-2\n"}, "only on the new forge", parent=new.base)
    new.push(moved, "refs/heads/main")

    assert await merger.branch_head("nova", old.url, "main") == old.base
    assert await merger.branch_head("nova", new.url, "main") == moved


async def test_push_is_refused_when_someone_pushes_between_fetch_and_push(
    merger: Merger, nova: Distgit
) -> None:
    change = nova.change(
        {"nova.spec": spec("nova", "1.1")},
        "update to 1.1",
        parent=nova.base,
        ref="refs/changes/01/1/1",
    )
    result = await merger.speculative_merge("nova", nova.url, nova.base, [change])
    direct = nova.commit({"sources": "tarball-2\n"}, "direct push", parent=nova.base)
    fetch_branch = merger._fetch_branch
    calls = 0

    async def racing_fetch_branch(git_dir: Path, branch: str) -> str:
        nonlocal calls
        head = await fetch_branch(git_dir, branch)
        calls += 1
        if calls == 1:
            nova.push(direct, "refs/heads/main")
        return head

    merger._fetch_branch = racing_fetch_branch  # type: ignore[method-assign]

    pushed = await merger.push("nova", nova.url, result.commit, "main")

    assert not pushed.ok and not pushed.pushed
    assert pushed.head == direct
    assert nova.remote_head() == direct


async def test_a_hanging_fetch_is_killed_with_its_helpers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid_file = tmp_path / "ssh.pid"
    # an ssh that never answers
    monkeypatch.setenv("GIT_SSH_COMMAND", f"sh -c 'echo $$ > {pid_file}; exec sleep 60'")
    merger = Merger(tmp_path / "merger", timeout=1)

    with pytest.raises(GitError, match="timed out"):
        await merger.ensure_clone("nova", "ssh://forge.invalid/rpms/nova")

    stat = Path(f"/proc/{pid_file.read_text().strip()}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z"


async def test_forget_drops_the_pin(merger: Merger, nova: Distgit) -> None:
    change = await merger.resolve("nova", nova.url, "refs/heads/main")
    pins = ["for-each-ref", "--format=%(refname)", "refs/rpmgate/"]
    assert in_clone(merger, "nova", *pins) == f"refs/rpmgate/{change}"

    await merger.forget("nova", change)

    assert in_clone(merger, "nova", *pins) == ""


async def test_git_and_its_helpers_get_the_operators_git_settings_but_not_the_daemons_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ssh git starts (the operator's ``GIT_SSH_COMMAND``) writes down the environment
    it got: the ssh agent and proxy are there, the daemon's secrets and a GIT_DIR that
    would point git at another repository are not."""
    secret = "s3cret-api-token-5c0ffee"
    seen = tmp_path / "ssh-env"
    ssh = tmp_path / "ssh"
    ssh.write_text(f"#!/bin/sh\nenv > {seen}\nexit 1\n")
    ssh.chmod(0o755)
    monkeypatch.setenv("GIT_SSH_COMMAND", str(ssh))
    monkeypatch.setenv("SSH_AUTH_SOCK", "/run/user/0/agent.sock")
    monkeypatch.setenv("https_proxy", "http://proxy.example.org:3128")
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "http.extraHeader")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "X-Operator: yes")
    monkeypatch.setenv("RPMGATE_API_TOKEN", secret)
    monkeypatch.setenv("KOJI_PASSWORD", secret)
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "another-repository"))
    merger = Merger(tmp_path / "merger", timeout=30)

    with pytest.raises(GitError):
        await merger.ensure_clone("nova", "ssh://forge.invalid/rpms/nova")

    text = seen.read_text()
    env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert secret not in text
    assert "RPMGATE_API_TOKEN" not in env and "KOJI_PASSWORD" not in env
    assert env["SSH_AUTH_SOCK"] == "/run/user/0/agent.sock"
    assert env["https_proxy"] == "http://proxy.example.org:3128"
    assert env["GIT_CONFIG_VALUE_0"] == "X-Operator: yes"
    assert env["LC_ALL"] == "C" and env["GIT_TERMINAL_PROMPT"] == "0"
    assert env.get("GIT_DIR") != str(tmp_path / "another-repository")
    assert env["PATH"].endswith(os.environ["PATH"])  # git puts its exec-path first
