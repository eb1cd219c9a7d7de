"""The status page: every queue with its items, server-rendered, kept live by ``/api/events``.

``GET /`` shows each queue in order, in the spirit of Zuul's status page:
each item's change (linked to its review), what it is tested with, its
steps as a progress bar (``gate.web.progress``), elapsed time and an ETA
(``gate.web.eta``), a line saying why it waits, a failure's reason with the
tail of the failed log, its logs and speculative repository, its job runs
that passed only on a retry, and the recent results below; the queue's
too-often flaky jobs above.
``/queues/<name>`` shows one queue; ``/repositories/<name>`` a repository's
generations, what produced each, and the diff of two of them (the
``/repos/<name>/`` tree serves the repository's files themselves).

The page reads the status document the API serves (built once per state
version, ``gate.web.live.StatusCache``), never the items one by one.  Every
value in it may come from a change author (titles, refs, review URLs) or a
build log (failure reasons): everything is escaped, and only ``http(s)``
and same-site URLs become links.

``?q=`` filters ("find my change": a project, change or item id, owner,
NVR, or a word of the title); it is a plain GET form, so it works without
JavaScript.  ``static/page.js`` listens to ``/api/events`` and re-reads the
page's ``<main>`` when something happened (``EventSource`` reconnects and
resumes by itself); without JavaScript the page is a snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from gate.runtime import Runtime
from gate.web.eta import Durations, duration_text, epoch, estimate_queue, load_durations
from gate.web.live import Rendered
from gate.web.progress import segments, speculative_base, why_waiting
from gate.web.status import repo_doc
from repo_state.db import session
from repo_state.state_diff import diff_states

Doc = dict[str, Any]
#: the status document of the state now (``gate.web.app.current_status``)
StatusSource = Callable[[], Awaitable[Rendered]]
STATIC = Path(__file__).parent / "static"
#: seconds the step durations behind ETAs are reused before being read again
DURATIONS_MAX_AGE = 10.0
#: longest filter kept (a longer one is cut: no match needs more)
MAX_QUERY = 200


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def safe_href(url: object) -> str | None:
    """A URL a link may point at: ``http(s)`` or a path of this site; else None
    (``javascript:``, ``data:`` and the like from a review system never become links)."""
    if not isinstance(url, str) or not url or any(c in url for c in "\r\n\t\x00"):
        return None
    if url.startswith("/") and not url.startswith("//"):
        return url
    parts = urlsplit(url)
    return url if parts.scheme in ("http", "https") and parts.netloc else None


def _link(url: object, text: str, cls: str = "") -> str:
    """``<a>`` to ``url`` if it is safe, else the text alone (``text`` is escaped HTML)."""
    href = safe_href(url)
    klass = f' class="{cls}"' if cls else ""
    return f'<a href="{_e(href)}"{klass}>{text}</a>' if href else text


# -- finding a change ----------------------------------------------------------------------
def _words(item: Doc) -> Iterable[str]:
    change = item.get("change") or {}
    yield from (
        str(change.get(k) or "") for k in ("project", "title", "ref", "owner", "approved_by")
    )
    for build in _builds(item):
        if build and build.get("nvr"):
            yield str(build["nvr"])


def _builds(item: Doc) -> list[Doc]:
    """Every build the item's document shows: its own, then each of its set's
    (named builds, packages: gate/item_builds.py)."""
    found = [item.get("build"), item.get("final_build")]
    for named in (item.get("builds") or {}).values():
        found += [named.get("build"), named.get("final_build")]
    for package in item.get("packages") or []:
        found += [package.get("build"), package.get("final_build")]
    return [b for b in found if b]


def _ids(item: Doc) -> set[str]:
    change = item.get("change") or {}
    ids = {str(item.get("id")), str(change.get("id")), str(change.get("review") or "")}
    if change.get("sha"):
        ids.add(str(change["sha"]))
    return ids - {"", "None"}


def matches(item: Doc, query: str) -> bool:
    """Whether ``item`` is what ``query`` looks for: an id (change, item, review) or a
    full or abbreviated commit, else a case-insensitive part of its project, title, ref,
    owner or NVR.  Several words: all of them."""
    for word in query.lower().split():
        bare = word.lstrip("#")
        if bare in _ids(item) or (len(bare) >= 7 and any(i.startswith(bare) for i in _ids(item))):
            continue
        if not any(word in text.lower() for text in _words(item)):
            return False
    return True


# -- rendering -----------------------------------------------------------------------------
@dataclass
class Page:
    """What the routes share: the runtime, the status document, step durations."""

    rt: Runtime
    status_source: StatusSource
    _etag: str = ""
    _doc: Doc = field(default_factory=dict)
    _durations: Durations = field(default_factory=Durations)
    _durations_at: float = -DURATIONS_MAX_AGE

    async def status(self) -> Doc:
        """The status document of the current state version (shared: read it only)."""
        rendered = await self.status_source()
        self._doc, self._etag = rendered.document, rendered.etag
        return self._doc

    @property
    def etag(self) -> str:
        """The version of the status document last read."""
        return self._etag

    def durations(self) -> Durations:
        if time.monotonic() - self._durations_at > DURATIONS_MAX_AGE:
            with session(self.rt.engine) as s:
                self._durations = load_durations(s)
            self._durations_at = time.monotonic()
        return self._durations

    @property
    def backends(self) -> Doc:
        """What each backend says of itself in the status document last read (Koji:
        its tasks' children, the per-arch steps of the bars)."""
        backends: Doc = self._doc.get("backends") or {}
        return backends

    def job_names(self, queue: str) -> list[str]:
        cfg = self.rt.config.queues.get(queue)
        return [job.name for job in cfg.jobs] if cfg else []


def _document(title: str, body: str, query: str = "", live: bool = True, path: str = "/") -> str:
    """The whole page; the filter form searches ``path`` (a queue's page, else all)."""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title>"
        '<link rel="stylesheet" href="/assets/page.css"></head>'
        f'<body data-live="{"1" if live else ""}">'
        '<header class="top"><a class="brand" href="/">rpmgate</a>'
        f'<span class="where">{_e(title)}</span>'
        '<span id="live" class="live off" role="status">snapshot</span></header>'
        f'<form class="filter" method="get" action="{_e(quote(path))}" role="search">'
        '<label for="q">Find my change</label>'
        f'<input id="q" name="q" type="search" value="{_e(query)}" maxlength="{MAX_QUERY}" '
        'placeholder="project, change id, owner, NVR" autocomplete="off">'
        '<button type="submit">Find</button>'
        + (f'<a class="clear" href="{_e(quote(path))}">clear</a>' if query else "")
        + f"</form>{body}"
        '<script src="/assets/page.js" defer></script></body></html>\n'
    )


