"""``/api/openapi.json`` describes every route, and the live app keeps to it (schemathesis)."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest
from aiohttp import web

from gate.demo_world import World
from gate.web.openapi import OPERATIONS, openapi
from tests.served import ClientFactory, served

TOKEN = "s3cret-token-0123456789"
#: schemathesis' checks: no 5xx, only documented statuses and content types, bodies as described
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance"
)


def test_every_json_route_of_the_app_is_described(tmp_path: Path) -> None:
    described = {(op.method.upper(), op.path) for op in OPERATIONS}
    doc = openapi()
    assert {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops} == described
    assert doc["openapi"].startswith("3.")
    # the request bodies are the strict models: unknown keys are refused
    schemas = doc["components"]["schemas"]
    assert schemas["ProposeChange"]["additionalProperties"] is False
    assert schemas["Rollback"]["properties"]["to"]["minimum"] == 1


async def test_openapi_lists_the_apps_own_routes(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with served(world, aiohttp_client, start=False) as (_, client):
        routes = {
            (route.method, route.resource.canonical)
            for route in client.app.router.routes()
            if route.resource is not None
            and route.method in ("GET", "POST")
            and not isinstance(route.resource, web.StaticResource)
            and route.resource.canonical.startswith(("/api/", "/healthz", "/metrics"))
        }
        resp = await client.get("/api/openapi.json")
        assert resp.status == 200
        doc = await resp.json()
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert routes - {("GET", "/api/openapi.json")} <= described


@pytest.mark.slow
async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    world: World, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is in the test extras"
    async with served(world, aiohttp_client, auth={"api_tokens": [TOKEN]}) as (gate, client):
        schema_url = str(client.make_url("/api/openapi.json"))
        proc = await asyncio.create_subprocess_exec(
            st,
            "run",
            schema_url,
            "--checks",
            CHECKS,
            "--max-examples",
            "5",
            "--seed",
            "1",
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--request-timeout",
            "20",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--no-color",
            "--exclude-path",
            "/api/events",  # a stream: it ends when the client goes
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        report = out.decode(errors="replace")
        # what it proposed and approved is processed without an internal error
        await gate.wait_idle(120)
    assert proc.returncode == 0, report
