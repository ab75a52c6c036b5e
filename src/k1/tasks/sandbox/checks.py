"""Split a task's test lines into calls with expected values (compared outside the sandbox) and opaque code.

`assert f(3) == 12` becomes the call `f(3)`, sent to the candidate, and the expected `12`, which stays
here. Anything else (`check(candidate)`, `assert not f(0)`, `assert abs(f(2) - 1.5) < 1e-6`) is opaque
test code and runs in the checker sandbox, apart from the candidate.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass


@dataclass(frozen=True)
class Call:
    expr: str        # evaluated in the candidate's namespace
    expected: object  # a literal; never sent anywhere


def _literal(node: ast.AST):
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def as_call(test: str) -> Call | None:
    """`assert <expr> == <literal>` (either side; `is` True/False/None too) → Call, else None."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return None
    cmp = tree.body[0].test
    if not (isinstance(cmp, ast.Compare) and len(cmp.ops) == 1 and isinstance(cmp.ops[0], (ast.Eq, ast.Is))):
        return None
    left, right = cmp.left, cmp.comparators[0]
    for expr, lit in ((left, right), (right, left)):
        ok, value = _literal(lit)
        if ok and not _literal(expr)[0]:
            if isinstance(cmp.ops[0], ast.Is) and value not in (True, False, None):
                return None
            return Call(ast.unparse(expr), value)
    return None


def free_names(tests: list[str], setup: list[str] = ()) -> list[str]:
    """Names the tests read but neither define nor import nor get from builtins: the candidate's functions."""
    read, bound = set(), set()
    for src in [*setup, *tests]:
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(node.name)
                bound.update(a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                bound.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                bound.add(node.name)
    return sorted(read - bound - set(dir(builtins)) - {"candidate"})
