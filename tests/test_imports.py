"""Every soundstorm module imports (or only lacks an optional extra); the import graph has no cycle and
its arrows point one way.

Layers, lowest first (lazy, function-level imports count too). A module may import its own layer
and the layers below it, never one above: the paper's core never reaches into the applications,
and nothing but the command line reads the command line's modules.
"""

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


# name prefix → layer; the longest matching prefix decides (so "soundstorm.io" is not "soundstorm.i...")
LAYERS = {
    # 0 foundation: files, limits, names, checks, the Conformer and its attention, int8
    "soundstorm._checks": 0, "soundstorm.io": 0, "soundstorm.paths": 0, "soundstorm.limits": 0,
    "soundstorm._kmeans": 0, "soundstorm.dsp": 0, "soundstorm._optional": 0, "soundstorm.attention": 0,
    "soundstorm.conformer": 0,
    "soundstorm.quantize": 0, "soundstorm.config_keys": 0, "soundstorm.outputs": 0,
    # 1 the paper's pieces: model (§3.1), masking (§3.2), sampler (§3.3), codecs, semantic tokens, data
    "soundstorm.model": 1, "soundstorm.masking": 1, "soundstorm.sampler": 1, "soundstorm.longform": 1,
    "soundstorm.codecs": 1, "soundstorm.semantic": 1, "soundstorm.data": 1, "soundstorm.assets": 1,
    # 2 what runs them: training, evaluation, backends, the benchmark
    "soundstorm.train": 2, "soundstorm.evaluation": 2, "soundstorm.backends": 2, "soundstorm.bench": 2,
    "soundstorm.resources": 2,  # peak memory of a generation (uses the train layer's meta model)
    # 3 configs → objects (the only reader of Hydra/OmegaConf below the applications)
    "soundstorm.builders": 3,
    "soundstorm.hydra_sweep": 3,  # Hydra's multirun state: resolvers builders registers, the sweep callback
    # 4 the applications built on the core
    "soundstorm.t2s": 4, "soundstorm.dialogue": 4, "soundstorm.synthesis": 4,
    # 5 the command line
    "soundstorm.cli": 5,
}


def layer_of(module: str) -> int | None:
    matches = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return LAYERS[max(matches, key=len)] if matches else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``"a -> b"`` for every import of a module from a higher layer than the importer's."""
    found = []
    for name, targets in sorted(graph.items()):
        for target in sorted(targets):
            low, high = layer_of(name), layer_of(target)
            if low is not None and high is not None and high > low:
                found.append(f"{name} (layer {low}) -> {target} (layer {high})")
    return found


def test_every_module_has_a_layer():
    unplaced = [name for name in _modules() if name != "soundstorm" and layer_of(name) is None]
    assert not unplaced, f"modules without a layer in LAYERS: {unplaced}"


def test_imports_point_down_the_layers():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    assert not upward_imports(graph), "upward imports:\n" + "\n".join(upward_imports(graph))


def test_layer_check_sees_an_upward_import():
    graph = {"soundstorm.evaluation.speech_table": {"soundstorm.t2s.generate", "soundstorm.sampler"},
             "soundstorm.model": {"soundstorm.conformer"}}
    assert upward_imports(graph) == ["soundstorm.evaluation.speech_table (layer 2) -> soundstorm.t2s.generate (layer 4)"]


def test_cycle_finder_sees_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
