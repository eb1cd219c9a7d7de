"""``rpmgate check-config`` for a Koji backend's section (registered in gate/drivers.py).

Offline: the connection resolves (profile, URLs, readable credentials) and every
project a queue builds from SCM has an SCM URL (its ``scm_url``, or its source's).
Online: the hub answers ``getAPIVersion``, logs in with the configured
credentials, knows each target, and the named builds of a queue get a ``%dist``
of their own.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from gate.builders.koji_config import KojiBackendConfig, KojiConfigError
from gate.config import Config, QueueConfig
from gate.config_check import ONLINE_TIMEOUT, Finding, daemon_user, http_url, reason_of
from gate.registry import DriverConfig


def offline(config: Config, name: str, backend: DriverConfig) -> list[Finding]:
    assert isinstance(backend, KojiBackendConfig)
    return _koji(config, name, backend)


def online(config: Config, name: str, backend: DriverConfig) -> list[Finding]:
    assert isinstance(backend, KojiBackendConfig)
    targets = sorted(
        (target, key)
        for n, q in config.queues.items()
        if q.backend == name
        for target, key in _target_keys(n, q)
    )
    several = [
        _target_keys(n, q)
        for n, q in config.queues.items()
        if q.backend == name and len(config.builds_of(n)) > 1
    ]
    return asyncio.run(_koji_hub(name, backend, targets, several))


def _koji(config: Config, name: str, backend: KojiBackendConfig) -> list[Finding]:
    key = f"backends.{name}"
    findings = []
    try:
        conn = backend.koji_config().resolve()
    except KojiConfigError as exc:
        return [Finding(key, str(exc))]
    for field in ("server", "topurl", "weburl"):
        findings += http_url(f"{key}.{field}", getattr(conn, field))
    for field in ("cert", "serverca", "keytab"):
        value = getattr(conn, field)
        if value and not os.access(value, os.R_OK):
            problem = f"{value} is not readable by {daemon_user()}"
            findings.append(Finding(f"{key}.{field}", problem, host=True))
    kcfg = backend.koji_config()
    if "scm" in (kcfg.scratch_source, kcfg.final_source):
        for qname, queue in config.queues.items():
            if queue.backend != name:
                continue
            for project in queue.projects:
                pcfg = config.projects[project]
                source = config.sources[pcfg.source]
                # a review system's connection gives one (Gerrit's ``scm``, Pagure's
                # ``scm_url_template``, GitLab's https clone URL); plain git never does
                if pcfg.scm_url or source.scm_url(pcfg.name or project):
                    continue
                problem = f"missing: queue {qname!r} builds it from SCM in backend {name!r}"
                if getattr(source, "type", "git") != "git":
                    problem += f", and source {pcfg.source!r} gives no SCM URL for it"
                findings.append(
                    Finding(
                        f"projects.{project}.scm_url",
                        problem,
                        "set scm_url: git+https://host/path.git",
                    )
                )
    return findings


def _target_keys(name: str, queue: QueueConfig) -> list[tuple[str, str]]:
    """The Koji targets a queue builds on, each with the key that names it."""
    if not queue.builds:
        return [(queue.target, f"queues.{name}.target")]
    return [
        (b.target, f"queues.{name}.builds.{build}.target")
        if b.target
        else (queue.target, f"queues.{name}.target")
        for build, b in queue.builds.items()
    ]


async def _koji_hub(
    name: str,
    backend: KojiBackendConfig,
    targets: list[tuple[str, str]],
    several: list[list[tuple[str, str]]] | None = None,
) -> list[Finding]:
    """getAPIVersion; a login when credentials are configured; each target exists;
    the named builds of a queue (``several``: each queue's targets) build with a
    dist of their own (Koji builds an NVR once)."""
    from gate.builders.koji_session import HubSession

    key = f"backends.{name}"
    kcfg = backend.koji_config()
    conn = kcfg.resolve()
    hub = HubSession(conn, kcfg)
    findings = []
    try:
        await asyncio.wait_for(hub.ping(), ONLINE_TIMEOUT)
        if conn.authtype != "noauth":
            try:
                await asyncio.wait_for(
                    hub.call("getLoggedInUser", login=True, retry=False), ONLINE_TIMEOUT
                )
            except Exception as exc:  # any failure is the finding
                findings.append(
                    Finding(
                        key, f"login ({conn.authtype}) to {conn.server} failed: {reason_of(exc)}"
                    )
                )
        for target, key_of_target in targets:
            info = await asyncio.wait_for(
                hub.call("getBuildTarget", target, retry=False), ONLINE_TIMEOUT
            )
            if not info:
                findings.append(
                    Finding(
                        key_of_target,
                        f"the hub {conn.server} of backend {name!r} has no build target {target!r}",
                        "create it (koji add-target) or give a target the hub has",
                    )
                )
        for builds in several or []:
            findings += await _dists(hub, builds)
    except Exception as exc:  # any failure is the finding
        findings.append(
            Finding(
                f"{key}.server", f"{conn.server} does not answer getAPIVersion: {reason_of(exc)}"
            )
        )
    finally:
        await hub.close()
    return findings


async def _dists(hub: Any, builds: list[tuple[str, str]]) -> list[Finding]:
    """Two named builds of a queue whose build tags give the same ``%dist`` (or none)
    build the same NVR, and Koji builds an NVR once: the second final build of
    every change would be refused ("Build already exists")."""
    findings = []
    seen: dict[str, str] = {}
    for target, key in builds:
        info = await asyncio.wait_for(
            hub.call("getBuildTarget", target, retry=False), ONLINE_TIMEOUT
        )
        if not info:
            continue  # said above
        config = await asyncio.wait_for(
            hub.call("getBuildConfig", info["build_tag_name"], retry=False), ONLINE_TIMEOUT
        )
        dist = str((config.get("extra") or {}).get("rpm.macro.dist", ""))
        if dist in seen:
            shown = repr(dist) if dist else "no %dist"
            findings.append(
                Finding(
                    key,
                    f"target {target!r} builds with {shown}, as {seen[dist]} does: Koji "
                    "builds an NVR once, so this named build's final builds would be "
                    "refused ('Build already exists')",
                    "give each named build's build tag its own rpm.macro.dist (and the "
                    "specs a Release with %{?dist})",
                )
            )
        else:
            seen[dist] = key
    return findings
