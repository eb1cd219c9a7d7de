"""Uploads: kojihub/kojihub.py get_upload_path, handle_upload, checkUpload, uploadFile.

The raw upload (``application/octet-stream`` POST) arrives through the hub's
HTTP handler, which checks the session; the path checks and file writes are
here, next to the two RootExports calls that read and write the same place.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import koji
import koji.util

if TYPE_CHECKING:
    from tests.fakekoji.hub import FakeHub

# Error texts are copied from koji's source, %-formatting included, so that
# they can be grepped for there.
# ruff: noqa: UP031


def verify_class(verify: str) -> Any:
    """kojihub/kojihub.py get_verify_class."""
    if verify == "md5":
        return hashlib.md5
    if verify == "adler32":
        return koji.util.adler32_constructor
    if verify == "sha256":
        return hashlib.sha256
    raise koji.GenericError("Unsupported verify type: %s" % verify)


def upload_path(
    hub: FakeHub, path: str, name: str, create: bool = False, volume: str | None = None
) -> Path:
    """kojihub/kojihub.py get_upload_path: ``work/<path>/<name>``, with its checks."""
    orig_reldir, orig_name = path, name
    d, name = os.path.split(name)
    if d or name.startswith("."):
        raise koji.GenericError("Invalid upload filename: %s" % orig_name)
    reldir = os.path.normpath(path)
    if not reldir or reldir.startswith(".."):
        raise koji.GenericError("Invalid upload directory: %s" % orig_reldir)
    if volume is not None and volume != "DEFAULT":
        raise koji.GenericError("No such entry in table volume: %s" % volume)
    parts = reldir.split("/")
    check_user = True
    if create and parts[0] == "tasks":
        if len(parts) < 3 or not parts[2].isdigit():
            raise koji.GenericError("Invalid task upload directory: %s" % orig_reldir)
        # only the host running the task may write there (kojihub Host()); users are not
        if hub._caller.logged_in and hub._caller.record is not None:
            raise koji.AuthError("User %i is not a host" % hub._caller.record.user.id)
        raise koji.AuthError("Not logged-in")
    # koji.util.joinpath
    if reldir == ".." or reldir.startswith("../") or reldir.startswith("/"):
        raise ValueError("Invalid path segment: %s" % path)
    udir = hub.topdir / "work" / reldir
    if create:
        udir.mkdir(parents=True, exist_ok=True)
        if check_user:
            owner_file = udir / ".user"
            user_id = hub._caller.record.user.id if hub._caller.logged_in else None  # type: ignore[union-attr]
            if owner_file.exists():
                if int(owner_file.read_text()) != user_id:
                    raise koji.GenericError("Invalid upload directory, not owner: %s" % orig_reldir)
            else:
                owner_file.write_text(str(user_id))
    return udir / name


def write_upload(
    target: Path, body: bytes, offset: int, verify: str, overwrite: str
) -> dict[str, Any]:
    """kojihub/kojihub.py handle_upload, after get_upload_path: write one chunk."""
    if target.is_symlink():
        raise koji.GenericError("destination is a symlink: %s" % target)
    if target.exists():
        if not target.is_file():
            raise koji.GenericError("destination not a file: %s" % target)
        if offset == 0 and not overwrite:
            raise koji.GenericError("upload path exists: %s" % target)
    chksum = verify_class(verify)() if verify else None
    with open(target, "r+b" if target.exists() else "w+b") as fh:
        if offset == -1:
            offset = fh.seek(0, os.SEEK_END)
        elif overwrite:
            fh.truncate(offset)
            fh.seek(offset)
        else:
            fh.seek(offset)
        fh.write(body)
        if chksum is not None:
            chksum.update(body)
        if not overwrite:
            flen = fh.seek(0, os.SEEK_END)
            expected = offset + len(body)
            if flen != expected:
                raise koji.GenericError(
                    f"Incorrect upload length for {target} - Expected {expected}, actual {flen}"
                )
    result: dict[str, Any] = {"size": len(body), "fileverify": verify, "offset": offset}
    if chksum is not None:
        result["hexdigest"] = chksum.hexdigest()
    return result


class UploadExports:
    """The RootExports upload calls (mixed into tests.fakekoji.api.RootExports)."""

    _hub: FakeHub
    _user: Callable[[], Any]  # RootExports._user: assertLogin

    def checkUpload(
        self,
        path: str,
        name: str,
        verify: str | None = None,
        tail: Any = None,
        volume: str | None = None,
    ) -> dict[str, Any] | None:
        """RootExports.checkUpload: no login needed; md5, adler32 or sha256."""
        target = self._hub.upload_path(path, name, volume=volume)
        if not target.exists():
            return None
        if not target.is_file():
            raise koji.GenericError("Not a regular file: %s" % target)
        data = target.read_bytes()
        result: dict[str, Any] = {"size": len(data), "mtime": target.stat().st_mtime}
        if verify:
            chksum = verify_class(verify)()
            if tail is not None:
                if tail < 0:
                    raise koji.GenericError("Invalid tail value: %r" % tail)
                data = data[max(len(data) - tail, 0) :]
            chksum.update(data)
            result["sumlength"] = len(data)
            result["hexdigest"] = chksum.hexdigest()
        return result

    def uploadFile(
        self,
        path: str,
        name: str,
        size: Any,
        md5sum: Any,
        offset: Any,
        data: str,
        volume: str | None = None,
        checksum: Any = None,
    ) -> bool:
        """RootExports.uploadFile: the pre-1.7 base64 upload path."""
        self._user()
        contents = base64.b64decode(data)
        offset = koji.decode_int(offset)
        size = koji.decode_int(size)
        if checksum is None and md5sum is not None:
            checksum = md5sum
        if isinstance(checksum, str):
            verify, digest = "md5", checksum
        elif checksum is None:
            verify, digest = None, None
        else:
            verify, digest = checksum
        sum_cls = verify_class(verify) if verify else None
        if offset != -1:
            if size is not None and size != len(contents):
                return False
            if sum_cls is not None and digest != sum_cls(contents).hexdigest():
                return False
        target = self._hub.upload_path(path, name, create=True, volume=volume)
        if target.exists() or target.is_symlink():
            if not target.is_file() or target.is_symlink():
                raise koji.GenericError("destination not a file: %s" % target)
            if offset == 0 and not str(target).endswith(".log"):
                raise koji.GenericError("file already exists: %s" % target)
        with open(target, "r+b" if target.exists() else "w+b") as fh:
            if offset == 0 or (offset == -1 and size == len(contents)):
                fh.truncate(0)
            fh.seek(0, os.SEEK_END) if offset == -1 else fh.seek(offset)
            fh.write(contents)
            if offset == -1:
                if size is not None:
                    fh.truncate(size)
                if sum_cls is not None:
                    fh.seek(0)
                    if digest != sum_cls(fh.read()).hexdigest():
                        return False
        return True
