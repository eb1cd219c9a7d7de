"""Calls to a Koji hub with the real ``koji.ClientSession``, off the event loop.

``ClientSession`` is blocking (``requests``) and not safe to share between
threads: a logged-in session numbers its calls and the hub refuses one that
arrives out of sequence.  :class:`HubSession` therefore keeps a small pool of
sessions, each used by one worker thread at a time; the pool size bounds the
number of calls in flight.

Faults are sorted in two kinds.  *Transient* ones -- connection errors,
timeouts, HTTP 5xx, ``ServerOffline`` -- are retried here with tenacity
(exponential backoff, capped waits, a deadline) and recorded in
:class:`HubHealth` so the status page can show an outage.  Everything else --
Koji faults (``GenericError`` and its subclasses) and faults with codes the
client library does not know (raw ``xmlrpc.client.Fault``) -- is the hub's
answer and goes to the caller at once.  koji's own retry loop is turned off
(``max_retries`` 0, ``offline_retry`` off) so it cannot hide an outage from
ours behind its default of 30 tries 20 seconds apart.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import logging
import time
import xml.parsers.expat
import xmlrpc.client
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import koji
import requests
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    stop_never,
    wait_exponential,
)

from gate.builders.base import TransientBackendError
from gate.builders.koji_config import KojiConfig, KojiConnection

log = logging.getLogger(__name__)

T = TypeVar("T")
#: one call of a multicall: (method, positional args, keyword args)
Call = tuple[str, Sequence[Any], dict[str, Any]]


class HubUnavailable(TransientBackendError):
    """The hub did not answer within the retry deadline."""


def is_transient(exc: BaseException) -> bool:
    """True for faults that say "try again later" rather than "no".

    ``RetryError`` is one: the hub already committed a call with this number
    (kojihub/auth.py Session: the stored callnum moves only on a committed
    write), so its reply was lost; callers that wrote look before retrying.
    """
    if isinstance(exc, TransientBackendError | koji.ServerOffline | koji.RetryError):
        return True
    if isinstance(exc, requests.exceptions.HTTPError):
        status = exc.response.status_code if exc.response is not None else None
        return status is None or status >= 500 or status in (408, 429)
    if isinstance(exc, requests.exceptions.SSLError):
        # a handshake cut short by a restarting proxy is an outage; a bad or
        # expired certificate is not, and retrying would only hide it
        return not koji.is_requests_cert_error(exc)
    if isinstance(
        exc,
        requests.exceptions.ConnectionError
        | requests.exceptions.Timeout
        | requests.exceptions.ChunkedEncodingError,
    ):
        return True
    # a proxy's HTML error page where XML was expected, a reply cut short
    return isinstance(
        exc,
        ConnectionError | TimeoutError | http.client.HTTPException | xml.parsers.expat.ExpatError,
    )


def _last_frame(exc: BaseException) -> str:
    """``file:line in function`` of the innermost frame of ``exc``'s traceback."""
    tb = exc.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{Path(code.co_filename).name}:{tb.tb_lineno} in {code.co_name}"


def describe(exc: BaseException) -> str:
    """One line for logs and the status page: the fault class and its text."""
    if isinstance(exc, xmlrpc.client.Fault):
        return f"fault {exc.faultCode}: {exc.faultString}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


@dataclass
class HubHealth:
    """What the status page shows about the hub connection."""

    calls: int = 0
    http_requests: int = 0
    transient_failures: int = 0
    consecutive_failures: int = 0
    unreachable_since: float | None = None
    last_error: str = ""
    last_success: float | None = None
    #: an error that retrying does not fix (see BackendError); cleared by a restart
    backend_error: str = ""

    def record_error(self, exc: BaseException) -> str:
        """Keep a non-transient error for the status page; return its one-line text."""
        line = describe(exc)
        where = _last_frame(exc)
        self.backend_error = f"{line} (at {where})" if where else line
        self.last_error = self.backend_error
        return self.backend_error

    def as_dict(self) -> dict[str, Any]:
        return {
            "error": self.backend_error or None,
            "calls": self.calls,
            "http_requests": self.http_requests,
            "transient_failures": self.transient_failures,
            "consecutive_failures": self.consecutive_failures,
            "unreachable_since": self.unreachable_since,
            "retrying": self.consecutive_failures > 0,
            "last_error": self.last_error,
            "last_success": self.last_success,
        }


