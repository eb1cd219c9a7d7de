"""A fake Pagure for tests: API 0 over HTTP, real bare git repositories, signed web-hooks.

It answers as Pagure does at commit bee168305d5c (pagure.io/pagure, mirrored as
github:Pagure/pagure): each handler names the Pagure function it follows.
``FakePagure(root).start()`` serves on 127.0.0.1; the world side (projects,
forks, PRs, comments, pushes) is methods of :class:`FakePagure`, and every
notification is recorded in ``FakePagure.sent`` (what fedora-messaging carries)
and POSTed to the project's web-hooks signed as Pagure signs them.

Modules: ``state`` (records, JSON shapes, git), ``server`` (HTTP API, world, web-hooks).
"""

from tests.fakepagure.server import FakePagure, Sent
from tests.fakepagure.state import Project, PullRequest

__all__ = ["FakePagure", "Project", "PullRequest", "Sent"]
