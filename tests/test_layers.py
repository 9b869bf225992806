"""The package's import graph: every arrow points down the layers, and there is no circle.

Read statically from the sources (imports inside functions count too), so it also covers
modules that need torch or other optional packages.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "convloc"

# Top to bottom. A module may import modules of lower layers, and modules of its own package
# (e.g. models.rcnn -> models.common), never a higher layer or another package of its own layer.
LAYERS = [
    ["convloc.cli"],
    ["convloc.benchmarks"],  # `convloc bench`, parsed with the commands' argument types
    ["convloc.commands"],
    ["convloc.models"],
    ["convloc.data", "convloc.metrics"],
    ["convloc.densecrf", "convloc.simplecrf", "convloc.nn"],
    ["convloc"],  # the package itself: convloc.info(), convloc.set_num_threads(), ...
    ["convloc.ops"],
    ["convloc._torch"],
    ["convloc._kernels"],
    ["convloc._C"],
]
# The only layer that calls the compiled module.
CALLS_C = "convloc._kernels"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def room(name: str) -> str:
    """The layer entry (package) a module belongs to."""
    entries = [e for layer in LAYERS for e in layer]
    matches = [e for e in entries if name == e or (e != "convloc" and name.startswith(e + "."))]
    assert matches, f"{name} belongs to no layer: add it to LAYERS"
    return max(matches, key=len)


def rank(entry: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if entry in layer)


def imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The convloc modules that `name` imports (``from pkg import mod`` names the module)."""
    package = (
        name
        if (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()
        else name.rpartition(".")[0]
    )
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                base = ".".join(up[: len(up) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t == "convloc" or t.startswith("convloc."))
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    trees = modules()
    known = set(trees) | {"convloc._C"}
    return {name: imports(name, tree, known) for name, tree in trees.items()}


def test_every_arrow_points_down():
    wrong = []
    for name, targets in graph().items():
        src = room(name)
        for target in sorted(targets):
            dst = room(target)
            if dst != src and rank(dst) <= rank(src):
                wrong.append(f"{name} ({src}) imports {target} ({dst})")
    assert not wrong, "imports that do not point down the layers:\n" + "\n".join(wrong)


def test_no_circle():
    g = graph()
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_only_the_kernels_layer_calls_the_compiled_module():
    callers = sorted(n for n, t in graph().items() if "convloc._C" in t and room(n) != CALLS_C)
    assert not callers, f"modules outside {CALLS_C} import convloc._C: {callers}"


def test_no_private_names_across_packages():
    """``from convloc.x import _private`` or ``x._private`` between packages bypasses a layer's API."""
    trees = modules()
    wrong = []
    for name, tree in trees.items():
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("convloc"):
                for a in node.names:
                    target = f"{node.module}.{a.name}"
                    if target in trees or target == "convloc._C":
                        aliases[a.asname or a.name] = target
                    elif a.name.startswith("_") and room(node.module) != room(name):
                        wrong.append(f"{name} imports {a.name} from {node.module}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname and a.name in trees:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and room(aliases[node.value.id]) != room(name)
            ):
                wrong.append(f"{name} uses {aliases[node.value.id]}.{node.attr}")
    assert not wrong, "private names used across packages:\n" + "\n".join(sorted(set(wrong)))


def test_graph_sees_the_known_arrows():
    # The checks above are only as good as the graph: it must see the arrows that exist.
    g = graph()
    assert "convloc._kernels.roi" in g["convloc.ops.roi"]
    assert "convloc._kernels.roi" in g["convloc._torch.roi"]
    assert "convloc._torch.roi" in g["convloc.ops.roi"]  # imported inside a function
    assert "convloc._C" in g["convloc._kernels.roi"]
    assert "convloc.ops" in g["convloc.nn.roi"]


def test_numpy_users_do_not_import_torch():
    code = (
        "import sys, convloc, convloc.ops, convloc.densecrf.utils, convloc.simplecrf; "
        "sys.exit('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr or "importing convloc imported torch"


@pytest.mark.parametrize("layer", [e for layer in LAYERS for e in layer if e != "convloc._C"])
def test_every_layer_has_modules(layer):
    assert any(room(n) == layer for n in modules()), f"{layer} names no module: update LAYERS"
