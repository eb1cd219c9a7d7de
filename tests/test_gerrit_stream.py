"""``gerrit stream-events`` over SSH against the fake's asyncssh server: events in
order, a dropped connection resumed with a catch-up from the last event seen."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from gate.sources.gerrit.config import StreamConfig
from gate.sources.gerrit.stream import MARGIN, StreamEvents
from tests.fakegerrit import accounts
from tests.fakegerrit.ssh import StreamEventsServer
from tests.fakegerrit.state import Account, GerritState


@dataclass
class Seen:
    events: list[dict[str, Any]] = field(default_factory=list)
    catch_ups: list[float] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_event(self, payload: dict[str, Any]) -> None:
        self.events.append(payload)
        self.arrived.set()

    async def catch_up(self, since: float) -> None:
        self.catch_ups.append(since)


@dataclass
class Ssh:
    state: GerritState
    server: StreamEventsServer
    config: StreamConfig


async def wait_for(predicate: Any, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture
async def ssh(tmp_path: Path) -> AsyncIterator[Ssh]:
    state = GerritState()
    accounts(state)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    key_file = tmp_path / "id_ed25519"
    client_key.write_private_key(str(key_file))
    server = StreamEventsServer(state, host_key, client_key.export_public_key().decode())
    await server.start()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{server.port} {host_key.export_public_key().decode()}")
    config = StreamConfig(
        host="127.0.0.1",
        port=server.port,
        user="rpmgate",
        key=key_file,
        known_hosts=known,
        max_backoff=0.2,
    )
    yield Ssh(state, server, config)
    await server.stop()


def event(n: int, created: int) -> dict[str, Any]:
    return {"type": "comment-added", "n": n, "eventCreatedOn": created}


async def test_events_arrive_in_order_and_a_reconnection_catches_up(ssh: Ssh) -> None:
    seen = Seen()
    stream = StreamEvents("gerrit", ssh.config, seen.on_event, seen.catch_up, first_backoff=0.05)
    stream.start()
    try:
        await asyncio.wait_for(stream.live.wait(), 10)
        assert len(seen.catch_ups) == 1  # the first connection looks back `catch_up` seconds
        for n, created in enumerate((1000, 1001, 1002)):
            ssh.state.listeners[-1](event(n, created))
        await wait_for(lambda: len(seen.events) == 3)
        assert [e["n"] for e in seen.events] == [0, 1, 2]

        ssh.server.drop()
        await wait_for(lambda: not stream.live.is_set())
        ssh.state.listeners[-1](event(3, 1003))  # nobody listens: lost to the stream
        await wait_for(lambda: stream.live.is_set() and stream.connections == 2)
        assert seen.catch_ups[-1] == 1002 - MARGIN  # ... found again by the catch-up
        ssh.state.listeners[-1](event(4, 1004))
        await wait_for(lambda: len(seen.events) == 4)
        assert [e["n"] for e in seen.events] == [0, 1, 2, 4]
    finally:
        await stream.stop()


async def test_garbage_lines_are_skipped(ssh: Ssh) -> None:
    seen = Seen()
    stream = StreamEvents("gerrit", ssh.config, seen.on_event, seen.catch_up, first_backoff=0.05)
    stream.start()
    try:
        await asyncio.wait_for(stream.live.wait(), 10)
        proc = ssh.server._streams[0][1]
        proc.stdout.write("not json\n[1, 2]\n")
        ssh.state.listeners[-1](event(1, 5))
        await wait_for(lambda: len(seen.events) == 1)
        assert seen.events[0]["n"] == 1
    finally:
        await stream.stop()


async def test_an_account_without_the_capability_retries_with_backoff(
    ssh: Ssh, caplog: pytest.LogCaptureFixture
) -> None:
    ssh.state.add_account(Account(7, "rpmgate", "rpmgate", "r@example.org"))  # no Stream Events
    seen = Seen()
    stream = StreamEvents("gerrit", ssh.config, seen.on_event, seen.catch_up, first_backoff=0.05)
    stream.start()
    try:
        await wait_for(lambda: stream.connections >= 2)
        assert 'does not have "Stream Events" capability' in caplog.text
    finally:
        await stream.stop()


async def test_an_unknown_host_key_is_never_trusted(
    ssh: Ssh, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    known = tmp_path / "other_known_hosts"
    known.write_text(f"[127.0.0.1]:{ssh.server.port} {other}")
    config = ssh.config.model_copy(update={"known_hosts": known})
    seen = Seen()
    stream = StreamEvents("gerrit", config, seen.on_event, seen.catch_up, first_backoff=0.05)
    stream.start()
    try:
        await asyncio.sleep(0.5)
        assert stream.connections == 0 and not seen.catch_ups
        assert "HostKeyNotVerifiable" in caplog.text
    finally:
        await stream.stop()
