"""Deleting an unpromoted Koji draft build the way kojihub allows it (``gate.draft_gc``).

kojihub ``delete_build`` (``RootExports.deleteBuild``) needs the ``admin``
permission (``context.session.assertPerm('admin')``, checked first), refuses a
build still tagged, one whose RPMs other builds' buildroots used, or one used
in a buildroot in the last week (``min_ref_age``); it marks the build DELETED,
removes its files and frees no NVR (a draft claims none).  rpmgate submits
drafts with ``skip_tag`` so they are in no tag and ``deleteBuild`` is the only
call; drafts built by rpmgate before that were tagged by kojid's BuildTask into
the target's destination tag: when the hub refuses to delete one for that,
it is untagged from there (``untagBuild``, the hub's ``tag`` policy, operation
``untag``) and deleted, never untagged from a tag someone else put it in.
A promoted build (``draft`` false) and a final build a draft took over (no
``,draft_<id>`` release) are never deleted.

A refusal of the permission is the whole backend's: it is logged once, kept
for the status, and :class:`~gate.builders.base.DraftRemovalRefused` is raised
from then on without asking the hub.  Any other refusal leaves that build on
the hub, for ``koji-gc`` (which trashes untagged builds) or an admin.
"""

from __future__ import annotations

import logging
import re

import koji

from gate.builders.base import Draft, DraftRemoval, DraftRemovalRefused
from gate.builders.koji_session import HubSession, describe

log = logging.getLogger(__name__)

#: a draft build's release: ``koji.DRAFT_RELEASE_FORMAT``, '{target_release},draft_{build_id}'
DRAFT_RELEASE = re.compile(r",draft_(\d+)$")


class DraftRemover:
    def __init__(self, hub: HubSession) -> None:
        self.hub = hub
        #: why the hub refuses the gate deleting drafts (None: it has not refused)
        self.refused: str | None = None

    async def remove(self, target: str, draft: Draft) -> DraftRemoval:
        """Delete ``draft`` (built for ``target``), or say why it stays."""
        if self.refused is not None:
            raise DraftRemovalRefused(self.refused)
        match = DRAFT_RELEASE.search(draft.nvr)
        if match is None:
            return DraftRemoval(
                "left", f"{draft.nvr} is not a Koji draft build: the gate never deletes it"
            )
        draft_id = int(match.group(1))
        build = await self.hub.call("getBuild", draft_id)
        if not build or build["state"] == koji.BUILD_STATES["DELETED"]:
            return DraftRemoval("deleted", "deleted already")
        if not build.get("draft"):
            return DraftRemoval(
                "left", f"build {draft_id} was promoted to {build['nvr']}: it is not deleted"
            )
        try:
            await self._delete(draft_id)
        except koji.ActionNotAllowed as exc:
            self.refused = f"deleteBuild: {describe(exc)}"
            log.warning(
                "Koji hub %s refuses to delete drafts (%s): unpromoted drafts are left "
                "to koji-gc or an admin until the daemon restarts",
                self.hub.conn.server,
                describe(exc),
            )
            raise DraftRemovalRefused(self.refused) from exc
        except koji.GenericError as exc:
            # a draft of an older rpmgate (no skip_tag): in the destination tag
            tags = [t["name"] for t in await self.hub.call("listTags", build=draft_id) or ()]
            dest = (await self.hub.call("getBuildTarget", target) or {}).get("dest_tag_name")
            if not tags or tags != [dest]:
                return DraftRemoval("left", f"Koji refused deleteBuild: {describe(exc)}")
            try:
                await self.hub.call("untagBuild", dest, draft_id, strict=False, login=True)
                await self._delete(draft_id)
            except koji.GenericError as again:  # (ActionNotAllowed is one)
                return DraftRemoval("left", f"Koji refused: {describe(again)}")
        log.info("deleted unpromoted draft build %s (%d)", draft.nvr, draft_id)
        return DraftRemoval("deleted")

    async def _delete(self, build_id: int) -> None:
        # deleteBuild returns silently on a DELETED build: safe to retry
        await self.hub.call("deleteBuild", build_id, login=True)
