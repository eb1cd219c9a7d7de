"""Serve a :class:`FakeHub` over HTTP(S) on 127.0.0.1 from a thread of its own.

The hub gets its own event loop so that blocking client code (the real
``koji.ClientSession`` in a test, or the backend's worker threads) never
stalls it, just as a real hub runs apart from its clients.  Knobs that touch
loop objects are applied on the hub's loop with :meth:`FakeKoji.run`.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp.test_utils import TestServer

from tests.fakekoji.hub import FakeHub

T = TypeVar("T")


class FakeKoji:
    """A running fake hub: ``url`` for ``koji.ClientSession``, ``topurl`` for files."""

    def __init__(
        self, root: Path, ssl_context: ssl.SSLContext | None = None, **hub_options: Any
    ) -> None:
        self.hub = FakeHub(Path(root), **hub_options)
        self._ssl = ssl_context
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fakekoji", daemon=True)
        self._server: TestServer | None = None

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> FakeKoji:
        self._thread.start()
        self.run_async(self._start())
        return self

    async def _start(self) -> None:
        self._server = TestServer(self.hub.app(), host="127.0.0.1")
        await self._server.start_server(ssl=self._ssl)

    def stop(self) -> None:
        if self._server is not None:
            self.run_async(self._server.close())
            self._server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> FakeKoji:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------

    @property
    def base(self) -> str:
        assert self._server is not None
        scheme = "https" if self._ssl else "http"
        return f"{scheme}://127.0.0.1:{self._server.port}"

    @property
    def url(self) -> str:
        return self.base + "/kojihub"

    @property
    def topurl(self) -> str:
        return self.base + "/kojifiles"

    @property
    def weburl(self) -> str:
        return self.base + "/koji"

    # -- running things on the hub's loop -------------------------------------

    def run(self, func: Callable[[], T]) -> T:
        """Call ``func`` on the hub's loop and return its result."""

        async def call() -> T:
            return func()

        return self.run_async(call())

    def run_async(self, coro: Any) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=60)
        except TimeoutError:
            # name what holds the hub's loop (e.g. a blocking call made on its thread)
            frame = sys._current_frames().get(self._thread.ident or 0)
            where = "".join(traceback.format_stack(frame)) if frame else "(no thread)\n"
            raise TimeoutError(f"the fake hub's loop is busy; its thread is at:\n{where}") from None

    def hold(self) -> None:
        """Keep tasks in FREE (no host takes them) until :meth:`release`."""
        self.run(self.hub.builder.hold)

    def release(self) -> None:
        self.run(self.hub.builder.release)

    def task_states(self) -> dict[int, str]:
        import koji

        return self.run(
            lambda: {t.id: koji.TASK_STATES[t.state] for t in self.hub.state.tasks.values()}
        )
