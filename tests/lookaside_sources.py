"""``fedpkg sources`` for the test world: what a builder runs after an SCM checkout.

kojid runs the ``source_cmd`` of the matching ``allowed_scms`` entry in the
checkout (Fedora's builders: ``fedpkg,sources``) to fetch the tarballs the
``sources`` file names from the lookaside cache.  Usage, from the checkout:
``python lookaside_sources.py <lookaside root>``; files are looked up at
``<root>/<package>/<file>/<hashtype>/<hash>/<file>`` (Fedora's layout) and
their checksums verified.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

from gate.builders.lookaside import parse_sources


def main(root: str) -> int:
    here = Path.cwd()
    specs = sorted(here.glob("*.spec"))
    if len(specs) != 1 or not (here / "sources").is_file():
        return 0
    package = specs[0].stem
    for entry in parse_sources((here / "sources").read_text()):
        cached = (
            Path(root) / package / entry.filename / entry.hashtype / entry.hash / (entry.filename)
        )
        digest = hashlib.new(entry.hashtype, cached.read_bytes()).hexdigest()
        if digest != entry.hash:
            print(f"{entry.filename}: checksum mismatch", file=sys.stderr)
            return 1
        shutil.copyfile(cached, here / entry.filename)
        print(f"Downloading {entry.filename}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
