"""A fake Koji hub: Koji's XML-RPC dialect over HTTP, served by aiohttp.

The real ``koji.ClientSession`` talks to it and cannot tell it from a hub for
the calls rpmgate makes:

- ``POST`` only (anything else is 405, as ``kojixmlrpc.application`` answers);
- ``text/xml`` bodies encoded with ``koji.xmlrpcplus`` (``nil``, ``i8``,
  keyword arguments as a trailing ``__starstar`` struct), replies carrying the
  ``Koji-Version`` header;
- ``multiCall`` and ``system.multicall`` with per-call fault structs;
- faults with Koji's codes, unexpected exceptions as code 1;
- sessions in ``Koji-Session-Id/Key/Callnum`` headers with the hub's call
  sequence check (a replayed call number is a ``RetryError``), ``login``,
  ``sslLogin`` on ``/ssllogin`` (client certificate or GSSAPI), ``logout``;
- the raw upload path (``application/octet-stream`` with the file name and
  offset in the query string, answered with the chunk's adler32), ``checkUpload``;
- the top directory (``/kojifiles``) with the real layout, and a web UI stub.

Knobs for tests (see :class:`FakeHub`): request latency, outages (HTTP 503,
``ServerOffline``, dropped connections), replies lost after the call was
processed, injected task failures, sessions expiring, tasks held in FREE.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import urllib.parse
import xmlrpc.client
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import koji
import koji.util
from aiohttp import web
from koji.xmlrpcplus import Fault, dumps

from tests.fakekoji.api import KOJI_VERSION, HubAPI
from tests.fakekoji.builder import FakeBuilder
from tests.fakekoji.state import HubState, Session

OUTAGE_MODES = ("503", "offline", "reset")
# kojihub's auth.RetryWhitelist: calls a client may safely replay
_RETRY_WHITELIST = {"host.taskWait", "host.taskUnwait", "host.taskSetWait", "host.updateHost"}
_SESSIONLESS = {"login", "sslLogin", "logout"}


@dataclass(frozen=True)
class CallRecord:
    """One hub method call as the hub dispatched it."""

    method: str
    args: tuple[Any, ...]
    opts: dict[str, Any]
    user: str | None
    in_multicall: bool = False


@dataclass
class _Injection:
    remaining: int
    mode: str
    methods: frozenset[str] = field(default_factory=frozenset)
    seconds: float = 0.0
    fault: tuple[int, str] | None = None


class FakeHub:
    """The hub's state, its HTTP application and the knobs tests turn."""

    def __init__(
        self,
        root: Path,
        first_task_id: int = 1000,
        arches: str = "x86_64",
        builder_slots: int = 2,
    ) -> None:
        self.root = Path(root)
        self.topdir = self.root / "topdir"
        self.topdir.mkdir(parents=True, exist_ok=True)
        self.state = HubState(first_task_id)
        self.api = HubAPI(self)
        self.builder = FakeBuilder(self, slots=builder_slots)
        self._methods = self.api.methods()
        self._methods.update(
            login=self._login,
            sslLogin=self._ssl_login,
            logout=self._logout,
            subsession=self._subsession,
        )
        self.loop: asyncio.AbstractEventLoop | None = None

        #: every method call dispatched, multicall members included, in order
        self.calls: list[CallRecord] = []
        #: HTTP requests to the hub endpoint, by kind ("xmlrpc", "multicall", "upload", ...)
        self.requests: Counter[str] = Counter()
        #: HTTP requests for files under the top directory
        self.file_requests = 0

        #: seconds added to every hub request before it is looked at
        self.request_latency = 0.0
        #: "503", "offline" or "reset" while the hub is down, else None
        self.outage: str | None = None
        self._injections: list[_Injection] = []

        self.state.add_user(
            "rpmgate", password="secret", krb_principal="rpmgate@EXAMPLE.COM", perms=set()
        )
        self.state.add_user("kojiadmin", password="admin", perms={"admin"})
        self.state.add_tag("liberty-build", arches=arches)
        self.state.add_tag("liberty-candidate", arches=arches)
        self.state.add_target("liberty-candidate", "liberty-build", "liberty-candidate")
        self.state.add_tag("liberty-release", arches=arches)

    # -- knobs ----------------------------------------------------------------

    @property
    def http_requests(self) -> int:
        """All HTTP requests the hub endpoint received (any method, any outcome)."""
        return sum(self.requests.values())

    def count(self, method: str) -> int:
        """How many times ``method`` was dispatched (inside multicalls too)."""
        return sum(1 for c in self.calls if c.method == method)

    def fail_requests(self, n: int, mode: str = "503") -> None:
        """Make the next ``n`` hub requests fail the way ``mode`` says."""
        assert mode in OUTAGE_MODES, mode
        self._injections.append(_Injection(n, mode))

    def drop_reply(self, method: str, times: int = 1) -> None:
        """Process the next ``times`` calls of ``method``, then drop the connection unanswered."""
        self._injections.append(_Injection(times, "drop", frozenset({method})))

    def delay_reply(self, method: str, seconds: float, times: int = 1) -> None:
        """Process the next ``times`` calls of ``method``, then hold the reply ``seconds``."""
        self._injections.append(_Injection(times, "delay", frozenset({method}), seconds))

    def fault_next(self, method: str, code: int, text: str, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with fault ``code`` (any code)."""
        self._injections.append(_Injection(times, "fault", frozenset({method}), fault=(code, text)))

    def expire_sessions(self) -> None:
        """Expire every session: the next call of each gets ``AuthExpired``."""
        for session in self.state.sessions.values():
            session.expired = True

    def add_package(self, tag: str, name: str) -> None:
        """Put ``name`` on ``tag``'s package list (non-scratch builds need it)."""
        self.state.tags[tag].packages.add(name)

    def set_dist(self, tag: str, dist: str) -> None:
        """Set the build tag's ``rpm.macro.dist`` extra, as Fedora/CentOS tags do."""
        self.state.tags[tag].extra["rpm.macro.dist"] = dist

    # -- paths ----------------------------------------------------------------

    def task_dir(self, task_id: int) -> Path:
        return self.topdir / "work" / koji.pathinfo.taskrelpath(task_id)

    def upload_path(self, path: str, name: str, create: bool = False) -> Path:
        """``work/<path>/<name>``, refusing anything that leaves the work dir."""
        parts = Path(path).parts
        if (
            not path
            or Path(path).is_absolute()
            or ".." in parts
            or "/" in name
            or name in ("", "..")
        ):
            raise koji.GenericError(f"Upload path not allowed: {path}/{name}")
        udir = self.topdir / "work" / path
        if create:
            udir.mkdir(parents=True, exist_ok=True)
            owner_file = udir / ".user"
            user = self.api.session.user if self.api.session else None
            if owner_file.exists():
                if user is None or owner_file.read_text() != str(user.id):
                    raise koji.GenericError(f"Invalid upload directory, not owner: {path}")
            elif user is not None:
                owner_file.write_text(str(user.id))
        return udir / name

    # -- application ----------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/kojihub", self._handle_hub)
        app.router.add_route("*", "/kojihub/ssllogin", self._handle_hub)
        app.router.add_get("/kojifiles/{path:.*}", self._handle_file)
        app.router.add_get("/koji/taskinfo", self._handle_taskinfo)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self.loop = asyncio.get_running_loop()
        self._closing = asyncio.Event()

    async def _on_shutdown(self, app: web.Application) -> None:
        self._closing.set()  # replies held back by delay_reply are let go
        await self.builder.shutdown()

    def _take_injection(self, method: str | None, modes: tuple[str, ...]) -> _Injection | None:
        """Consume one matching injection: transport ones (``method`` None) or per method."""
        for inj in self._injections:
            if inj.remaining <= 0 or inj.mode not in modes:
                continue
            if (method is None and not inj.methods) or (
                method is not None and method in inj.methods
            ):
                inj.remaining -= 1
                return inj
        return None

    async def _handle_hub(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            self.requests["rejected"] += 1
            return web.Response(
                status=405,
                text="Method Not Allowed\n"
                "This is an XML-RPC server. Only POST requests are accepted.\n",
                headers={"Allow": "POST"},
            )
        if self.request_latency:
            await asyncio.sleep(self.request_latency)
        failure = self.outage or ((inj := self._take_injection(None, OUTAGE_MODES)) and inj.mode)
        if failure:
            self.requests["refused"] += 1
            return await self._fail(request, failure)
        body = await request.read()
        if request.content_type == "application/octet-stream":
            self.requests["upload"] += 1
            return self._reply(self._handle_upload(request, body))
        try:
            params, method = xmlrpc.client.loads(body)
        except Exception as exc:
            self.requests["xmlrpc"] += 1
            return self._reply(Fault(1, f"{type(exc)}: {exc}"))
        self.requests["multicall" if method in ("multiCall", "system.multicall") else "xmlrpc"] += 1
        result = self._handle_rpc(request, method, params)
        inj = self._take_injection(method, ("drop", "delay"))
        if inj and inj.mode == "drop":
            request.transport.abort()  # the call happened; its reply is lost
            return web.Response(status=500)
        if inj and inj.mode == "delay":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), inj.seconds)
        return self._reply(result)

    async def _fail(self, request: web.Request, mode: str) -> web.StreamResponse:
        if mode == "503":
            return web.Response(
                status=503, text="<html>Service Unavailable</html>", content_type="text/html"
            )
        if mode == "offline":
            # kojixmlrpc.offline_reply: a ServerOffline fault in a 200 reply
            return self._reply(Fault(koji.ServerOffline.faultCode, "server is offline"))
        request.transport.abort()
        return web.Response(status=500)

    def _reply(self, result: Any) -> web.Response:
        text = dumps(result) if isinstance(result, Fault) else dumps((result,), methodresponse=1)
        return web.Response(
            body=text.encode(), content_type="text/xml", headers={"Koji-Version": KOJI_VERSION}
        )

    # -- sessions -------------------------------------------------------------

    def _session_for(self, request: web.Request, method: str) -> Session | None:
        """kojihub's auth.Session: find the caller's session and check its call sequence."""
        headers = request.headers
        query = request.query
        sid = headers.get("Koji-Session-Id") or query.get("session-id")
        if not sid:
            return None
        key = headers.get("Koji-Session-Key") or query.get("session-key")
        callnum = headers.get("Koji-Session-Callnum") or query.get("callnum")
        session = self.state.sessions.get(int(sid))
        if session is None or session.key != key:
            if method in _SESSIONLESS:
                return None
            raise koji.AuthError("Invalid session or bad credentials")
        if session.expired:
            if method in _SESSIONLESS:
                return None
            raise koji.AuthExpired(f"session {session.id} is expired")
        if callnum is not None:
            num = int(callnum)
            if session.lastcall is not None:
                if session.lastcall > num:
                    raise koji.SequenceError(f"{session.lastcall} > {num} (session {session.id})")
                if session.lastcall == num and method not in _RETRY_WHITELIST:
                    raise koji.RetryError(
                        f"unable to retry call {num} (method {method}) for session {session.id}"
                    )
            session.lastcall = num
        return session

    def _login(
        self,
        user: str,
        password: str,
        opts: Any = None,
        renew: bool = False,
        exclusive: bool = False,
    ) -> dict[str, Any]:
        found = self.state.users.get(user)
        if found is None or found.password is None or found.password != password:
            raise koji.AuthError("Invalid username or password")
        return self.state.new_session(found, koji.AUTHTYPES["NORMAL"]).sinfo()

    def _ssl_login(
        self,
        proxyuser: Any = None,
        proxyauthtype: Any = None,
        renew: bool = False,
        exclusive: Any = None,
    ) -> dict[str, Any]:
        request = self._current_request
        assert request is not None
        if request.path != "/kojihub/ssllogin":
            raise koji.AuthError("sslLogin must be called on the ssllogin path")
        auth = request.headers.get("Authorization", "")
        peercert = request.transport.get_extra_info("peercert") if request.transport else None
        if auth.startswith("Negotiate "):
            # What mod_auth_gssapi would put in REMOTE_USER; the tests' stand-in
            # for requests-gssapi sends the principal as its token.
            principal = base64.b64decode(auth.split(" ", 1)[1]).decode()
            user = next(
                (u for u in self.state.users.values() if u.krb_principal == principal), None
            )
            authtype = koji.AUTHTYPES["GSSAPI"]
        elif peercert:
            subject = dict(x[0] for x in peercert.get("subject", ()))
            user = self.state.users.get(subject.get("commonName", ""))
            authtype = koji.AUTHTYPES["SSL"]
        else:
            raise koji.AuthError("could not authenticate: no client certificate or GSSAPI token")
        if user is None:
            raise koji.AuthError("Unknown user or principal")
        return self.state.new_session(user, authtype).sinfo()

    def _logout(self, session_id: Any = None) -> None:
        session = self.api.session
        if session is not None:
            self.state.sessions.pop(session.id, None)

    def _subsession(self) -> dict[str, Any]:
        session = self.api.session
        if session is None:
            raise koji.AuthError("Not logged in")
        return self.state.new_session(session.user, session.authtype).sinfo()

    # -- calls ----------------------------------------------------------------

    _current_request: web.Request | None = None

    def _handle_rpc(self, request: web.Request, method: str, params: tuple[Any, ...]) -> Any:
        try:
            session = self._session_for(request, method)
        except koji.GenericError as exc:
            return Fault(exc.faultCode, str(exc))
        self._current_request = request
        try:
            if method in ("multiCall", "system.multicall"):
                return self._multicall(session, params)
            return self._dispatch(session, method, params, in_multicall=False)
        except Fault as fault:
            return fault
        except koji.GenericError as exc:
            return Fault(exc.faultCode, str(exc))
        except Exception as exc:
            return Fault(1, f"{type(exc)}: {exc}")
        finally:
            self._current_request = None

    def _multicall(self, session: Session | None, params: tuple[Any, ...]) -> list[Any]:
        args, opts = koji.decode_args(*params)
        calls = args[0] if args else opts.get("calls", [])
        self.calls.append(CallRecord("multiCall", (len(calls),), {}, _name(session)))
        results: list[Any] = []
        for call in calls:
            try:
                result = self._dispatch(session, call["methodName"], call["params"], True)
            except Fault as fault:
                results.append({"faultCode": fault.faultCode, "faultString": fault.faultString})
            except Exception as exc:
                results.append(
                    {
                        "faultCode": getattr(exc, "faultCode", 1),
                        "faultString": ", ".join(str(a) for a in exc.args),
                        "traceback": [],
                    }
                )
            else:
                results.append([result])
        return results

    def _dispatch(
        self, session: Session | None, method: str, params: Any, in_multicall: bool
    ) -> Any:
        func = self._methods.get(method)
        if func is None:
            raise koji.GenericError(f"Invalid method: {method}")
        args, opts = koji.decode_args(*params)
        self.calls.append(CallRecord(method, tuple(args), dict(opts), _name(session), in_multicall))
        inj = self._take_injection(method, ("fault",))
        if inj is not None and inj.fault is not None:
            raise Fault(*inj.fault)
        self.api.session = session
        try:
            return koji.util.call_with_argcheck(func, args, opts)
        finally:
            self.api.session = None

    # -- uploads --------------------------------------------------------------

    def _handle_upload(self, request: web.Request, body: bytes) -> Any:
        """kojihub.handle_upload: write a chunk at ``offset`` and return its checksum."""
        try:
            session = self._session_for(request, "rawUpload")
            if session is None:
                raise koji.ActionNotAllowed("you must be logged-in to upload a file")
            query = urllib.parse.parse_qs(request.query_string, strict_parsing=True)
            name = query["filename"][0]
            path = query.get("filepath", [""])[0]
            verify = query.get("fileverify", [""])[0]
            overwrite = query.get("overwrite", [""])[0]
            offset = int(query.get("offset", ["0"])[0])
            self.calls.append(
                CallRecord("rawUpload", (path, name, offset, len(body)), {}, session.user.name)
            )
            self.api.session = session
            try:
                target = self.upload_path(path, name, create=True)
            finally:
                self.api.session = None
            if target.exists() and offset == 0 and not overwrite:
                raise koji.GenericError(f"upload path exists: {path}/{name}")
            mode = "r+b" if target.exists() else "wb"
            with open(target, mode) as fh:
                if offset == -1:
                    offset = fh.seek(0, os.SEEK_END)
                else:
                    fh.truncate(offset)
                    fh.seek(offset)
                fh.write(body)
            result: dict[str, Any] = {"size": len(body), "fileverify": verify, "offset": offset}
            if verify == "adler32":
                result["hexdigest"] = "%08x" % (zlib.adler32(body) & 0xFFFFFFFF)
            return result
        except koji.GenericError as exc:
            return Fault(exc.faultCode, str(exc))

    # -- files and web --------------------------------------------------------

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        self.file_requests += 1
        rel = request.match_info["path"]
        path = (self.topdir / rel).resolve()
        if not path.is_relative_to(self.topdir.resolve()) or not path.is_file():
            raise web.HTTPNotFound()
        content_type = "text/plain" if path.suffix == ".log" else "application/x-rpm"
        return web.FileResponse(path, headers={"Content-Type": content_type})

    async def _handle_taskinfo(self, request: web.Request) -> web.Response:
        task = self.state.tasks.get(int(request.query.get("taskID", "0")))
        if task is None:
            raise web.HTTPNotFound()
        state = koji.TASK_STATES[task.state]
        return web.Response(
            text=f"<html><body>Task {task.id} {task.method} {state}</body></html>",
            content_type="text/html",
        )


def _name(session: Session | None) -> str | None:
    return session.user.name if session else None
