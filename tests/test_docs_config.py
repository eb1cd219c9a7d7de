"""The config the documents show is the config the code reads.

Every YAML block of ``docs/*.md`` and every ``examples/*.yaml`` goes through
check-config (the load and the offline checks).  A block whose first line is
the comment ``# fragment`` is a part of a file: it is merged into a minimal
config first.  ``# fragment; invalid: the errors below`` marks a block shown
with its errors: the next code block must be exactly what check-config says.

And the reference, docs/config.md, documents every key of the models and no
key they do not have: each heading that names a model (``## `listen`
(`ListenConfig`)``) is followed by a table of exactly that model's keys.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from gate.builders.koji_config import KojiConfig
from gate.config import ConfigError, config_model, parse_config
from gate.config_check import offline_findings
from gate.registry import REGISTRIES, SOURCES

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
#: a review system's page: its blocks are fragments (a source and its projects)
SOURCE_DOCS = sorted((ROOT / "docs" / "sources").glob("*.md"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
_BLOCK = re.compile(r"^```ya?ml\n(.*?)^```\n(?:```\n(.*?)^```)?", re.M | re.S)


def _blocks() -> list[Any]:
    found = []
    for doc in [*DOCS, *SOURCE_DOCS]:
        text = doc.read_text()
        for match in _BLOCK.finditer(text):
            line = text[: match.start()].count("\n") + 1
            block = match.group(1)
            if doc in SOURCE_DOCS and not block.startswith("# fragment"):
                block = "# fragment (a review system's page)\n" + block
            name = doc.relative_to(ROOT / "docs")
            found.append(pytest.param(block, match.group(2), id=f"{name}:{line}"))
    return found


def _merge(base: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in part.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture
def minimal(tmp_path: Path) -> dict[str, Any]:
    """The smallest config that passes check-config here, for fragments to go into."""
    remote = tmp_path / "nova.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(remote)], check=True)
    return {
        "state_dir": str(tmp_path / "state"),
        "publishers": {"liberty": {"root": str(tmp_path / "repos" / "liberty")}},
        "projects": {"nova": {"git": str(remote)}},
        "queues": {"liberty": {"projects": ["nova"], "repo": "liberty"}},
    }


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the documents assume exists: the Koji profiles they name, a home."""
    home = tmp_path / "home"
    (home / ".koji").mkdir(parents=True)
    (home / ".koji" / "config").write_text(
        "[cbs]\nserver = https://cbs.example.com/kojihub\n"
        "topurl = https://cbs.example.com/kojifiles\n"
    )
    monkeypatch.setenv("HOME", str(home))


def _set_variables(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``${VAR}`` the text refers to, set as the service's environment would."""
    for name in re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text):
        monkeypatch.setenv(name, f"value-of-{name.lower()}-0123456789")


def _check(doc: dict[str, Any], source: str) -> list[str]:
    """check-config's complaints about ``doc``, except those about this host's files."""
    config = parse_config(doc, source)
    return [str(f) for f in offline_findings(config) if not f.host]


