"""A fake Koji hub for tests: real XML-RPC over HTTP, real rpmbuild behind it.

``FakeKoji(root).start()`` serves :class:`~tests.fakekoji.hub.FakeHub` on
127.0.0.1; point the real ``koji.ClientSession`` at ``FakeKoji.url`` and
download from ``FakeKoji.topurl``.
"""

from tests.fakekoji.builder import Failure
from tests.fakekoji.hub import CallRecord, FakeHub
from tests.fakekoji.server import FakeKoji

__all__ = ["CallRecord", "Failure", "FakeHub", "FakeKoji"]
