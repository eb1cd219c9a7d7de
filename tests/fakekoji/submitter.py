"""A separate process that submits one build and then waits to be killed.

``python -m tests.fakekoji.submitter <json>`` builds a :class:`KojiBackend`
from the JSON (config fields, state dir, pool, request fields), calls
``submit`` and prints the task reference if it ever gets one.  Tests
``kill -9`` it at a chosen moment (e.g. while the hub holds back the reply to
``build``) to prove a restarted backend re-attaches instead of resubmitting.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from gate.builders.base import BuildRequest
from gate.builders.koji import KojiBackend
from gate.builders.koji_config import KojiConfig
from repo_state.pool import Pool


async def main(spec: dict) -> None:
    backend = KojiBackend(
        KojiConfig(**spec["config"]), Pool(Path(spec["pool"])), Path(spec["state_dir"])
    )
    fields = dict(spec["request"])
    fields["git_dir"] = Path(fields["git_dir"])
    ref = await backend.submit(BuildRequest(**fields))
    print(f"submitted {ref}", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
