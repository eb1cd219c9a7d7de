"""The config section of a repository publisher (``publishers.<name>``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from gate.registry import DriverConfig


class PublisherConfig(DriverConfig):
    """createrepo_c generations under ``root`` with an atomic ``current`` symlink."""

    type: Literal["createrepo"] = "createrepo"
    #: directory holding generations/ and the `current` symlink
    root: Path
    arches: tuple[str, ...] = ("x86_64",)
    #: how many of the newest generations are kept on disk (the current one always is)
    keep: Annotated[int, Field(ge=1)] = 5
    #: URL clients use for root (shown in status and the demo), optional
    url: str | None = None
