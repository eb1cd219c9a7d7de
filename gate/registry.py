"""Registries of drivers: review systems, build backends, jobs, publishers.

Each section of the config that names a ``type:`` (an entry of ``sources``,
``backends``, ``publishers``, a queue's ``jobs``) is validated by the config
model of the driver registered under that type, and built by its factory.
Adding a driver is one module (its config model and its implementation) and
one line in ``gate/drivers.py``, as Zuul adds a connection driver; nothing in
the core names a particular review system or backend.

A test may register a driver of its own (:meth:`Registry.register`) and take
it out again (:meth:`Registry.unregister`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Discriminator, Tag

#: the names of sources, backends, publishers, projects, queues and jobs
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"


class DriverConfig(BaseModel):
    """A config section a driver reads; ``type`` names the driver."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str

    def git_url(self, name: str) -> str | None:
        """A source's clone URL of its project ``name`` (the default of a project's
        ``git``); None: the project must give it."""
        return None

    def scm_url(self, name: str) -> str | None:
        """A source's Koji SCM URL of its project ``name`` (``git+https://…``, no
        ``#commit``; the default of a project's ``scm_url``); None: the project must
        give it to be built from SCM."""
        return None


@dataclass(frozen=True)
class SourceDriver:
    """A review system.  ``create(name, config, parts)`` returns a ``ChangeSource``
    (``parts``: ``gate.sources.base.SourceParts``)."""

    #: the ``type:`` the config names this driver by
    name: str
    config: type[DriverConfig]
    create: Callable[..., Any]


@dataclass(frozen=True)
class BackendDriver:
    """A build backend.  ``create(name, config, parts)`` returns a ``BuildBackend``
    (``parts``: ``gate.builders.base.BackendParts``)."""

    #: the ``type:`` the config names this driver by
    name: str
    config: type[DriverConfig]
    create: Callable[..., Any]
    #: ``"module:function"`` of ``check(config, name, section)``: what ``check-config``
    #: finds wrong with a section of this type without contacting anything (a list of
    #: ``gate.config_check.Finding``).  Named, not imported, as an entry point is: the
    #: check reads the whole config, and gate.config imports the drivers.
    check: str | None = None
    #: the same for ``check-config --online`` (asking the world)
    check_online: str | None = None


@dataclass(frozen=True)
class JobDriver:
    """A job type.  ``create(config)`` returns a ``Job``."""

    #: the ``type:`` the config names this driver by
    name: str
    config: type[DriverConfig]
    create: Callable[..., Any]


@dataclass(frozen=True)
class PublisherDriver:
    """A repository publisher.  ``create(name, config, pool)`` returns a publisher."""

    #: the ``type:`` the config names this driver by
    name: str
    config: type[DriverConfig]
    create: Callable[..., Any]


D = TypeVar("D", SourceDriver, BackendDriver, JobDriver, PublisherDriver)


def entry_point(ref: str) -> Callable[..., Any]:
    """The function ``"package.module:function"`` names (imported on first use)."""
    module, _, attr = ref.partition(":")
    function: Callable[..., Any] = getattr(importlib.import_module(module), attr)
    return function


class Registry(Generic[D]):
    """Drivers of one kind, by the ``type:`` the config gives."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._drivers: dict[str, D] = {}
        #: bumped on every change, so models built from the registry can be cached
        self.version = 0

    def register(self, driver: D) -> D:
        if driver.name in self._drivers:
            raise ValueError(f"a {self.kind} driver of type {driver.name!r} is registered")
        self._drivers[driver.name] = driver
        self.version += 1
        return driver

    def unregister(self, type_: str) -> None:
        del self._drivers[type_]
        self.version += 1

    @contextmanager
    def registered(self, driver: D) -> Iterator[D]:
        """``driver`` registered for the duration of a ``with`` block (tests)."""
        self.register(driver)
        try:
            yield driver
        finally:
            self.unregister(driver.name)

    def get(self, type_: str) -> D:
        try:
            return self._drivers[type_]
        except KeyError:
            raise KeyError(
                f"no {self.kind} driver of type {type_!r} (known: {', '.join(self.types())})"
            ) from None

    def types(self) -> list[str]:
        return sorted(self._drivers)

    def tag(self, type_: str) -> str:
        """The tag of ``type_``'s config model in :meth:`union` (dropped from error paths)."""
        return f"{self.kind}:{type_}"

    def union(self) -> Any:
        """The discriminated union of every registered driver's config model."""
        members = [Annotated[d.config, Tag(self.tag(t))] for t, d in sorted(self._drivers.items())]
        if not members:
            raise ValueError(f"no {self.kind} driver is registered")

        def discriminate(value: Any) -> str | None:
            type_ = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
            return self.tag(type_) if isinstance(type_, str) else None

        union: Any = members[0]
        for member in members[1:]:
            union = union | member
        return Annotated[union, Discriminator(discriminate)]

    def check_types(self, entries: Any) -> Any:
        """Refuse entries whose ``type`` no driver has, naming the known ones."""
        if isinstance(entries, dict):
            items = list(entries.items())
        elif isinstance(entries, list | tuple):
            items = list(enumerate(entries))
        else:
            return entries
        for key, entry in items:
            type_ = entry.get("type") if isinstance(entry, dict) else None
            if isinstance(entry, dict) and type_ is None:
                raise ValueError(
                    f"{key}: a {self.kind} needs a type (one of: {', '.join(self.types())})"
                )
            if isinstance(type_, str) and type_ not in self._drivers:
                raise ValueError(
                    f"{key}: unknown {self.kind} type {type_!r} (known: {', '.join(self.types())})"
                )
        return entries


SOURCES: Registry[SourceDriver] = Registry("source")
BACKENDS: Registry[BackendDriver] = Registry("backend")
JOBS: Registry[JobDriver] = Registry("job")
PUBLISHERS: Registry[PublisherDriver] = Registry("publisher")
REGISTRIES = (SOURCES, BACKENDS, JOBS, PUBLISHERS)
