"""Fetch a Koji build's RPMs from the hub's top URL into the content-addressed pool.

Koji serves its file tree over HTTP (``topurl``): scratch builds leave their
RPMs in the task's work directory, ``work/tasks/<id % 10000>/<id>/``, final
builds are moved to ``packages/<name>/<version>/<release>/<arch>/``
(``koji.PathInfo`` knows both layouts).  Koji records no sha256 for them, so
each download is checked with what Koji does record and what the RPM itself
carries: the size (``listTaskOutput`` / ``listRPMs``), the header and payload
digests (``rpmkeys --checksig --nosignature``) and, for final builds, the
header's SIGMD5 against the build's ``payloadhash``.  Only then is the file
added to the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from gate.builders.base import TransientBackendError
from gate.builders.koji_config import KojiConfig, KojiConnection
from gate.builders.srpm import run_capture
from repo_state.pool import Pool
from repo_state.state import Artifact

_CHUNK = 1 << 20


class DownloadError(TransientBackendError):
    """An RPM could not be fetched intact; the build itself may be fine."""


class _Retryable(Exception):
    """One attempt failed in a way another attempt may not."""


@dataclass(frozen=True)
class RemoteRpm:
    """An RPM on the hub: where it is and what Koji says about it."""

    url: str
    filename: str
    size: int | None = None
    #: the header's SIGMD5 as ``listRPMs`` reports it (final builds only)
    payloadhash: str | None = None


class Downloader:
    """Downloads RPMs concurrently (bounded), verifies them and pools them."""

    def __init__(self, conn: KojiConnection, config: KojiConfig, pool: Pool, workdir: Path) -> None:
        self.conn = conn
        self.config = config
        self.pool = pool
        self.workdir = Path(workdir)
        self._slots = asyncio.Semaphore(config.max_concurrent_downloads)
        self._session: aiohttp.ClientSession | None = None
        #: files fetched over HTTP
        self.fetched = 0

    async def fetch_all(self, rpms: list[RemoteRpm]) -> tuple[Artifact, ...]:
        artifacts = await asyncio.gather(*(self.fetch(r) for r in rpms))
        return tuple(sorted(artifacts))

    async def fetch(self, rpm: RemoteRpm) -> Artifact:
        """Download, verify and pool one RPM; return its :class:`Artifact`."""
        async with self._slots:
            retrying = AsyncRetrying(
                retry=retry_if_exception(lambda e: isinstance(e, _Retryable)),
                wait=wait_exponential(
                    multiplier=self.config.retry_initial, max=self.config.retry_max_interval
                ),
                # a corrupt or missing file gets three tries; an unreachable
                # server gets the whole retry deadline
                stop=stop_after_delay(self.config.retry_deadline) | stop_after_attempt(50),
                reraise=True,
            )
            corrupt = 0
            try:
                async for attempt in retrying:
                    with attempt:
                        try:
                            return await self._fetch_once(rpm)
                        except _Corrupt:
                            corrupt += 1
                            if corrupt >= 3:
                                raise
                            raise _Retryable() from None
            except _Retryable as exc:
                cause = exc.__cause__ or exc
                raise DownloadError(f"cannot download {rpm.url}: {cause}") from exc
            except _Corrupt as exc:
                raise DownloadError(f"{rpm.url}: {exc} (3 tries)") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- one attempt ----------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            verify = self.conn.verify()
            ssl_arg: ssl.SSLContext | bool
            if isinstance(verify, str):
                ssl_arg = ssl.create_default_context(cafile=verify)
            else:
                ssl_arg = verify
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=self.config.call_timeout,
                    sock_read=self.config.call_timeout,
                ),
                connector=aiohttp.TCPConnector(
                    ssl=ssl_arg, limit=self.config.max_concurrent_downloads
                ),
            )
        return self._session

    async def _fetch_once(self, rpm: RemoteRpm) -> Artifact:
        self.workdir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.workdir, prefix=".dl-", suffix=".rpm")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    async with self._client().get(rpm.url) as response:
                        if response.status >= 500 or response.status in (404, 408, 429):
                            # 404 too: a task's files can lag behind its state on
                            # hubs whose top dir is on NFS
                            raise _Retryable(f"HTTP {response.status}")
                        if response.status != 200:
                            raise DownloadError(
                                f"cannot download {rpm.url}: HTTP {response.status}"
                            )
                        async for chunk in response.content.iter_chunked(_CHUNK):
                            out.write(chunk)
                except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
                    raise _Retryable(str(exc) or type(exc).__name__) from exc
            self.fetched += 1
            await self._verify(tmp, rpm)
            return await asyncio.to_thread(self._pool_artifact, tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    async def _verify(self, path: Path, rpm: RemoteRpm) -> None:
        size = path.stat().st_size
        if rpm.size is not None and size != rpm.size:
            raise _Corrupt(f"size {size} != {rpm.size} listed by the hub")
        code, out, err = await run_capture(["rpmkeys", "--checksig", "--nosignature", str(path)])
        if code != 0:
            raise _Corrupt(f"digests do not match its content: {(out + err).strip()}")
        if rpm.payloadhash:
            code, out, err = await run_capture(
                ["rpm", "-qp", "--nosignature", "--qf", "%{SIGMD5}", str(path)]
            )
            if code != 0 or out.strip() != rpm.payloadhash:
                raise _Corrupt(
                    f"SIGMD5 {out.strip() or err.strip()} != payloadhash {rpm.payloadhash}"
                )

    def _pool_artifact(self, path: Path) -> Artifact:
        return self.pool.add_rpm(path)


class _Corrupt(Exception):
    """The downloaded bytes are not the RPM the hub describes."""
