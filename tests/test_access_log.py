"""The daemon's access log leaves secrets in URLs out (gate/web/access_log.py).

The real daemon (``rpmgate run``) in its own process, with a Gerrit connection
whose webhook secret is a segment of its URL: the log of a delivery with the
right secret, one with a wrong guess and a query parameter named ``token`` shows
each request, and none of the secrets.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from gate.demo_world import World
from tests.daemon import Daemon, free_port

pytestmark = pytest.mark.slow

SECRET = "webhook-secret-5f1d8c2a9e-0123456789abcdef"
GUESS = "guessed-secret-77aa01-0123456789abcdefghij"
QUERY_SECRET = "query-secret-9c3e44"


def _post(url: str) -> int:
    body = b'{"type": "ref-updated", "refUpdate": {"project": "nope", "refName": "refs/heads/x"}}'
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_access_log_names_every_request_and_no_secret(world: World, tmp_path: Path) -> None:
    doc = world.config()
    doc["sources"] = {
        "review": {
            "type": "gerrit",
            "url": "http://127.0.0.1:9",  # never answers: the webhook route is all this needs
            "webhook": {"token": SECRET},
        }
    }
    port = free_port()
    state = Path(tempfile.mkdtemp(prefix="rpmgate-access-"))
    state.chmod(0o755)  # the build user (nobody) enters it
    doc.update(
        state_dir=str(state),
        listen={"host": "127.0.0.1", "port": port},
        sandbox={"bubblewrap": "off"},
    )
    path = tmp_path / "rpmgate.yaml"
    path.write_text(yaml.safe_dump(doc))
    log = tmp_path / "daemon.log"
    base = f"http://127.0.0.1:{port}"
    daemon = Daemon(path, base, log)
    daemon.start()
    try:
        right = _post(f"{base}/api/sources/review/events/{SECRET}")
        wrong = _post(f"{base}/api/sources/review/events/{GUESS}")
        assert wrong in (401, 403) and right != wrong  # the route does check the secret
        daemon.get(f"/api/status?token={QUERY_SECRET}&x=1")
        deadline = time.time() + 10
        while log.read_text().count("/api/sources/review/events/***") < 2:
            assert time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
    finally:
        daemon.stop()
        shutil.rmtree(state, ignore_errors=True)
    text = log.read_text()
    for secret in (SECRET, GUESS, QUERY_SECRET):
        assert secret not in text
    assert f'"POST /api/sources/review/events/*** HTTP/1.1" {right}' in text
    assert f'"POST /api/sources/review/events/*** HTTP/1.1" {wrong}' in text
    assert '"GET /api/status?token=***&x=1 HTTP/1.1" 200' in text
