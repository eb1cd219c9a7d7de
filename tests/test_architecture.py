"""The shape of the code: no import cycle, stages independent of the daemon, drivers by
registration only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gate", "publishers", "repo_state")
#: the modules allowed to import the daemon: the entry points that run it
DAEMON_USERS = {"gate.cli", "gate.demo"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue  # run by alembic, never imported by the code
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path], me: str) -> set[str]:
    """Every project module ``path`` imports: at module level, under ``TYPE_CHECKING``,
    and inside functions alike."""
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != me:
                deps.add(name)
    return deps


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules, name) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


def test_no_module_imports_another_that_imports_it_back() -> None:
    graph = _graph()
    assert len(graph) > 50  # the walk found the code
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_only_the_entry_points_import_the_daemon() -> None:
    users = {m for m, deps in _graph().items() if "gate.daemon" in deps}
    assert users <= DAEMON_USERS, users - DAEMON_USERS


def test_the_pure_core_does_no_io() -> None:
    """The planner's world: model, transitions, queue rules, planner import nothing else."""
    pure = {"gate.model", "gate.transitions", "gate.queue_rules", "gate.planner"}
    graph = _graph()
    for module in pure:
        assert graph[module] <= pure, (module, graph[module] - pure)


def test_every_module_imports_on_its_own_in_a_fresh_interpreter() -> None:
    names = sorted(_modules())
    script = "\n".join(
        [
            "import importlib, sys",
            "failed = []",
            f"for name in {names!r}:",
            "    try:",
            "        importlib.import_module(name)",
            "    except Exception as exc:",
            "        failed.append(f'{name}: {exc!r}')",
            "print('\\n'.join(failed))",
            "sys.exit(1 if failed else 0)",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
