"""Verifiable tasks: arithmetic at named difficulties, small Python functions with tests, and task files.

A `Task` carries what the verifier needs (`answer` for arithmetic, `tests` for Python) in `check`; the
improvement step never reads `check` (see improve.py), so a reference answer cannot become training text.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from k1.errors import ConfigError

# Arithmetic difficulties: operand ranges and operators. d1 is within reach of a tiny byte-level model by
# chance (answers 0..8); d3-d4 separate small instruct models.
ARITHMETIC = {
    "d1": {"a": (0, 4), "b": (0, 4), "ops": "+"},
    "d2": {"a": (0, 9), "b": (0, 9), "ops": "+-"},
    "d3": {"a": (10, 99), "b": (10, 99), "ops": "+-"},
    "d4": {"a": (10, 99), "b": (2, 9), "ops": "*"},
}


@dataclass(frozen=True)
class Task:
    """One prompt with its hidden check. `kind` picks the verifier ("arithmetic" | "python")."""

    id: str
    kind: str
    prompt: str
    check: dict = field(default_factory=dict)  # verifier-only: {"answer": int} or {"entry", "tests", "setup"?, "prefix"?}
    source: str = "builtin"                    # builtin | file | self-instruct

    def public(self) -> dict:
        """What may be shown to a model or stored as provenance without the check."""
        return {"id": self.id, "kind": self.kind, "prompt": self.prompt, "source": self.source}


def arithmetic_prompt(a: int, op: str, b: int) -> str:
    return f"What is {a} {op} {b}?"


def arithmetic_tasks(difficulty: str = "d2") -> list[Task]:
    """Every distinct problem of a difficulty (d1: 25, d2: 200, d3/d4: thousands), in a fixed order."""
    if difficulty not in ARITHMETIC:
        raise ConfigError(f"arithmetic difficulty {difficulty!r}: choose from {', '.join(ARITHMETIC)}")
    spec = ARITHMETIC[difficulty]
    out = []
    for op in spec["ops"]:
        for a in range(spec["a"][0], spec["a"][1] + 1):
            for b in range(spec["b"][0], spec["b"][1] + 1):
                if op == "-" and b > a:
                    continue  # non-negative answers: the verifier's integer parser stays simple
                answer = {"+": a + b, "-": a - b, "*": a * b}[op]
                out.append(Task(f"arith-{difficulty}-{a}{op}{b}", "arithmetic", arithmetic_prompt(a, op, b),
                                {"answer": answer}))
    return out


# Python tasks: (entry point, description with {n}, reference implementation with {n}, test inputs).
# The reference implementations only compute the expected values of the tests; they are never shown.
_PY_TEMPLATES = [
    ("add_n", "returns x plus {n}", "lambda x: x + {n}", ["0", "5", "-3"]),
    ("times_n", "returns x multiplied by {n}", "lambda x: x * {n}", ["0", "4", "-2"]),
    ("divisible_by_n", "returns True if the integer x is divisible by {n}, else False",
     "lambda x: x % {n} == 0", ["0", "{n}", "{n} + 1", "3 * {n}"]),
    ("repeat_n", "returns the string s repeated {n} times", "lambda s: s * {n}", ["'ab'", "''", "'x'"]),
    ("first_n", "returns a list of the first {n} elements of the list xs", "lambda xs: xs[:{n}]",
     ["[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]", "[]", "list(range(20))"]),
    ("count_above_n", "returns how many numbers in the list xs are greater than {n}",
     "lambda xs: sum(1 for v in xs if v > {n})", ["[]", "[{n}, {n} + 1, {n} + 2, 0]", "list(range(15))"]),
    ("power_n", "returns x raised to the power {n}", "lambda x: x ** {n}", ["2", "3", "-1"]),
    ("last_n", "returns a list of the last {n} elements of the list xs", "lambda xs: xs[-{n}:]",
     ["list(range(10))", "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]"]),
]


def python_tasks(ns: range = range(2, 10)) -> list[Task]:
    """One task per (template, n): `def entry(arg)` described in words, checked by assert statements."""
    out = []
    for entry, desc, ref, inputs in _PY_TEMPLATES:
        for n in ns:
            fn = eval(ref.format(n=n))  # our own fixed templates, evaluated here to get expected values
            tests = []
            for arg in inputs:
                arg = arg.format(n=n)
                tests.append(f"assert {entry}({arg}) == {fn(eval(arg))!r}")
            param = ref.split()[1].rstrip(":")  # the lambda's parameter: x, s or xs
            prompt = f"Write a Python function `{entry}({param})` that {desc.format(n=n)}. Reply with only the code."
            out.append(Task(f"py-{entry}-{n}", "python", prompt, {"entry": entry, "tests": tests}))
    return out


def builtin_tasks(kind: str) -> list[Task]:
    """"arithmetic:d2" | "python" → the full list of that family."""
    family, _, level = kind.partition(":")
    if family == "arithmetic":
        return arithmetic_tasks(level or "d2")
    if family == "python":
        return python_tasks()
    raise ConfigError(f"task family {kind!r}: use arithmetic:d1..d4, python, or a task file")


def split_tasks(tasks: list[Task], n_train: int, n_heldout: int, seed: int) -> tuple[list[Task], list[Task]]:
    """Shuffle with `seed` and cut into disjoint train and held-out lists (disjoint by id and by prompt)."""
    unique = list({t.prompt: t for t in tasks}.values())
    if n_train + n_heldout > len(unique):
        raise ConfigError(f"asked for {n_train} train + {n_heldout} held-out tasks but only {len(unique)} distinct "
                          "tasks exist; lower the counts or pick a larger family")
    rng = random.Random(seed)
    rng.shuffle(unique)
    return unique[:n_train], unique[n_train:n_train + n_heldout]
