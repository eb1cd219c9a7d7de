"""Promoting a Koji draft build at the tip (``promoteBuild``, Koji >= 1.34).

kojihub ``promote_build``: the build must be a draft and COMPLETE ("Cannot
promote build X. Reason: state (DELETED) is not COMPLETE."), its target NVR
must not exist ("Target build already exists"), and the ``draft_promotion``
policy must allow the caller; the build keeps its id and takes the NVR
without the ``,draft_<id>`` suffix.

What this module answers, for :meth:`KojiBackend.promote
<gate.builders.koji.KojiBackend.promote>`: the promoted NVR (promoted now, or
before a crash), the hub's refusal as a failed outcome, or :data:`GONE` when
the draft was deleted behind the gate's back (an admin's ``deleteBuild``,
``koji-gc``): promoting it could only fail, and the item would be rejected for
nothing -- the backend makes the final build at the tip instead.
"""

from __future__ import annotations

import logging
from typing import Final, Literal

import koji

from gate.builders.base import BuildError, BuildOutcome, Draft
from gate.builders.koji_drafts import DRAFT_RELEASE
from gate.builders.koji_session import HubSession, describe

log = logging.getLogger(__name__)

#: the draft build is DELETED (or unknown to the hub): nothing to promote
GONE: Final = "gone"


async def promote_draft(hub: HubSession, draft: Draft) -> str | BuildOutcome | Literal["gone"]:
    """The NVR ``draft`` has once promoted, the refusal as an outcome, or :data:`GONE`."""
    match = DRAFT_RELEASE.search(draft.nvr)
    build = await hub.call("getBuild", int(match.group(1)) if match else draft.nvr)
    if match is None:
        # the "draft" took over a final build of the same sources (submit)
        if build and build["state"] == koji.BUILD_STATES["COMPLETE"]:
            return str(build["nvr"])
        raise BuildError(f"{draft.nvr} is not a Koji draft build")
    draft_id = int(match.group(1))
    if not build or build["state"] == koji.BUILD_STATES["DELETED"]:
        return GONE
    if not build.get("draft") and build["state"] == koji.BUILD_STATES["COMPLETE"]:
        return str(build["nvr"])  # promoted already (a daemon killed since)
    try:
        promoted = await hub.call("promoteBuild", draft_id, login=True, retry=False)
    except (koji.GenericError, koji.ActionNotAllowed) as exc:
        # the NVR exists (another draft of it was promoted, or a build from
        # other sources), or the hub's draft_promotion policy says no
        build = await hub.call("getBuild", draft_id)
        if build and not build.get("draft"):  # our call did promote it
            return str(build["nvr"])
        if build and build["state"] == koji.BUILD_STATES["DELETED"]:
            return GONE  # deleted between our look and the call
        return BuildOutcome(
            ok=False, nvr=draft.nvr, reason=f"Koji refused to promote: {describe(exc)}"
        )
    log.info("promoted draft build %s to %s", draft.nvr, promoted["nvr"])
    return str(promoted["nvr"])
