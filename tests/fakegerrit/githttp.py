"""Git over authenticated HTTP (``<url>/a/<project>``) for the fake Gerrit, with
Gerrit's access rights checked on direct pushes to ``refs/heads/*``.

Git's own ``git http-backend`` serves the smart protocol (as JGit does in
Gerrit's GitOverHttpServlet); the pusher is the account the request
authenticated as.  Gerrit's ReceiveCommits checks every command of a direct
push against the project's access rights, with these rejections (texts from
Gerrit's javatests/com/google/gerrit/acceptance/git/PushPermissionsIT.java and
java/com/google/gerrit/server/git/validators/CommitValidators.java):

- a new branch needs ``create`` (Create Reference):
  ``prohibited by Gerrit: not permitted: create``;
- a fast-forward needs ``push``: ``prohibited by Gerrit: not permitted: update``;
- any other update needs ``push`` with ``force``:
  ``prohibited by Gerrit: not permitted: force update``;
- a deletion needs ``delete`` (Delete Reference) or ``push`` with ``force``:
  ``prohibited by Gerrit: not permitted: delete``;
- each new commit: a merge needs ``pushMerge`` (UploadMergesPermissionValidator,
  ``commit <sha7>: you are not allowed to upload merges``), an author or
  committer email that is not the pusher's needs ``forgeAuthor`` /
  ``forgeCommitter`` (``commit <sha7>: invalid author`` / ``invalid committer``).

Gerrit's default All-Projects grants ``forgeAuthor`` on ``refs/*`` to Registered
Users and the rest on ``refs/heads/*`` to Administrators and Project Owners
only, none of whom the fake's accounts are: what an account may do is what
:meth:`GerritState.grant` gave it.  The checks run in a ``pre-receive`` hook
(``core.hooksPath`` set for the HTTP service only: pushes over the file system
are the server's own, e.g. a test's admin), so one refused command refuses the
whole push (Gerrit refuses command by command; the gate pushes one ref at a
time) and the texts come back as ``remote:`` lines.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

from aiohttp import web

HOOK = """\
import json, os, re, subprocess, sys

ZERO = "0" * 40
access = json.loads(os.environ["FAKEGERRIT_ACCESS"])


def matches(pattern, ref):
    # AccessSection names: a regex (^...), a prefix (.../*), or an exact ref
    if pattern.startswith("^"):
        return re.fullmatch(pattern[1:], ref) is not None
    if pattern.endswith("/*"):
        return ref.startswith(pattern[:-1])
    return ref == pattern


def may(permission, ref, force=False):
    return any(
        g["permission"] == permission and matches(g["ref"], ref) and (g["force"] or not force)
        for g in access["grants"]
    )


def git(*args):
    return subprocess.run(["git", *args], capture_output=True, text=True)


refused = []
for line in sys.stdin:
    old, new, ref = line.split()
    if not ref.startswith("refs/heads/"):
        continue  # uploads for review (refs/for/) are the fake's receive()
    if new == ZERO:
        if not (may("delete", ref) or may("push", ref, force=True)):
            refused.append(f"{ref}: prohibited by Gerrit: not permitted: delete")
        continue
    if old == ZERO:
        if not may("create", ref):
            refused.append(f"{ref}: prohibited by Gerrit: not permitted: create")
            continue
    elif git("merge-base", "--is-ancestor", old, new).returncode == 0:
        if not may("push", ref):
            refused.append(f"{ref}: prohibited by Gerrit: not permitted: update")
            continue
    elif not may("push", ref, force=True):
        refused.append(f"{ref}: prohibited by Gerrit: not permitted: force update")
        continue
    fmt = "%H %P%x00%ae%x00%ce"
    for entry in git("log", f"--format={fmt}", new, "--not", "--all").stdout.splitlines():
        ids, author, committer = entry.split("\\0")
        sha, *parents = ids.split()
        if len(parents) > 1 and not may("pushMerge", ref):
            refused.append(f"commit {sha[:7]}: you are not allowed to upload merges")
        if author not in access["emails"] and not may("forgeAuthor", ref):
            refused.append(f"commit {sha[:7]}: invalid author")
        if committer not in access["emails"] and not may("forgeCommitter", ref):
            refused.append(f"commit {sha[:7]}: invalid committer")
for text in refused:
    print(text, file=sys.stderr)
sys.exit(1 if refused else 0)
"""


def hooks_dir() -> Path:
    """A ``core.hooksPath`` directory holding the access-checking ``pre-receive``."""
    root = Path(tempfile.mkdtemp(prefix="fakegerrit-hooks-"))
    hook = root / "pre-receive"
    hook.write_text(f"#!{sys.executable}\n{HOOK}")
    hook.chmod(0o755)
    return root


async def http_backend(
    request: web.Request, repo: Path, user: str, access: dict[str, object], hooks: Path
) -> web.StreamResponse:
    """Run ``git http-backend`` (a CGI program) for one smart-HTTP request on ``repo``."""
    service = request.match_info["service"]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "GIT_PROJECT_ROOT": str(repo.parent),
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": f"/{repo.name}/{service}",
        "REQUEST_METHOD": request.method,
        "QUERY_STRING": request.query_string,
        "CONTENT_TYPE": request.headers.get("Content-Type", ""),
        "REMOTE_USER": user,
        "REMOTE_ADDR": request.remote or "",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "core.hooksPath",
        "GIT_CONFIG_VALUE_0": str(hooks),
        "FAKEGERRIT_ACCESS": json.dumps(access),
    }
    if "Git-Protocol" in request.headers:
        env["HTTP_GIT_PROTOCOL"] = request.headers["Git-Protocol"]
    body = await request.read()  # aiohttp has undone any Content-Encoding already
    proc = await asyncio.create_subprocess_exec(
        "git",
        "http-backend",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, _ = await proc.communicate(body)
    head, sep, payload = out.partition(b"\r\n\r\n")
    if not sep:
        head, _, payload = out.partition(b"\n\n")
    status, headers = 200, {}
    for line in head.decode().splitlines():
        key, _, value = line.partition(":")
        if key.lower() == "status":
            status = int(value.split()[0])
        elif key:
            headers[key.strip()] = value.strip()
    return web.Response(status=status, body=payload, headers=headers)
