"""Verifiers: plain functions (task, response) → score in [0, 1], named by task kind (TRL's reward functions).

They read only the task's hidden `check`, the task's prompt and the response text. Nothing here can reward a
template: an arithmetic response scores 1 only if its number is the answer *and* every equation it states is
true and about the problem asked ("1 + 1 = 1" does not pass for 1 + 0; the bare number "1" does); code scores
only by passing the tests in the sandbox, where its only influence on the score is the values its functions
return (see sandbox/).
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


_EXPR = r"-?\d+(?:\s*[-+*×x]\s*-?\d+)*"
_CHAIN = re.compile(rf"{_EXPR}(?:\s*=\s*{_EXPR})+")
_PROBLEM = re.compile(r"(-?\d+)\s*([-+*×x]|plus|minus|times|multiplied by)\s*(-?\d+)", re.IGNORECASE)
_OP = {"+": "+", "plus": "+", "-": "-", "minus": "-", "*": "*", "x": "*", "×": "*", "times": "*", "multiplied by": "*"}


def problem_of(prompt: str) -> tuple[int, str, int] | None:
    """The one two-integer problem a prompt asks ("What is 7 + 5?" → (7, "+", 5)), or None (none, or several)."""
    found = _PROBLEM.findall(prompt)
    if len(found) != 1:
        return None
    a, op, b = found[0]
    return int(a), _OP[op.lower()], int(b)


def _value(expr: str) -> int | None:
    """An expression of integers and + − × (digits and operators only, so evaluating it runs nothing else)."""
    expr = expr.replace("×", "*").replace("x", "*")
    if len(expr) > 200 or not re.fullmatch(r"[-+*\d\s]+", expr):
        return None
    try:
        return int(eval(expr, {"__builtins__": {}}, {}))  # only digits, spaces and + - * reach here
    except (SyntaxError, ValueError, TypeError):
        return None


def _states_problem(expr: str, problem: tuple[int, str, int]) -> bool:
    """`expr` is the problem itself: the same operator and operands (either order where it commutes)."""
    a, op, b = problem
    m = re.fullmatch(r"\s*(-?\d+)\s*([-+*×x])\s*(-?\d+)\s*", expr)
    if m is None:
        return False
    x, o, y = int(m.group(1)), _OP[m.group(2)], int(m.group(3))
    return o == op and ((x, y) == (a, b) or (op in "+*" and (x, y) == (b, a)))


def equations_hold(line: str, problem: tuple[int, str, int] | None = None) -> bool:
    """Every equation stated in `line` is true ("7 + 5 = 12"; chains "7 + 5 = 12 = 12" too), and where an equation
    begins with an operation and the `problem` is known, it is the problem asked. A line without equations holds."""
    for m in _CHAIN.finditer(line):
        parts = [p.strip() for p in m.group(0).split("=")]
        values = [_value(p) for p in parts]
        if any(v is None for v in values) or len(set(values)) != 1:
            return False
        if problem is not None and re.search(r"\d\s*[-+*×x]", parts[0]) and not _states_problem(parts[0], problem):
            return False
    return True


def arithmetic_correct(response: str, answer: int, problem: tuple[int, str, int] | None = None) -> bool:
    """The strict arithmetic judgement: the stated integer is `answer` and every equation on that line holds."""
    if stated_answer(response) != answer:
        return False
    line = response.strip().split("\n")[0].replace(",", "")
    return equations_hold(line, problem)


def verify_arithmetic(task: Task, response: str) -> float:
    """1.0 when the response's stated integer is the answer and no equation it states is wrong."""
    problem = tuple(task.check["problem"]) if "problem" in task.check else problem_of(task.prompt)
    return float(arithmetic_correct(response, task.check["answer"], problem))


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
