"""Several packages in one project (docs/pipelines.md, Package order): order, inputs, reuse.

The inputs are read from real git trees (``git ls-tree``), as the gate reads them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from gate.config import ConfigError, parse_config
from gate.merger import Merger
from gate.package_plan import MissingSpec, plan_at
from gate.packages import (
    PackageConfig,
    PackageOrderError,
    PreviousBuild,
    built_after,
    input_digests,
    package_order,
    parse_ls_tree,
    plan_packages,
    spec_names,
)

PYTHON_FOO = """\
Name:           python-foo
Version:        1.0
Release:        1
Summary:        foo
License:        MIT
BuildArch:      noarch
BuildRequires:  python3-devel >= 3.9, python3-setuptools

%description
foo

%package -n python3-foo
Summary: foo for Python 3
Provides: foo-python = %{version}

%description -n python3-foo
foo

%package tests
Summary: tests
%description tests
tests
"""

FOO_DOC = """\
Name:    foo-doc
Version: 1.0
Release: 1
Summary: docs
License: MIT
BuildRequires: python3-foo >= 1.0
BuildRequires: %{py3_dist sphinx}
BuildRequires: (python3-foo-extras or python3-foo)
%description
docs
"""

FOO_CLI = """\
Name: foo-cli
BuildRequires: python-foo-tests
%description
cli
"""


def test_spec_names_reads_name_subpackages_provides_and_build_requires() -> None:
    names = spec_names(PYTHON_FOO)
    assert names.provides == {"python-foo", "python3-foo", "python-foo-tests", "foo-python"}
    assert names.build_requires == {"python3-devel", "python3-setuptools"}
    # a macro is not expanded: the name is not matched rather than guessed
    assert spec_names(FOO_DOC).build_requires == {"python3-foo"}


def _packages(**entries: dict[str, Any]) -> dict[str, PackageConfig]:
    return {name: PackageConfig.model_validate(e) for name, e in entries.items()}


def test_order_follows_after_then_build_requires_then_config_order() -> None:
    packages = _packages(
        **{
            "foo-doc": {"spec": "foo-doc/foo-doc.spec"},
            "foo-cli": {"spec": "foo-cli/foo-cli.spec"},
            "python-foo": {"spec": "python-foo/python-foo.spec"},
        }
    )
    specs = {
        "foo-doc": spec_names(FOO_DOC),
        "foo-cli": spec_names(FOO_CLI),
        "python-foo": spec_names(PYTHON_FOO),
    }
    after = built_after(packages, specs)
    assert after == {"foo-doc": {"python-foo"}, "foo-cli": {"python-foo"}, "python-foo": set()}
    assert package_order(after) == ["python-foo", "foo-doc", "foo-cli"]
    # an explicit after wins over BuildRequires
    packages["foo-doc"] = PackageConfig(spec="foo-doc/foo-doc.spec", after=("foo-cli",))
    assert package_order(built_after(packages, specs)) == ["python-foo", "foo-cli", "foo-doc"]


def test_a_cycle_and_an_unknown_package_are_refused_naming_the_key() -> None:
    cycle = _packages(a={"spec": "a.spec", "after": ["b"]}, b={"spec": "b.spec", "after": ["a"]})
    with pytest.raises(PackageOrderError) as exc:
        package_order(built_after(cycle, where="projects.foo.packages"), "projects.foo.packages")
    assert exc.value.key == "projects.foo.packages.a.after"
    assert str(exc.value) == "the packages' build order has a cycle: a after b, b after a"
    unknown = _packages(a={"spec": "a.spec", "after": ["c"]}, b={"spec": "b.spec"})
    with pytest.raises(PackageOrderError) as exc:
        built_after(unknown, where="projects.foo.packages")
    assert exc.value.key == "projects.foo.packages.a.after.0"
    assert "unknown package 'c' (the project's other packages: b)" in str(exc.value)


# --- the config ----------------------------------------------------------------------------


def _doc(tmp_path: Path, **project: Any) -> dict[str, Any]:
    return {
        "state_dir": str(tmp_path / "state"),
        "publishers": {"liberty": {"root": str(tmp_path / "repo")}},
        "projects": {"foo": {"git": str(tmp_path / "foo.git"), **project}},
        "queues": {"liberty": {"projects": ["foo"], "repo": "liberty"}},
    }


def test_one_package_entry_names_the_package_and_its_spec(tmp_path: Path) -> None:
    config = parse_config(_doc(tmp_path, packages={"python-foo": {"spec": "rpm/foo.spec"}}))
    assert config.package_of("foo") == "python-foo"
    assert config.spec_of("foo") == "rpm/foo.spec"


@pytest.mark.parametrize(
    ("project", "line"),
    [
        (
            {"packages": {"a": {"spec": "a.spec", "after": ["b"]}}},
            "projects.foo.packages.a.after.0: package a is after unknown package 'b' "
            "(the project's other packages: none)",
        ),
        (
            {
                "packages": {
                    "a": {"spec": "a.spec", "after": ["b"]},
                    "b": {"spec": "b.spec", "after": ["a"]},
                }
            },
            "projects.foo.packages.a.after: the packages' build order has a cycle",
        ),
        (
            {"packages": {"a": {"spec": "../a.spec"}}},
            "projects.foo.packages.a.spec: '../a.spec' is not a path inside",
        ),
        (
            {"spec": "a.spec", "packages": {"a": {"spec": "a.spec"}}},
            "projects.foo.spec: give either packages or package/spec",
        ),
    ],
)
def test_package_config_errors_name_the_key(
    tmp_path: Path, project: dict[str, Any], line: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(_doc(tmp_path, **project), "rpmgate.yaml")
    assert line in str(exc.value)


# --- inputs and reuse, on real git trees -----------------------------------------------------


def _git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True).stdout


def _commit(repo: Path, files: dict[str, str], message: str) -> bytes:
    for path, text in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", message)
    return _git(repo, "ls-tree", "-r", "-z", "HEAD")


def test_an_unchanged_package_reuses_its_build_and_a_dependent_one_is_rebuilt(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "foo"
    repo.mkdir()
    _git(repo, "init", "-q")
    packages = _packages(
        **{
            "python-foo": {"spec": "python-foo/python-foo.spec"},
            "foo-doc": {"spec": "foo-doc/foo-doc.spec", "after": ["python-foo"]},
            "foo-cli": {"spec": "foo-cli.spec", "paths": ["cli"]},
        }
    )
    after = built_after(packages)
    first = input_digests(
        packages,
        after,
        parse_ls_tree(
            _commit(
                repo,
                {
                    "python-foo/python-foo.spec": PYTHON_FOO,
                    "python-foo/sources": "SHA512 (foo-1.0.tar.gz) = 00\n",
                    "foo-doc/foo-doc.spec": FOO_DOC,
                    "foo-cli.spec": FOO_CLI,
                    "cli/main.c": "int main(void) { return 0; }\n",
                    "README.md": "foo\n",
                },
                "initial",
            )
        ),
    )
    built = {name: PreviousBuild(i, first[name], f"{name}-1.0-1") for i, name in enumerate(first)}

    # the docs change: python-foo (and the cli) are reused, foo-doc is built
    second = input_digests(
        packages,
        after,
        parse_ls_tree(_commit(repo, {"foo-doc/foo-doc.spec": FOO_DOC + "# more\n"}, "docs")),
    )
    steps = plan_packages(package_order(after), second, built)
    assert [(s.package, s.action) for s in steps] == [
        ("python-foo", "reuse"),
        ("foo-doc", "build"),
        ("foo-cli", "reuse"),
    ]
    assert steps[0].reused == built["python-foo"]

    # a file outside every package's paths changes nothing
    third = input_digests(
        packages, after, parse_ls_tree(_commit(repo, {"README.md": "foo!\n"}, "readme"))
    )
    assert third == second

    # python-foo's sources change: it is built, and foo-doc (built after it) too
    fourth = input_digests(
        packages,
        after,
        parse_ls_tree(
            _commit(repo, {"python-foo/sources": "SHA512 (foo-1.1.tar.gz) = 11\n"}, "1.1")
        ),
    )
    built["foo-doc"] = PreviousBuild(9, second["foo-doc"], "foo-doc-1.0-2")
    steps = plan_packages(package_order(after), fourth, built)
    assert [(s.package, s.action) for s in steps] == [
        ("python-foo", "build"),
        ("foo-doc", "build"),
        ("foo-cli", "reuse"),
    ]


async def test_a_plan_at_a_commit_reads_the_specs_order_and_inputs_through_the_merger(
    tmp_path: Path,
) -> None:
    """Through the gate's own clone (real git): BuildRequires order, then a reuse."""
    remote = tmp_path / "foo"
    remote.mkdir()
    _git(remote, "init", "-q")
    _commit(
        remote,
        {
            "python-foo/python-foo.spec": PYTHON_FOO,
            "foo-doc/foo-doc.spec": FOO_DOC,
        },
        "initial",
    )
    first = _git(remote, "rev-parse", "HEAD").decode().strip()
    _commit(remote, {"foo-doc/foo-doc.spec": FOO_DOC + "# fix\n"}, "docs")
    second = _git(remote, "rev-parse", "HEAD").decode().strip()
    packages = _packages(
        **{
            "foo-doc": {"spec": "foo-doc/foo-doc.spec"},  # BuildRequires python3-foo
            "python-foo": {"spec": "python-foo/python-foo.spec"},
        }
    )
    merger = Merger(tmp_path / "git")
    steps = await plan_at(merger, "foo", str(remote), first, packages, {})
    assert [(s.package, s.action) for s in steps] == [
        ("python-foo", "build"),
        ("foo-doc", "build"),
    ]
    previous = {s.package: PreviousBuild(i, s.digest, "") for i, s in enumerate(steps)}
    steps = await plan_at(merger, "foo", str(remote), second, packages, previous)
    assert [(s.package, s.action) for s in steps] == [
        ("python-foo", "reuse"),
        ("foo-doc", "build"),
    ]
    missing = _packages(a={"spec": "a/a.spec"})
    with pytest.raises(MissingSpec, match=r"package a: a/a.spec is not in commit"):
        await plan_at(merger, "foo", str(remote), second, missing, {})
