"""What the fake forges (tests/fakegithub, tests/fakeforgejo) share: an aiohttp server
on 127.0.0.1, the record of API calls, and webhook deliveries posted to a receiver.

The deliveries after a merge are sent after the merge call is answered, as a
server queues them; :meth:`FakeServer.settle` waits for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

#: (body, headers) -> the receiver's HTTP status
Poster = Callable[[bytes, Mapping[str, str]], Awaitable[int]]


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Delivery:
    id: str
    event: str
    body: bytes
    headers: dict[str, str]
    #: the receiver's answers, one per send
    answers: list[int] = field(default_factory=list)


class FakeServer:
    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        #: every API call made: (method, path, JSON body)
        self.calls: list[tuple[str, str, Any]] = []
        self.poster: Poster | None = None
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._later: set[asyncio.Task[None]] = set()
        #: run when a merge call arrives, before it is checked (a race a test stages)
        self.before_merge: Callable[[], Awaitable[None]] | None = None

    def app(self) -> web.Application:
        raise NotImplementedError

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app())
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        await self.settle()
        if self._runner is not None:
            await self._runner.cleanup()

    def later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    async def settle(self) -> None:
        while self._later:
            await asyncio.gather(*self._later)

    async def post(self, delivery: Delivery) -> int:
        self.deliveries.append(delivery) if delivery not in self.deliveries else None
        if self.poster is None:
            return 0
        status = await self.poster(delivery.body, delivery.headers)
        delivery.answers.append(status)
        return status

    async def redeliver(self, delivery: Delivery) -> int:
        """The forge's "redeliver": the same body and headers, the delivery id included."""
        return await self.post(delivery)

    def last(self, event: str) -> Delivery:
        return [d for d in self.deliveries if d.event == event][-1]