def _bar(item: Doc, job_names: list[str], backends: Doc) -> str:
    cells = "".join(
        f'<li class="seg {seg.state}" title="{_e(seg.label)}: {seg.state}">'
        f'<span class="seg-label">{_e(seg.label)}</span></li>'
        for seg in segments(item, job_names, backends)
    )
    return f'<ol class="bar" aria-label="steps">{cells}</ol>'


def _logs(item: Doc) -> str:
    links = []
    for label, build in _build_logs(item):
        if build and build.get("log_url") and build.get("state") in ("failed", "running", "passed"):
            links.append(_link(build["log_url"], _e(label)))
    for job in item.get("jobs") or []:
        if job.get("log_url"):
            links.append(_link(job["log_url"], f"job {_e(job.get('name'))} log"))
    if item.get("speculative_repo"):
        links.append(_link(item["speculative_repo"], "speculative repository"))
    links = [link for link in links if link.startswith("<a ")]
    return f'<p class="links">{" · ".join(links)}</p>' if links else ""


def _build_logs(item: Doc) -> list[tuple[str, Doc | None]]:
    """(label, build) of the item's build logs: one scratch and one final build, or
    each named build's and each package's (``scratch build log (el10)``)."""
    packages = item.get("packages") or []
    if packages:
        several = len({p.get("build_name") for p in packages}) > 1
        out: list[tuple[str, Doc | None]] = []
        for p in packages:
            which = f"{p.get('package')}, {p.get('build_name')}" if several else p.get("package")
            out += [
                (f"scratch build log ({which})", p.get("build")),
                (f"final build log ({which})", p.get("final_build")),
            ]
        return out
    named = item.get("builds") or {}
    if named:
        out = []
        for name, builds in named.items():
            out += [
                (f"scratch build log ({name})", builds.get("build")),
                (f"final build log ({name})", builds.get("final_build")),
            ]
        return out
    return [("scratch build log", item.get("build")), ("final build log", item.get("final_build"))]


