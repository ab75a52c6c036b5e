"""Task families that separate models, split by problem, each with a strict verifier.

- `arithmetic-d3` (two-digit + and −) and `arithmetic-d4` (two-digit × one-digit): the loop's problems, judged
  by its strict verifier (the stated number is the answer and every equation stated is true and the problem);
- `copy`: repeat a random string the model has never seen (letters and digits, 6 to 10 characters); success is
  the first line being exactly that string (surrounding quotes, spaces and a final period allowed);
- `code`: the loop's Python tasks (only 64 exist: 8 templates × 8 numbers), split by template;
- `prose-cloze`: the prose class's task ("Once upon a" → "time") on the built-in prose corpus (Wikipedia lead
  sections, CC BY-SA): "Continue this text: " and the first sentence of a document without its last word;
  success is the answer's first word being the corpus's word. Strict and one-sided: a fitting word that is not the corpus's is judged wrong, so
  it measures knowing this text (what a base model such as Gemma-3-270M does well), not writing good prose. One
  document is one problem.
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

FAMILIES = ("arithmetic-d3", "arithmetic-d4", "copy", "code", "prose-cloze")
MAX_TOKENS = {"arithmetic-d3": 32, "arithmetic-d4": 32, "copy": 24, "code": 96,  # room for "To add … = 58."
              "prose-cloze": 4}  # one word, as the pool's prose calibration asks
COPY_PROMPT = "Repeat this exactly: {s}"
CLOZE_PROMPT = "Continue this text: {text}"  # the bare sentence, as prose calibration asks, makes Gemma restart it


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


def cloze_tasks(cache_dir=None) -> list[Task]:
    """One task per document of the built-in prose corpus whose first sentence has 6–30 words and ends in an
    alphabetic word of ≥ 3 letters: the sentence without that word, and the word (built offline if missing)."""
    from k1.data.corpora import build_corpora, resolve_cache_dir

    root = resolve_cache_dir(cache_dir) / "prose"
    if not (root / "train.txt").is_file():
        build_corpora(cache_dir, progress=False)
    out, seen = [], set()
    for split in ("train", "val"):
        for doc in (root / f"{split}.txt").read_text(encoding="utf-8").split("\n\n"):
            m = re.match(r"(.+?[a-z]{2})\.(\s|$)", doc.strip())
            words = m.group(1).split() if m else []
            if not 6 <= len(words) <= 30 or not re.fullmatch(r"[A-Za-z]{3,}", words[-1]):
                continue
            prompt = CLOZE_PROMPT.format(text=" ".join(words[:-1]))
            if prompt not in seen:
                seen.add(prompt)
                out.append(Task(f"cloze-{len(out)}", "cloze", prompt, {"answer": words[-1]}))
    return out


def next_word(answer: str, want: str) -> bool:
    """The answer's first word is `want` (case aside), as the pool's prose verifier reads it."""
    m = re.match(r"\s*([A-Za-z]+)", answer)
    return m is not None and m.group(1).lower() == want.lower()


def family_tasks(family: str) -> list[Task]:
    if family == "arithmetic-d3":
        return arithmetic_tasks("d3")
    if family == "arithmetic-d4":
        return arithmetic_tasks("d4")
    if family == "copy":
        return copy_tasks()
    if family == "code":
        return python_tasks()
    if family == "prose-cloze":
        return cloze_tasks()
    raise ConfigError(f"task family {family!r}: choose from {', '.join(FAMILIES)}")


def judge(task: Task, answer: str) -> bool:
    """Strict success on one task."""
    if task.kind == "copy":
        return copied(answer, task.check["answer"])
    if task.kind == "cloze":
        return next_word(answer, task.check["answer"])
    from k1.tasks.verifiers import solved, verify

    return solved(verify(task, answer))


def heldout(family: str, n: int = 200, seed: int = 0) -> tuple[list[Task], list[Task]]:
    """(train pool, ≥ n held-out tasks), disjoint by problem; the code family holds out whole templates."""
    tasks = family_tasks(family)
    n = min(n, len(tasks) // 2) if family == "code" else n
    return split_by_problem(tasks, n, seed=seed)