@pytest.mark.parametrize(("block", "output"), _blocks())
@pytest.mark.usefixtures("world")
def test_every_yaml_block_of_the_docs_passes_check_config(
    block: str, output: str | None, minimal: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = block.splitlines()[0]
    _set_variables(block, monkeypatch)
    part = yaml.safe_load(block)
    doc = _merge(minimal, part) if first.startswith("# fragment") else part
    if "invalid" in first:
        assert output is not None, "an invalid block is followed by its errors"
        source, *errors = output.strip().splitlines()
        with pytest.raises(ConfigError) as exc:
            parse_config(doc, source.split(":")[0])
        assert str(exc.value).splitlines() == [source, *errors]
        return
    assert _check(doc, "block") == []


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
@pytest.mark.usefixtures("world")
def test_every_example_file_passes_check_config(
    example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = example.read_text()
    _set_variables(text, monkeypatch)
    assert _check(yaml.safe_load(text), example.name) == []


# --- every key of the models in docs/config.md, and only those --------------------------

_HEADING = re.compile(r"^#+ .*\(`(\w+)`(?: → `(\w+)`)?\)\s*$")
#: one table for several models: ``(`A`, `B`)``; each key belongs to one of them
_SHARED_HEADING = re.compile(r"^#+ .*\(((?:`\w+`, )+`\w+`)\)\s*$")


def _documented_tables() -> dict[str, set[str]]:
    """Model name -> the keys of the first ``| key |`` table under its heading."""
    tables: dict[str, set[str]] = {}
    model = None
    fenced = False
    for line in (ROOT / "docs" / "config.md").read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced:
            continue
        heading = _HEADING.match(line)
        if heading:
            model = heading.group(2) or heading.group(1)
            continue
        shared = _SHARED_HEADING.match(line)
        if shared:
            model = "+".join(re.findall(r"`(\w+)`", shared.group(1)))
            continue
        if line.startswith("#"):
            model = None
        elif model and line.startswith("| `"):
            first_cell = line.split("|")[1]
            tables.setdefault(model, set()).update(re.findall(r"`([a-z_]+)`", first_cell))
        elif model and model in tables and not line.startswith("|"):
            model = None  # the table ended
    return tables


def _models() -> dict[str, set[str]]:
    """Every model a config file reaches, by class name -> its keys."""
    found: dict[str, set[str]] = {}
    # review systems' keys are documented on their own pages (the test below)
    sources = {SOURCES.get(t).config for t in SOURCES.types()}

    def visit(annotation: Any) -> None:
        for arg in typing.get_args(annotation):
            visit(arg)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation.__name__ in found or annotation in sources:
                return
            found[annotation.__name__] = set(annotation.model_fields)
            for field in annotation.model_fields.values():
                visit(field.annotation)

    visit(config_model())
    for registry in REGISTRIES:
        for type_ in registry.types():
            visit(registry.get(type_).config)
    # the koji backend's keys are KojiConfig's fields (extra keys, checked by name)
    found["KojiConfig"] = {f.name for f in dataclasses.fields(KojiConfig)} | {"type"}
    found.pop("KojiBackendConfig", None)
    return found


def test_every_model_key_is_in_config_md_and_every_documented_key_in_a_model() -> None:
    documented = _documented_tables()
    models = _models()
    for group in [name for name in documented if "+" in name]:
        # a shared table: every key of each model in it, no key of none of them
        keys = documented.pop(group)
        members = group.split("+")
        union = set().union(*(models.get(m, set()) for m in members))
        assert keys <= union, f"{group}: documented keys no model has: {sorted(keys - union)}"
        for member in members:
            documented[member] = keys & models.get(member, set())
    missing = {
        name: sorted(keys - documented.get(name, set()))
        for name, keys in models.items()
        if keys - documented.get(name, set())
    }
    extra = {
        name: sorted(keys - models.get(name, set()))
        for name, keys in documented.items()
        if keys - models.get(name, set())
    }
    assert missing == {}, "keys of the models that docs/config.md does not document"
    assert extra == {}, "keys docs/config.md documents that no model has"


def _key_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every key of ``model`` as a dotted path, sections' keys included (``report.context``)."""
    paths: set[str] = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = [
            a
            for a in (field.annotation, *typing.get_args(field.annotation))
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if nested:
            for sub in nested:
                paths |= _key_paths(sub, f"{path}.")
        else:
            paths.add(path)
    return paths


def _page_keys(page: Path) -> set[str]:
    """The keys in the first column of a page's ``| key |`` table (``user``,
    ``password`` in one cell are two)."""
    keys: set[str] = set()
    in_table = False
    for line in page.read_text().splitlines():
        if line.startswith("| key |"):
            in_table = True
            continue
        if in_table and not line.startswith("|"):
            break
        if in_table and line.startswith("| `"):
            keys.update(re.findall(r"`([a-z_][a-z_.]*)`", line.split("|")[1]))
    return keys


@pytest.mark.parametrize("type_", sorted(SOURCES.types()))
def test_a_review_system_page_tables_exactly_the_keys_of_its_driver(type_: str) -> None:
    """docs/sources/<type>.md's key table: every key of the driver's model (a
    section's by its dotted path or by the section's name), and no key it lacks."""
    paths = _key_paths(SOURCES.get(type_).config) - {"type"}
    if not paths:
        pytest.skip(f"{type_} has no key but its type (docs/config.md, `sources`)")
    page = ROOT / "docs" / "sources" / f"{type_}.md"
    assert page.exists(), f"no page for the {type_} driver"
    documented = _page_keys(page)
    # a section's keys may be documented by the section's path (`approval.flag`)
    prefixes = {".".join(p.split(".")[:i]) for p in paths for i in range(1, p.count(".") + 1)}

    def covered(path: str) -> bool:
        parts = path.split(".")
        return any(".".join(parts[:i]) in documented for i in range(1, len(parts) + 1))

    missing = sorted(p for p in paths if not covered(p))
    unknown = sorted(d for d in documented if d not in paths and d not in prefixes)
    assert (missing, unknown) == ([], []), f"{page.name}: (undocumented, not in the model)"


def test_source_drivers_document_their_keys_under_docs_sources() -> None:
    pages = " ".join(p.read_text() for p in (ROOT / "docs" / "sources").glob("*.md"))
    undocumented = {
        type_: sorted(
            key
            for key in SOURCES.get(type_).config.model_fields
            # a section's key is documented by name, or by its keys (`report.context`)
            if key != "type" and f"`{key}`" not in pages and f"`{key}." not in pages
        )
        for type_ in SOURCES.types()
    }
    assert {t: keys for t, keys in undocumented.items() if keys} == {}
