"""A fake Koji hub: Koji's XML-RPC dialect over HTTP, served by aiohttp.

It follows kojihub at koji commit 2083513a (``Koji-Version: 1.35.3``);
the real ``koji.ClientSession`` talks to it as to a hub:

- ``POST`` only (anything else is 405), an unreadable body is a 400
  (kojihub/kojixmlrpc.py ``application``, ``error_reply``);
- ``text/xml`` bodies encoded with ``koji.xmlrpcplus`` (``nil``, ``i8``,
  keyword arguments as a trailing ``__starstar`` struct), replies carrying the
  ``Koji-Version`` header;
- the method is looked up before the session is checked ("Invalid method");
  ``multiCall`` and ``system.multicall`` with per-call fault structs;
- faults with Koji's codes, other exceptions as code 1 ``"<class>: text"``;
- sessions (kojihub/auth.py ``Session``): ``Koji-Session-Id/Key/Callnum``
  headers (or the legacy ``Koji-Callnum``, or the query string), expiry,
  and the call sequence check, where the stored call number only moves when
  a call committed a write and did not fault, so a replayed read succeeds
  and a replayed write is a ``RetryError``; ``login``, ``sslLogin`` on
  ``/ssllogin`` (client certificate or GSSAPI), ``logout``, ``subsession``;
- the raw upload path (``application/octet-stream``, kojihub ``handle_upload``);
- the top directory (``/kojifiles``) with the real layout, symlinks followed
  (httpd.conf ``Options Indexes SymLinksIfOwnerMatch``), and a web UI stub.

Knobs for tests (see :class:`FakeHub`): request latency, outages (HTTP 503,
``ServerOffline``, dropped connections), replies lost after the call was
processed, injected faults and task failures, sessions expiring, tasks held in
FREE, hub policies (``policies``), targets with several arches.
"""

# Error texts are copied from koji's source, %-formatting included, so that
# they can be grepped for there.
# ruff: noqa: UP031

from __future__ import annotations

import asyncio
import base64
import contextlib
import traceback
import urllib.parse
import xmlrpc.client
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import koji
import koji.util
from aiohttp import web
from koji.xmlrpcplus import Fault, dumps

from tests.fakekoji import uploads
from tests.fakekoji.api import KOJI_VERSION, RootExports
from tests.fakekoji.builder import FakeBuilder
from tests.fakekoji.policy import Policies
from tests.fakekoji.state import Build, HubState, Session, Tag, Target

OUTAGE_MODES = ("503", "offline", "reset")
# kojihub/auth.py RetryWhitelist: calls a client may safely replay
_RETRY_WHITELIST = {
    "host.taskWait",
    "host.taskUnwait",
    "host.taskSetWait",
    "host.updateHost",
    "host.setBuildRootState",
    "repoExpire",
    "repoDelete",
    "repoProblem",
}
# kojihub/auth.py AUTH_METHODS: an expired session may still call these
_AUTH_METHODS = {"login", "sslLogin"}


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


@dataclass
class _Caller:
    """kojihub/auth.py Session for one request: the record, whether logged in, the callnum."""

    record: Session | None = None
    logged_in: bool = False
    callnum: int | None = None


