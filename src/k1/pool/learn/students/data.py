"""A student's training data, from the pool's own use only.

- `from_experiences`: prompts the pool served and answers a member gave (the teacher, or the student itself)
  that the class's verifier accepts. The verifier only judges; an answer it rejects is dropped, and no answer
  is ever written from the verifier's reference.
- `practice_prompts`: self-instruct from the templates of served prompts — the numbers (or the string to copy)
  of a served prompt are replaced by fresh ones of the same shape; prompts in `exclude` (held-out, calibration)
  are never made.
- `practise`: a member answers practice prompts (greedy, then samples); an answer is kept only where the
  verifier accepts it. `shots` are earlier accepted examples put before each prompt as finished turns (the
  teacher is shown how the pool's accepted answers look, in its context only; the student learns the plain
  prompt, as `DreamConfig.teacher_system` does with a system message).
- `problem_key(task_class, prompt)`: the problem a served prompt asks (`k1.tasks.split.problem_key`), so DREAM
  splits the pool's own prompts by problem (a + b and b + a, one Python template, on one side only).
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Hashable, Iterable

Example = tuple[object, str]  # (prompt as served: chat messages or text, accepted answer)


def first_line(text: str) -> str:
    return text.strip().split("\n")[0].strip()


def from_experiences(experiences: Iterable[dict], verifier: Callable[[str, str], float | None],
                     task_class: str | None = None) -> list[Example]:
    """Accepted (prompt, answer) pairs from the store's experiences (`PoolStore.experiences()` rows), first line
    of each answer, one per distinct pair."""
    out, seen = [], set()
    for e in experiences:
        if task_class is not None and e.get("context") != task_class:
            continue
        answer = e.get("response") or e.get("answer") or ""
        if not answer or (verifier(e["prompt"], answer) or 0) < 0.5:
            continue
        prompt = (e.get("extra") or {}).get("messages") or e["prompt"]
        key = (str(prompt), first_line(answer))
        if key not in seen:
            seen.add(key)
            out.append((prompt, first_line(answer)))
    return out


def _fresh_number(tok: str, rng: random.Random) -> str:
    digits = len(tok.lstrip("-"))
    lo = 10 ** (digits - 1) if digits > 1 else 0
    return str(rng.randint(lo, 10 ** digits - 1))


def practice_prompt(served: str, rng: random.Random) -> str:
    """One practice prompt in the template of `served`: its integers replaced by others with as many digits;
    a prose cloze ("Continue this text: …") gets another first sentence of the prose corpus; a prompt with
    neither has its last word (a string to copy) replaced by a random one of the same length."""
    from k1.pool.learn.students.families import CLOZE_PROMPT

    if served.startswith(CLOZE_PROMPT.format(text="")):
        from k1.pool.learn.verifiers import cloze_words

        return rng.choice(sorted(cloze_words()))
    if re.search(r"\d", served) and not re.search(r"Repeat this exactly:", served):
        return re.sub(r"\d+", lambda m: _fresh_number(m.group(0), rng), served)
    m = re.search(r"(\S+)\s*$", served)
    if m is None:
        return served
    alphabet = string.ascii_lowercase + string.digits
    return served[:m.start(1)] + "".join(rng.choice(alphabet) for _ in m.group(1)) + served[m.end(1):]


def practice_prompts(served: list[str], n: int, seed: int = 0, exclude: set[str] = frozenset()) -> list[str]:
    """n distinct practice prompts made from the templates of `served` (none of them in `exclude`)."""
    rng = random.Random(f"practice-{seed}")
    out, seen, tries = [], set(exclude) | set(served), 0
    while len(out) < n and tries < 50 * n + 100:
        tries += 1
        p = practice_prompt(rng.choice(served), rng)
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def problem_key(task_class: str | None, prompt) -> Hashable:
    """The problem a served prompt (text or chat messages) asks: one key for "3 + 4" and "4 + 3", one per Python
    template, else the question itself."""
    from k1.pool.members.base import prompt_text
    from k1.pool.route.taskclass import question
    from k1.tasks.split import problem_key as task_key
    from k1.tasks.task import Task, python_tasks

    q = question(prompt if isinstance(prompt, str) else prompt_text(prompt)).strip()
    if task_class == "code":
        t = {t.prompt: t for t in python_tasks()}.get(q)
        if t is not None:
            return task_key(t)
    if task_class == "arithmetic" or re.search(r"\d\s*(\+|-|\*|×|plus|minus|times)\s*\d", q):
        key = task_key(Task("served", "arithmetic", q, {}))
        if key[0] == "arithmetic":
            return key
    return (task_class, q)


def practise(member, prompts: list, verifier: Callable[[str, str], float | None], *, max_tokens: int = 16,
             samples: int = 0, temperature: float = 0.8, seed: int = 0, system: str | None = None,
             shots: list[Example] = (), generate: Callable | None = None,
             progress: Callable[[], None] | None = None) -> tuple[list[Example], dict]:
    """`member` answers every prompt (chat messages for a plain string), greedy and `samples` more times; kept:
    the first accepted answer per prompt (as the answer to the plain prompt). `generate(member, messages,
    **options)` makes each call (DREAM charges them to the ledger; default `member.generate`).
    → (examples, {"asked", "kept", "atp"})."""
    from k1.pool.members.base import prompt_text

    call = generate or (lambda m, msgs, **o: m.generate(msgs, **o))
    demo = []
    for p, a in shots:
        demo += [*_user_turns(p), {"role": "assistant", "content": a}]
    kept, atp = [], 0.0
    for i, p in enumerate(prompts):
        msgs = [{"role": "user", "content": p}] if isinstance(p, str) else p
        asked = ([{"role": "system", "content": system}] if system else []) + demo + msgs
        for j in range(samples + 1):
            g = call(member, asked, max_tokens=max_tokens, temperature=0.0 if j == 0 else temperature,
                     seed=None if j == 0 else seed * 1_000_003 + i * 1009 + j)
            atp += g.cost.atp
            if (verifier(prompt_text(msgs), g.text) or 0) >= 0.5 and first_line(g.text):
                kept.append((msgs, first_line(g.text)))
                break
        if progress is not None:
            progress()
    return kept, {"asked": len(prompts), "kept": len(kept), "atp": atp}


def _user_turns(prompt) -> list[dict]:
    """Chat messages of a prompt, without any system message (a plain string is one user turn)."""
    if isinstance(prompt, str):
        from k1.pool.route.taskclass import question

        return [{"role": "user", "content": question(prompt)}]
    return [m for m in prompt if m.get("role") != "system"]
