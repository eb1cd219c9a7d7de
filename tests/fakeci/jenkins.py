"""Jenkins' remote build trigger, queue and stop, as Jenkins' source answers them.

* ``POST /job/<name>/buildWithParameters`` -- ``ParameterizedJobMixIn.doBuildWithParameters``
  and ``ParametersDefinitionProperty._doBuild``: the job's "Trigger builds remotely"
  token is checked first (``BuildAuthorizationToken.checkPermission``: a wrong or
  missing token without build permission is a 403); parameters come from the form
  (or the query); the item is queued and the answer is ``201 Created`` with
  ``Location: <root>/queue/item/<n>/``, or ``303 See Other`` to the queued item when
  an identical request is already in the queue (``!scheduleResult.isCreated()``).
* CSRF (``hudson.security.csrf.CrumbFilter``): a POST needs the crumb header from
  ``GET /crumbIssuer/api/json`` (``{"crumb": ..., "crumbRequestField": "Jenkins-Crumb"}``)
  unless it is authenticated with an API token (HTTP basic, Jenkins >= 2.96), else
  ``403 No valid crumb was included in the request``.
* ``POST /queue/cancelItem?id=<n>`` -- ``Queue.doCancelItem``: 204 when cancelled,
  404 ``Provided id (<n>) not found`` once the item left the queue.
* ``GET /queue/item/<n>/api/json`` -- a left item names its build:
  ``"executable": {"number": ..., "url": "<root>/job/<name>/<number>/"}``.
* ``POST /job/<name>/<number>/stop`` -- ``Run.doStop``: aborts the build and
  redirects (302) to the build page.
"""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from tests.fakeci import FakeCI, Outcome, Received

CRUMB = "0f23a062e0b9b9d13295e26bc8c8e206"


class FakeJenkins(FakeCI):
    def __init__(
        self,
        outcome: Outcome = "pass",
        delay: float = 0.0,
        *,
        job: str = "packstack",
        user: str = "rpmgate",
        api_token: str = "11e5b5c2f7a0b8d9e6c4a3b2d1f0e9a8b7",
        build_token: str | None = None,
        start_builds: bool = False,
    ) -> None:
        super().__init__(outcome, delay)
        self.job, self.user, self.api_token = job, user, api_token
        self.build_token = build_token
        #: items leave the queue at once and become builds (cancelItem then answers 404)
        self.start_builds = start_builds
        #: queue item number -> its parameters, while queued
        self.queue: dict[int, dict[str, str]] = {}
        #: queue item number -> build number, once it left the queue
        self.builds: dict[int, int] = {}
        self.stopped: list[int] = []
        self.cancelled_items: list[int] = []
        self._next_item = 100

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/crumbIssuer/api/json", self.crumb),
            web.post("/job/{name}/buildWithParameters", self.build_with_parameters),
            web.post("/queue/cancelItem", self.cancel_item),
            web.get("/queue/item/{n}/api/json", self.queue_item),
            web.post("/job/{name}/{number}/stop", self.stop_build),
        ]

    def _api_token_user(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, token = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == self.user and token == self.api_token

    def _csrf_refused(self, request: web.Request) -> web.Response | None:
        if self._api_token_user(request) or request.headers.get("Jenkins-Crumb") == CRUMB:
            return None
        return web.Response(status=403, text="No valid crumb was included in the request")

    async def crumb(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "_class": "hudson.security.csrf.DefaultCrumbIssuer",
                "crumb": CRUMB,
                "crumbRequestField": "Jenkins-Crumb",
            }
        )

    async def build_with_parameters(self, request: web.Request) -> web.Response:
        refused = self._csrf_refused(request)
        if refused is not None:
            return refused
        if request.match_info["name"] != self.job:
            return web.Response(status=404, text="Not Found")
        authorized = self._api_token_user(request)
        if self.build_token is not None and not authorized:
            if request.query.get("token") != self.build_token:
                return web.Response(status=403, text="Invalid token provided")
        elif self.build_token is None and not authorized:
            return web.Response(status=403, text="anonymous is missing the Job/Build permission")
        form = await request.post()
        params = {str(k): str(v) for k, v in form.items()}
        params.update({k: v for k, v in request.query.items() if k not in ("token", "delay")})
        for number, queued in self.queue.items():
            if queued == params:  # an identical item is queued: Jenkins merges them
                return _redirect(303, f"{self.url}/queue/item/{number}/")
        self._next_item += 1
        number = self._next_item
        self.queue[number] = params
        if self.start_builds:
            del self.queue[number]
            self.builds[number] = len(self.builds) + 1
        self.accepted(Received(number, params))
        return _redirect(201, f"{self.url}/queue/item/{number}/")

    async def cancel_item(self, request: web.Request) -> web.Response:
        refused = self._csrf_refused(request)
        if refused is not None:
            return refused
        number = int(request.query.get("id", "0"))
        if number not in self.queue:
            return web.Response(status=404, text=f"Provided id ({number}) not found")
        del self.queue[number]
        self.cancelled_items.append(number)
        self._mark_cancelled(number)
        return web.Response(status=204)

    async def queue_item(self, request: web.Request) -> web.Response:
        number = int(request.match_info["n"])
        doc: dict[str, Any] = {"_class": "hudson.model.Queue$WaitingItem", "id": number}
        if number in self.builds:
            build = self.builds[number]
            doc = {
                "_class": "hudson.model.Queue$LeftItem",
                "id": number,
                "cancelled": False,
                "executable": {
                    "_class": "hudson.model.FreeStyleBuild",
                    "number": build,
                    "url": f"{self.url}/job/{self.job}/{build}/",
                },
            }
        elif number not in self.queue:
            return web.Response(status=404, text="Not Found")
        return web.json_response(doc)

    async def stop_build(self, request: web.Request) -> web.Response:
        refused = self._csrf_refused(request)
        if refused is not None:
            return refused
        build = int(request.match_info["number"])
        self.stopped.append(build)
        for item, number in self.builds.items():
            if number == build:
                self._mark_cancelled(item)
        return _redirect(302, f"{self.url}/job/{self.job}/{build}/")

    def _mark_cancelled(self, item: int) -> None:
        for received in self.received:
            if received.remote_id == item:
                received.cancelled = True


def _redirect(status: int, location: str) -> web.Response:
    return web.Response(status=status, headers={"Location": location})
