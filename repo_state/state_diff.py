"""What changed between two repository states: source builds and binary packages."""

from __future__ import annotations

from dataclasses import dataclass

from repo_state.state import RepoState


@dataclass(frozen=True)
class StateDiff:
    """``old`` -> ``new``: builds by source package name, binary packages by NEVRA."""

    #: source package -> NVR, only in ``new``
    added: dict[str, str]
    #: source package -> NVR, only in ``old``
    removed: dict[str, str]
    #: source package -> (old NVR, new NVR); a rebuild of the same NVR counts
    #: (its files differ for a client that downloaded the first)
    changed: dict[str, tuple[str, str]]
    #: binary NEVRAs a client can install from ``new`` and not from ``old``
    packages_added: list[str]
    packages_removed: list[str]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def diff_states(old: RepoState, new: RepoState) -> StateDiff:
    before, after = old.nvrs(), new.nvrs()
    changed = {}
    for name in sorted(before.keys() & after.keys()):
        was, now = old.get(name), new.get(name)
        assert was is not None and now is not None
        if was.nvr != now.nvr or {a.checksum for a in was.artifacts} != {
            a.checksum for a in now.artifacts
        }:
            changed[name] = (was.nvr, now.nvr)
    return StateDiff(
        added={n: after[n] for n in sorted(after.keys() - before.keys())},
        removed={n: before[n] for n in sorted(before.keys() - after.keys())},
        changed=changed,
        packages_added=sorted(new.nevras() - old.nevras()),
        packages_removed=sorted(old.nevras() - new.nevras()),
    )
