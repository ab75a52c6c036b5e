"""Students the pool trains from its own use, one task class at a time.

`train_student(kind, examples, out_dir, ...)` is the one entry point DREAM calls: `examples` are (prompt as
served, verifier-accepted answer) pairs (`data.from_experiences`, `data.practise`); it returns the pool-file
member entry of the trained student (`{"name", "kind", "run" | "path", "roles"}`), which the pool adds and
calibrates like any member, so the student enters `auto` for the class only once it passes calibration.

- `kind="k1"`: a K-1 tree trained with the engine (attributed sparse updates), `k1tree.py`; `base=` a run
  directory continues an earlier student (a second class);
- `kind="lora"`: a LoRA adapter on a Hugging Face member (`base=` that member), merged, `lora.py`.
`from_pool.student_from_store(router, task_class, out_dir)` does the whole step from the pool's store (what
DREAM calls); `families.py` holds the task families and their held-out splits, `evaluate.py` the controls.
"""

from __future__ import annotations

from pathlib import Path

from k1.errors import ConfigError
from k1.pool.learn.students.data import Example

KINDS = ("k1", "lora")


def train_student(kind: str, examples: list[Example], out_dir: str | Path, *, name: str, base=None,
                  seed: int = 0, **options) -> dict:
    """Train a student of `kind` on `examples` into `out_dir`; → its pool-file member entry (plus "record")."""
    if kind == "k1":
        from k1.pool.learn.students.k1tree import k1_member_spec, train_k1_student

        run = train_k1_student(examples, out_dir, base_run=base, seed=seed, **options)
        return {**k1_member_spec(run, name), "record": {"examples": len(examples)}}
    if kind == "lora":
        from k1.pool.learn.students.lora import hf_member_spec, train_lora_student

        if base is None:
            raise ConfigError("a LoRA student needs base= the Hugging Face member it adapts")
        path, rec = train_lora_student(base, examples, out_dir, seed=seed, **options)
        return {**hf_member_spec(path, name), "record": rec}
    raise ConfigError(f"student kind {kind!r}: choose from {', '.join(KINDS)}")
