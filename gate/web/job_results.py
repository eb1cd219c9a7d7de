"""``POST /api/jobs/<run>/result``: where an external CI system posts a run's result.

The route is outside the API's bearer-token check (like the review systems'
webhooks): the caller proves itself with the run's own token, sent as
``Authorization: Bearer <token>`` and compared, as a SHA-256 hash, with
:func:`hmac.compare_digest` against the one hash the gate keeps.  The token is
good for one result: once the run ended (a result, its timeout, a reset) every
later post is refused with 409 and changes nothing.  Neither the token nor
the header is ever logged.

=====  ==============================================================
200    the result is recorded (the job ends with it)
400    the body does not fit :class:`~gate.web.bodies.JobResultBody`
401    no ``Authorization: Bearer`` token
403    the token is not this run's
404    no such run
408    the body did not arrive within ``listen.body_timeout``
409    the run ended already (result posted, timed out, cancelled)
413    the body is larger than 64 KiB
=====  ==============================================================
"""

from __future__ import annotations

import asyncio
import hmac
import logging

from aiohttp import web
from sqlalchemy.engine import Engine

from gate.jobs.external import ENDED, RESULT_TOPIC, ExternalRuns, token_hash
from gate.plumbing import Plumbing
from gate.web.bodies import MAX_ID, BadBody, JobResultBody, parse_body

log = logging.getLogger(__name__)

#: every route of external job runs lives under this prefix (outside API token auth)
PREFIX = "/api/jobs/"
#: the most a result may weigh
MAX_BODY = 64 * 1024


def _answer(status: int, message: str, **fields: object) -> web.Response:
    if status >= 400:
        return web.json_response({"error": message}, status=status)
    return web.json_response({"message": message, **fields}, status=status)


def _run_id(text: str) -> int | None:
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None


async def post_result(
    request: web.Request, engine: Engine, plumbing: Plumbing, body_timeout: float = 30.0
) -> web.Response:
    run_id = _run_id(request.match_info["id"])
    if run_id is None:
        return _answer(404, "no such run")
    header = request.headers.get("Authorization", "")
    token = header[len("Bearer ") :].strip() if header.startswith("Bearer ") else ""
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _answer(413, f"body larger than {MAX_BODY} bytes")
    try:
        async with asyncio.timeout(body_timeout):
            raw = await request.read()
    except TimeoutError:
        response = _answer(408, f"request body not received within {body_timeout:g}s")
        response.force_close()  # the rest of the body may still be on its way
        return response
    if len(raw) > MAX_BODY:
        return _answer(413, f"body larger than {MAX_BODY} bytes")
    runs = ExternalRuns(engine)
    row = runs.row(run_id)
    if row is None:
        return _answer(404, f"no run {run_id}")
    if not token:
        log.warning("result for run %s from %s refused: no token", run_id, request.remote)
        return _answer(401, "the run's token is required: Authorization: Bearer <token>")
    if not hmac.compare_digest(token_hash(token).encode(), row.token_hash.encode()):
        log.warning("result for run %s from %s refused: wrong token", run_id, request.remote)
        return _answer(403, f"that is not run {run_id}'s token")
    try:
        body = parse_body(raw, JobResultBody)
    except BadBody as exc:
        return _answer(400, str(exc))
    if row.state in ENDED:
        return _late(run_id, row.state, request)
    state = "passed" if body.passed else "failed"
    summary = body.summary or ("passed" if body.passed else "failed")
    if not runs.finish(run_id, state, summary, log_url=body.log_url, details=tuple(body.details)):
        current = runs.row(run_id)
        return _late(run_id, current.state if current else "ended", request)
    log.info("external run %s (item %s, job %s): %s", run_id, row.item_id, row.job, state)
    plumbing.emit(RESULT_TOPIC, run=run_id, item=row.item_id, job=row.job, state=state)
    plumbing.wake()
    return _answer(200, f"run {run_id}: {state}", run=run_id, state=state)


def _late(run_id: int, state: str, request: web.Request) -> web.Response:
    log.warning(
        "result for run %s from %s refused: the run ended already (%s)",
        run_id,
        request.remote,
        state,
    )
    return _answer(
        409,
        f"run {run_id} ended already ({state}); a token is good for one result, "
        "and this one changed nothing",
    )