def _log_tail(item: Doc, shown: bool) -> str:
    """The last lines of the log of what failed the item (its document's ``log_tail``),
    under its first-error reason: open on a queued item (``shown``), folded in the
    recent results.  ``<details>`` opens without JavaScript."""
    tail = item.get("log_tail")
    if not isinstance(tail, dict) or not tail.get("lines"):
        return ""
    lines = [str(line) for line in tail["lines"]]
    label = f"last {len(lines)} line{'s' if len(lines) != 1 else ''} of the " + _e(
        f"{tail.get('label') or 'failed'} log"
    )
    # the link is below the lines, not in the summary: a click on the summary folds
    link = _link(tail.get("log_url"), "the whole log")
    return (
        f'<details class="tail" data-tail="{_e(item.get("id"))}"{" open" if shown else ""}>'
        f"<summary>{label}</summary>"
        f"<pre>{_e(chr(10).join(lines))}</pre>"
        + (f'<p class="links">{link}</p>' if link.startswith("<a ") else "")
        + "</details>"
    )


def _flaky(item: Doc) -> str:
    """The item's job runs that passed only on a retry (its document's ``flaky``): a
    retry never passes silently, on the page either (docs/pipelines.md)."""
    notes = [str(note) for note in item.get("flaky") or []]
    if not notes:
        return ""
    lines = "".join(f"<li>{_e(note)}</li>" for note in notes)
    return f'<ul class="flaky" aria-label="flaky job runs">{lines}</ul>'


def _flaky_jobs(queue: Doc) -> str:
    """The queue's jobs flaky in too many of their recent runs (``flaky_jobs``)."""
    jobs = [j for j in queue.get("flaky_jobs") or [] if isinstance(j, dict)]
    if not jobs:
        return ""
    lines = "".join(
        f'<li data-job="{_e(j.get("job"))}">{_e(j.get("summary") or j.get("job"))}</li>'
        for j in jobs
    )
    return f'<div class="flaky-jobs"><h3>Flaky jobs</h3><ul class="flaky">{lines}</ul></div>'


def _change_line(item: Doc) -> str:
    change = item.get("change") or {}
    number = f"change {change.get('id')}"
    if change.get("review"):
        number += f" (review {change['review']})"
    link = _link(change.get("url") or f"/api/changes/{change.get('id')}", _e(number), "change")
    owner = f' <span class="owner">by {_e(change["owner"])}</span>' if change.get("owner") else ""
    return (
        f'<p class="head"><span class="project">{_e(change.get("project") or "")}</span> '
        f"{link}{owner}</p>"
        f'<p class="title">{_e(change.get("title") or change.get("ref") or "")}</p>'
    )


