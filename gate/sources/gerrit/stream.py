"""``gerrit stream-events`` over SSH: events as they happen, resumed without loss.

Documentation/cmd-stream-events.html: the command writes one JSON event per
line while the connection lasts, and nothing of what happened while no one
listened.  So each (re)connection is followed by a catch-up: once the stream
is open (events from then on queue up in the channel), the connection's
``catch_up(since)`` asks the REST API for the changes updated since the last
event seen, and the branches' heads; duplicates that this produces are
harmless, since every event is a hint the gate re-reads, and stored once.

Reconnection backs off exponentially (1 s doubling, at most ``max_backoff``),
starting again from 1 s once a connection has delivered something.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh

from gate.sources.gerrit.config import StreamConfig

log = logging.getLogger(__name__)

#: one event line may not be longer (Gerrit's largest events carry a commit message)
MAX_LINE = 4 * 1024 * 1024
#: look this much before the last event seen: eventCreatedOn has whole seconds,
#: and Gerrit's ``after:`` compares with the change's last update
MARGIN = 5.0

OnEvent = Callable[[dict[str, Any]], Awaitable[None]]
CatchUp = Callable[[float], Awaitable[None]]


class StreamEvents:
    """One connection's stream-events consumer, run as a background task."""

    def __init__(
        self,
        source: str,
        config: StreamConfig,
        on_event: OnEvent,
        catch_up: CatchUp,
        *,
        clock: Callable[[], float] = time.time,
        first_backoff: float = 1.0,
    ) -> None:
        self.source = source
        self.config = config
        self.on_event = on_event
        self.catch_up = catch_up
        self.clock = clock
        self.first_backoff = first_backoff
        #: eventCreatedOn of the newest event read (None: none yet)
        self.last_seen: float | None = None
        self._started = clock()
        self._task: asyncio.Task[None] | None = None
        #: connections made (tests, status)
        self.connections = 0
        #: set while a connection is open and caught up
        self.live = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._started = self.clock()
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name=f"{self.source}: stream-events"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        backoff = self.first_backoff
        while True:
            delivered = False
            try:
                delivered = await self._session()
                log.warning("%s: stream-events ended; reconnecting", self.source)
            except asyncio.CancelledError:
                raise
            except (OSError, asyncssh.Error, TimeoutError) as exc:
                log.warning("%s: stream-events: %s: %s", self.source, type(exc).__name__, exc)
            except Exception:
                log.exception("%s: stream-events failed", self.source)
            finally:
                self.live.clear()
            if delivered:
                backoff = self.first_backoff
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.config.max_backoff)

    def _since(self) -> float:
        if self.last_seen is not None:
            return self.last_seen - MARGIN
        return self._started - self.config.catch_up

    async def _session(self) -> bool:
        """One connection: open the stream, catch up, then read until it ends."""
        cfg = self.config
        delivered = False
        async with asyncssh.connect(
            cfg.host,
            cfg.port,
            username=cfg.user,
            client_keys=[str(cfg.key)],
            known_hosts=str(cfg.known_hosts),
            agent_path=None,
            config=None,
            keepalive_interval=30,
            keepalive_count_max=3,
        ) as conn:
            process = await conn.create_process("gerrit stream-events", encoding="utf-8")
            self.connections += 1
            log.info("%s: stream-events connected to %s:%d", self.source, cfg.host, cfg.port)
            await self.catch_up(self._since())
            self.live.set()
            while True:
                line = await process.stdout.readline()
                if not line:
                    error = (await process.stderr.read()).strip()
                    if error:
                        log.warning("%s: stream-events: %s", self.source, error[:500])
                    return delivered
                delivered = True
                await self._line(line)

    async def _line(self, line: str) -> None:
        if len(line) > MAX_LINE:
            log.warning("%s: stream-events: dropped a line of %d bytes", self.source, len(line))
            return
        try:
            payload = json.loads(line)
        except ValueError:
            log.warning("%s: stream-events: a line that is not JSON: %.200r", self.source, line)
            return
        if not isinstance(payload, dict):
            log.warning("%s: stream-events: a line that is not an object", self.source)
            return
        created = payload.get("eventCreatedOn")
        if isinstance(created, int | float) and not isinstance(created, bool):
            self.last_seen = max(self.last_seen or 0.0, float(created))
        await self.on_event(payload)
