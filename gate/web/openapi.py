"""``GET /api/openapi.json``: the API described as OpenAPI 3.1, from the typed models.

Nothing here is a hand-written schema: request bodies are the strict models of
:mod:`gate.web.bodies`, responses the models of :mod:`gate.web.documents` (and
:class:`gate.health.HealthReport`), all turned into JSON Schema by pydantic.
This module only says which model goes with which route and status, in one
table (:data:`OPERATIONS`); ``tests/test_openapi.py`` checks that every route
of the app is in it and runs schemathesis against the live app.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gate.reload import ReloadDoc
from gate.web import documents as d
from gate.web.bodies import MAX_ID, NAME_PATTERN, NoBody, ProposeChange, RefUpdated, Rollback
from gate.web.bodies import WithReason as ReasonBody
from gate.web.generations import GenerationDoc

Method = Literal["get", "post"]

#: what every write answers besides its success
_WRITE_ERRORS: dict[int, str] = {
    400: "the body does not fit its model (the message names the field)",
    401: "a valid bearer token is required (when `auth.api_tokens` is set)",
    404: "what the path or body names does not exist",
    408: "the body did not arrive within `listen.body_timeout`",
    413: "the body is larger than 1 MiB",
    503: "temporarily unavailable (the database); retry after `Retry-After`",
}


@dataclass(frozen=True)
class Operation:
    method: Method
    path: str
    summary: str
    tag: str
    ok: type[BaseModel] | None
    body: type[BaseModel] | None = None
    #: extra statuses: code -> (description, model or None for plain text)
    errors: dict[int, str] = field(default_factory=dict)
    ok_status: int = 200
    #: a non-JSON answer: its content type
    text: str | None = None
    #: error statuses answered with the ``ok`` model (not :class:`Error`)
    same_body: frozenset[int] = frozenset()


def _write(path: str, summary: str, tag: str, body: type[BaseModel]) -> Operation:
    return Operation(
        "post", path, summary, tag, d.Accepted, body, errors=_WRITE_ERRORS, ok_status=202
    )


OPERATIONS: tuple[Operation, ...] = (
    Operation("get", "/api/status", "Every queue with its items and recent results", "read",
              d.StatusDoc, errors={304: "If-None-Match names the current ETag"}),
    Operation("get", "/api/events", "The gate's events as Server-Sent Events (Last-Event-ID "
              "resumes)", "read", None, errors={503: "too many event streams"},
              text="text/event-stream; charset=utf-8"),
    Operation("get", "/api/repos/{name}", "A repository: current generation and history",
              "read", d.RepoDoc, errors={404: "unknown repository"}),
    Operation("get", "/api/repos/{name}/generations/{number}", "A generation: its manifest "
              "and source stamp (project and commit of every package's build)", "read",
              GenerationDoc, errors={404: "unknown repository or generation"}),
    Operation("get", "/api/deliveries/{id}", "What became of a stored request", "read",
              d.DeliveryDoc, errors={404: "no such delivery"}),
    Operation("get", "/api/changes/{id}", "A change and its items", "read", d.ChangeWithItems,
              errors={404: "no such change"}),
    Operation("get", "/api/items/{id}", "An item: where it is, its builds, jobs and outcome",
              "read", d.ItemDoc, errors={404: "no such item"}),
    _write("/api/changes", "Propose a change (a ref or commit of a project)", "changes",
           ProposeChange),
    _write("/api/changes/{id}/approve", "Approve a change: it enters its queue", "changes",
           NoBody),
    _write("/api/changes/{id}/enqueue", "Enqueue an approved change again", "changes", NoBody),
    _write("/api/ref-updated", "A project's branch moved: look now", "changes", RefUpdated),
    _write("/api/items/{id}/dequeue", "Remove an item from its queue", "admin", ReasonBody),
    _write("/api/items/{id}/promote", "Move an item to the head of its queue", "admin",
           ReasonBody),
    _write("/api/items/{id}/publish", "Publish a blocked post item past its checks", "admin",
           ReasonBody),
    _write("/api/items/{id}/retry", "Build and test a blocked post item again", "admin",
           ReasonBody),
    _write("/api/repos/{name}/republish", "Publish the current content as a new generation",
           "admin", ReasonBody),
    _write("/api/repos/{name}/rollback", "Publish an older generation's content", "admin",
           Rollback),
    Operation("post", "/api/admin/reload", "Read the configuration again, check it and apply "
              "it (docs/runbook.md#reloading-the-configuration)", "admin", ReloadDoc, NoBody,
              errors={400: _WRITE_ERRORS[400], 401: _WRITE_ERRORS[401],
                      408: _WRITE_ERRORS[408], 413: _WRITE_ERRORS[413],
                      409: "refused: it conflicts with the running gate (queued items, keys "
                      "only a restart applies); the findings say which",
                      422: "refused: the configuration is invalid; the findings say why",
                      404: "nothing to reload: the gate was not started from a file"},
              same_body=frozenset({409, 422})),
    Operation("get", "/healthz", "Liveness and readiness, every check named", "operations",
              d.HealthDoc, errors={503: "a check failed (same document)"}),
    Operation("get", "/metrics", "Prometheus metrics (docs/metrics.md)", "operations", None,
              text="text/plain; version=0.0.4; charset=utf-8"),
    Operation("get", "/repos/{name}/{name}.repo", "A dnf .repo file for the published "
              "repository", "files", None, errors={404: "unknown repository"},
              text="text/plain; charset=utf-8"),
)  # fmt: skip

_PARAMETERS: dict[str, dict[str, Any]] = {
    "id": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    "number": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    "name": {"type": "string", "pattern": NAME_PATTERN, "maxLength": 200},
}


@cache
def openapi(version: str = "0.1.0") -> dict[str, Any]:
    """The OpenAPI document (built once: it depends on the code only)."""
    models: list[type[BaseModel]] = [d.Error]
    for op in OPERATIONS:
        models += [m for m in (op.ok, op.body) if m is not None]
    keyed = [
        (m, "validation" if m in _bodies() else "serialization") for m in dict.fromkeys(models)
    ]
    refs, defs = models_json_schema(keyed, ref_template="#/components/schemas/{model}")  # type: ignore[arg-type]
    schemas = defs.get("$defs", {})

    def ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return dict(refs[(model, mode)])  # type: ignore[index]

    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        responses: dict[str, Any] = {}
        if op.text is not None:
            responses[str(op.ok_status)] = {
                "description": op.summary,
                "content": {op.text.split(";")[0]: {"schema": {"type": "string"}}},
            }
        else:
            assert op.ok is not None
            ok = {"description": op.summary, "content": _json(ref(op.ok, "serialization"))}
            responses[str(op.ok_status)] = ok
            if op.ok_status == 202:
                responses["200"] = {
                    "description": "a repeated Idempotency-Key: the delivery stored first",
                    "content": _json(ref(op.ok, "serialization")),
                }
        for code, why in op.errors.items():
            if code == 304:  # not modified: no body
                responses[str(code)] = {"description": why}
                continue
            model = op.ok if op.path == "/healthz" or code in op.same_body else d.Error
            assert model is not None
            responses[str(code)] = {
                "description": why,
                "content": _json(ref(model, "serialization")),
            }
        operation: dict[str, Any] = {
            "summary": op.summary,
            "tags": [op.tag],
            "operationId": _operation_id(op),
            "responses": responses,
        }
        names = re.findall(r"\{(\w+)\}", op.path)
        if names:
            operation["parameters"] = [
                {"name": n, "in": "path", "required": True, "schema": _PARAMETERS[n]}
                for n in dict.fromkeys(names)
            ]
        if op.body is not None:
            operation["requestBody"] = {
                "required": op.body is not NoBody,
                "content": _json(ref(op.body, "validation")),
            }
            operation["security"] = [{"bearer": []}]
        if op.body is not None and op.ok_status == 202:  # a stored delivery
            operation["parameters"] = [
                *operation.get("parameters", []),
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "a repeated key answers with the delivery stored first",
                    "schema": {"type": "string", "maxLength": 200},
                },
            ]
        paths.setdefault(op.path, {})[op.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rpmgate",
            "version": version,
            "description": "The gate's HTTP API (docs/api.md). Writes store a delivery and "
            "answer 202; poll the delivery for the outcome.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _bodies() -> set[type[BaseModel]]:
    return {op.body for op in OPERATIONS if op.body is not None}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation_id(op: Operation) -> str:
    words = re.findall(r"\w+", op.path)
    return "_".join([op.method, *words])
