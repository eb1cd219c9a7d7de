"""The part of ``createrepo_c`` that rpmgate uses, with types.

``createrepo_c`` ships neither stubs nor a ``py.typed`` marker.  A type
checker reads the declarations below; at run time every name is
``createrepo_c``'s own object, so nothing is wrapped.  Attributes a package
always has once read from an RPM or from repository metadata are declared
``str``; those that may be absent are optional.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

__all__ = [
    "GZ_COMPRESSION",
    "SHA256",
    "CreaterepoCError",
    "FilelistsXmlFile",
    "OtherXmlFile",
    "Package",
    "PackageIterator",
    "PrimaryXmlFile",
    "Repomd",
    "RepomdRecord",
    "checksum_name_str",
    "package_from_rpm",
    "xml_from_rpm",
]

if TYPE_CHECKING:
    GZ_COMPRESSION: int
    SHA256: int

    class CreaterepoCError(Exception): ...

    class Package:
        name: str
        epoch: str | None
        version: str
        release: str
        arch: str
        rpm_sourcerpm: str | None
        size_package: int
        pkgId: str
        checksum_type: str
        location_href: str
        location_base: str | None

    class _XmlFile:
        def __init__(self, path: str, compressiontype: int = ...) -> None: ...
        def set_num_of_pkgs(self, number_of_packages: int) -> None: ...
        def add_pkg(self, pkg: Package) -> None: ...
        def close(self) -> None: ...

    class PrimaryXmlFile(_XmlFile): ...

    class FilelistsXmlFile(_XmlFile): ...

    class OtherXmlFile(_XmlFile): ...

    class RepomdRecord:
        type: str
        location_href: str
        checksum: str | None
        checksum_type: str | None
        size: int
        timestamp: int

        def __init__(self, type: str | None = None, path: str | None = None) -> None: ...
        def fill(self, checksum_type: int) -> None: ...
        def rename_file(self) -> None: ...

    class Repomd:
        records: list[RepomdRecord]

        def __init__(self, path: str | None = None) -> None: ...
        def set_revision(self, revision: str) -> None: ...
        def set_record(self, record: RepomdRecord) -> None: ...
        def sort_records(self) -> None: ...
        def xml_dump(self) -> str: ...

    class PackageIterator(Iterator[Package]):
        def __init__(
            self,
            primary_path: str,
            filelists_path: str | None,
            other_path: str | None,
            newpkgcb: Callable[[str, str, str], Package | None] | None = None,
            warningcb: Callable[[int, str], bool] | None = None,
        ) -> None: ...
        def __next__(self) -> Package: ...

    def checksum_name_str(checksum_type: int) -> str: ...

    def package_from_rpm(
        filename: str,
        checksum_type: int = ...,
        location_href: str | None = None,
        location_base: str | None = None,
        changelog_limit: int = ...,
    ) -> Package: ...

    def xml_from_rpm(
        filename: str,
        checksum_type: int = ...,
        location_href: str | None = None,
        location_base: str | None = None,
        changelog_limit: int = ...,
    ) -> tuple[str, str, str]: ...

else:
    from createrepo_c import (
        GZ_COMPRESSION,
        SHA256,
        CreaterepoCError,
        FilelistsXmlFile,
        OtherXmlFile,
        Package,
        PackageIterator,
        PrimaryXmlFile,
        Repomd,
        RepomdRecord,
        checksum_name_str,
        package_from_rpm,
        xml_from_rpm,
    )
