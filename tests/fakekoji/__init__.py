"""A fake Koji hub for tests: real XML-RPC over HTTP, real rpmbuild behind it.

It answers as kojihub and kojid do at koji commit 2083513a (koji 1.35.3 plus
master up to 2025-07-02; ``api.KOJI_COMMIT``): every reply is derived from
that source, with the function named next to its handler.
``FakeKoji(root).start()`` serves :class:`~tests.fakekoji.hub.FakeHub` on
127.0.0.1; point the real ``koji.ClientSession`` at ``FakeKoji.url`` and
download from ``FakeKoji.topurl``.

Modules: ``hub`` (HTTP, sessions, multicall, uploads, files), ``api``
(RootExports), ``state`` (the records), ``query`` (queryOpts, no-order
answers), ``policy`` (hub policies), ``builder`` (kojid's task manager and
build task), ``buildroot`` (kojid's srpm and buildArch tasks), ``scm``
(kojid's SCM class), ``hostapi`` (HostExports the builder calls),
``rpmheader``, ``distgit``, ``server``, ``submitter``, ``tls``.
"""

from tests.fakekoji.builder import Failure
from tests.fakekoji.hub import CallRecord, FakeHub
from tests.fakekoji.server import FakeKoji

__all__ = ["CallRecord", "Failure", "FakeHub", "FakeKoji"]
