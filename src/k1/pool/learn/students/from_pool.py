"""One call for DREAM: a class's student from the pool's own store (and, optionally, self-instruct practice).

`student_from_store(router, task_class, out_dir)` gathers the class's verifier-accepted answers from the
store's experiences (or the `experiences` given: DREAM passes its training side only), optionally has the
teacher practise on prompts made from the templates of the prompts the pool served — none of them a calibration
problem or a problem of `exclude` (DREAM's trust and replay prompts), compared by problem, not by text — and
trains the student (`train_student`). With `shots`, the first accepted answers are shown to the teacher as
finished turns before each practice prompt; practice goes in rounds of `ROUND` prompts, so answers accepted in
one round are shown in the next (a class the pool has no accepted answer of yet bootstraps from the teacher's
first verified practice answers, under `system` if given). It returns the student's pool-file entry and what it was trained
on; the caller adds the member (or loads the weights into it) and calibrates it, so the student enters `auto`
for the class only if it passes that class's calibration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from k1.errors import BackendError

ROUND = 10  # practice prompts between updates of the shots


def student_from_store(router, task_class: str, out_dir: str | Path, *, kind: str = "k1", name: str | None = None,
                       teacher: str | None = None, practice: int = 0, shots: int = 0, base=None, seed: int = 0,
                       max_tokens: int = 16, experiences: list[dict] | None = None, exclude: Iterable[str] = (),
                       generate: Callable | None = None, verifier: Callable | None = None, system: str | None = None,
                       samples: int = 0, **options) -> dict:
    """→ {"member": the pool-file entry, "examples": n, "from_store": n, "practice": practise's record or None,
    "prompts": the questions trained on, "pairs": the (prompt, accepted answer) pairs themselves}."""
    from k1.pool.learn.calibrate import MAX_PER_CLASS, calibration_tasks
    from k1.pool.learn.students import train_student
    from k1.pool.learn.students.data import (
        from_experiences,
        practice_prompts,
        practise,
        problem_key,
    )
    from k1.pool.learn.verifiers import class_verifier
    from k1.pool.route.taskclass import question

    verifier = verifier or class_verifier(task_class)
    exps = router.store.experiences() if experiences is None else experiences
    examples = from_experiences(exps, verifier, task_class)
    n_store, rec = len(examples), None
    if practice and teacher is not None:
        served = sorted({question(e["prompt"]) for e in exps if e.get("context") == task_class})
        held = {question(c.text) for c in calibration_tasks(MAX_PER_CLASS)} | {question(q) for q in exclude}
        held_keys = {problem_key(task_class, q) for q in held}
        made = practice_prompts(served, 3 * practice, seed=seed, exclude=held)
        prompts = [p for p in made if problem_key(task_class, p) not in held_keys][:practice]
        rec = {"asked": 0, "kept": 0, "atp": 0.0}
        for i in range(0, len(prompts), ROUND):
            kept, r = practise(router.pool[teacher], prompts[i:i + ROUND], verifier, max_tokens=max_tokens,
                               seed=seed + i, shots=examples[:shots], generate=generate, system=system,
                               samples=samples)
            examples += kept
            rec = {k: rec[k] + r[k] for k in rec}
    if not examples:
        raise BackendError(f"no verifier-accepted answers of class {task_class!r} to train a student on")
    base_obj = router.pool[base] if kind == "lora" and isinstance(base, str) else base
    member = train_student(kind, examples, out_dir, name=name or f"{kind}-{task_class}", base=base_obj, seed=seed,
                           **options)
    from k1.pool.members.base import prompt_text

    return {"member": member, "examples": len(examples), "from_store": n_store, "practice": rec,
            "prompts": sorted({question(prompt_text(p) if isinstance(p, list) else p) for p, _ in examples}),
            "pairs": examples}
