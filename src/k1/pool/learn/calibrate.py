"""Calibration: every member answers a fixed set of verifiable tasks per task class, and the results seed
its trust per (member, class), so `auto` starts from measured competence rather than equal trust.

The calibration set is fixed in code (`calibration_tasks`, a prefix of a reserved set per class that every
bench leaves out, by problem): arithmetic and code come from the loop's task families and are judged by the
loop's verifiers (the integer stated at the end of the first line, every equation stated there true; the
function's assert lines in the sandbox); facts are short questions with an expected word; prose is a well
known phrase to finish, judged by its next word. Each calibration answer counts as `weight` observations
in the Beta posterior ([pool] calibration_weight, default 1: a calibration task weighs as much as one
routed call with a known outcome), so a member's prior for a class is
Beta(1 + w·solved, 1 + w·(n − solved)) and live outcomes move it from there. Results are stored (the
`calibration` table: prompt, answer, score, ATP per item) and replaced when a member is calibrated again.
Every calibration call is reserved and charged through the pool's ledger (kind "calibration"), so it counts
against the budget as requests do; when the budget runs out, what was bought is kept (`calibrate`).
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rich.progress import Progress

from k1.pool.errors import BudgetExhausted
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


MAX_PER_CLASS = 16  # the reserved set per class: calibration draws a prefix of it, benches leave all of it out
# Enough tasks to tell a member that solves nothing from one that solves 45 %: with 10 tasks the second solves
# none with probability 0.55^10 = 0.25 %, and the priors differ by Beta(1, 11) against about Beta(5.5, 6.5).
ENOUGH_PER_CLASS = 10
CODE_TEMPLATES = 2  # the loop's Python templates reserved for calibration (8 numbers each); benches use the others


@dataclass(frozen=True)
class CalTask:
    cls: str
    id: str
    prompt: object  # chat messages, or a plain string (raw text)
    judge: Callable[[str], float]
    key: object = None  # the problem (k1.tasks.split.problem_key) this task reserves

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


def _reserved(cls: str, seed: int = 0) -> list:
    """The class's reserved calibration items in their fixed order (`MAX_PER_CLASS` of them): calibration with
    n tasks takes the first n, so a smaller set is always inside a larger one and the benches, which leave out
    every reserved problem, never ask what any calibration asked."""
    from k1.tasks.split import groups
    from k1.tasks.task import arithmetic_tasks, python_tasks

    rng = random.Random(f"calibration-{cls}-{seed}")
    if cls == "arithmetic":  # one task per problem; its commuted twin is reserved with it
        g = list(groups(arithmetic_tasks("d2")).values())
        rng.shuffle(g)
        return [grp[0] for grp in g[:MAX_PER_CLASS]]
    if cls == "code":  # whole templates, so no template's numbers are on both sides
        by_template = list(groups(python_tasks()).values())
        rng.shuffle(by_template)
        items = [t for grp in by_template[:CODE_TEMPLATES] for t in grp]
        rng.shuffle(items)
        return items[:MAX_PER_CLASS]
    items = list({"facts": FACTS, "prose": PROSE}[cls])
    rng.shuffle(items)
    return items[:MAX_PER_CLASS]


def reserved_problems(seed: int = 0) -> set:
    """Every problem key the calibration set may use (`k1.tasks.split.problem_key`; facts and prose: the prompt
    text): benches and training sets leave these out."""
    from k1.tasks.split import problem_key

    keys = {problem_key(t) for t in _reserved("arithmetic", seed) + _reserved("code", seed)}
    keys |= {q for q, _ in _reserved("facts", seed)} | {p for p, _ in _reserved("prose", seed)}
    return keys


def calibration_tasks(per_class: int = ENOUGH_PER_CLASS, seed: int = 0) -> list[CalTask]:
    """The first `per_class` reserved tasks of each class (the same set every time; a prefix of any larger one)."""
    from k1.tasks.sandbox import sandbox_problem
    from k1.tasks.split import problem_key
    from k1.tasks.verifiers import solved, verify

    if not 1 <= per_class <= MAX_PER_CLASS:
        raise ValueError(f"calibration: 1 to {MAX_PER_CLASS} tasks per class, not {per_class}")
    out = []
    for t in _reserved("arithmetic", seed)[:per_class]:
        out.append(CalTask("arithmetic", t.id, _chat(t.prompt), lambda a, t=t: verify(t, a), problem_key(t)))
    code = _reserved("code", seed)[:per_class]
    if sandbox_problem() is not None:  # model-written code never runs unsandboxed: the code class is left out
        log.warning("calibration leaves out the code class: %s", sandbox_problem())
        code = []
    for t in code:
        out.append(CalTask("code", t.id, _chat(t.prompt), lambda a, t=t: float(solved(verify(t, a))), problem_key(t)))
    for i, (q, ok) in enumerate(_reserved("facts", seed)[:per_class]):
        out.append(CalTask("facts", f"facts-{i}", _chat(q), _words(ok), q))
    for i, (p, w) in enumerate(_reserved("prose", seed)[:per_class]):
        out.append(CalTask("prose", f"prose-{i}", p, _next_word(w), p))
    return out


def answers(ledger, member, tasks: list[CalTask], kind: str = "calibration") -> Iterator[dict]:
    """One member on each task in turn, every call reserved and charged through `ledger` as `kind`: → rows
    {cls, task, prompt, response, score, atp}. `BudgetExhausted` stops it before the call the budget cannot pay."""
    for t in tasks:
        try:
            g = ledger.call(member, t.prompt, kind=kind, task_class=t.cls, max_tokens=MAX_TOKENS.get(t.cls, 16),
                            temperature=0.0, stop=None if isinstance(t.prompt, list) else ["\n"])
            text, atp, score = g.text, g.cost.atp, t.judge(g.text)
        except CallFailed as e:
            text, atp, score = f"(call failed: {e})", getattr(getattr(e, "cost", None), "atp", 0.0), 0.0
        yield {"cls": t.cls, "task": t.id, "prompt": t.text, "response": text, "score": float(score), "atp": atp}


def calibrate_member(ledger, member, tasks: list[CalTask], progress=None, job=None,
                     kind: str = "calibration") -> list[dict]:
    """One member on every task (`answers`): → its rows."""
    rows = []
    for row in answers(ledger, member, tasks, kind):
        rows.append(row)
        if progress is not None:
            progress.advance(job)
    return rows


def calibrate(router, members: list[str] | None = None, per_class: int | None = None, quiet: bool = False,
              tasks: list[CalTask] | None = None) -> dict:
    """Calibrate `members` (default: every member of the pool) on `tasks` (default: the built-in set) and
    store the results; → summary per member.

    When the budget runs out, nothing bought is thrown away: every member calibrated so far is stored, and so is
    each class the stopped member finished; then a one-line `BudgetExhausted` says what was kept."""
    tasks = tasks or calibration_tasks(per_class or router.settings.calibration_per_class)
    names = members or router.pool.names
    summary = {}
    try:
        with Progress(disable=quiet, transient=False) as bar:
            for name in names:
                job = bar.add_task(f"calibrating {name}", total=len(tasks))
                rows = []
                try:
                    for row in answers(router.ledger, router.pool[name], tasks):
                        rows.append(row)
                        bar.advance(job)
                except BudgetExhausted as e:
                    kept = _keep_finished(router.store, name, rows, tasks)
                    done = ", ".join(summary) or "none"
                    raise BudgetExhausted(f"calibration stopped at {name!r} ({len(rows)} of {len(tasks)} tasks): {e}. "
                                          f"Kept: members {done}; {name!r}'s classes {', '.join(kept) or 'none'}"
                                          ) from None
                router.store.set_calibration(name, rows)
                summary[name] = class_summary(rows)
    finally:
        if hasattr(router, "refit_task_classes"):
            router.refit_task_classes()  # the calibration prompts are labelled examples for the task classifier
    return summary


def _keep_finished(store, member: str, rows: list[dict], tasks: list[CalTask]) -> list[str]:
    """Store the classes of `rows` every task of which was answered (a class is replaced whole or not at all);
    → their names."""
    want: dict[str, int] = {}
    for t in tasks:
        want[t.cls] = want.get(t.cls, 0) + 1
    kept = []
    for cls, n in want.items():
        mine = [r for r in rows if r["cls"] == cls]
        if len(mine) == n:
            store.set_calibration(member, mine, cls)
            kept.append(cls)
    return kept


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
