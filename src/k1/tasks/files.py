"""Task files from the outside world: JSONL in K-1's own layout or in the layouts of common code benchmarks.

Each line's layout is told from its fields:

- K-1: `{"kind": "arithmetic", "prompt", "answer"}` or `{"kind": "python", "prompt", "entry", "tests"}`.
- HumanEval-like: `{"prompt", "entry_point", "test"}`; the prompt is a signature and docstring, the test
  defines `check(candidate)`. The model is asked to complete the function; its code runs after the prompt's
  own lines (imports, helpers), and `check(<entry_point>)` is the one opaque test.
- MBPP-like: `{"text" | "prompt", "test_list"}` with optional `test_setup_code` / `test_imports`; the
  model is told the description and the function's name (taken from the first test), never the tests.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from k1.errors import ConfigError
from k1.tasks.task import Task

LAYOUTS = "K-1 ({kind, prompt, ...}), HumanEval-like ({prompt, entry_point, test}) or MBPP-like ({text|prompt, test_list})"


def _k1(d: dict, i: int, stem: str) -> Task:
    kind = d["kind"]
    if kind == "arithmetic":
        check = {"answer": int(d["answer"])}
    elif kind == "python":
        check = {"entry": str(d["entry"]), "tests": [str(t) for t in d["tests"]]}
    else:
        raise ValueError(f"kind {kind!r} is not arithmetic or python")
    return Task(str(d.get("id", f"{stem}-{i}")), kind, str(d["prompt"]), check, source="file")


def _humaneval(d: dict, i: int, stem: str) -> Task:
    prompt, entry, test = str(d["prompt"]), str(d["entry_point"]), str(d["test"])
    if not entry.isidentifier():
        raise ValueError(f"entry_point {entry!r} is not a Python name")
    ask = f"Complete this Python function and reply with the whole function:\n```python\n{prompt}```"
    # the prompt's imports also serve the test code (HumanEval's harness runs both in one namespace)
    setup = [ast.unparse(n) for n in ast.parse(prompt).body if isinstance(n, (ast.Import, ast.ImportFrom))]
    return Task(str(d.get("task_id", f"{stem}-{i}")), "python", ask,
                {"entry": entry, "tests": [f"{test}\ncheck({entry})\n"], "prefix": prompt, "setup": setup},
                source="file")


def _called_name(test: str) -> str:
    """The function an MBPP assert calls: the first call whose callee is a plain name, not a builtin."""
    import builtins

    for node in ast.walk(ast.parse(test)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not hasattr(builtins, node.func.id):
            return node.func.id
    raise ValueError(f"no function call in the test {test[:80]!r}")


def _mbpp(d: dict, i: int, stem: str) -> Task:
    text = str(d.get("text", d.get("prompt")))
    tests = [str(t) for t in d["test_list"]]
    if not tests:
        raise ValueError("test_list is empty")
    entry = _called_name(tests[0])
    setup = [str(s) for s in d.get("test_imports", [])]
    if str(d.get("test_setup_code", "")).strip():
        setup.append(str(d["test_setup_code"]))
    ask = f"{text.strip()} Write it as a Python function named `{entry}`. Reply with only the code."
    return Task(str(d.get("task_id", f"{stem}-{i}")), "python", ask, {"entry": entry, "tests": tests, "setup": setup},
                source="file")


def layout(d: dict):
    """The reader for one decoded line, told from its fields; None if no layout fits."""
    if "kind" in d:
        return _k1
    if {"prompt", "entry_point", "test"} <= d.keys():
        return _humaneval
    if "test_list" in d and ("text" in d or "prompt" in d):
        return _mbpp
    return None


def load_task_file(path: str | Path) -> list[Task]:
    """Every task in a JSONL file; a line in no known layout is a one-line ConfigError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"task file {path}: no such file")
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            if not isinstance(d, dict):
                raise ValueError("a line must be a JSON object")
            reader = layout(d)
            if reader is None:
                raise ValueError(f"fields {sorted(d)[:8]} match no layout; use {LAYOUTS}")
            out.append(reader(d, i, path.stem))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, SyntaxError) as e:
            msg = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            raise ConfigError(f"task file {path}:{i}: {' '.join(msg.split())}") from None
    if not out:
        raise ConfigError(f"task file {path}: no tasks")
    return out
