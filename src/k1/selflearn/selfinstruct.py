"""Self-instruct prompts: a model proposes new arithmetic questions; the ones we can parse and check are kept.

The model writes only the question. The answer is computed from the parsed expression, never taken from
the model, so a generated task is as verifiable as a built-in one. Every candidate is recorded with the
reason it was kept or dropped (unparseable, out of range, duplicate, a held-out prompt).
"""

from __future__ import annotations

import random
import re

from k1.tasks.task import Task, arithmetic_prompt

_Q = re.compile(r"What is (\d{1,3}) ([-+*]) (\d{1,3})\?")


def self_instruct(member, seeds: list[Task], n: int, *, exclude: set[str], seed: int = 0, attempts: int | None = None,
                  max_value: int = 999) -> tuple[list[Task], list[dict]]:
    """Ask `member` for up to `n` new questions in the style of `seeds`; → (kept tasks, provenance records)."""
    rng = random.Random(seed)
    seen = {t.prompt for t in seeds} | set(exclude)
    kept, records = [], []
    for i in range(attempts or 4 * n):
        if len(kept) >= n:
            break
        shots = rng.sample(seeds, min(4, len(seeds)))
        prompt = "".join(f"Q: {t.prompt}\n" for t in shots) + "Q: What is"
        g = member.generate(prompt, max_tokens=12, temperature=1.0, stop=["\n"], seed=seed * 1_000 + i)
        text = "What is" + g.text
        m = _Q.search(text)
        rec = {"generated": text, "member": member.name, "atp": g.cost.atp}
        if not m:
            records.append({**rec, "kept": False, "reason": "unparseable"})
            continue
        a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
        q = arithmetic_prompt(a, op, b)
        answer = {"+": a + b, "-": a - b, "*": a * b}[op]
        if answer < 0 or answer > max_value:
            reason = "out of range"
        elif q in exclude:
            reason = "held-out prompt"
        elif q in seen:
            reason = "duplicate"
        else:
            reason = None
        records.append({**rec, "prompt": q, "kept": reason is None, "reason": reason or "new"})
        if reason is None:
            seen.add(q)
            kept.append(Task(f"si-{seed}-{len(kept)}", "arithmetic", q, {"answer": answer}, source="self-instruct"))
    return kept, records
