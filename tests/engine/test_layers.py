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


# ---- file level: modules, not packages ------------------------------------------------------------------
def modules() -> dict[str, Path]:
    return {".".join(p.with_suffix("").relative_to(SRC).parts).removesuffix(".__init__"): p for p in SRC.rglob("*.py")}


def file_graph() -> dict[str, set[str]]:
    """module → the k1 modules it imports, anywhere in the file (inside functions too); `from pkg import name`
    counts as an import of `pkg.name` where that is a module."""
    mods = modules()
    edges: dict[str, set[str]] = {}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("k1"):
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                           for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("k1")]
            edges.setdefault(mod, set()).update(t for t in targets if t in mods and t != mod)
    return edges


def circles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


# Circles that remain, each to break by moving code (none today); breaking one must remove it from here.
KNOWN_CIRCLES: set[frozenset[str]] = set()


def test_no_file_imports_another_in_a_circle():
    found = set(circles(file_graph()))
    assert found - KNOWN_CIRCLES == set(), f"new import circles: {[sorted(c) for c in found - KNOWN_CIRCLES]}"
    assert KNOWN_CIRCLES - found == set(), f"broken, remove from KNOWN_CIRCLES: {KNOWN_CIRCLES - found}"
    assert not any(c for c in found if any(m.startswith("k1.pool") for m in c)), "the pool has no circle"


# The pool's own layers, bottom first: a module imports pool modules of its own layer or below only.
POOL_LAYERS = [
    # members, caches and the pieces that know nothing of a pool: errors, tenants, settings, classifiers
    ["k1.pool.errors", "k1.pool.tenants", "k1.pool.members", "k1.pool.kv", "k1.pool.testing",
     "k1.pool.route.limits", "k1.pool.route.textsignals", "k1.pool.route.context", "k1.pool.route.snarc",
     "k1.pool.route.metabolic", "k1.pool.route.select", "k1.pool.route.taskclass", "k1.pool.sleep.settings"],
    # a pool's state: its file, members, store, ledger, status, and the sleep that runs DREAM as a child process
    ["k1.pool.config", "k1.pool.pool", "k1.pool.store", "k1.pool.store_copy", "k1.pool.ledger", "k1.pool.status",
     "k1.pool.sleep"],
    # the request path
    ["k1.pool.route"],
    # learning from use (DREAM, calibration, verifiers) — above the request path, never below it
    ["k1.pool.learn"],
    # opening a pool, the default pool, member specs, the report
    ["k1.pool.session", "k1.pool.default", "k1.pool.gemma", "k1.pool.spec", "k1.pool.report"],
    ["k1.pool.server"],
    ["k1.pool.cli", "k1.pool"],
]


def pool_layer(mod: str) -> int | None:
    best = None
    for i, layer in enumerate(POOL_LAYERS):
        for prefix in layer:
            if (mod == prefix or mod.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (i, len(prefix))
    return None if best is None else best[0]


def test_the_pool_imports_only_downward():
    edges = file_graph()
    pool = [m for m in modules() if m.startswith("k1.pool")]
    assert all(pool_layer(m) is not None for m in pool), [m for m in pool if pool_layer(m) is None]
    bad = [(m, t) for m in pool for t in edges.get(m, ()) if t.startswith("k1.pool") and pool_layer(t) > pool_layer(m)]
    assert not bad, "upward imports in the pool: " + ", ".join(f"{m} → {t}" for m, t in sorted(bad))