def _item(
    item: Doc,
    position: int,
    by_id: dict[int, Doc],
    window: int | None,
    eta: float | None,
    page: Page,
) -> str:
    state = str(item.get("state", ""))
    why = why_waiting(item, position, by_id, window)
    since = epoch(item.get("enqueued_at"))
    elapsed = (
        f'<span class="elapsed" data-since="{since:.0f}">'
        f"{duration_text(max(time.time() - since, 0))}</span>"
        if since
        else ""
    )
    eta_text = (
        f'<span class="eta" title="from recent successful runs of the same steps">'
        f"ETA {duration_text(eta)}</span>"
        if eta is not None
        else '<span class="eta none" title="no successful run of these steps yet">'
        "no estimate</span>"
    )
    kind = ' <span class="kind">post item</span>' if item.get("kind") == "post" else ""
    failure = item.get("failure")
    failed = (
        f'<p class="failure">{_e(failure)}</p>' if failure and why.find(str(failure)) < 0 else ""
    )
    klass = "failing" if state.startswith(("failing", "stuck", "blocked")) else "ok"
    return (
        f'<li class="item {klass}" id="item-{_e(item.get("id"))}" data-item="{_e(item.get("id"))}"'
        f' data-state="{_e(state)}">'
        f'<div class="pos">{_e((item.get("position") or 0) + 1)}</div><div class="card">'
        f"{_change_line(item)}"
        f'<p class="meta"><span class="state">{_e(state)}</span>{kind} · item {_e(item.get("id"))}'
        f" · tested with {_e(speculative_base(item))}</p>"
        f"{_bar(item, page.job_names(str(item.get('queue', ''))), page.backends)}"
        f'<p class="times">{elapsed} {eta_text}</p>'
        + (f'<p class="why">{_e(why)}</p>' if why else "")
        + failed
        + _log_tail(item, shown=True)
        + _flaky(item)
        + _logs(item)
        + "</div></li>"
    )


