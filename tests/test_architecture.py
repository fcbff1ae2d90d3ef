"""The package's shape, checked from its source: data flows one way, nothing below a job imports
a job, there are no import cycles, and no import hides in a function body to dodge one."""

import ast
import importlib
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "ser"
# entry points -> jobs -> models/diffusion -> data/features -> evaluation helpers (bottom: leaves).
# A module may import its own layer or any layer below it, never one above.
LAYERS = {
    "ser.jobs": 5, "ser.experiment": 5, "ser.predict": 5,
    "ser.config": 4,
    "ser.models": 3, "ser.diffusion": 3, "ser.hardware": 3, "ser.instantiators": 3, "ser.tracking": 3,
    "ser.data": 2, "ser.features": 2,
    "ser.evaluation": 1,
    "ser.errors": 0, "ser.io": 0, "ser.emotions": 0, "ser.environment": 0,
}
# Lazy on purpose, each for its reason: optional extras (opensmile), heavy imports needed only at
# the end of a W&B run or by one augmentation arm (audiomentations: 1.3 s), and `ser.Predictor`
# resolved on first use so `import ser` stays cheap.
LAZY_IMPORTS = {("ser/__init__.py", "ser.predict"), ("ser/features/smile.py", "opensmile"),
                ("ser/models/classical.py", "opensmile"), ("ser/tracking.py", "wandb"),
                ("ser/features/augment.py", "audiomentations")}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path) -> tuple[set[str], list[tuple[str, str]]]:
    """(ser modules imported at module level, [(function, module)] imported inside functions)."""
    tree = ast.parse(path.read_text())
    top, nested = set(), []
    in_functions = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                    for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        if id(node) in in_functions:
            nested.append(names[0])
        else:
            top.update(n for n in names if n.startswith("ser"))
    return top, nested


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for m in _imports(path)[0] if m in modules and m != name} for name, path in modules.items()}


def _layer(module: str) -> int:
    return max((v for k, v in LAYERS.items() if module == k or module.startswith(k + ".")), default=-1)


def test_every_module_has_a_layer():
    assert [m for m in _modules() if m != "ser" and _layer(m) < 0] == []


def test_no_import_cycles():
    graph, state, cycles = _graph(), {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_data_flows_one_way():
    upward = [(m, dep) for m, deps in _graph().items() if m != "ser" for dep in deps
              if dep != "ser" and _layer(dep) > _layer(m)]
    assert upward == []
    assert not [m for m, deps in _graph().items() if not m.startswith("ser.jobs") and any(d.startswith("ser.jobs") for d in deps)]


def test_imports_in_function_bodies_are_only_the_documented_lazy_ones():
    nested = {(str(path.relative_to(ROOT)), mod) for path in _modules().values() for mod in _imports(path)[1]}
    assert nested <= LAZY_IMPORTS


def test_every_package_docstring_maps_its_modules():
    """Each folder's __init__ docstring is the newcomer's map of it: it must name every file there."""
    unnamed = [str(path.relative_to(ROOT)) for init in PACKAGE.glob("*/__init__.py")
               for path in sorted(init.parent.glob("*.py"))
               if path.name != "__init__.py" and path.name not in (ast.get_docstring(ast.parse(init.read_text())) or "")]
    assert unnamed == []


def test_the_developers_guide_maps_every_module():
    """DEVELOPERS.md's layout is the contributor's map of the whole package: it names every file."""
    guide = (ROOT / "DEVELOPERS.md").read_text()
    unnamed = [str(p.relative_to(ROOT)) for p in sorted(PACKAGE.rglob("*.py")) if p.name != "__init__.py" and p.name not in guide]
    assert unnamed == []


@pytest.mark.parametrize("module", sorted(_modules()))
def test_every_module_imports(module):
    importlib.import_module(module)
