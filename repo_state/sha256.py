"""sha256 without loading OpenSSL, for hashing a few megabytes on the publishing path.

``import hashlib`` loads ``_hashlib``, which maps the system's libcrypto and
initialises OpenSSL: 3.6 MiB of resident memory in a publishing process that
otherwise needs only the interpreter and createrepo_c (which brings its own
libcrypto), measured with ``ru_maxrss`` before and after the import.  What a
new generation hashes -- its metadata files, a few MB for 20,000 packages, and
the digests of its chunk buckets -- takes CPython's built-in implementation
milliseconds.  The standard library makes the same choice in ``random.py``
("hashlib is pretty heavy to load, try lean internal module first").

Large files (RPMs entering the pool) keep hashlib's faster OpenSSL code:
:mod:`repo_state.pool` imports hashlib when it hashes one.
"""

from __future__ import annotations

import importlib
import sys
from typing import Protocol, cast


class Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


class Constructor(Protocol):
    def __call__(self, data: bytes = b"", /) -> Hash: ...


def _builtin() -> Constructor:
    # the built-in module is _sha256 up to 3.11, _sha2 from 3.12 on
    name = "_sha2" if sys.version_info >= (3, 12) else "_sha256"
    try:
        module = importlib.import_module(name)
    except ImportError:  # an interpreter built without it: hashlib it is
        module = importlib.import_module("hashlib")
    return cast(Constructor, module.sha256)


#: ``sha256(data=b"")``: a new hash object, the same interface as ``hashlib.sha256``'s
sha256 = _builtin()