def _recent(queue: Doc, query: str) -> str:
    rows = []
    for item in queue.get("recent") or []:
        if query and not matches(item, query):
            continue
        result = str(item.get("result") or item.get("state") or "")
        what = (
            f"generation {_e(item.get('generation'))}"
            if result == "merged" and item.get("generation") is not None
            else _e(item.get("failure") or "")
        )
        when = str(item.get("finished_at") or "")[:19].replace("T", " ")
        rows.append(
            f'<tr class="result {_e(result)}" data-item="{_e(item.get("id"))}">'
            f"<td>{_e(when)}</td>"
            f"<td>{_change_line(item)}</td>"
            f'<td><span class="state">{_e(result)}</span></td>'
            f"<td>{what}{_log_tail(item, shown=False)}{_flaky(item)}{_logs(item)}</td></tr>"
        )
    if not rows:
        return '<p class="empty">No recent results' + (" match." if query else ".") + "</p>"
    return (
        '<div class="scroll"><table class="recent"><thead><tr><th>finished</th>'
        "<th>change</th><th>result</th><th>details</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def render_queue(queue: Doc, page: Page, query: str) -> str:
    name = str(queue.get("name", ""))
    items = list(queue.get("items") or [])
    window = queue.get("window")
    etas = estimate_queue(items, page.durations(), page.job_names(name), window, time.time())
    by_id = {int(i.get("id") or 0): i for i in items}
    shown = [
        _item(item, position, by_id, window, etas.get(int(item.get("id") or 0)), page)
        for position, item in enumerate(items)
        if not query or matches(item, query)
    ]
    if shown:
        listing = f'<ol class="items">{"".join(shown)}</ol>'
    else:
        listing = '<p class="empty">' + ("No item matches." if query else "Empty.") + "</p>"
    repo = str(queue.get("repo", ""))
    held = "".join(
        f'<p class="held">held back: item {_e(h.get("item"))} {_e(h.get("project"))}: '
        f"{_e(h.get('git_and_repository'))}</p>"
        for h in queue.get("held_back") or []
    )
    return (
        f'<section class="queue" id="queue-{_e(name)}" data-queue="{_e(name)}">'
        f'<h2>queue <a href="/queues/{_e(quote(name, safe=""))}">{_e(name)}</a></h2>'
        f'<p class="qmeta">publishes to <a href="/repositories/{_e(quote(repo, safe=""))}">'
        f"{_e(repo)}</a> · generation {_e(queue.get('generation'))} · window {_e(window)} · "
        f"{len(items)} item{'s' if len(items) != 1 else ''}</p>"
        f"{held}{_flaky_jobs(queue)}{listing}<h3>Recent results</h3>{_recent(queue, query)}"
        "</section>"
    )


def _query(request: web.Request) -> str:
    return request.query.get("q", "")[:MAX_QUERY].strip()


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Cache-Control": "no-cache",
            # nothing inline runs: an injected <script> would not, escaped or not
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _main(sections: str, version: str) -> str:
    return f'<main id="content" data-version="{_e(version)}">{sections}</main>'


def config_notice(doc: Doc) -> str:
    """A refused configuration, newer than the one in force (a commit of the config
    repository, a reload): what was refused, why, and what runs instead.  Empty when
    the newest configuration asked for is the one running."""
    config = doc.get("config") or {}
    refused = config.get("last_refused") or {}
    if not (config.get("newest_refused") and refused):
        return ""
    what = f"commit {str(refused['commit'])[:12]}" if refused.get("commit") else "the file"
    running = f"configuration {config.get('version')}" + (
        f" (commit {str(config['commit'])[:12]})" if config.get("commit") else ""
    )
    findings = "".join(f"<li>{_e(f)}</li>" for f in refused.get("findings") or [])
    return (
        '<section class="notice" role="alert">'
        f"<p><strong>Configuration refused:</strong> {_e(what)} (asked by "
        f"{_e(refused.get('trigger', ''))} at {_e(refused.get('at', ''))}) was not applied; "
        f"{_e(running)} stays in force.</p><ul>{findings}</ul></section>"
    )


# -- the routes ----------------------------------------------------------------------------
async def index(request: web.Request) -> web.Response:
    page = request.app[PAGE]
    query = _query(request)
    doc = await page.status()
    sections = "".join(render_queue(q, page, query) for q in doc.get("queues") or [])
    if not doc.get("queues"):
        sections = '<p class="empty">No queue is configured.</p>'
    sections = config_notice(doc) + sections
    return _html(_document("status", _main(sections, page.etag), query))


async def queue_page(request: web.Request) -> web.Response:
    page = request.app[PAGE]
    name = request.match_info["name"]
    query = _query(request)
    queue = next(
        (q for q in (await page.status()).get("queues") or [] if q.get("name") == name), None
    )
    if queue is None:
        body = _main(f'<p class="empty">No queue named {_e(name[:100])}.</p>', "")
        return _html(_document("no such queue", body, live=False), status=404)
    body = _main(render_queue(queue, page, query), page.etag)
    return _html(_document(f"queue {name}", body, query, path=request.path))


def _generation_number(request: web.Request, key: str) -> int | None:
    text = request.query.get(key, "")
    return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else None


async def repository_page(request: web.Request) -> web.Response:
    page = request.app[PAGE]
    name = request.match_info["name"]
    rt = page.rt
    with session(rt.engine) as s:
        doc = repo_doc(rt, s, name)
    if doc is None:
        body = _main(f'<p class="empty">No repository named {_e(name[:100])}.</p>', "")
        return _html(_document("no such repository", body, live=False), status=404)
    publisher = rt.publishers[name]
    kept = list(doc["kept"])
    new = _generation_number(request, "to")
    old = _generation_number(request, "from")
    if new is None:
        new = kept[-1] if kept else None
    if old is None and new is not None:
        older = [n for n in kept if n < new]
        old = older[-1] if older else None
    body = _repository(doc, publisher, old, new)
    return _html(_document(f"repository {name}", _main(body, page.etag)))


def _produced_by(producer: object) -> str:
    if not isinstance(producer, dict):
        return ""
    changes = producer.get("changes")
    if isinstance(changes, list) and changes:
        return "; ".join(
            f"item {_e(c.get('item'))} {_e(c.get('project'))} {_e(c.get('nvr'))}: "
            f"{_e(c.get('title'))}"
            for c in changes
            if isinstance(c, dict)
        )
    kind = producer.get("kind") or ""
    extra = producer.get("from_generation")
    who = producer.get("requested_by") or producer.get("by")
    return _e(
        " ".join(
            str(p)
            for p in (
                kind,
                f"of generation {extra}" if extra is not None else "",
                f"by {who}" if who else "",
                producer.get("reason") or "",
            )
            if p
        )
    )


def _repository(doc: Doc, publisher: Any, old: int | None, new: int | None) -> str:
    name = str(doc["name"])
    kept = set(doc["kept"])
    rows = []
    for gen in doc["history"]:
        number = gen["number"]
        on_disk = number in kept
        generation = publisher.generation(number) if on_disk else None
        producer = generation.manifest.get("produced_by") if generation else None
        made = _produced_by(producer) or (
            "items " + _e(", ".join(map(str, gen["items"]))) if gen["items"] else ""
        )
        current = doc["current"] and doc["current"]["number"] == number
        rows.append(
            f'<tr data-generation="{_e(number)}"><td>{_e(number)}{" (current)" if current else ""}'
            f"</td><td>{_e(gen['kind'])}</td>"
            f"<td>{_e(str(gen.get('created_at') or '')[:19].replace('T', ' '))}</td>"
            f"<td>{_e(gen['package_count'])}</td><td>{made}</td>"
            f"<td>{'kept' if on_disk else 'collected'}</td></tr>"
        )
    history = (
        '<div class="scroll"><table class="generations"><thead><tr><th>generation</th>'
        "<th>kind</th><th>created</th><th>packages</th><th>produced by</th><th>on disk</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        if rows
        else '<p class="empty">Nothing published yet.</p>'
    )
    options = "".join(f'<option value="{n}">{n}</option>' for n in sorted(kept))

    def select(key: str, chosen: int | None) -> str:
        marked = options.replace(f'value="{chosen}"', f'value="{chosen}" selected')
        return f'<label>{key} <select name="{key}">{marked}</select></label>'

    form = (
        f'<form class="diff-form" method="get">{select("from", old)} {select("to", new)}'
        '<button type="submit">Compare</button></form>'
    )
    return (
        f'<section class="repository" data-repository="{_e(name)}"><h2>repository {_e(name)}</h2>'
        f'<p class="qmeta">{_link(doc["url"], _e(doc["url"]))} · '
        f'<a href="/repos/{_e(quote(name, safe=""))}/{_e(quote(name, safe=""))}.repo">'
        f"{_e(name)}.repo</a></p>"
        f"<h3>Generations</h3>{history}<h3>Compare two generations</h3>{form}"
        f"{_diff(publisher, old, new)}</section>"
    )


def _diff(publisher: Any, old: int | None, new: int | None) -> str:
    if old is None or new is None:
        return '<p class="empty">Two kept generations are needed to compare.</p>'
    a, b = publisher.generation(old), publisher.generation(new)
    if a is None or b is None:
        missing = old if a is None else new
        return f'<p class="empty">Generation {_e(missing)} is not on disk.</p>'
    diff = diff_states(a.state, b.state)
    lines = [f'<li class="added">+ {_e(n)} {_e(v)}</li>' for n, v in diff.added.items()]
    lines += [f'<li class="removed">&minus; {_e(n)} {_e(v)}</li>' for n, v in diff.removed.items()]
    lines += [
        f'<li class="changed">~ {_e(n)} {_e(was)} → {_e(now)}</li>'
        for n, (was, now) in diff.changed.items()
    ]
    builds = f'<ul class="diff">{"".join(lines)}</ul>' if lines else "<p>Same builds.</p>"
    packages = "".join(f'<li class="added">+ {_e(p)}</li>' for p in diff.packages_added) + "".join(
        f'<li class="removed">&minus; {_e(p)}</li>' for p in diff.packages_removed
    )
    return (
        f'<div class="diff-result" data-from="{old}" data-to="{new}">'
        f"<h4>Builds, generation {old} → {new}</h4>{builds}"
        f"<h4>Binary packages</h4>"
        + (f'<ul class="diff">{packages}</ul>' if packages else "<p>Same packages.</p>")
        + "</div>"
    )


PAGE: web.AppKey[Page] = web.AppKey("page")


def add_page(app: web.Application, rt: Runtime, status_source: StatusSource) -> None:
    """The page's routes and its static files (``/assets/``)."""
    app[PAGE] = Page(rt, status_source)
    app.router.add_get("/", index)
    app.router.add_get("/queues/{name}", queue_page)
    app.router.add_get("/repositories/{name}", repository_page)
    app.router.add_static("/assets/", STATIC)
