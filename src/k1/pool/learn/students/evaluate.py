"""Student evaluation that can fail: held-out problems, a strict judge, and two controls beside every student.

- `constant_answer`: the answer most common among the training examples, given to every prompt — what a
  student scores by guessing alone;
- `format_only`: the training examples with every answer's numbers (or copied string) replaced by wrong ones
  of the same shape — train the same student on these with the same recipe, and it has learnt the answer's
  form and nothing else. A student is only better than format and guessing where it beats both.
"""

from __future__ import annotations

import random
import re
import string
import time
from collections import Counter
from collections.abc import Callable

from k1.pool.learn.students.data import Example
from k1.pool.learn.students.families import MAX_TOKENS, judge
from k1.pool.members.base import Cost, Generation, Member
from k1.tasks.task import Task


class ConstantMember(Member):
    """Answers `text` to everything, at no cost (the guessing control)."""

    kind = "constant"

    def __init__(self, text: str, name: str = "constant"):
        super().__init__(name)
        self.text = text

    def stream(self, prompt, *, max_tokens: int = 64, temperature: float = 0.0, stop=None, seed=None):
        self.last_generation = Generation(self.text, self.name, 0, 0, Cost(0.0, 0.0, 0.0))
        yield self.text


def constant_answer(examples: list[Example]) -> str:
    """The most common answer among the training examples (ties: the first seen)."""
    if not examples:
        return "0"
    return Counter(a for _, a in examples).most_common(1)[0][0]


def _wrong_number(tok: str, rng: random.Random) -> str:
    digits = len(tok.lstrip("-"))
    lo = 10 ** (digits - 1) if digits > 1 else 0
    while True:
        v = str(rng.randint(lo, 10 ** digits - 1))
        if v != tok.lstrip("-") or lo == 10 ** digits - 1:
            return ("-" if tok.startswith("-") else "") + v


def wrong_answer(answer: str, rng: random.Random, copy_of: str | None = None) -> str:
    """`answer` with its integers (or the string it copies) replaced by others of the same shape."""
    if copy_of:
        alphabet = string.ascii_lowercase + string.digits
        return answer.replace(copy_of, "".join(rng.choice(alphabet) for _ in copy_of))
    return re.sub(r"-?\d+", lambda m: _wrong_number(m.group(0), rng), answer)


def format_only(examples: list[Example], seed: int = 0) -> list[Example]:
    """The format-only control's training set: the same prompts, answers with wrong numbers or strings (an
    answer without numbers, as prose's: its first word replaced by another training answer's)."""
    from k1.pool.members.base import prompt_text

    rng = random.Random(f"format-only-{seed}")
    first = lambda a: (_WORD.match(a) or [""])[0].strip()
    words = sorted({first(a) for _, a in examples if not re.search(r"\d", a) and first(a)})
    out = []
    for p, a in examples:
        m = re.search(r"Repeat this exactly: (\S+)", prompt_text(p))
        copy_of = m.group(1) if m and m.group(1) in a else None
        w = first(a)
        if not copy_of and not re.search(r"\d", a) and w and len(words) > 1:  # prose: another answer's word
            other = rng.choice([x for x in words if x.lower() != w.lower()])
            out.append((p, a.replace(w, other, 1)))
            continue
        out.append((p, wrong_answer(a, rng, copy_of)))
    return out


_WORD = re.compile(r"(?<=^)\s*[A-Za-z]+")


def evaluate(member, tasks: list[Task], family: str, progress: Callable[[], None] | None = None) -> dict:
    """`member` answers every task (chat, greedy) → success, ATP per call, and a few answers to read."""
    ok, atp, answers = 0, 0.0, []
    t0 = time.process_time()
    for t in tasks:
        g = member.generate([{"role": "user", "content": t.prompt}], max_tokens=MAX_TOKENS[family], temperature=0.0)
        good = judge(t, g.text)
        ok += good
        atp += g.cost.atp
        if len(answers) < 8:
            answers.append([t.prompt, g.text.strip().split("\n")[0][:60], bool(good)])
        if progress is not None:
            progress()
    return {"n": len(tasks), "solved": ok, "success": ok / max(len(tasks), 1), "atp_per_call": atp / max(len(tasks), 1),
            "cpu_s": time.process_time() - t0, "answers": answers}
