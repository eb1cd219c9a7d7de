"""Hostile input against the real gate: refs that look like options, specs that hunt for
secrets, loose JSON types, huge ids, deep JSON, long file names, slow clients.

Real git, real rpmbuild (sandboxed as the gate runs it), real createrepo_c, SQLite.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import func, select

from gate.config import ConfigError, parse_config
from gate.daemon import Gate
from gate.demo_world import PackageSpec, World
from gate.merger import GitError, Merger
from gate.refs import InvalidRef
from gate.web.app import make_app
from gate.web.server import Limits, Served, serve
from repo_state.db import session
from repo_state.models import ChangeRow, Delivery, GenerationRow
from tests.conftest import NOVA_1201
from tests.served import ClientFactory, served
from tests.test_api_fuzz import FORGE_SOURCES

pytestmark = pytest.mark.slow


#: what an attacker tries to run through a ref; the marker file says it ran
HOSTILE_REFS = (
    "--upload-pack=touch {marker}; false",
    "-oProxyCommand=touch {marker}",
    "--exec=touch {marker}",
    "-",
    "HEAD --upload-pack=touch {marker}",
)


def hostile_refs(tmp_path: Path) -> list[str]:
    return [ref.format(marker=tmp_path / "pwned") for ref in HOSTILE_REFS]


def deliveries(gate: Gate) -> int:
    with session(gate.engine) as s:
        return s.exec(select(func.count()).select_from(Delivery)).one()


async def settled(gate: Gate, delivery: int) -> Delivery:
    await gate.wait_idle(120)
    with session(gate.engine) as s:
        row = s.get(Delivery, delivery)
    assert row is not None and row.processed_at is not None
    return row


# -- refs and shas are data ------------------------------------------------------------------
async def test_a_ref_that_looks_like_an_option_is_refused_at_the_api_and_runs_nothing(
    world: World, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    async with served(world, aiohttp_client) as (gate, client):
        for ref in hostile_refs(tmp_path):
            resp = await client.post(
                "/api/changes", json={"project": "nova", "ref": ref, "approve": True}
            )
            assert resp.status == 400, ref
            assert (await resp.json())["error"].startswith("ref: "), ref
        for field in ("new", "old"):
            resp = await client.post(
                "/api/ref-updated", json={"project": "nova", field: "-oProxyCommand=x"}
            )
            assert resp.status == 400
            assert (await resp.json())["error"].startswith(f"{field}: ")
        assert deliveries(gate) == 0
    assert not (tmp_path / "pwned").exists()


async def test_a_stored_hostile_ref_is_refused_when_approval_re_reads_it(
    world: World, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    """A change row written before refs were checked (or by a buggy driver) never reaches git."""
    async with served(world, aiohttp_client) as (gate, client):
        ids = []
        with session(gate.engine) as s:
            for ref in hostile_refs(tmp_path):
                row = ChangeRow(project="nova", ref=ref, sha="0" * 40, title="hostile")
                s.add(row)
                s.commit()
                s.refresh(row)
                ids.append(row.id)
        for change_id in ids:
            resp = await client.post(f"/api/changes/{change_id}/approve", json={})
            assert resp.status == 202
            row = await settled(gate, (await resp.json())["delivery"])
            assert row.error is not None and "is not a commit sha or a ref name" in row.error
    assert not (tmp_path / "pwned").exists()


async def test_the_merger_passes_values_after_end_of_options(tmp_path: Path, world: World) -> None:
    """Even a value that got past the checks is a refspec to git, never an option."""
    merger = Merger(tmp_path / "clones")
    url = str(world.remote("nova"))
    git_dir = await merger.ensure_clone("nova", url)
    for ref in hostile_refs(tmp_path):
        with pytest.raises(InvalidRef):
            await merger.resolve("nova", url, ref)
        with pytest.raises(GitError):  # the refspec does not exist; nothing ran
            await merger._fetch(git_dir, ref, what="test")
        with pytest.raises(ValueError):
            await merger.speculative_merge("nova", url, ref, [])
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("branch", ["--upload-pack=touch /tmp/x", "-x", "main..x", "a b"])
def test_a_branch_name_that_is_not_a_branch_is_refused_by_the_config(
    world: World, branch: str
) -> None:
    doc = world.config()
    doc["projects"]["nova"]["branch"] = branch
    with pytest.raises(ConfigError, match=r"projects\.nova\.branch: .*not a valid branch name"):
        parse_config(doc)


def test_a_repository_url_that_is_an_option_is_refused_by_the_config(world: World) -> None:
    doc = world.config()
    doc["projects"]["nova"]["git"] = "--upload-pack=touch /tmp/x"
    with pytest.raises(ConfigError, match=r"projects\.nova\.git: "):
        parse_config(doc)


# -- builds see nothing of the daemon ----------------------------------------------------------
SECRET = "s3cret-token-9f1d2c7be0a64e21"


@dataclasses.dataclass(frozen=True)
class SecretHunter(PackageSpec):
    """A spec that tries every way to print the daemon's secrets into its RPM and its log."""

    config_path: str = ""

    def render(self) -> str:
        base = super().render()
        hunt = (
            'echo "BUILD-RAN-FOR-%{name}"\n'
            'echo "env says [$RPMGATE_TEST_SECRET]"\n'
            "env\n"
            "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' || true\n"
            f"cat {self.config_path} {self.config_path}.env 2>&1 || true\n"
            "id\n"
        )
        summary = (
            f'Summary: leak [%(echo "$RPMGATE_TEST_SECRET")] '
            f"[%(cat {self.config_path} 2>/dev/null | tr -d '\\n')] "
            "[%(cat /proc/1/environ 2>/dev/null | tr '\\0' ' ')]"
        )
        return base.replace("Summary: The nova package (rpmgate demo)", summary).replace(
            "echo building %{name} %{version}\n", hunt
        )


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        if path.suffix == ".gz":
            data += gzip.decompress(data)
        if needle in data:
            found.append(path)
    return found


