"""The import graph: the engine's folders import only the layers below them, and nothing imports in a circle.

Read from the source (ast), so a lazy import inside a function counts as much as one at the top."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
# the engine's layers, bottom first: each may import only itself and the layers before it
ENGINE = ["model", "update", "selforg", "hooks", "config", "run"]
BELOW_ENGINE = {"k1.common", "k1.errors", "k1.registry", "k1.data", "k1"}


def unit(module: str) -> str:
    parts = module.split(".")
    if parts[:2] == ["k1", "engine"] and len(parts) >= 3:
        return "k1.engine." + parts[2]
    return ".".join(parts[:2])


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        mod = ".".join(path.with_suffix("").relative_to(SRC).parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("k1"):
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("k1")]
            for t in targets:
                if unit(t) != unit(mod):
                    edges.setdefault(unit(mod), set()).add(unit(t))
    return edges


def test_engine_layers_import_only_downward():
    edges = graph()
    for i, layer in enumerate(ENGINE):
        allowed = {f"k1.engine.{lower}" for lower in ENGINE[:i]} | BELOW_ENGINE
        extra = edges.get(f"k1.engine.{layer}", set()) - allowed
        assert not extra, f"engine/{layer} imports {sorted(extra)}"
    for low in BELOW_ENGINE - {"k1"}:
        up = {t for t in edges.get(low, set()) if t not in BELOW_ENGINE}
        assert not up, f"{low} imports {sorted(up)}"


def test_no_import_circles():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in sorted(edges.get(n, ())):
            assert state.get(m) != 1, "import circle: " + " → ".join(path[path.index(m):] + [n, m]) \
                if m in path else f"import circle through {n} → {m}"
            if m not in state:
                visit(m, path + [n])
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n, [])