class HubSession:
    """A bounded pool of ``koji.ClientSession`` objects with login, retries and health."""

    def __init__(
        self,
        conn: KojiConnection,
        config: KojiConfig,
        session_factory: Callable[[str, dict[str, Any]], koji.ClientSession] = koji.ClientSession,
    ) -> None:
        self.conn = conn
        self.config = config
        self.health = HubHealth()
        self._factory = session_factory
        self._executor = ThreadPoolExecutor(
            max_workers=config.max_concurrent_calls, thread_name_prefix="koji-call"
        )
        self._slots = asyncio.Semaphore(config.max_concurrent_calls)
        self._idle: list[koji.ClientSession] = []
        self._all: list[koji.ClientSession] = []
        self._user_id: int | None = None
        self._closed = False

    # -- public calls -----------------------------------------------------------

    async def call(
        self, method: str, *args: Any, login: bool = False, retry: bool = True, **kwargs: Any
    ) -> Any:
        """One hub call; transient faults retried unless ``retry`` is False."""

        def op(session: koji.ClientSession) -> Any:
            return session.callMethod(method, *args, **kwargs)

        return await self.run(op, what=method, login=login, retry=retry)

    async def multicall(
        self, calls: Sequence[Call], login: bool = False, forever: bool = False
    ) -> list[Any]:
        """Run ``calls`` in multicall batches; each result is a value or the fault as an exception.

        ``forever``: keep retrying through any outage (used by the poller).
        """
        if not calls:
            return []
        batch = self.config.multicall_batch

        def op(session: koji.ClientSession) -> list[Any]:
            mc = session.multicall(strict=False, batch=batch)
            pending = [mc.callMethod(name, *args, **kwargs) for name, args, kwargs in calls]
            mc.call_all()
            out: list[Any] = []
            for vcall in pending:
                try:
                    out.append(vcall.result)
                except (koji.GenericError, xmlrpc.client.Fault) as exc:
                    out.append(exc)
            return out

        requests_needed = -(-len(calls) // batch)
        return await self.run(
            op,
            what=f"multicall of {len(calls)}",
            login=login,
            forever=forever,
            http_requests=requests_needed,
        )

    async def upload(self, path: Path, remote_dir: str, name: str | None = None) -> None:
        """Upload ``path`` to ``work/<remote_dir>/`` with koji's ``uploadWrapper``.

        Retried whole: ``overwrite`` lets a second attempt start again at offset 0.
        """

        def op(session: koji.ClientSession) -> None:
            session.uploadWrapper(str(path), remote_dir, name=name, overwrite=True)

        await self.run(op, what=f"upload of {Path(path).name}", login=True)

    async def ping(self) -> int:
        """One anonymous call, not retried: is the hub there and answering?

        ``getAPIVersion`` (kojihub/kojihub.py ``RootExports.getAPIVersion``,
        koji 2083513a) needs no session and reads nothing from the database,
        the cheapest call that still goes through the hub's XML-RPC handler.
        Returns the hub's API version.
        """
        return int(await self.call("getAPIVersion", retry=False))

    async def user_id(self) -> int:
        """The id of the user the gate logs in as (for ``listTasks`` owner filters)."""
        if self._user_id is None:
            info = await self.call("getLoggedInUser", login=True)
            if not info:
                raise koji.AuthError("the hub does not know who we are after login")
            self._user_id = int(info["id"])
        return self._user_id

    def retrying(self, what: str, forever: bool = False) -> AsyncRetrying:
        """A tenacity loop with this hub's policy, for callers that retry a whole step."""
        return AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential(
                multiplier=self.config.retry_initial,
                min=self.config.retry_initial,
                max=self.config.retry_max_interval,
            ),
            stop=stop_never if forever else stop_after_delay(self.config.retry_deadline),
            before_sleep=functools.partial(self._before_sleep, what),
            reraise=True,
        )

    async def run(
        self,
        op: Callable[[koji.ClientSession], T],
        what: str,
        login: bool = False,
        retry: bool = True,
        forever: bool = False,
        http_requests: int = 1,
    ) -> T:
        """Run ``op(session)`` in a worker thread, retrying transient faults."""
        if not retry:
            return await self._attempt(op, login, http_requests)
        try:
            async for attempt in self.retrying(what, forever):
                with attempt:
                    return await self._attempt(op, login, http_requests)
        except Exception as exc:
            if is_transient(exc) and not isinstance(exc, TransientBackendError):
                raise HubUnavailable(
                    f"Koji hub {self.conn.server} unavailable ({what}): {describe(exc)}"
                ) from exc
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        """Log every session out (best effort) and stop the worker threads."""
        self._closed = True
        sessions, self._all, self._idle = self._all, [], []
        loop = asyncio.get_running_loop()

        def logout(session: koji.ClientSession) -> None:
            try:
                session.opts["timeout"] = min(10.0, self.config.call_timeout)
                session.logout()
            except Exception:
                pass
            session._forget()  # no logout from __del__ in a random thread later

        await asyncio.gather(
            *(loop.run_in_executor(self._executor, logout, s) for s in sessions),
            return_exceptions=True,
        )
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- internals ------------------------------------------------------------

    def _new_session(self) -> koji.ClientSession:
        opts: dict[str, Any] = {
            "timeout": self.config.call_timeout,
            "auth_timeout": self.config.call_timeout,
            # koji's internal retry loop would sleep 20 s x 30 tries inside one
            # blocking call; retries are ours (tenacity) so outages show
            "max_retries": 0,
            "retry_interval": 0,
            "anon_retry": False,
            "offline_retry": False,
            "use_fast_upload": True,
            "no_ssl_verify": self.conn.no_ssl_verify,
        }
        if self.conn.serverca:
            opts["serverca"] = self.conn.serverca
        if self.conn.authtype == "password":
            opts["user"] = self.conn.user
            opts["password"] = self.conn.password
        session = self._factory(self.conn.server, opts)
        self._all.append(session)
        return session

    def _login(self, session: koji.ClientSession) -> None:
        """Log ``session`` in with the configured method (runs in a worker thread)."""
        conn = self.conn
        try:
            if conn.authtype == "ssl":
                session.ssl_login(cert=conn.cert, serverca=conn.serverca)
            elif conn.authtype == "gssapi":
                # gssapi_login loops range(max_retries) times: it needs one try
                session.opts["max_retries"] = 1
                try:
                    session.gssapi_login(principal=conn.principal, keytab=conn.keytab)
                finally:
                    session.opts["max_retries"] = 0
            elif conn.authtype == "password":
                session.login()
            else:
                raise koji.AuthError(
                    "this call needs a logged-in session but authtype is noauth "
                    "(configure ssl, gssapi or password for the gate's Koji user)"
                )
        except koji.AuthError:
            # ssl_login and gssapi_login turn every error, outages included,
            # into AuthError; an anonymous probe tells an outage from a refusal
            session.callMethod("getAPIVersion")
            raise

    async def _attempt(
        self, op: Callable[[koji.ClientSession], T], login: bool, http_requests: int
    ) -> T:
        if self._closed:
            raise RuntimeError("HubSession is closed")
        async with self._slots:
            session = self._idle.pop() if self._idle else self._new_session()
            loop = asyncio.get_running_loop()

            def work() -> T:
                if login and not session.logged_in:
                    self._login(session)
                try:
                    return op(session)
                except koji.SequenceError:
                    if not session.logged_in:
                        raise
                    # kojihub auth.Session.createSession(renew=True) keeps the
                    # session's stored call number while koji's
                    # ClientSession.setSession restarts at 0, so a session koji
                    # renewed after AuthExpired is out of sequence.  A new
                    # session starts in sequence.
                    log.info("koji session out of sequence after a renewal: new login")
                    session.setSession(None)
                    self._login(session)
                    return op(session)

            future = loop.run_in_executor(self._executor, work)
            # The thread keeps the session until it is done, even if we are
            # cancelled meanwhile: only then may another call use it.
            future.add_done_callback(lambda _: self._idle.append(session))
            self.health.calls += 1
            self.health.http_requests += http_requests
            try:
                result = await asyncio.shield(future)
            except Exception as exc:
                if is_transient(exc):
                    self.health.transient_failures += 1
                    self.health.consecutive_failures += 1
                    self.health.last_error = describe(exc)
                    if self.health.unreachable_since is None:
                        self.health.unreachable_since = time.time()
                raise
            self.health.consecutive_failures = 0
            self.health.unreachable_since = None
            self.health.last_success = time.time()
            return result

    def _before_sleep(self, what: str, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0
        log.warning(
            "koji hub %s: %s failed (attempt %d): %s; retrying in %.1fs",
            self.conn.server,
            what,
            state.attempt_number,
            describe(exc) if exc else "?",
            wait,
        )