@pytest.fixture
def readable_by_anyone() -> Iterator[tuple[Path, Path]]:
    """(a config directory under /etc, a state directory): both world-readable, as a
    careless host would leave them, so only the sandbox keeps a build from reading them
    (pytest's tmp_path is private to root: there a plain ``cat`` fails anyway)."""
    if os.geteuid() != 0:
        pytest.skip("the suite runs as root: only a root daemon switches to a build user")
    if shutil.which("bwrap") is None:
        pytest.skip("bwrap is not installed (package bubblewrap)")
    etc = Path(tempfile.mkdtemp(prefix="rpmgate-test-", dir="/etc"))
    exposed = Path(tempfile.mkdtemp(prefix="rpmgate-exposed-"))
    try:
        for directory in (etc, exposed):
            directory.chmod(0o755)
        yield etc, exposed / "state"
    finally:
        shutil.rmtree(etc)
        shutil.rmtree(exposed)


async def test_a_spec_cannot_print_the_daemons_secrets_into_the_repository_or_a_log(
    world: World,
    aiohttp_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
    readable_by_anyone: tuple[Path, Path],
) -> None:
    monkeypatch.setenv("RPMGATE_TEST_SECRET", SECRET)
    etc, state = readable_by_anyone
    config_path = etc / "rpmgate.yaml"
    env_path = etc / "rpmgate.yaml.env"
    env_path.write_text(f"RPMGATE_TEST_SECRET={SECRET}\n")
    hunter = SecretHunter("nova", "12.0.1", lookaside=True, config_path=str(config_path))
    token = {"Authorization": f"Bearer {SECRET}"}
    auth = {"api_tokens": [{"name": "releng", "token": SECRET}]}
    async with served(
        world,
        aiohttp_client,
        config_file=config_path,
        state_dir=str(state),
        auth=auth,
        sandbox={"bubblewrap": "required"},
    ) as (gate, client):
        for path in (config_path, env_path):
            path.chmod(0o644)
        # the control: the build user reads both files when nothing hides them
        plain = subprocess.run(
            ["runuser", "-u", "nobody", "--", "cat", str(config_path), str(env_path)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert plain.stdout.count(SECRET) == 2
        ref = world.propose("nova", hunter, "hunt for secrets")
        resp = await client.post(
            "/api/changes", headers=token, json={"project": "nova", "ref": ref, "approve": True}
        )
        assert resp.status == 202
        await gate.wait_idle(180)
        change = await (await client.get("/api/changes/1")).json()
        assert change["state"] == "merged", change
        published = gate.publishers["liberty"].state()

    nova = next(
        a
        for e in published.builds.values()
        for a in e.artifacts
        if a.name == "nova" and a.arch != "src"
    )
    assert nova.version == "12.0.1"
    # the build ran its hunt: the %build lines are in the log, %(…) expanded to nothing
    logs = [p.read_text(errors="replace") for p in state.rglob("*.log")]
    hunt = next((log for log in logs if "BUILD-RAN-FOR-nova" in log), None)
    assert hunt is not None, [log[:300] for log in logs]
    assert "env says []" in hunt
    assert f"cat: {config_path}: No such file or directory" in hunt
    nobody = pwd.getpwnam("nobody")
    assert f"uid={nobody.pw_uid}(nobody) gid={nobody.pw_gid}(" in hunt
    primary = _files_holding(world.root / "repos", b"leak [] []")
    assert primary, "the published metadata should carry the expanded (empty) Summary"
    # and nothing anywhere holds the secret: repository, RPMs, build and job logs, srpms
    assert _files_holding(world.root / "repos", SECRET.encode()) == []
    assert _files_holding(state / "builds", SECRET.encode()) == []
    assert _files_holding(state / "logs", SECRET.encode()) == []


# -- request bodies are typed ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/repos/liberty/rollback", {"to": True}, "to"),
        ("/api/repos/liberty/rollback", {"to": "1"}, "to"),
        ("/api/repos/liberty/rollback", {"to": 1.0}, "to"),
        ("/api/repos/liberty/rollback", {"to": 0}, "to"),
        ("/api/repos/liberty/rollback", {"to": 2**64}, "to"),
        (
            "/api/changes",
            {"project": "nova", "ref": "refs/heads/main", "approve": "false"},
            "approve",
        ),
        ("/api/changes", {"project": "nova", "ref": "refs/heads/main", "approve": 0}, "approve"),
        ("/api/changes", {"project": {}, "ref": "refs/heads/main"}, "project"),
        ("/api/changes", {"project": "nova", "ref": "refs/heads/main", "title": ["x"]}, "title"),
        ("/api/changes", {"project": "nova", "ref": "refs/heads/main", "surprise": 1}, "surprise"),
        ("/api/ref-updated", {"project": "nova", "force": "no"}, "force"),
        ("/api/ref-updated", {"project": {}}, "project"),
        ("/api/ref-updated", {"project": "nova", "new": "abc"}, "new"),
        ("/api/items/1/dequeue", {"reason": 12}, "reason"),
        ("/api/repos/liberty/republish", {"reason": None}, "reason"),
    ],
)
async def test_loose_json_types_get_a_400_naming_the_field(
    world: World, aiohttp_client: ClientFactory, path: str, body: dict[str, Any], field: str
) -> None:
    async with served(world, aiohttp_client, start=False) as (gate, client):
        resp = await client.post(path, json=body)
        assert resp.status in (400, 404), await resp.text()
        if resp.status == 404:  # an item that does not exist is looked up first
            assert path.startswith("/api/items/")
            return
        assert (await resp.json())["error"].startswith(f"{field}: ")
        assert deliveries(gate) == 0


