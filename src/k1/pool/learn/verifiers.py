"""A verifier per task class for prompts the pool has answered: `(prompt text, answer) → score or None`.

DREAM's `--verified-only` keeps only the teacher answers these accept, and measures held-out success with
them. They judge as calibration does, and only what they can check:
- `arithmetic`: any prompt asking for one sum, difference or product of two integers ("What is 7 + 5?",
  "How much is 3 times 4?"); the answer is computed here and judged by the loop's strict verifier (the integer
  stated at the end of the first line, and every equation on that line true and about the problem asked);
- `code`: the loop's Python tasks, found by their prompt, run against their asserts in the sandbox;
- `copy`: "Repeat this exactly: S" — the first line must be S (quotes and a final period allowed);
- `facts`, `prose`: the calibration set's questions (an expected word) and phrases (the next word); `prose`
  also judges "Continue this text: …" on a first sentence of the built-in prose corpus (its last word).
A prompt a verifier cannot check gets None (DREAM then does not train on it). Other classes have none.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from k1.errors import K1Error
from k1.pool.route.taskclass import question

Verifier = Callable[[str, str], "float | None"]

_OPS = {"+": "+", "plus": "+", "-": "-", "minus": "-", "*": "*", "x": "*", "×": "*", "times": "*",
        "multiplied by": "*"}
_SUM = re.compile(r"(-?\d+)\s*(\+|-|\*|×|x|plus|minus|times|multiplied by)\s*(-?\d+)", re.IGNORECASE)


class NoVerifier(K1Error):
    """A task class no verifier can judge."""


def arithmetic_answer(text: str) -> int | None:
    """The value of the one two-integer expression `text` asks for, or None (none, or several)."""
    found = _SUM.findall(text)
    if len(found) != 1:
        return None
    a, op, b = found[0]
    a, b = int(a), int(b)
    return {"+": a + b, "-": a - b, "*": a * b}[_OPS[op.lower()]]


def _arithmetic(prompt: str, answer: str) -> float | None:
    from k1.tasks.verifiers import arithmetic_correct, problem_of

    q = question(prompt)
    want = arithmetic_answer(q)
    return None if want is None else float(arithmetic_correct(answer, want, problem_of(q)))


def _code() -> Verifier:
    from k1.tasks.sandbox import sandbox_problem
    from k1.tasks.task import python_tasks
    from k1.tasks.verifiers import solved, verify

    problem = sandbox_problem()
    if problem is not None:  # model-written code never runs unsandboxed
        raise NoVerifier(f"the code class's verifier needs the sandbox: {problem}")
    tasks = {t.prompt: t for t in python_tasks()}

    def judge(prompt: str, answer: str) -> float | None:
        t = tasks.get(question(prompt).strip())
        return None if t is None else float(solved(verify(t, answer)))
    return judge


def _copy(prompt: str, answer: str) -> float | None:
    from k1.pool.learn.students.families import copied

    m = re.fullmatch(r"Repeat this exactly: (\S+)", question(prompt).strip())
    return None if m is None else float(copied(answer, m.group(1)))


def _lookup(table: dict[str, Callable[[str], float]]) -> Verifier:
    def judge(prompt: str, answer: str) -> float | None:
        f = table.get(question(prompt).strip())
        return None if f is None else float(f(answer))
    return judge


def _facts() -> Verifier:
    from k1.pool.learn.calibrate import FACTS, _words
    return _lookup({q: _words(ok) for q, ok in FACTS})


def _prose() -> Verifier:
    """The calibration phrases, and "Continue this text: …" on a first sentence of the built-in prose corpus
    (`students.families.cloze_tasks`): the answer's first word against the corpus's."""
    from k1.pool.learn.calibrate import PROSE, _next_word
    from k1.pool.learn.students.families import CLOZE_PROMPT, next_word

    phrases = _lookup({p: _next_word(w) for p, w in PROSE})
    prefix = CLOZE_PROMPT.format(text="")

    def judge(prompt: str, answer: str) -> float | None:
        v = phrases(prompt, answer)
        q = question(prompt).strip()
        if v is not None or not q.startswith(prefix):
            return v
        want = cloze_words().get(q)
        return None if want is None else float(next_word(answer, want))
    return judge


@functools.cache
def cloze_words() -> dict[str, str]:
    """prompt → the corpus's word, for every prose-cloze problem (read once per process)."""
    from k1.pool.learn.students.families import cloze_tasks

    return {t.prompt: t.check["answer"] for t in cloze_tasks()}


BUILDERS: dict[str, Callable[[], Verifier]] = {"arithmetic": lambda: _arithmetic, "code": _code,
                                              "facts": _facts, "prose": _prose,
                                              "copy": lambda: _copy}


def class_verifier(task_class: str) -> Verifier:
    """The verifier of `task_class`; `NoVerifier` (one line) for a class without one."""
    if task_class not in BUILDERS:
        raise NoVerifier(f"no verifier for task class {task_class!r}: verified answers can be told apart for "
                         f"{', '.join(BUILDERS)} only")
    return BUILDERS[task_class]()
