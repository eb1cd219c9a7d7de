"""Lookaside ``sources`` parsing, fetching, verification and caching."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from aiohttp import web

from gate.builders.base import Lookaside, TransientBackendError
from gate.builders.lookaside import (
    ChecksumError,
    LookasideError,
    LookasideUnavailable,
    SourceFile,
    fetch_sources,
    parse_sources,
    provide,
    source_url,
)

FEDORA_LAYOUT = "{name}/{filename}/{hashtype}/{hash}/{filename}"
CONTENT = b"upstream tarball bytes\n" * 100


def sha512(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


def publish(root: Path, name: str, filename: str, data: bytes, hashtype: str = "sha512") -> str:
    """Put ``data`` where a Fedora-layout lookaside keeps it; return its hash."""
    digest = hashlib.new(hashtype, data).hexdigest()
    dest = root / name / filename / hashtype / digest / filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return digest


def cached_files(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []


def test_parse_sources_reads_both_formats() -> None:
    md5 = hashlib.md5(b"x").hexdigest()
    sha = sha512(b"y")
    sha256 = hashlib.sha256(b"z").hexdigest()
    text = (
        f"SHA512 (foo-1.0.tar.gz) = {sha.upper()}\n"
        f"\n"
        f"sha256 (foo 1.0.patch.xz) = {sha256}\n"
        f"{md5}  old-style.tar.bz2\n"
        f"{md5} *binary-mode.zip\n"
    )
    assert parse_sources(text) == [
        SourceFile("foo-1.0.tar.gz", "sha512", sha),
        SourceFile("foo 1.0.patch.xz", "sha256", sha256),
        SourceFile("old-style.tar.bz2", "md5", md5),
        SourceFile("binary-mode.zip", "md5", md5),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("this is not a sources line", "cannot parse"),
        (f"SHA512 (../../etc/passwd) = {sha512(b'')}", "unsafe file name"),
        (f"SHA512 (dir/x.tar.gz) = {sha512(b'')}", "unsafe file name"),
        (f"NOSUCHALGO (x.tar.gz) = {sha512(b'')}", "unsupported hash type"),
        ("SHA512 (x.tar.gz) = abcd", "must have 128 hex digits"),
    ],
)
def test_parse_sources_rejects_bad_lines(line: str, message: str) -> None:
    with pytest.raises(LookasideError, match=message):
        parse_sources(f"\n{line}\n")


def test_parse_sources_rejects_one_file_with_two_checksums() -> None:
    text = f"SHA512 (x.tar.gz) = {sha512(b'a')}\nSHA512 (x.tar.gz) = {sha512(b'b')}\n"
    with pytest.raises(LookasideError, match="two checksums"):
        parse_sources(text)


def test_http_url_template_quotes_values() -> None:
    lookaside = Lookaside(
        url="https://lookaside.example/repo/pkgs/" + FEDORA_LAYOUT, cache_dir=Path()
    )
    url = source_url(lookaside, "gtk+", SourceFile("a b+c.tar.gz", "sha512", "ab" * 64))
    assert url == (
        "https://lookaside.example/repo/pkgs/gtk%2B/a%20b%2Bc.tar.gz/sha512/"
        + "ab" * 64
        + "/a%20b%2Bc.tar.gz"
    )


async def test_file_url_fetch_is_verified_cached_and_linked(tmp_path: Path) -> None:
    remote = tmp_path / "lookaside"
    digest = publish(remote, "hello", "hello-1.0.tar.gz", CONTENT)
    sources = tmp_path / "sources"
    sources.write_text(f"SHA512 (hello-1.0.tar.gz) = {digest}\n")
    lookaside = Lookaside(url=f"file://{remote}/{FEDORA_LAYOUT}", cache_dir=tmp_path / "cache")
    dest = tmp_path / "tree"
    dest.mkdir()

    placed = await fetch_sources(lookaside, "hello", sources, dest)

    assert placed == [dest / "hello-1.0.tar.gz"]
    assert placed[0].read_bytes() == CONTENT
    (cached,) = cached_files(tmp_path / "cache")
    assert cached.name == digest
    assert cached.stat().st_ino == placed[0].stat().st_ino  # hard link, no copy

    # The remote copy is gone: a second build must be served from the cache.
    for path in remote.rglob("*.tar.gz"):
        if path.is_file():
            path.unlink()
    other = tmp_path / "tree2"
    other.mkdir()
    await fetch_sources(lookaside, "hello", sources, other)
    assert (other / "hello-1.0.tar.gz").read_bytes() == CONTENT


async def test_plain_path_template_and_md5_sources(tmp_path: Path) -> None:
    remote = tmp_path / "lookaside"
    digest = publish(remote, "hello", "old.tar.gz", CONTENT, hashtype="md5")
    lookaside = Lookaside(url=f"{remote}/{FEDORA_LAYOUT}", cache_dir=tmp_path / "cache")
    dest = tmp_path / "tree"
    dest.mkdir()
    await provide(lookaside, "hello", parse_sources(f"{digest}  old.tar.gz\n"), dest)
    assert (dest / "old.tar.gz").read_bytes() == CONTENT


async def test_checksum_mismatch_names_file_and_both_hashes_and_caches_nothing(
    tmp_path: Path,
) -> None:
    remote = tmp_path / "lookaside"
    wrong = sha512(b"what the sources file promised")
    actual = sha512(CONTENT)
    target = remote / "hello" / "hello-1.0.tar.gz" / "sha512" / wrong / "hello-1.0.tar.gz"
    target.parent.mkdir(parents=True)
    target.write_bytes(CONTENT)  # tampered: content does not match its path
    lookaside = Lookaside(url=f"file://{remote}/{FEDORA_LAYOUT}", cache_dir=tmp_path / "cache")
    dest = tmp_path / "tree"
    dest.mkdir()

    with pytest.raises(ChecksumError) as info:
        await provide(lookaside, "hello", [SourceFile("hello-1.0.tar.gz", "sha512", wrong)], dest)

    message = str(info.value)
    assert "hello-1.0.tar.gz" in message
    assert wrong in message
    assert actual in message
    assert cached_files(tmp_path / "cache") == []
    assert not (dest / "hello-1.0.tar.gz").exists()


async def test_missing_file_is_not_transient(tmp_path: Path) -> None:
    lookaside = Lookaside(url=f"file://{tmp_path}/{FEDORA_LAYOUT}", cache_dir=tmp_path / "cache")
    with pytest.raises(LookasideError, match="not in the lookaside cache") as info:
        await provide(lookaside, "hello", [SourceFile("x.tar.gz", "sha512", sha512(b""))], tmp_path)
    assert not isinstance(info.value, TransientBackendError)


async def test_http_lookaside_fetches_once(tmp_path: Path, aiohttp_server) -> None:
    digest = sha512(CONTENT)
    requests: list[str] = []

    async def serve(request: web.Request) -> web.StreamResponse:
        requests.append(request.path)
        if request.match_info["filename"] == "gone.tar.gz":
            return web.Response(status=404)
        if request.match_info["filename"] == "flaky.tar.gz":
            return web.Response(status=503)
        return web.Response(body=CONTENT)

    app = web.Application()
    app.router.add_get("/pkgs/{name}/{filename}/{hashtype}/{hash}/{filename2}", serve)
    server = await aiohttp_server(app)
    lookaside = Lookaside(
        url=str(server.make_url("/pkgs/")) + FEDORA_LAYOUT, cache_dir=tmp_path / "cache"
    )
    entry = SourceFile("hello-1.0.tar.gz", "sha512", digest)

    for tree in ("a", "b"):
        (tmp_path / tree).mkdir()
        await provide(lookaside, "hello", [entry, entry], tmp_path / tree)
        assert (tmp_path / tree / "hello-1.0.tar.gz").read_bytes() == CONTENT
    assert requests == [f"/pkgs/hello/hello-1.0.tar.gz/sha512/{digest}/hello-1.0.tar.gz"]

    # Other hashes: the cache is keyed by hash, so the same one would be a hit.
    gone = SourceFile("gone.tar.gz", "sha512", sha512(b"gone"))
    with pytest.raises(LookasideError, match="HTTP 404") as info:
        await provide(lookaside, "hello", [gone], tmp_path)
    assert not isinstance(info.value, TransientBackendError)
    flaky = SourceFile("flaky.tar.gz", "sha512", sha512(b"flaky"))
    with pytest.raises(LookasideUnavailable, match="HTTP 503"):
        await provide(lookaside, "hello", [flaky], tmp_path)
    assert cached_files(tmp_path / "cache") == [tmp_path / "cache" / "sha512" / digest[:2] / digest]