async def test_rollback_to_true_does_not_roll_anything_back(
    world: World, aiohttp_client: ClientFactory
) -> None:
    async with served(world, aiohttp_client) as (gate, client):
        before = gate.publishers["liberty"].current()
        resp = await client.post("/api/repos/liberty/rollback", json={"to": True})
        assert resp.status == 400
        await gate.wait_idle(60)
        assert gate.publishers["liberty"].current() == before
        with session(gate.engine) as s:
            kinds = s.exec(select(GenerationRow.kind)).all()
        assert "rollback" not in kinds


@pytest.mark.parametrize(
    "path",
    [
        "/api/changes/99999999999999999999999",
        "/api/changes/9223372036854775808",
        "/api/changes/-1",
        "/api/changes/0",
        "/api/deliveries/99999999999999999999",
        "/api/changes/1e9",
        "/api/changes/%D9%A3",
    ],
)
async def test_ids_out_of_range_or_not_numbers_answer_404(
    world: World, aiohttp_client: ClientFactory, path: str
) -> None:
    async with served(world, aiohttp_client, start=False) as (gate, client):
        assert (await client.get(path)).status == 404
        if path.startswith("/api/changes/"):
            assert (await client.post(path + "/approve", json={})).status == 404
            assert (
                await client.post(path.replace("changes", "items") + "/dequeue", json={})
            ).status == 404
        assert deliveries(gate) == 0


