"""Every soundstorm module imports (or only lacks an optional extra), and the import graph has no cycle."""

import ast
import importlib
import pkgutil
from pathlib import Path

import soundstorm
from soundstorm._optional import EXTRAS

ROOT = Path(soundstorm.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {"soundstorm": ROOT / "__init__.py"}
    for info in pkgutil.walk_packages([str(ROOT)], prefix="soundstorm."):
        spec = importlib.util.find_spec(info.name)
        modules[info.name] = Path(spec.origin)
    return modules


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """soundstorm modules named by any import statement in the file (function-level ones too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_module_imports():
    """A module may fail to import only because an optional package of an extra is missing (e.g. the xla
    backend without torch_xla); any other error fails, and so does a missing required package."""
    for name in _modules():
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name not in EXTRAS:
                raise


def test_import_graph_has_no_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    assert graph["soundstorm.model"], "the walker found no imports in model.py"
    assert _find_cycle(graph) is None, f"import cycle: {' -> '.join(_find_cycle(graph))}"


def test_cycle_finder_sees_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
