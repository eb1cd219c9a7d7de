"""The fake Gerrit's SSH daemon: ``gerrit stream-events`` (asyncssh server).

Documentation/cmd-stream-events.html: the command writes one JSON event per
line, as they happen, for as long as the connection lasts; events emitted
while a client is not connected are not replayed to it.  Only accounts with
the Stream Events capability may run it (access-control.html#capability_streamEvents).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncssh

from tests.fakegerrit.state import GerritState


class _Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True  # public key authentication is required (sshd.html)


class StreamEventsServer:
    def __init__(self, state: GerritState, host_key: asyncssh.SSHKey, client_keys: str) -> None:
        self.state = state
        self.host_key = host_key
        self.client_keys = client_keys
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._streams: list[
            tuple[asyncio.Queue[dict[str, Any] | None], asyncssh.SSHServerProcess[str]]
        ] = []
        self.connections = 0
        state.listeners.append(self._publish)

    @property
    def port(self) -> int:
        assert self._acceptor is not None
        return int(self._acceptor.get_port())

    async def start(self) -> None:
        self._acceptor = await asyncssh.create_server(
            _Server,
            "127.0.0.1",
            0,
            server_host_keys=[self.host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(self.client_keys),
            process_factory=self._process,
            encoding="utf-8",
        )

    async def stop(self) -> None:
        self.drop()
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()

    def drop(self) -> None:
        """Cut every stream-events connection (a Gerrit restart, a network fault)."""
        for queue, _ in self._streams:
            queue.put_nowait(None)

    def _publish(self, event: dict[str, Any]) -> None:
        for queue, _ in self._streams:
            queue.put_nowait(event)

    async def _process(self, process: asyncssh.SSHServerProcess[str]) -> None:
        username = process.get_extra_info("username")
        account = self.state.accounts.get(username)
        if process.command != "gerrit stream-events":
            process.stderr.write(f"fatal: {process.command}: not found\n")
            process.exit(127)
            return
        if account is None or not account.may_stream_events:
            # BaseCommand: a command that needs a global capability the caller lacks
            process.stderr.write(f'fatal: {username} does not have "Stream Events" capability.\n')
            process.exit(1)
            return
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        entry = (queue, process)
        self._streams.append(entry)
        self.connections += 1
        try:
            while True:
                event = await queue.get()
                if event is None:
                    break
                process.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
        finally:
            self._streams.remove(entry)
            process.exit(0)
            process.close()
            conn = process.channel.get_connection()
            conn.close()
