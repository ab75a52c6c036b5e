"""Improvement: turn a target's answers into better ones that a verifier accepts, with what it cost.

Three ways: rejection sampling (best of n by the verifier), self-refine (the target retries after being
told it was wrong — never told the answer), and a teacher's rewrite. The improved response is always
text a model wrote that passed the verifier; the verifier's reference never leaves `task.check`, so it
cannot become the improved response. No candidate passes → no improved response → no training example.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from k1.selflearn.formats import MAX_TOKENS, prompt_for, stop_for
from k1.tasks.task import Task
from k1.tasks.verifiers import solved, verify

FEEDBACK = {"arithmetic": "That answer is wrong. Work it out again and give the number.",
            "python": "That code fails its tests. Fix it and reply with only the code."}

REWRITE = {"arithmetic": "Rewrite that answer so it is correct: give just the number.",
           "python": "Rewrite that code so it is correct. Reply with only the code."}


@dataclass
class Candidate:
    text: str
    score: float
    member: str
    atp: float
    latency_s: float


@dataclass
class Improvement:
    """What happened to one task: the target's first answer, every candidate, and the accepted one."""

    task: Task
    method: str
    response: Candidate                  # the target's greedy answer
    candidates: list[Candidate] = field(default_factory=list)
    improved: Candidate | None = None    # the best candidate that passed the verifier

    @property
    def atp(self) -> float:
        return self.response.atp + sum(c.atp for c in self.candidates)

    def record(self) -> dict:
        """Provenance for the JSONL dataset (the task's hidden check is not included)."""
        return {"task": self.task.public(), "method": self.method,
                "response": self.response.text, "score": self.response.score,
                "improved_response": self.improved.text if self.improved else None,
                "improved_score": self.improved.score if self.improved else None,
                "improved_by": self.improved.member if self.improved else None,
                "candidates": [asdict(c) for c in self.candidates],
                "cost_atp": round(self.atp, 4)}


def ask(member, task: Task, *, temperature: float = 0.0, seed: int | None = None, history=()) -> Candidate:
    g = member.generate(prompt_for(member, task, history), max_tokens=MAX_TOKENS[task.kind], temperature=temperature,
                        stop=stop_for(member, task), seed=seed)
    return Candidate(g.text, verify(task, g.text), member.name, g.cost.atp, g.cost.latency_s)


def _best(cands: list[Candidate], judge=None, task: Task | None = None) -> Candidate | None:
    """The highest-scoring candidate that solves the task; among equals the judge's favourite (if any), else
    the shortest. The judge only orders verified candidates: it never makes a failing one pass."""
    ok = [c for c in cands if solved(c.score)]
    if not ok:
        return None
    if judge is not None and len({c.text for c in ok}) > 1:
        return min(ok, key=lambda c: judge_bits(judge, task, c.text))
    return min(ok, key=lambda c: len(c.text))


def judge_bits(judge, task: Task, response: str) -> float:
    """How surprised the judge is by " yes" after asking whether `response` answers `task` (lower = better)."""
    q = f"Question: {task.prompt}\nAnswer: {response.strip()}\nIs the answer correct and clear? Reply yes or no:"
    return judge.score(q, " yes").bits_per_byte


def rejection_sampling(target, task: Task, *, n: int = 8, temperature: float = 1.0, seed: int = 0,
                       judge=None) -> Improvement:
    first = ask(target, task)
    cands = [ask(target, task, temperature=temperature, seed=seed * 10_007 + i) for i in range(n)]
    return Improvement(task, "rejection", first, cands, _best([first, *cands], judge, task))


def self_refine(target, task: Task, *, rounds: int = 2, temperature: float = 0.7, seed: int = 0, judge=None) -> Improvement:
    first = ask(target, task)
    history, cands, last = [], [], first
    for r in range(rounds):
        if solved(last.score):
            break
        history.append((last.text, FEEDBACK[task.kind]))  # pass/fail only: the answer is never revealed
        last = ask(target, task, temperature=temperature, seed=seed * 10_007 + r, history=history)
        cands.append(last)
    return Improvement(task, "refine", first, cands, _best([first, *cands], judge, task))


def teacher_rewrite(target, task: Task, *, teacher, n: int = 1, temperature: float = 0.7, seed: int = 0,
                    judge=None) -> Improvement:
    first = ask(target, task)
    history = [(first.text, REWRITE[task.kind])]  # the teacher sees the student's answer, never the reference
    cands = [ask(teacher, task, temperature=temperature if i else 0.0, seed=seed * 10_007 + i, history=history)
             for i in range(n)]
    return Improvement(task, "teacher", first, cands, _best([first, *cands], judge, task))


METHODS = {"rejection": rejection_sampling, "refine": self_refine, "teacher": teacher_rewrite}