async def test_deep_json_answers_400(world: World, aiohttp_client: ClientFactory) -> None:
    async with served(world, aiohttp_client, start=False) as (gate, client):
        for depth in (20, 100_000):
            raw = b'{"project": ' + b"[" * depth + b"]" * depth + b"}"
            resp = await client.post(
                "/api/changes", data=raw, headers={"Content-Type": "application/json"}
            )
            assert resp.status == 400
            assert "nested deeper than" in (await resp.json())["error"]
        assert deliveries(gate) == 0


@pytest.mark.parametrize("tree", ["/repos/liberty/", "/speculative/", "/files/logs/", "/assets/"])
async def test_long_or_odd_file_names_answer_404(
    world: World, aiohttp_client: ClientFactory, tree: str
) -> None:
    async with served(world, aiohttp_client, start=False) as (_, client):
        for name in (
            "a" * 5000,
            "b" * 256,
            "x/" * 1500 + "y",
            "%00nul",
            "%0Anewline",
            "..%2F..%2Fetc%2Fpasswd",
        ):
            resp = await client.get(tree + name)
            assert resp.status in (403, 404), (name[:20], resp.status)


# -- named tokens --------------------------------------------------------------------------------
async def test_every_write_records_the_name_of_the_token_that_asked(
    world: World, aiohttp_client: ClientFactory
) -> None:
    auth = {
        "api_tokens": [
            {"name": "releng", "token": "releng-token-0123456789"},
            "a-bare-token-0123456789",
        ]
    }
    async with served(world, aiohttp_client, auth=auth) as (gate, client):
        releng = {"Authorization": "Bearer releng-token-0123456789"}
        bare = {"Authorization": "Bearer a-bare-token-0123456789"}
        resp = await client.post(
            "/api/repos/liberty/republish", headers=releng, json={"reason": "refresh"}
        )
        republish = await settled(gate, (await resp.json())["delivery"])
        ref = world.propose("nova", NOVA_1201, "A")
        resp = await client.post("/api/changes", headers=bare, json={"project": "nova", "ref": ref})
        proposal = await settled(gate, (await resp.json())["delivery"])
        doc = await (await client.get(f"/api/deliveries/{republish.id}")).json()
        number = gate.publishers["liberty"].current().number  # type: ignore[union-attr]
        manifest = gate.publishers["liberty"].generation(number)
    assert (republish.requested_by, proposal.requested_by) == ("releng", "token-2")
    assert doc["requested_by"] == "releng"
    assert republish.result == f"liberty generation {number} (republish by releng)"
    assert manifest is not None and manifest.manifest["produced_by"]["by"] == "releng"
    with session(gate.engine) as s:
        row = s.exec(select(GenerationRow).where(GenerationRow.number == number)).one()
    assert row.requested_by == "releng"


def test_token_names_and_tokens_must_be_unique(world: World) -> None:
    twice = {"api_tokens": [{"name": "a", "token": "x" * 16}, {"name": "a", "token": "y" * 16}]}
    with pytest.raises(ConfigError, match="two tokens are named 'a'"):
        parse_config(world.config(auth=twice))
    same = {"api_tokens": [{"name": "a", "token": "x" * 16}, "x" * 16]}
    with pytest.raises(ConfigError, match="the same token is listed twice"):
        parse_config(world.config(auth=same))


