"""The ``rpmgate`` client commands: where the gate is, talking to it, and showing answers.

Like ``koji`` and ``zuul-client``, a client command finds its gate in a
profile (:func:`load_profile`), from ``~/.config/rpmgate/config``::

    [default]
    url = http://127.0.0.1:8080

    [prod]
    url = https://gate.example.com
    token = s3cret

``--url``/``--token`` win over ``-p/--profile``, which wins over
``$RPMGATE_URL``/``$RPMGATE_TOKEN``, which win over the ``[default]`` profile.

Every write command answers with a delivery; :func:`wait_for_delivery` polls it
to its outcome (``--wait``).  :func:`watch_item` follows an item like ``koji
watch-task``, one line per step.  Nothing here imports the daemon: a client
host needs only the standard library.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import stat
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUILTIN_URL = "http://127.0.0.1:8080"
#: seconds between two polls of a delivery or an item
POLL_INTERVAL = 1.0


class ClientError(Exception):
    """What the client prints before exiting with status 1."""

    #: the HTTP status and body of a refusal (None: no answer)
    status: int | None = None
    body: str = ""


@dataclass(frozen=True)
class Target:
    """A gate to talk to."""

    url: str
    token: str | None = None


def config_path() -> Path:
    """``$XDG_CONFIG_HOME/rpmgate/config`` (``~/.config/rpmgate/config``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "rpmgate" / "config"


def load_profile(
    profile: str | None, url: str | None, token: str | None, path: Path | None = None
) -> Target:
    """Where the gate is: flags, then a named profile, then the environment, then ``[default]``."""
    path = path or config_path()
    parser = configparser.ConfigParser(interpolation=None)
    if path.exists():
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error as exc:
            raise ClientError(f"{path}: {exc}") from None
        _warn_if_readable(path, parser)
    if profile is not None:
        if not parser.has_section(profile):
            known = ", ".join(parser.sections()) or "none"
            raise ClientError(f"{path}: no profile [{profile}] (profiles: {known})")
        if not parser.get(profile, "url", fallback=""):
            raise ClientError(f"{path}: profile [{profile}] has no url")
        # a profile asked for is a whole: never another gate's token from the environment
        return Target(
            (url or parser.get(profile, "url")).rstrip("/"),
            token or parser.get(profile, "token", fallback="") or None,
        )
    default = dict(parser["default"]) if parser.has_section("default") else {}
    chosen_url = url or os.environ.get("RPMGATE_URL") or default.get("url") or BUILTIN_URL
    chosen_token = token or os.environ.get("RPMGATE_TOKEN") or default.get("token")
    return Target(chosen_url.rstrip("/"), chosen_token or None)


def profile_names(**_: Any) -> list[str]:
    """The profiles of the config file (shell completion of ``-p``; argcomplete calls it)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(config_path(), encoding="utf-8")
    except configparser.Error:
        return []
    return parser.sections()


def _warn_if_readable(path: Path, parser: configparser.ConfigParser) -> None:
    has_token = any(parser.has_option(s, "token") for s in parser.sections())
    if has_token and path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        print(
            f"rpmgate: {path} holds tokens and others can read it (chmod 600 {path})",
            file=sys.stderr,
        )


class Client:
    """JSON over HTTP to one gate; an HTTP error is a :class:`ClientError` naming the request."""

    def __init__(self, target: Target, timeout: float = 30.0) -> None:
        self.target = target
        self.timeout = timeout

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, body)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.target.token:
            headers["Authorization"] = f"Bearer {self.target.token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.target.url + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
            return json.loads(raw)
        except json.JSONDecodeError:
            raise ClientError(f"{method} {path}: the answer is not JSON: {raw[:200]!r}") from None
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            error = ClientError(f"{method} {path}: HTTP {exc.code}: {detail}")
            error.status, error.body = exc.code, detail
            raise error from None
        except urllib.error.URLError as exc:
            raise ClientError(f"cannot reach {self.target.url}: {exc.reason}") from None
        except (TimeoutError, ConnectionError) as exc:
            raise ClientError(f"{method} {path}: {exc}") from None


def quoted(segment: str) -> str:
    """A path segment as sent (a name with ``/`` stays one segment)."""
    return urllib.parse.quote(segment, safe="")


# -- waiting ------------------------------------------------------------------------------------
Sleep = Callable[[float], None]


def wait_for_delivery(
    client: Client,
    delivery: int,
    timeout: float,
    interval: float = POLL_INTERVAL,
    sleep: Sleep = time.sleep,
) -> dict[str, Any]:
    """Poll a delivery until the gate processed it; its document."""
    deadline = time.monotonic() + timeout
    while True:
        doc: dict[str, Any] = client.get(f"/api/deliveries/{delivery}")
        if doc["state"] != "pending":
            return doc
        if time.monotonic() > deadline:
            raise ClientError(f"delivery {delivery} still pending after {timeout:g}s")
        sleep(interval)


def delivery_line(doc: dict[str, Any]) -> str:
    """``delivery 4 (change.proposed): processed: change 5 ...`` / ``refused: ...``."""
    what = f"delivery {doc['id']} ({doc['event_type']})"
    if doc["state"] == "pending":
        return f"{what}: pending"
    if doc["state"] == "error":
        return f"{what}: refused: {doc['error']}"
    return f"{what}: processed: {doc['result']}"


def item_progress(doc: dict[str, Any]) -> str:
    """One line for where an item is: state, attempt, build, jobs, tip."""
    parts = [doc["state"]]
    if doc.get("attempt"):
        base = doc.get("base") or {}
        ahead = base.get("ahead") or []
        on = f" on generation {base.get('generation')}" if base else ""
        parts.append(
            f"attempt {doc['attempt']}{on}"
            + (f" + items {', '.join(map(str, ahead))}" if ahead else "")
        )
    for label, build in (("scratch", doc.get("build")), ("final", doc.get("final_build"))):
        if build:
            parts.append(f"{label} build {build['id']} {build['state']}")
    jobs = doc.get("jobs") or []
    if jobs:
        parts.append("jobs " + ", ".join(f"{j['name']} {j['state']}" for j in jobs))
    tip = doc.get("tip") or {}
    if tip.get("step") not in (None, "none"):
        parts.append(f"tip {tip['step']} {tip['state']}")
    return "; ".join(parts)


def watch_item(
    client: Client,
    item_id: int,
    out: Callable[[str], None],
    timeout: float | None = None,
    interval: float = POLL_INTERVAL,
    sleep: Sleep = time.sleep,
) -> dict[str, Any]:
    """Print a line whenever the item moves, until it leaves its queue; its last document."""
    deadline = None if timeout is None else time.monotonic() + timeout
    last = ""
    while True:
        doc: dict[str, Any] = client.get(f"/api/items/{item_id}")
        line = item_progress(doc)
        if line != last:
            change = doc.get("change") or {}
            stamp = time.strftime("%H:%M:%S")
            out(f"{stamp} item {item_id} {change.get('project', '')}: {line}")
            last = line
        if doc.get("result"):
            out(item_outcome(doc))
            return doc
        if deadline is not None and time.monotonic() > deadline:
            raise ClientError(f"item {item_id} still in its queue after {timeout:g}s")
        sleep(interval)


@dataclass(frozen=True)
class Watched:
    """What ``rpmgate watch`` was asked to follow: an item, a change, or a review."""

    #: "item", "change" or "review"
    kind: str
    #: the id (item, change) or the review's URL or id as written
    key: str


def watched(text: str) -> Watched:
    """``12`` or ``item:12``: an item; ``change:5``: a change; a URL (``https://…``) or
    ``review:R``: the newest revision of that review the gate knows."""
    text = text.strip()
    kind, sep, rest = text.partition(":")
    if sep and kind in ("item", "change") and rest.isascii() and rest.isdigit():
        return Watched(kind, str(int(rest)))
    if text.isascii() and text.isdigit():
        return Watched("item", str(int(text)))
    if sep and kind == "review" and rest:
        return Watched("review", rest)
    if "://" in text:
        return Watched("review", text.rstrip("/"))
    raise ClientError(
        f"watch {text!r}: give an item id (12, item:12), a change id (change:5), "
        "a review URL (https://...) or review:ID"
    )


def find_review(client: Client, review: str) -> int | None:
    """The newest change the gate shows (queued, or among each queue's recent results)
    whose review URL or review id is ``review``."""
    doc: dict[str, Any] = client.get("/api/status")
    found = [
        change["id"]
        for queue in doc["queues"]
        for item in [*queue["items"], *queue.get("recent", [])]
        if (change := item.get("change"))
        and review in ((change.get("url") or "").rstrip("/"), change.get("review"))
    ]
    return max(found, default=None)


def _current_item(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The change's item in its queue, else the last one it had."""
    items = doc.get("items") or []
    active = [i for i in items if not i.get("result")]
    return max(active or items, key=lambda i: i["id"], default=None)


def watch_change(
    client: Client,
    target: Watched,
    out: Callable[[str], None],
    timeout: float | None = None,
    interval: float = POLL_INTERVAL,
    sleep: Sleep = time.sleep,
) -> dict[str, Any]:
    """Follow a change's current item (a reset is a new attempt of the same item; a
    re-enqueue, or for a review a new revision, is a new item) until it left its queue
    merged, or was rejected, dequeued or superseded with nothing to follow next.
    A line each time it moves; the last item's document."""
    deadline = None if timeout is None else time.monotonic() + timeout
    following: tuple[int, int] | None = None
    last = ""
    while True:
        change_id = int(target.key) if target.kind == "change" else find_review(client, target.key)
        if change_id is None:
            line = f"review {target.key}: not in the gate's queues or recent results yet"
            item = None
        else:
            doc: dict[str, Any] = client.get(f"/api/changes/{change_id}")
            item = _current_item(doc)
            if item is None:
                line = f"change {change_id} {doc['project']}: {doc['state']}, no item yet"
            else:
                if following != (change_id, item["id"]):
                    if following is not None:
                        out(f"change {change_id} {doc['project']}: now item {item['id']}")
                    following = (change_id, item["id"])
                line = f"change {change_id} item {item['id']} {doc['project']}: " + item_progress(
                    item
                )
        if line != last:
            out(f"{time.strftime('%H:%M:%S')} {line}")
            last = line
        if item is not None and item.get("result"):
            out(item_outcome(item))
            return item
        if deadline is not None and time.monotonic() > deadline:
            raise ClientError(f"{target.kind} {target.key}: not finished after {timeout:g}s")
        sleep(interval)


def item_outcome(doc: dict[str, Any]) -> str:
    result = doc["result"]
    line = f"item {doc['id']} {result}"
    if result == "merged" and doc.get("generation"):
        line += f": published in generation {doc['generation']}"
    if doc.get("failure"):
        line += f": {doc['failure']}"
    return line


# -- showing documents ----------------------------------------------------------------------
def status_lines(doc: dict[str, Any], recent: int = 5) -> list[str]:
    lines = []
    for queue in doc["queues"]:
        lines.append(
            f"queue {queue['name']} -> repo {queue['repo']} (generation "
            f"{queue['generation']}, window {queue['window']})"
        )
        for item in queue["items"]:
            change = item["change"] or {}
            lines.append(
                f"  {item['position']:>3} item {item['id']:<5} {change.get('project', ''):<16}"
                f" {item['state']:<28} {change.get('title', '')}"
            )
            if item["failure"]:
                lines.append(f"        {item['failure']}")
        if not queue["items"]:
            lines.append("  (empty)")
        for held in queue.get("held_back", []):
            lines.append(
                f"  held back: item {held['item']} {held['project']} at "
                f"{(held['commit'] or '')[:12]}: {held['git_and_repository']}"
            )
            lines.append(f"        {held['reason']}")
            lines.append(f"        rpmgate publish|dequeue|retry {held['item']}")
        finished = queue.get("recent", [])[:recent]
        if finished:
            lines.append("  recent:")
        for item in finished:
            change = item["change"] or {}
            when = (item.get("finished_at") or "")[:19].replace("T", " ")
            result = item["result"] or item["state"]
            generation = f" gen {item['generation']}" if result == "merged" else ""
            lines.append(
                f"    {when:<19} item {item['id']:<5} {change.get('project', ''):<16}"
                f" {result + generation:<16} {change.get('title', '')}"
            )
            if item["failure"] and result != "merged":
                lines.append(f"        {item['failure']}")
    return lines


def change_lines(doc: dict[str, Any]) -> list[str]:
    lines = [f"change {doc['id']} {doc['project']} ({doc['state']}): {doc['title']}"]
    lines.append(f"  ref {doc['ref']} at {doc['sha'][:12]}")
    if doc.get("url"):
        lines.append(f"  review {doc['url']}")
    if doc.get("depends_on"):
        lines.append(f"  depends on changes {', '.join(map(str, doc['depends_on']))}")
    if doc.get("reason"):
        lines.append(f"  {doc['reason']}")
    for item in doc.get("items", []):
        lines.append(f"  item {item['id']}: {item_progress(item)}")
        if item.get("failure"):
            lines.append(f"      {item['failure']}")
    return lines


def item_lines(doc: dict[str, Any]) -> list[str]:
    change = doc.get("change") or {}
    where = (
        f"in queue {doc['queue']} at position {doc['position'] + 1}"  # 1: the head
        if doc.get("position") is not None
        else f"queue {doc['queue']}"
    )
    lines = [
        f"item {doc['id']} {change.get('project', '')} ({doc['kind']}) {where}: {doc['state']}",
        f"  change {change.get('id')}: {change.get('title', '')}",
        f"  {item_progress(doc)}",
    ]
    for label, build in (
        ("scratch build", doc.get("build")),
        ("final build", doc.get("final_build")),
    ):
        if build:
            lines.append(f"  {label} {build['id']}: {build['state']} {build['nvr']}".rstrip())
            if build.get("reason") and build["state"] != "passed":
                lines.append(f"      {build['reason']}")
            if build.get("log_url"):
                lines.append(f"      log {build['log_url']}")
    for job in doc.get("jobs") or []:
        tries = int(job.get("tries") or 1)
        which = f" (try {job.get('try_number', 1)} of {tries})" if tries > 1 else ""
        lines.append(f"  job {job['name']}{which}: {job['state']} {job['summary']}".rstrip())
        if job.get("log_url"):
            lines.append(f"      log {job['log_url']}")
    lines += [f"  {note}" for note in doc.get("flaky") or []]
    if doc.get("speculative_repo"):
        lines.append(f"  speculative repository {doc['speculative_repo']}")
    if doc.get("result"):
        lines.append(f"  {item_outcome(doc)}")
    elif doc.get("failure"):
        lines.append(f"  failure: {doc['failure']}")
    return lines + log_tail_lines(doc.get("log_tail"))


def log_tail_lines(tail: dict[str, Any] | None) -> list[str]:
    """The last lines of the log of what failed an item (its ``log_tail``), indented."""
    if not tail or not tail.get("lines"):
        return []
    return [f"  last lines of the {tail.get('label')} log:"] + [
        f"    | {line}".rstrip() for line in tail["lines"]
    ]


def repo_lines(doc: dict[str, Any]) -> list[str]:
    current = doc.get("current")
    at = f"generation {current['number']}" if current else "no generation yet"
    lines = [f"repo {doc['name']} at {at} ({doc['url']})"]
    if current:
        lines.append(f"  {len(current['packages'])} packages, {len(current['builds'])} builds")
    lines.append(f"  kept: {' '.join(map(str, doc['kept'])) or 'none'}")
    for gen in doc.get("history", []):
        items = ", ".join(map(str, gen["items"]))
        when = (gen.get("created_at") or "")[:19].replace("T", " ")
        lines.append(
            f"  {gen['number']:>4} {gen['kind']:<10} {when:<19} {gen['package_count']:>5} packages"
            + (f"  items {items}" if items else "")
        )
    return lines


def repo_diff_lines(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What changed between two generation documents, by project (their source stamps)."""

    def by_package(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {e["package"]: e for e in doc.get("source_stamp") or []}

    before, after = by_package(old), by_package(new)
    projects: dict[str, list[str]] = {}
    ranges: dict[str, tuple[set[str], set[str]]] = {}
    for package in sorted(before.keys() | after.keys()):
        a, b = before.get(package), after.get(package)
        if a and b and (a["nvr"], a.get("commit")) == (b["nvr"], b.get("commit")):
            continue
        project = (b or a or {}).get("project") or package
        old_commits, new_commits = ranges.setdefault(project, (set(), set()))
        if a and a.get("commit"):
            old_commits.add(a["commit"])
        if b and b.get("commit"):
            new_commits.add(b["commit"])
        was = a["nvr"] if a else "(absent)"
        now = b["nvr"] if b else "(removed)"
        projects.setdefault(project, []).append(f"    {package}: {was} -> {now}")
    lines = [
        f"repo {new.get('repo', '')}: generation {old['number']} -> {new['number']}, "
        f"{len(projects)} project(s) changed"
    ]
    for project in sorted(projects):
        old_commits, new_commits = ranges[project]
        span = f"{_commits(old_commits)}..{_commits(new_commits)}"
        lines.append(f"  {project} {span}")
        lines.extend(projects[project])
    return lines


def _commits(commits: set[str]) -> str:
    return ",".join(sorted(c[:12] for c in commits)) or "-"


REPO_USAGE = "rpmgate repo show NAME | rpmgate repo diff [NAME] A B | rpmgate repo NAME"
#: the words ``rpmgate repo`` takes first: a repository so named is shown by ``repo show``
REPO_ACTIONS = ("show", "diff")


def _repo_command(client: Client, args: argparse.Namespace) -> int:
    """``repo show NAME`` shows a repository; ``repo diff [NAME] A B`` compares the
    source stamps of two generations; ``repo NAME`` is ``repo show NAME`` for any
    NAME but the actions (``repo show diff`` shows a repository named diff)."""
    action, rest = args.action, list(args.rest)
    if action not in REPO_ACTIONS:
        action, rest = "show", [action, *rest]  # the short form: repo NAME
    if action == "show":
        if len(rest) != 1:
            raise ClientError(f"usage: {REPO_USAGE}")
        doc = client.get(f"/api/repos/{quoted(rest[0])}")
        print(
            json.dumps(doc, indent=2, sort_keys=True) if args.json else "\n".join(repo_lines(doc))
        )
        return 0
    if len(rest) not in (2, 3):
        raise ClientError(f"usage: {REPO_USAGE}")
    if len(rest) == 3:
        name = rest.pop(0)
    else:
        repos = sorted({q["repo"] for q in client.get("/api/status").get("queues") or []})
        if len(repos) != 1:
            raise ClientError(f"name the repository: one of {', '.join(repos) or '(none)'}")
        name = repos[0]
    numbers = []
    for text in rest:
        if not (text.isascii() and text.isdigit()):
            raise ClientError(f"not a generation number: {text[:40]!r}")
        numbers.append(int(text))
    old, new = (client.get(f"/api/repos/{quoted(name)}/generations/{n}") for n in numbers)
    if args.json:
        print(json.dumps({"old": old, "new": new}, indent=2, sort_keys=True))
    else:
        print("\n".join(repo_diff_lines(old, new)))
    return 0


# -- the commands ---------------------------------------------------------------------------
#: write commands: name -> (help, the request's method path and body from the arguments)
Request = tuple[str, dict[str, Any]]
_WRITES: dict[str, tuple[str, Callable[[argparse.Namespace], Request]]] = {
    "propose": (
        "propose a change (a ref or commit of a project)",
        lambda a: (
            "/api/changes",
            {"project": a.project, "ref": a.ref, "title": a.title, "approve": a.approve},
        ),
    ),
    "approve": (
        "approve a change: it enters its queue",
        lambda a: (f"/api/changes/{a.change}/approve", {}),
    ),
    "enqueue": (
        "enqueue a change as it is (no new look at its ref)",
        lambda a: (f"/api/changes/{a.change}/enqueue", {}),
    ),
    "ref-updated": (
        "a project's branch moved: look for direct pushes now",
        lambda a: (
            "/api/ref-updated",
            {"project": a.project, "force": a.force, **({"new": a.new} if a.new else {})},
        ),
    ),
    "dequeue": (
        "remove an item from its queue",
        lambda a: (f"/api/items/{a.item}/dequeue", {"reason": a.reason}),
    ),
    "promote": (
        "move an item to the head of its queue",
        lambda a: (f"/api/items/{a.item}/promote", {"reason": a.reason}),
    ),
    "publish": (
        "publish a blocked post item although its checks failed",
        lambda a: (f"/api/items/{a.item}/publish", {"reason": a.reason}),
    ),
    "retry": (
        "build and test a blocked post item (or failed bootstrap) again",
        lambda a: (f"/api/items/{a.item}/retry", {"reason": a.reason}),
    ),
    "republish": (
        "publish the current content again as a new generation",
        lambda a: (f"/api/repos/{quoted(a.repo)}/republish", {"reason": a.reason}),
    ),
    "rollback": (
        "publish an older generation's content as a new one",
        lambda a: (f"/api/repos/{quoted(a.repo)}/rollback", {"to": a.to, "reason": a.reason}),
    ),
}

#: read commands: name -> (help, path from the arguments, text form of the document)
_READS: dict[
    str,
    tuple[str, Callable[[argparse.Namespace], str], Callable[[dict[str, Any]], list[str]]],
] = {
    "status": ("show the queues and recent results", lambda a: "/api/status", status_lines),
    "change": ("show a change and its items", lambda a: f"/api/changes/{a.change}", change_lines),
    "item": (
        "show an item: builds, jobs, logs, outcome",
        lambda a: f"/api/items/{a.item}",
        item_lines,
    ),
    "delivery": (
        "show what became of a request",
        lambda a: f"/api/deliveries/{a.delivery}",
        lambda doc: [delivery_line(doc)],
    ),
    "repo": (
        "`repo show NAME` (or `repo NAME`): a repository's current generation and history; "
        "`repo diff [NAME] A B`: the source stamps of two generations compared",
        lambda a: f"/api/repos/{quoted(a.rest[0] if a.action == 'show' and a.rest else a.action)}",
        repo_lines,
    ),
}

#: positional arguments of each client command
_ARGUMENTS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "propose": [
        ("project", {}),
        ("ref", {}),
        ("--title", {"default": ""}),
        ("--approve", {"action": "store_true", "help": "approve it at once"}),
    ],
    "approve": [("change", {"type": int})],
    "enqueue": [("change", {"type": int})],
    "ref-updated": [
        ("project", {}),
        ("--new", {"help": "the new head (full sha)"}),
        ("--force", {"action": "store_true", "help": "a post item even if the head was seen"}),
    ],
    **{
        name: [("item", {"type": int}), ("--reason", {"default": ""})]
        for name in ("dequeue", "promote", "publish", "retry")
    },
    "republish": [("repo", {}), ("--reason", {"default": ""})],
    "rollback": [
        ("repo", {}),
        ("--to", {"type": int, "required": True}),
        ("--reason", {"default": ""}),
    ],
    "status": [],
    "change": [("change", {"type": int})],
    "item": [("item", {"type": int})],
    "delivery": [("delivery", {"type": int})],
    "repo": [
        (
            "action",
            {
                "metavar": "show|diff|NAME",
                "help": "show: a repository; diff: compare two generations; a repository's "
                "name alone: show it (a repository named show or diff: `repo show NAME`)",
            },
        ),
        (
            "rest",
            {"nargs": "*", "help": "show: NAME; diff: [NAME] A B (generation numbers)"},
        ),
    ],
    "watch": [
        (
            "target",
            {
                "metavar": "ITEM|change:ID|URL",
                "help": "an item id, change:ID, a review URL, or review:ID",
            },
        )
    ],
}


def add_client_commands(sub: Any) -> None:
    """The client commands on ``rpmgate``'s subparsers."""

    def client(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        profile = p.add_argument("-p", "--profile", help=f"a [profile] of {config_path()}")
        profile.completer = profile_names  # type: ignore[attr-defined]  # argcomplete reads it
        p.add_argument("--url", help="gate URL (else the profile, $RPMGATE_URL, [default])")
        p.add_argument("--token", help="API token (else the profile, $RPMGATE_TOKEN)")
        for arg, options in _ARGUMENTS[name]:
            p.add_argument(arg, **options)
        return p

    for name, (text, _) in _WRITES.items():
        p = client(name, text)
        p.add_argument(
            "--wait", action="store_true", help="wait for the outcome; exit 1 if refused"
        )
        p.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits")
    for name, (text, _, _) in _READS.items():
        client(name, text).add_argument("--json", action="store_true", help="the JSON document")
    watch = client(
        "watch",
        "follow an item, or a change's current item, to its end, a line per step "
        "(exit 1 unless merged)",
    )
    watch.add_argument("--timeout", type=float, default=None, help="give up after seconds")
    watch.add_argument("--interval", type=float, default=POLL_INTERVAL, help="seconds per poll")


def run_client_command(args: argparse.Namespace) -> int:
    """Run a client command; ``0`` when it did what was asked, ``1`` otherwise."""
    try:
        client = Client(load_profile(args.profile, args.url, args.token))
        if args.command in _WRITES:
            return _write(client, args)
        if args.command == "repo":
            return _repo_command(client, args)
        if args.command == "watch":
            target = watched(args.target)
            if target.kind == "item":
                doc = watch_item(client, int(target.key), print, args.timeout, args.interval)
            else:
                doc = watch_change(client, target, print, args.timeout, args.interval)
            return 0 if doc.get("result") == "merged" else 1
        _, path_of, lines_of = _READS[args.command]
        doc = client.get(path_of(args))
        if args.json:
            print(json.dumps(doc, indent=2, sort_keys=True))
        else:
            print("\n".join(lines_of(doc)))
        return 0
    except ClientError as exc:
        print(f"rpmgate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # watch, --wait: the gate goes on; so may the user
        return 130


def _write(client: Client, args: argparse.Namespace) -> int:
    _, request_of = _WRITES[args.command]
    path, body = request_of(args)
    accepted = client.post(path, body)
    if not args.wait:
        print(json.dumps(accepted, indent=2, sort_keys=True))
        return 0
    doc = wait_for_delivery(client, int(accepted["delivery"]), args.timeout)
    print(delivery_line(doc))
    return 0 if doc["state"] == "processed" else 1
