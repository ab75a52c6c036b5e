"""Calibration: every member answers a fixed set of verifiable tasks per task class, and the results seed
its trust per (member, class), so `auto` starts from measured competence rather than equal trust.

The calibration set is fixed in code (`calibration_tasks`): arithmetic and code come from the loop's
task families and are judged by the loop's verifiers (an integer stated at the end of the first line; the
function's assert lines in the sandbox); facts are short questions with an expected word; prose is a well
known phrase to finish, judged by its next word. Each calibration answer counts as `weight` observations
in the Beta posterior ([pool] calibration_weight, default 1: a calibration task weighs as much as one
routed call with a known outcome), so a member's prior for a class is
Beta(1 + w·solved, 1 + w·(n − solved)) and live outcomes move it from there. Results are stored (the
`calibration` table: prompt, answer, score, ATP per item) and replaced when a member is calibrated again.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from typing import Callable

from rich.progress import Progress

from k1.pool.members.base import CallFailed

log = logging.getLogger(__name__)

# (question, accepted words) — the facts class
FACTS = [
    ("What is the capital of France?", ["paris"]), ("What is the capital of Japan?", ["tokyo"]),
    ("What is the capital of Italy?", ["rome"]), ("What color is the sky on a clear day?", ["blue"]),
    ("How many legs does a spider have?", ["8", "eight"]), ("Which animal says meow?", ["cat"]),
    ("What is the largest planet in the solar system?", ["jupiter"]), ("What do bees make?", ["honey"]),
    ("What is frozen water called?", ["ice"]), ("How many days are in a week?", ["7", "seven"]),
    ("What is the capital of Germany?", ["berlin"]), ("What color is grass?", ["green"]),
    ("What is the capital of Spain?", ["madrid"]), ("What gas do people breathe in to live?", ["oxygen"]),
    ("Which season comes after winter?", ["spring"]), ("What is the opposite of hot?", ["cold"]),
]
# (text, next word) — the prose class: a familiar phrase, completed as raw text
PROSE = [
    ("Once upon a", "time"), ("The quick brown fox jumps over the lazy", "dog"), ("Happy birthday to", "you"),
    ("Twinkle, twinkle, little", "star"), ("Actions speak louder than", "words"),
    ("An apple a day keeps the doctor", "away"), ("All that glitters is not", "gold"),
    ("Better late than", "never"), ("The early bird catches the", "worm"), ("To be or not to", "be"),
    ("Practice makes", "perfect"), ("Where there is a will, there is a", "way"),
    ("Rome was not built in a", "day"), ("Every cloud has a silver", "lining"),
    ("The pen is mightier than the", "sword"), ("Beauty is in the eye of the", "beholder"),
]
MAX_TOKENS = {"arithmetic": 16, "code": 64, "facts": 16, "prose": 4}


@dataclass(frozen=True)
class CalTask:
    cls: str
    id: str
    prompt: object  # chat messages, or a plain string (raw text)
    judge: Callable[[str], float]

    @property
    def text(self) -> str:
        from k1.pool.members.base import prompt_text
        return prompt_text(self.prompt)


def _chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _words(ok: list[str]) -> Callable[[str], float]:
    return lambda a: float(any(re.search(rf"\b{re.escape(w)}\b", a.lower()) for w in ok))


def _next_word(word: str) -> Callable[[str], float]:
    def judge(a: str) -> float:
        m = re.match(r"\s*([A-Za-z]+)", a)
        return float(m is not None and m.group(1).lower() == word)
    return judge


def calibration_tasks(per_class: int = 5, seed: int = 0) -> list[CalTask]:
    """`per_class` tasks of each class, drawn with `seed` from fixed lists (the same set every time)."""
    from k1.tasks.task import arithmetic_tasks, python_tasks
    from k1.tasks.verifiers import solved, verify

    rng = random.Random(seed)
    out = []
    for t in rng.sample(arithmetic_tasks("d2"), per_class):
        out.append(CalTask("arithmetic", t.id, _chat(t.prompt), lambda a, t=t: verify(t, a)))
    code = rng.sample(python_tasks(), per_class)
    from k1.tasks.sandbox import sandbox_problem
    if sandbox_problem() is not None:  # model-written code never runs unsandboxed: the code class is left out
        log.warning("calibration leaves out the code class: %s", sandbox_problem())
        code = []
    for t in code:
        out.append(CalTask("code", t.id, _chat(t.prompt), lambda a, t=t: float(solved(verify(t, a)))))
    for i, (q, ok) in enumerate(rng.sample(FACTS, per_class)):
        out.append(CalTask("facts", f"facts-{i}", _chat(q), _words(ok)))
    for i, (p, w) in enumerate(rng.sample(PROSE, per_class)):
        out.append(CalTask("prose", f"prose-{i}", p, _next_word(w)))
    return out


def calibrate_member(member, tasks: list[CalTask], progress=None, job=None) -> list[dict]:
    """One member on every task: → rows {cls, task, prompt, response, score, atp}."""
    rows = []
    for t in tasks:
        try:
            g = member.generate(t.prompt, max_tokens=MAX_TOKENS.get(t.cls, 16), temperature=0.0,
                                stop=None if isinstance(t.prompt, list) else ["\n"])
            text, atp, score = g.text, g.cost.atp, t.judge(g.text)
        except CallFailed as e:
            text, atp, score = f"(call failed: {e})", getattr(getattr(e, "cost", None), "atp", 0.0), 0.0
        rows.append({"cls": t.cls, "task": t.id, "prompt": t.text, "response": text, "score": float(score),
                     "atp": atp})
        if progress is not None:
            progress.advance(job)
    return rows


def calibrate(router, members: list[str] | None = None, per_class: int | None = None, quiet: bool = False,
              tasks: list[CalTask] | None = None) -> dict:
    """Calibrate `members` (default: every member of the pool) on `tasks` (default: the built-in set) and
    store the results; → summary per member."""
    tasks = tasks or calibration_tasks(per_class or router.settings.calibration_per_class)
    names = members or router.pool.names
    summary = {}
    with Progress(disable=quiet, transient=False) as bar:
        for name in names:
            job = bar.add_task(f"calibrating {name}", total=len(tasks))
            rows = calibrate_member(router.pool[name], tasks, bar, job)
            router.store.set_calibration(name, rows)
            summary[name] = class_summary(rows)
    if hasattr(router, "refit_task_classes"):
        router.refit_task_classes()  # the calibration prompts are labelled examples for the task classifier
    return summary


def class_summary(rows: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in rows:
        d = out.setdefault(r["cls"], {"n": 0, "solved": 0.0, "atp": 0.0})
        d["n"] += 1
        d["solved"] += r["score"]
        d["atp"] += r["atp"]
    for d in out.values():
        d["rate"] = d["solved"] / d["n"]
        d["atp"] = d["atp"] / d["n"]
    return out


def missing(router) -> list[str]:
    """Members the store has no calibration for."""
    have = {m for m, _ in router.store.calibration_summary()}
    return [n for n in router.pool.names if n not in have]