# -- timeouts and the connection cap -------------------------------------------------------
@asynccontextmanager
async def real_server(
    world: World, limits: Limits, body_timeout: float = 30.0, **overrides: Any
) -> AsyncIterator[Served]:
    listen = {"host": "127.0.0.1", "port": 0, "body_timeout": body_timeout}
    gate = Gate(parse_config(world.config(listen=listen, **overrides)))
    served = await serve(make_app(gate.runtime), "127.0.0.1", 0, limits)
    try:
        yield served
    finally:
        await served.close()
        await gate.stop()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes; fails if it stays open ``seconds``."""
    data = b""
    async with asyncio.timeout(seconds):
        while chunk := await reader.read(4096):
            data += chunk
    return data


async def test_a_client_that_sends_its_headers_slowly_is_cut_off(world: World) -> None:
    async with real_server(world, Limits(header_timeout=0.5, keepalive_timeout=0.5)) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        with suppress(ConnectionResetError):  # aborted: just as closed
            assert await _closed_within(reader, 10) == b""
        writer.close()

        # a client that connects and sends nothing at all
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        with suppress(ConnectionResetError):
            assert await _closed_within(reader, 10) == b""
        writer.close()

        # a prompt client is served, and may idle keepalive_timeout between requests
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        for _ in range(2):
            writer.write(b"GET /api/status HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), head
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            assert json.loads(await reader.readexactly(length))["queues"]
            await asyncio.sleep(0.3)
        writer.close()


async def test_a_client_that_sends_its_body_slowly_gets_408(world: World) -> None:
    async with real_server(world, Limits(header_timeout=5), body_timeout=0.5) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(
            b"POST /api/changes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b'\r\nContent-Length: 100\r\n\r\n{"project"'
        )
        await writer.drain()
        answer = await _closed_within(reader, 10)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        writer.close()


async def test_connections_beyond_the_cap_are_answered_503(world: World) -> None:
    async with real_server(world, Limits(header_timeout=30, max_connections=3)) as served:
        held = [await asyncio.open_connection("127.0.0.1", served.port) for _ in range(3)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        answer = await _closed_within(reader, 10)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert body == {"error": "too many connections; try again later"}
        writer.close()
        for _, w in held:
            w.close()
        await asyncio.sleep(0.2)
        # the held ones are gone: a new client is served again
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        assert (await _closed_within(reader, 10)).startswith(b"HTTP/1.1 ")
        writer.close()


# -- header bytes that are not UTF-8 -----------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "header", "body", "status"),
    [
        ("/api/changes", b"Authorization: Bearer \x80\xff", b"{}", 401),
        ("/api/sources/github/webhook", b"X-Hub-Signature-256: sha256=\x80", b"{}", 403),
        ("/api/sources/forgejo/webhook", b"X-Forgejo-Signature: \x80\xff", b"{}", 403),
        ("/api/sources/gitlab/webhook", b"X-Gitlab-Token: \x80\xff", b"{}", 403),
        (
            "/api/sources/pagure/webhook",
            b"X-Pagure-Signature-256: \x80\xff",
            b'{"msg": {"project_fullname": "rpms/nova"}}',
            403,
        ),
        ("/api/sources/gerrit/events/%80%ff", b"X-Gerrit: 1", b"{}", 401),
    ],
)
async def test_a_secret_or_signature_that_is_not_utf8_is_refused_not_a_500(
    world: World, path: str, header: bytes, body: bytes, status: int
) -> None:
    """aiohttp hands such bytes on as lone surrogates, which ``str.encode()`` refuses."""
    auth = {"api_tokens": [{"name": "releng", "token": "releng-token-0123456789"}]}
    async with real_server(world, Limits(), auth=auth, sources=FORGE_SOURCES) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(
            b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), header, len(body), body)
        )
        await writer.drain()
        answer = await _closed_within(reader, 30)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:300]