class FakeHub:
    """The hub's state, its HTTP application and the knobs tests turn."""

    def __init__(
        self,
        root: Path,
        first_task_id: int = 1000,
        arches: str = "x86_64",
        builder_slots: int = 2,
        seed: int = 4242,
    ) -> None:
        self.root = Path(root)
        self.topdir = self.root / "topdir"
        self.topdir.mkdir(parents=True, exist_ok=True)
        self.state = HubState(first_task_id, seed=seed)
        #: hub.conf [policy]: ``hub.policies["build_from_srpm"] = "all :: allow"``
        self.policies = Policies(self.state)
        self.api = RootExports(self)
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
        #: (method, task id) -> fault answered to every such call (fault_task)
        self._task_faults: dict[tuple[str, int], tuple[int, str]] = {}
        self._current_request: web.Request | None = None
        self._caller = _Caller()

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

    def fault_task(self, method: str, task_id: int, code: int, text: str) -> None:
        """Answer every call of ``method`` about task ``task_id`` (its first argument, or
        ``taskID``/``taskId``) with fault ``code`` for good: a task the hub can no longer
        read, while every other call works.  Give it kojihub's own text for the case,
        e.g. ``Task.getResult``'s ``GenericError("No such task")`` (code 1000) for a
        task row deleted behind the client (``koji-sweep-db --scratch-builds``)."""
        self._task_faults[(method, task_id)] = (code, text)

    def expire_sessions(self) -> None:
        """Expire every session (SessionRenewalTimeout passed): calls get ``AuthExpired``."""
        for session in self.state.sessions.values():
            session.expired = True

    def add_package(self, tag: str, name: str, owner: str = "kojiadmin") -> None:
        """Put ``name`` on ``tag``'s package list (non-scratch builds need it)."""
        self.state.tags[tag].packages.add(name)
        self.state.package_id(name)
        self.state.package_owners[(tag, name)] = owner

    def block_package(self, tag: str, name: str) -> None:
        """Block ``name`` on ``tag``'s package list."""
        self.state.tags[tag].blocked.add(name)
        self.state.package_id(name)

    def set_dist(self, tag: str, dist: str) -> None:
        """Set the build tag's ``rpm.macro.dist`` extra, as Fedora/CentOS tags do."""
        self.state.tags[tag].extra["rpm.macro.dist"] = dist

    def add_tag(self, name: str, arches: str | None = "x86_64", **extra: Any) -> Tag:
        """A tag (``parents=[...]`` for inheritance; keyword extras are the tag's extra)."""
        return self.state.add_tag(name, arches=arches, **extra)

    def add_target(
        self, name: str, build_tag: str, dest_tag: str, arches: str | None = None
    ) -> Target:
        """A build target; ``arches`` (e.g. ``"x86_64 aarch64"``) sets both tags' arches."""
        return self.state.add_target(name, build_tag, dest_tag, arches=arches)

    def set_arches(self, tag: str, arches: str | None) -> None:
        """Change a tag's arches (the build tag's arches decide the buildArch tasks)."""
        self.state.tags[tag].arches = arches

    # -- paths ----------------------------------------------------------------

    def task_dir(self, task_id: int) -> Path:
        return self.topdir / "work" / koji.pathinfo.taskrelpath(task_id)

    def build_dir(self, build: Build) -> Path:
        """koji.PathInfo.build: packages/<name>/<version>/<release>."""
        return self.topdir / "packages" / build.name / build.version / build.release

    def upload_path(
        self, path: str, name: str, create: bool = False, volume: str | None = None
    ) -> Path:
        """kojihub/kojihub.py get_upload_path (see uploads.py)."""
        return uploads.upload_path(self, path, name, create, volume)

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
            return _error_reply(
                405,
                "Method Not Allowed\nThis is an XML-RPC server. Only POST requests are accepted.\n",
                {"Allow": "POST"},
            )
        if self.request_latency:
            await asyncio.sleep(self.request_latency)
        failure = self.outage or ((inj := self._take_injection(None, OUTAGE_MODES)) and inj.mode)
        if failure:
            self.requests["refused"] += 1
            return await self._fail(request, failure)
        body = await request.read()
        self._current_request = request
        try:
            if request.headers.get("Content-Type") == "application/octet-stream":
                self.requests["upload"] += 1
                return self._reply(self._handle_upload(request, body))
            try:
                if not body:
                    raise ValueError("Empty request")
                params, method = xmlrpc.client.loads(body)
            except Exception as exc:
                # kojixmlrpc handle_rpc: BadRequest('Invalid request: %s') -> 400
                self.requests["bad"] += 1
                return _error_reply(400, f"Invalid request: {exc}\n")
            self.requests[
                "multicall" if method in ("multiCall", "system.multicall") else "xmlrpc"
            ] += 1
            result = self._handle_rpc(request, method, params)
        finally:
            self._current_request = None
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

    # -- sessions (kojihub/auth.py Session.__init__) ----------------------------

    def _session_for(self, request: web.Request, method: str | None) -> _Caller:
        headers = request.headers
        callnum: Any
        if "Koji-Session-Id" in headers:
            sid = int(headers["Koji-Session-Id"])
            key = headers["Koji-Session-Key"]
            if "Koji-Session-Callnum" in headers:
                callnum = int(headers["Koji-Session-Callnum"])
            elif "Koji-Callnum" in headers:
                # before 1.35 the hub read this header; it is still accepted
                callnum = int(headers["Koji-Callnum"])
            else:
                callnum = None
        elif request.query_string:
            # DisableURLSessions is off by default: session args in the query string
            args = urllib.parse.parse_qs(request.query_string, strict_parsing=True)
            try:
                sid = int(args["session-id"][0])
                key = args["session-key"][0]
            except KeyError as missing:
                raise koji.AuthError("%s not specified in session args" % missing) from None
            callnum = args["callnum"][0] if "callnum" in args else None
        else:
            return _Caller()
        session = self.state.sessions.get(sid)
        if session is None or session.key != key or session.closed:
            raise koji.AuthError("Invalid session or bad credentials")
        if session.expired and method not in _AUTH_METHODS:
            raise koji.AuthExpired('session "%s" has expired' % sid)
        if callnum is not None:
            try:
                callnum = int(callnum)
            except (ValueError, TypeError):
                raise koji.AuthError("Invalid callnum: %r" % callnum) from None
            lastcall = session.callnum
            if lastcall is not None:
                if lastcall > callnum:
                    raise koji.SequenceError("%s > %s (session %s)" % (lastcall, callnum, sid))
                if lastcall == callnum and method not in _RETRY_WHITELIST:
                    raise koji.RetryError(
                        "unable to retry call %s (method %s) for session %s"
                        % (callnum, method, sid)
                    )
        if session.expired:
            return _Caller(session)
        return _Caller(session, logged_in=True, callnum=callnum)

    def _commit(self, caller: _Caller, writes_before: int, faulted: bool) -> None:
        """kojixmlrpc.application: the callnum is committed with the call's own writes."""
        if faulted or self.state.writes == writes_before:
            return
        if caller.logged_in and caller.callnum is not None and caller.record is not None:
            caller.record.callnum = caller.callnum

    def _login(
        self,
        user: str,
        password: str,
        opts: Any = None,
        renew: bool = False,
        exclusive: bool = False,
    ) -> dict[str, Any]:
        """kojihub/auth.py Session.login (renew keeps the session id, new key)."""
        if not isinstance(password, str) or len(password) == 0:
            raise koji.AuthError("invalid username or password")
        caller = self._caller
        if caller.logged_in:
            raise koji.AuthError("Already logged in")
        found = self.state.users.get(user)
        if found is None or found.password is None or found.password != password:
            raise koji.AuthError("invalid username or password")
        if found.status != koji.USER_STATUS["NORMAL"]:
            raise koji.AuthError("logins by %s are not allowed" % found.name)
        return self._create_session(found, koji.AUTHTYPES["NORMAL"], renew)

    def _create_session(self, user: Any, authtype: int, renew: bool) -> dict[str, Any]:
        """kojihub/auth.py Session.createSession: with renew, same id, new key, not expired.

        The stored callnum is left as it was, while the client starts again at 0.
        """
        record = self._caller.record
        if renew and record is not None:
            fresh = self.state.new_session(user, authtype)
            del self.state.sessions[fresh.id]
            record.key = fresh.key
            record.expired = False
            session = record
        else:
            session = self.state.new_session(user, authtype)
        self.state.writes += 1
        return session.sinfo()

    def _ssl_login(
        self,
        proxyuser: Any = None,
        proxyauthtype: Any = None,
        renew: bool = False,
        exclusive: Any = None,
    ) -> dict[str, Any]:
        """kojihub/auth.py Session.sslLogin (REMOTE_USER from GSSAPI, or the client cert CN)."""
        if self._caller.logged_in:
            raise koji.AuthError("Already logged in")
        request = self._current_request
        assert request is not None
        auth = request.headers.get("Authorization", "")
        peercert = request.transport.get_extra_info("peercert") if request.transport else None
        if request.path == "/kojihub/ssllogin" and auth.startswith("Negotiate "):
            # What mod_auth_gssapi would put in REMOTE_USER; the tests' stand-in
            # for requests-gssapi sends the principal as its token.
            username = base64.b64decode(auth.split(" ", 1)[1]).decode()
            authtype = koji.AUTHTYPES["GSSAPI"]
            user = next((u for u in self.state.users.values() if u.krb_principal == username), None)
            if "@" not in username:
                user = self.state.users.get(username)
        else:
            verified = "SUCCESS" if peercert and request.path == "/kojihub/ssllogin" else "NONE"
            if verified != "SUCCESS":
                raise koji.AuthError("could not verify client: %s" % verified)
            subject = dict(x[0] for x in peercert.get("subject", ()))
            username = subject.get("commonName", "")
            if not username:
                raise koji.AuthError("unable to get user information (CN) from client certificate")
            authtype = koji.AUTHTYPES["SSL"]
            user = self.state.users.get(username)
        if user is None:
            raise koji.AuthError("Unknown user: %s" % username)
        return self._create_session(user, authtype, renew)

    def _logout(self, session_id: Any = None) -> None:
        """kojihub/auth.py Session.logout."""
        caller = self._caller
        if not caller.logged_in or caller.record is None:
            raise koji.AuthError("Not logged in")
        if session_id:
            other = self.state.sessions.get(int(session_id))
            if "admin" not in caller.record.user.perms and (
                other is None or other.user.id != caller.record.user.id
            ):
                raise koji.ActionNotAllowed("only admins or owner may logout other session")
            ses_id = int(session_id)
        else:
            ses_id = caller.record.id
        for s in self.state.sessions.values():
            if s.id == ses_id or s.master == ses_id:
                s.expired = True
                s.closed = True
        self.state.writes += 1

    def _subsession(self) -> dict[str, Any]:
        """kojihub/auth.py Session.subsession."""
        caller = self._caller
        if not caller.logged_in or caller.record is None:
            raise koji.AuthError("Not logged in")
        master = caller.record.master or caller.record.id
        session = self.state.new_session(caller.record.user, caller.record.authtype, master)
        self.state.writes += 1
        return session.sinfo()

    # -- calls (kojihub/kojixmlrpc.py ModXMLRPCRequestHandler) -------------------

    def _handle_rpc(self, request: web.Request, method: str, params: tuple[Any, ...]) -> Any:
        writes_before = self.state.writes
        self._caller = _Caller()
        try:
            if method in ("multiCall", "system.multicall"):
                self._caller = self._session_for(request, method)
                result: Any = self._multicall(params)
            else:
                result = self._dispatch(method, params, in_multicall=False, check_session=True)
        except Fault as fault:
            result = fault
        except Exception as exc:
            result = _fault_for(exc)
        self._commit(self._caller, writes_before, isinstance(result, Fault))
        self._caller = _Caller()
        return result

    def _multicall(self, params: tuple[Any, ...]) -> list[Any]:
        """ModXMLRPCRequestHandler.multiCall: per-call results, faults as structs."""
        args, opts = koji.decode_args(*params)
        calls = args[0] if args else opts.get("calls", [])
        self.calls.append(CallRecord("multiCall", (len(calls),), {}, self._user_name()))
        results: list[Any] = []
        for call in calls:
            try:
                result = self._dispatch(call["methodName"], call["params"], True, False)
            except Fault as fault:
                results.append({"faultCode": fault.faultCode, "faultString": fault.faultString})
            except Exception as exc:
                results.append(
                    {
                        "faultCode": getattr(exc, "faultCode", 1),
                        "faultString": ", ".join(str(a) for a in exc.args),
                        "traceback": traceback.format_exception(type(exc), exc, exc.__traceback__),
                    }
                )
            else:
                results.append([result])
        return results

    def _dispatch(self, method: str, params: Any, in_multicall: bool, check_session: bool) -> Any:
        func = self._methods.get(method)
        if func is None:
            raise koji.GenericError(f"Invalid method: {method}")
        if check_session:
            self._caller = self._session_for(self._current_request, method)  # type: ignore[arg-type]
        args, opts = koji.decode_args(*params)
        self.calls.append(
            CallRecord(method, tuple(args), dict(opts), self._user_name(), in_multicall)
        )
        inj = self._take_injection(method, ("fault",))
        if inj is not None and inj.fault is not None:
            raise Fault(*inj.fault)
        about = (
            args[0]
            if args
            else next((opts[k] for k in ("taskID", "taskId", "task_id") if k in opts), None)
        )
        if isinstance(about, int) and (method, about) in self._task_faults:
            raise Fault(*self._task_faults[(method, about)])
        self.api.session = self._caller.record if self._caller.logged_in else None
        try:
            return koji.util.call_with_argcheck(func, args, opts)
        finally:
            self.api.session = None

    def _user_name(self) -> str | None:
        caller = self._caller
        return caller.record.user.name if caller.logged_in and caller.record else None

    # -- uploads --------------------------------------------------------------

    def _handle_upload(self, request: web.Request, body: bytes) -> Any:
        """kojihub/kojihub.py handle_upload (context.method is None for the session check)."""
        writes_before = self.state.writes
        try:
            self._caller = self._session_for(request, None)
            if not self._caller.logged_in:
                raise koji.ActionNotAllowed("you must be logged-in to upload a file")
            query = urllib.parse.parse_qs(request.query_string, strict_parsing=True)
            name = query["filename"][0]
            path = query.get("filepath", [""])[0]
            verify = query.get("fileverify", [""])[0]
            overwrite = query.get("overwrite", [""])[0]
            offset = int(query.get("offset", ["0"])[0])
            volume = query.get("volume", ["DEFAULT"])[0]
            self.calls.append(
                CallRecord("rawUpload", (path, name, offset, len(body)), {}, self._user_name())
            )
            target = self.upload_path(path, name, create=True, volume=volume)
            result = uploads.write_upload(target, body, offset, verify, overwrite)
            # files only, no DML: an upload never commits the session's callnum
            self._commit(self._caller, writes_before, False)
            return result
        except Fault as fault:
            return fault
        except Exception as exc:
            return _fault_for(exc)
        finally:
            self._caller = _Caller()

    # -- files and web --------------------------------------------------------

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        """/kojifiles -> topdir; symlinks inside the top directory are followed."""
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


def _error_reply(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    """kojihub/kojixmlrpc.py error_reply: text/plain with the Koji-Version header."""
    return web.Response(
        status=status,
        body=text.encode(),
        content_type="text/plain",
        headers={"Koji-Version": KOJI_VERSION, **(headers or {})},
    )


def _fault_for(exc: BaseException) -> Fault:
    """kojixmlrpc ModXMLRPCRequestHandler._log_exception (no KojiDebug/KojiTraceback)."""
    if isinstance(exc, Fault):
        return exc
    code = getattr(type(exc), "faultCode", 1)
    if isinstance(exc, koji.GenericError):
        return Fault(code, str(exc))
    return Fault(code, "%s: %s" % (type(exc), exc))


__all__ = ["CallRecord", "FakeHub", "Session"]
