"""Verifiers: plain functions (task, response) → score in [0, 1], named by task kind (TRL's reward functions).

They read only the task's hidden `check` and the response text. Nothing here can reward a template: a
response scores 1 only if its number is the answer, or its code passes the tests in the sandbox, where
its only influence on the score is the values its functions return (see sandbox/).
"""

from __future__ import annotations

import re

from k1.tasks.sandbox import Limits, run_tests
from k1.tasks.task import Task

_ANSWER = re.compile(r"(?:^|[^\d.-])(-?\d+)\s*[.!]?$")
_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)


def stated_answer(text: str) -> int | None:
    """The integer a response ends its first line with ("12", "7 + 5 = 12", "The answer is 12."), or None.

    The line must be printable ASCII and end with the number (a period allowed): noise that merely
    contains the right digit somewhere ("[l)eY0_", "7xt") states no answer."""
    line = text.strip().split("\n")[0].strip().replace(",", "")
    if not line.isascii() or not line.isprintable():
        return None
    m = _ANSWER.search(line)
    return int(m.group(1)) if m else None


def verify_arithmetic(task: Task, response: str) -> float:
    """1.0 when the response's stated integer is the answer."""
    return float(stated_answer(response) == task.check["answer"])


def extract_code(text: str) -> str:
    """The first fenced code block, else everything from the first `def` / `import` line."""
    m = _FENCE.search(text)
    if m:
        return m.group(1)
    m = re.search(r"^(def |import |from )", text, re.M)
    return text[m.start():] if m else text


def verify_python(task: Task, response: str, limits: Limits = Limits()) -> float:
    """Fraction of the task's tests that pass; the code runs in the sandbox, the values are judged outside."""
    c = task.check
    code = extract_code(response)
    if c.get("prefix"):  # a HumanEval-like prompt: its imports and helpers first, the model's function after
        code = c["prefix"] + "\n" + code
    # the checker runs the prompt's own helpers; only the entry point is taken from the candidate
    r = run_tests(code, c["tests"], limits, entry=c.get("entry"), setup=c.get("setup", []),
                  task_code=c.get("prefix", ""))
    return r["passed"] / max(r["total"], 1)


VERIFIERS = {"arithmetic": verify_arithmetic, "python": verify_python}


def verify(task: Task, response: str) -> float:
    return VERIFIERS[task.kind](task, response)


def solved(score: float) -> bool:
    """A task counts as solved only at full score (all tests pass)."""
    return score >= 1.0 - 1e-9
