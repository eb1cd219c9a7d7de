"""The request bodies of the write API, one strict model per endpoint.

Every body is untrusted: types are strict (``"false"`` is not a boolean,
``true`` is not a generation number), numbers are bounded, strings have a
length and, where they name something, a shape; unknown keys are refused.  A
body that does not fit answers 400 naming the field (:func:`parse_body`).
JSON nested deeper than :data:`MAX_DEPTH` is refused before any model sees it.
These models are also what an OpenAPI description of the API is built from.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationError,
)

from gate.refs import FULL_SHA, InvalidRef, check_ref

#: deepest JSON nesting accepted (the API's own bodies are flat)
MAX_DEPTH = 16
#: largest id or generation number: what SQLite and PostgreSQL's bigint hold
MAX_ID = 2**63 - 1
#: a project, repository or queue name (the config's NAME rule)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"


def _ref(value: str) -> str:
    try:
        return check_ref(value)
    except InvalidRef as exc:
        raise ValueError(str(exc)) from None


Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=200)]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_ref)]
Sha = Annotated[str, StringConstraints(pattern=f"^(?:{FULL_SHA.pattern})$")]
Text = Annotated[str, StringConstraints(max_length=2000)]
Title = Annotated[str, StringConstraints(max_length=500)]
Generation = Annotated[StrictInt, Field(ge=1, le=MAX_ID)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ProposeChange(Body):
    """``POST /api/changes``: a ref or commit of a project becomes a change."""

    project: Name
    #: a full commit sha, or a full ref name under refs/ (never an option)
    ref: Ref
    title: Title = ""
    #: approve it at once (it enters its queue)
    approve: StrictBool = False


class RefUpdated(Body):
    """``POST /api/ref-updated``: a project's branch moved (look now, not at the next poll)."""

    project: Name
    old: Sha | None = None
    new: Sha | None = None
    #: make a post item of the head even if it was seen (retry a failed direct push)
    force: StrictBool = False


def _http_url(value: str) -> str:
    if not value.startswith(("https://", "http://")) or any(c.isspace() for c in value):
        raise ValueError("must be an http(s) URL")
    return value


HttpUrl = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_http_url)]


class JobResultBody(Body):
    """``POST /api/jobs/{id}/result``: an external CI system's result of one run
    (authenticated by the run's token: ``Authorization: Bearer <token>``)."""

    #: whether the job passed
    passed: StrictBool
    #: where a person reads the run's log (shown with the job)
    log_url: HttpUrl | None = None
    #: one sentence, shown with the job
    summary: Text = ""
    #: one line per finding (at most 50)
    details: Annotated[list[Text], Field(max_length=50)] = []


class NoBody(Body):
    """Endpoints that take no parameters (``{}`` or no body at all)."""


class WithReason(Body):
    """Admin actions: dequeue, promote, republish."""

    reason: Text = ""


class Rollback(Body):
    """``POST /api/repos/{name}/rollback``."""

    #: the generation whose content is published again, as a new generation
    to: Generation
    reason: Text = ""


class BadBody(Exception):
    """The body is not acceptable; the message names what is wrong (a 400)."""


M = TypeVar("M", bound=Body)


def parse_body(raw: bytes, model: type[M]) -> M:
    """Decode ``raw`` (empty: ``{}``) as JSON and validate it with ``model``."""
    data = decode_json(raw) if raw.strip() else {}
    if not isinstance(data, dict):
        raise BadBody("body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadBody("; ".join(_describe(error) for error in exc.errors())) from None


def decode_json(raw: bytes) -> Any:
    """JSON with a bounded nesting depth; :class:`BadBody` for anything else."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise BadBody(f"body is nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadBody(f"body is not valid JSON: {exc}") from None
    if _depth(data) > MAX_DEPTH:
        raise BadBody(f"body is nested deeper than {MAX_DEPTH} levels")
    return data


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _describe(error: Any) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "body"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    return f"{field}: {message}"
