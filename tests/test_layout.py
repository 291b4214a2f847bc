"""The layout's rule (docs/architecture.md): every import points down a floor or stays on
its own, and no modules import each other in a circle."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOORS = {"common": 1, "models": 1, "datasets": 2, "clients": 3, "attacks": 3, "evaluation": 4, "strategies": 5,
          "simulations": 6, "studies": 7}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The project modules ``path`` imports, at the top or inside a function."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] in FLOORS}


def graph() -> dict[str, set[str]]:
    files = [p for top in FLOORS for p in (ROOT / top).rglob("*.py")]
    modules = {module_name(p): p for p in files}
    return {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_no_import_runs_up_a_floor():
    up = [f"{a} -> {b}" for a, deps in graph().items() for b in deps
          if FLOORS[b.split(".")[0]] > FLOORS[a.split(".")[0]]]
    assert not up, up


def test_models_and_common_import_nothing_above_themselves():
    g = graph()
    assert all(b.split(".")[0] == "common" for a, deps in g.items() if a.startswith("common") for b in deps)
    assert all(b.split(".")[0] == "models" for a, deps in g.items() if a.startswith("models") for b in deps)


def test_no_import_circle():
    g = graph()
    # a package imports its own submodules (``models/__init__`` -> ``models.cnn``); only
    # module-to-module edges can close a circle that matters, so packages are left out
    g = {a: {b for b in deps if not (ROOT / b.replace(".", "/") / "__init__.py").exists()}
         for a, deps in g.items() if not (ROOT / a.replace(".", "/") / "__init__.py").exists()}
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for start in sorted(g):
        if start not in state:
            visit(start, [start])
    assert not circles, circles


def test_the_attack_library_has_no_flower_import():
    for path in (ROOT / "attacks").rglob("*.py"):
        text = path.read_text()
        assert "import flwr" not in text and "from flwr" not in text, path.name
