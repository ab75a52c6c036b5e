"""Task families that separate models, split by problem, each with a strict verifier.

- `arithmetic-d3` (two-digit + and −) and `arithmetic-d4` (two-digit × one-digit): the loop's problems, judged
  by its strict verifier (the stated number is the answer and every equation stated is true and the problem);
- `copy`: repeat a random string the model has never seen (letters and digits, 6 to 10 characters); success is
  the first line being exactly that string (surrounding quotes, spaces and a final period allowed);
- `code`: the loop's Python tasks (only 64 exist: 8 templates × 8 numbers), split by template.
`heldout(family, n)` cuts a family into (train pool, held-out) by problem with a fixed seed, so a + b and b + a,
or one template's numbers, are never on both sides.
"""

from __future__ import annotations

import random
import re
import string

from k1.errors import ConfigError
from k1.tasks.split import split_by_problem
from k1.tasks.task import Task, arithmetic_tasks, python_tasks

FAMILIES = ("arithmetic-d3", "arithmetic-d4", "copy", "code")
MAX_TOKENS = {"arithmetic-d3": 32, "arithmetic-d4": 32, "copy": 24, "code": 96}  # room for "To add … = 58."
COPY_PROMPT = "Repeat this exactly: {s}"


def copy_tasks(n: int = 2000, seed: int = 0) -> list[Task]:
    """n distinct random strings to repeat (fixed by `seed`)."""
    rng = random.Random(f"copy-{seed}")
    alphabet = string.ascii_lowercase + string.digits
    seen, out = set(), []
    while len(out) < n:
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(6, 10)))
        if s not in seen:
            seen.add(s)
            out.append(Task(f"copy-{s}", "copy", COPY_PROMPT.format(s=s), {"answer": s}))
    return out


def copied(answer: str, want: str) -> bool:
    """The first line is the string, at most wrapped in quotes or backticks and ended with a period."""
    line = answer.strip().split("\n")[0].strip()
    return re.sub(r"^[\"'`]+|[\"'`]*\.?[\"'`]*$", "", line) == want


def family_tasks(family: str) -> list[Task]:
    if family == "arithmetic-d3":
        return arithmetic_tasks("d3")
    if family == "arithmetic-d4":
        return arithmetic_tasks("d4")
    if family == "copy":
        return copy_tasks()
    if family == "code":
        return python_tasks()
    raise ConfigError(f"task family {family!r}: choose from {', '.join(FAMILIES)}")


def judge(task: Task, answer: str) -> bool:
    """Strict success on one task."""
    if task.kind == "copy":
        return copied(answer, task.check["answer"])
    from k1.tasks.verifiers import solved, verify

    return solved(verify(task, answer))


def heldout(family: str, n: int = 200, seed: int = 0) -> tuple[list[Task], list[Task]]:
    """(train pool, ≥ n held-out tasks), disjoint by problem; the code family holds out whole templates."""
    tasks = family_tasks(family)
    n = min(n, len(tasks) // 2) if family == "code" else n
    return split_by_problem(tasks, n, seed=seed)
