"""``GET /api/repos/{name}/generations/{number}``: one generation and its source stamp.

The source stamp (Buildbot's word) is the whole provenance of a generation:
for every package the repository serves, the build it serves, the project
(distgit) and the commit that build came from, whichever change last touched
it, not only the change that produced this generation.  It is read from the
generation's own record on disk (``state.json``: each build carries its
project and commit, see :class:`repo_state.state.BuildEntry`), so it says
what was published even after the database moved on; ``rpmgate repo diff``
compares two of them.  Builds published before rpmgate recorded stamps have
``null`` project and commit.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gate.runtime import Runtime
from gate.web.bodies import MAX_ID
from gate.web.documents import Document
from publishers.createrepo import Generation, GenerationNotFound, Publisher

#: manifest keys not passed through: the state is given as the source stamp instead
_NOT_PASSED = frozenset({"state", "packages"})


class StampEntry(Document):
    """One source package of the generation and where its published build came from."""

    package: str
    nvr: str
    #: the distgit project, the commit its build came from (null if not recorded)
    project: str | None
    commit: str | None
    #: ``final:<build id>`` and the like
    origin: str


class GenerationDoc(Document):
    """``GET /api/repos/{name}/generations/{number}``: a generation's manifest and stamp.

    Keys of the manifest this model does not name (added by newer versions)
    are passed through as they are.
    """

    repo: str
    number: int
    #: ``current`` points at it
    current: bool
    created: str
    produced_by: dict[str, Any]
    arches: list[str]
    package_count: int
    #: sorted by package name
    source_stamp: list[StampEntry]


def generation_doc(repo: str, publisher: Publisher, generation: Generation) -> dict[str, Any]:
    state = publisher.state(generation.number)
    current = publisher.current()
    manifest = {k: v for k, v in generation.manifest.items() if k not in _NOT_PASSED}
    return {
        **manifest,
        "repo": repo,
        "number": generation.number,
        "current": current is not None and current.number == generation.number,
        "package_count": sum(1 for e in state for a in e.artifacts if not a.is_source),
        "source_stamp": [
            {
                "package": entry.source_name,
                "nvr": entry.nvr,
                "project": entry.project or None,
                "commit": entry.commit or None,
                "origin": entry.origin,
            }
            for entry in state
        ],
    }


def _not_found(message: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=f'{{"error": "{message}"}}', content_type="application/json")


async def get_generation(request: web.Request, rt: Runtime) -> web.Response:
    name = request.match_info["name"]
    publisher = rt.publishers.get(name)
    if publisher is None:
        return web.json_response({"error": f"unknown repository {name[:100]!r}"}, status=404)
    text = request.match_info["number"]
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or not 1 <= int(text) <= MAX_ID:
        raise _not_found("no such generation")
    number = int(text)

    def read() -> dict[str, Any] | None:
        generation = publisher.generation(number)
        if generation is None:
            return None
        try:
            return generation_doc(name, publisher, generation)
        except GenerationNotFound:  # collected while we read it
            return None

    doc = await asyncio.to_thread(read)
    if doc is None:
        raise _not_found(f"generation {number} is not on disk (never published, or collected)")
    return web.json_response(doc)
