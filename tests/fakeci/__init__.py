"""Fake external CI systems for rpmgate's external jobs, one per trigger flavour.

Each fake speaks its real server's API over HTTP on 127.0.0.1 (the handlers cite
the documentation or source they follow) and, like a job running on a real CI
system, posts the result back to the gate's ``RPMGATE_RESULT_URL`` with the run's
``RPMGATE_TOKEN``.  What a run reports is the fake's :attr:`FakeCI.outcome`:
``"pass"``, ``"fail"`` (both after :attr:`FakeCI.delay` seconds) or ``"hold"``
(nothing until the test calls :meth:`FakeCI.report`: a run that is slow, or
whose result the test sends after a cancel or a timeout).

The fakes run in the test's event loop (:meth:`FakeCI.start`) or, for a gate
daemon in another process, in a thread of their own (:meth:`FakeCI.threaded`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from aiohttp import web

Outcome = Literal["pass", "fail", "hold"]


@dataclass
class Received:
    """One run the fake was asked for, with the gate's request as the CI job sees it."""

    #: the fake's own id for it (pipeline id, queue item number, webhook run)
    remote_id: int
    #: the RPMGATE_* variables (or the webhook's document, flattened the same way)
    variables: dict[str, str]
    #: the webhook's JSON document (None for the other flavours)
    document: dict[str, Any] | None = None
    #: answers the gate's result endpoint gave to this run's callbacks: (status, body)
    callbacks: list[tuple[int, Any]] = field(default_factory=list)
    cancelled: bool = False

    @property
    def run(self) -> int:
        return int(self.variables["RPMGATE_RUN"])

    @property
    def token(self) -> str:
        return self.variables["RPMGATE_TOKEN"]

    @property
    def result_url(self) -> str:
        return self.variables["RPMGATE_RESULT_URL"]


class FakeCI:
    """What every fake shares: received runs, callbacks, a server on 127.0.0.1."""

    def __init__(self, outcome: Outcome = "pass", delay: float = 0.0) -> None:
        self.outcome: Outcome = outcome
        self.delay = delay
        self.received: list[Received] = []
        #: every request the fake served: (method, path)
        self.requests: list[tuple[str, str]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.log_base = "https://ci.example.invalid/logs"

    # -- to implement ---------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    # -- the server ----------------------------------------------------------------------
    async def start(self) -> FakeCI:
        app = web.Application(middlewares=[self._record])
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._loop = asyncio.get_running_loop()
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    @contextmanager
    def threaded(self) -> Iterator[FakeCI]:
        """The fake in a thread of its own (a gate daemon in another process calls it)."""
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            started.set()
            loop.run_forever()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        started.wait(10)
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        response: web.StreamResponse = await handler(request)
        return response

    # -- runs ----------------------------------------------------------------------------
    def accepted(self, received: Received) -> None:
        """A run was accepted: report it as :attr:`outcome` says (as its CI job would)."""
        self.received.append(received)
        if self.outcome == "hold":
            return
        task = asyncio.get_running_loop().create_task(self._report_later(received))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _report_later(self, received: Received) -> None:
        await asyncio.sleep(self.delay)
        if not received.cancelled:
            await self.report(received, self.outcome == "pass")

    async def report(
        self,
        received: Received,
        passed: bool,
        *,
        token: str | None = None,
        body: Any = None,
    ) -> tuple[int, Any]:
        """POST the run's result to the gate, as the CI job's last step does
        (``curl -H "Authorization: Bearer $RPMGATE_TOKEN" -d @result.json $RPMGATE_RESULT_URL``)."""
        if body is None:
            word = "passed" if passed else "failed"
            body = {
                "passed": passed,
                "log_url": f"{self.log_base}/{received.remote_id}/console.log",
                "summary": f"packstack {word} on {received.variables.get('RPMGATE_ARCHES', '')}",
                "details": [] if passed else ["tempest: 3 tests failed"],
            }
        given = received.token if token is None else token
        headers = {"Authorization": f"Bearer {given}"} if given else {}
        async with (
            aiohttp.ClientSession() as http,
            http.post(received.result_url, json=body, headers=headers) as resp,
        ):
            try:
                answer: Any = await resp.json(content_type=None)
            except ValueError:
                answer = await resp.text()
            received.callbacks.append((resp.status, answer))
            return resp.status, answer

    def report_threadsafe(self, received: Received, passed: bool) -> tuple[int, Any]:
        """:meth:`report` from another thread (the fake runs :meth:`threaded`)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(self.report(received, passed), self._loop).result(
            30
        )
