"""What the running gate says of its configuration: which one is in force, and
the last one it refused (a reload, ``SIGHUP`` or a commit of the config
repository).  Read by ``/healthz``, the status document and the reload answer.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from gate.config import Config


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def digest_of(config: Config) -> str:
    """A digest of every setting (secrets included, so it reveals none of them)."""
    encoded = json.dumps(config.model_dump(mode="json"), sort_keys=True, default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


class ConfigRefusal(BaseModel):
    """A configuration the gate was asked to apply and did not."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: when (ISO 8601, UTC)
    at: str
    #: what asked: ``start``, ``SIGHUP``, ``api:<token name>``, ``config_repo``
    trigger: str
    #: the config repository's commit that was refused (None: the file)
    commit: str | None = None
    #: why, one finding a line (``key: what is wrong; what would be right``)
    findings: list[str]


class ConfigStatus(BaseModel):
    """The configuration in force."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: 1 when the daemon started, one more for each reload that changed something
    version: int = 1
    #: sha256 of the whole configuration in force (digest_of)
    digest: str = ""
    #: the file, and the repository it follows (``<git>@<branch>:<path>``)
    source: str = ""
    #: the config repository's commit in force (None: no ``config_repo``)
    commit: str | None = None
    #: when the configuration in force was applied (ISO 8601, UTC)
    applied_at: str = ""
    #: the newest configuration refused (None: none since the daemon started)
    last_refused: ConfigRefusal | None = None
    #: True when that refusal came after the configuration in force was applied:
    #: the newest configuration asked for is not the one running
    newest_refused: bool = False

    def gated_by(self) -> dict[str, object]:
        """What a generation's manifest records of the configuration that gated it."""
        return {"version": self.version, "digest": self.digest[:16], "commit": self.commit}
