"""Split a task's test lines into calls with expected values (compared outside the sandbox) and opaque code.

`assert f(3) == 12`, where `f` is one of the candidate's functions, becomes the call `f(3)`, sent to the
candidate, and the expected `12`, which stays here. Only a call of the candidate's own function goes to
the candidate: in `assert round(f(2), 2) == 1.5` or `assert is_valid(f(3)) == True` the outer function
would be looked up in the candidate's namespace, where the candidate may have redefined it, so such a
test is opaque. Opaque test code (also `check(candidate)`, `assert not f(0)`, `assert abs(f(2) - 1.5) < 1e-6`)
runs in the checker sandbox, apart from the candidate, with the task's own helpers.
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


def as_call(test: str, funcs=None) -> Call | None:
    """`assert <expr> == <literal>` (either side; `is` True/False/None too) → Call, else None; with `funcs`
    (the candidate's function names), only where <expr> is a call of one of them."""
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
            if funcs is not None and not (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name)
                                          and expr.func.id in funcs):
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


def defined_names(src: str) -> set[str]:
    """Names a piece of task code (a HumanEval prompt, MBPP setup) binds at module level: its helpers."""
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return set()
    out = set()
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(stmt.name)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            out.update((a.asname or a.name).split(".")[0] for a in stmt.names)
        else:
            out.update(n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
    return out
