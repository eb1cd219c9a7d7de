"""Transient faults: which failures are the infrastructure's, and retrying them.

A failure is either the outcome of the work (a build that fails, a ref that
does not exist, a body that does not validate) or a fault of what the work
runs on: the database dropped the connection or is locked, the disk is full,
the network or a server is down.  Outcomes are recorded; faults are retried,
and never turn into an outcome -- a change is not rejected, a delivery not
marked done, a build not failed because PostgreSQL restarted.

:func:`is_transient` is the one classification every stage uses;
:func:`until_it_lands` retries a database write (a whole transaction, so a
retry after a failed commit starts clean) with backoff until it succeeds,
which is how every write that ends a task is made.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
from sqlalchemy import exc as sa_exc
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_never,
    wait_exponential,
)

from gate.builders.base import TransientBackendError
from gate.merger import GitError, RefNotFound

log = logging.getLogger(__name__)

T = TypeVar("T")

#: errno values of a resource or peer that may come back: full or failing
#: disks, exhausted descriptors or memory, an unreachable or restarting server
TRANSIENT_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EIO,
        errno.ENOMEM,
        errno.EAGAIN,
        errno.EMFILE,
        errno.ENFILE,
        errno.EBUSY,
        errno.ETIMEDOUT,
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ESTALE,
    }
)

#: git's words (LC_ALL=C) for a remote it could not talk to, or a local
#: disk it could not write: the same command may work later
GIT_TRANSIENT_MARKERS = (
    "could not resolve host",
    "connection refused",
    "connection timed out",
    "connection reset",
    "operation timed out",
    "timed out after",
    "network is unreachable",
    "temporary failure",
    "unable to access",
    "the remote end hung up",
    "early eof",
    "rpc failed",
    "no space left on device",
    "disk quota exceeded",
    "input/output error",
    "unable to create temporary file",
    "index.lock': file exists",
    "cannot lock ref",
    "http 5",
    "error: 5",
    "the requested url returned error: 5",
)

#: waits between tries: 0.2 s doubling to 30 s, then every 30 s
WAIT = wait_exponential(multiplier=0.2, max=30)


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` is a fault of the infrastructure that a retry may clear."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _transient_here(current):
            return True
        current = current.__cause__
    return False


def _transient_here(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.DBAPIError):
        # OperationalError: connection lost or refused, "database is locked",
        # serialization failures; InterfaceError: a connection already closed
        return exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError
        )
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True  # no pool connection in time; a connection that went away
    if isinstance(exc, TransientBackendError):
        return True
    if isinstance(exc, RefNotFound):
        return False
    if isinstance(exc, GitError):
        text = exc.stderr.lower()
        return any(marker in text for marker in GIT_TRANSIENT_MARKERS)
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ServerTimeoutError):
        return True
    if isinstance(exc, aiohttp.ClientResponseError):
        return exc.status >= 500 or exc.status == 429
    if isinstance(exc, TimeoutError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in TRANSIENT_ERRNOS
    return False


def _log_retry(what: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        log.warning(
            "%s: transient fault (try %d), retrying in %.1fs: %s: %s",
            what,
            state.attempt_number,
            state.upcoming_sleep,
            type(error).__name__,
            error,
        )

    return before_sleep


def _retrying(what: str, tries: int | None = None) -> AsyncRetrying:
    """Retry transient faults only, with :data:`WAIT`; for ever, or ``tries`` times."""
    return AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=WAIT,
        stop=stop_after_attempt(tries) if tries is not None else stop_never,
        before_sleep=_log_retry(what),
        reraise=True,
    )


async def until_it_lands(write: Callable[[], T], what: str) -> T:
    """Run ``write`` (a whole transaction) until it does not fail transiently.

    Only transient faults are retried, for as long as they last (the caller's
    cancellation stops it); anything else propagates at once.  The write must
    be safe to repeat: after a commit whose answer was lost it runs again.
    """
    async for attempt in _retrying(what):
        with attempt:
            return write()
    raise AssertionError("unreachable: tenacity retries until the write lands")


async def until_it_answers(call: Callable[[], Awaitable[T]], what: str) -> T:
    """:func:`until_it_lands` for a coroutine (a read of git or a review system that
    the work cannot go on without): ``call()`` makes a fresh one each try."""
    async for attempt in _retrying(what):
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity retries until it answers")


async def retried(call: Callable[[], T], what: str, *, tries: int) -> T:
    """:func:`until_it_lands` that gives up after ``tries``, re-raising the last fault."""
    async for attempt in _retrying(what, tries):
        with attempt:
            return call()
    raise AssertionError("unreachable: tenacity returns or re-raises")


async def retried_call(call: Callable[[], Awaitable[T]], what: str, *, tries: int) -> T:
    """:func:`retried` for a coroutine: ``call()`` makes a fresh one each try."""
    async for attempt in _retrying(what, tries):
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity returns or re-raises")


def retry_delay(tries: int) -> float:
    """The wait before the ``tries``-th retry: 0.2 s doubling, at most 30 s."""
    return min(30.0, 0.2 * 2.0 ** max(0, tries - 1))


async def backoff(tries: int) -> None:
    """Sleep as long as the ``tries``-th retry should wait (loops that retry themselves)."""
    await asyncio.sleep(retry_delay(tries))
