"""A K-1 tree as a narrow student: trained with the engine (`Trainer`, attributed sparse updates) on one class's
verified examples, served by the pool as a `k1:RUN` member.

The training text is each example as the pool puts it to a K-1 member — the prompt's `role: content` lines,
then the accepted answer after `assistant:` — separated by blank lines. A fresh student starts from the `small`
preset (a four-level tree, width 48, context 128 here so a prompt and its answer fit); a student for a second
class continues from the first class's run with the same config, so its update is again the engine's own
sparse update, and what the first class learnt is measured afterwards rather than assumed to survive.
"""

from __future__ import annotations

from pathlib import Path

from k1.errors import DataError
from k1.pool.learn.students.data import Example

CONTEXT = 128


def training_text(examples: list[Example]) -> str:
    from k1.pool.members.base import prompt_text

    if not examples:
        raise DataError("no verified examples to train a student on")
    return "".join(f"{prompt_text(p)} {a.strip()}\n\n" for p, a in examples)


def train_k1_student(examples: list[Example], out_dir: str | Path, *, base_run: str | Path | None = None,
                     preset: str = "small", steps: int = 400, seed: int = 0, batch_size: int = 16,
                     overrides: list[str] | None = None, quiet: bool = True, init: dict | None = None) -> Path:
    """Train a K-1 tree on `examples` into the run directory `out_dir` (a fresh tree of `preset`, or a copy of
    `base_run` trained further — from `init`, a state dict of the same tree, where given: the weights a served
    student holds now, DREAM's earlier cycles included); → `out_dir`, ready for `k1 pool add k1:OUT_DIR`."""
    from k1.engine.config import load_config
    from k1.engine.run.generate import load_run_model
    from k1.engine.run.rundir import RunDir
    from k1.engine.run.train import Trainer
    from k1.pool.learn.train_k1 import text_corpus, write_corpus

    out_dir = Path(out_dir)
    text = training_text(examples)
    corpus = write_corpus([text], out_dir.parent / f"{out_dir.name}-corpus" / "student.txt", min_bytes=64_000)
    data = {"source": "files", "domains": ["student"], "paths": {"student": str(corpus)}, "max_train_bytes": None}
    train = {"steps": steps, "seed": seed, "device": "cpu", "batch_size": batch_size, "eval_every": steps,
             "log_every": max(1, steps // 4), "checkpoint_every": steps, "recorders": ["metrics", "attribution"]}
    if base_run is None:
        cfg = load_config(preset=preset, overrides=[f"model.context={CONTEXT}", *(overrides or [])],
                          extra={"name": out_dir.name, "data": data, "train": train})
    else:
        cfg = RunDir(Path(base_run)).read_config(extra={"name": out_dir.name, "data": data, "train": train})
    body = corpus.read_text()
    trainer = Trainer(cfg, out_dir, corpus=text_corpus(body, body, cfg.data.tokenizer, domain="student"), quiet=quiet)
    if init is not None:
        trainer.state.model.load_state_dict(init)
    elif base_run is not None:
        model, _, _ = load_run_model(Path(base_run))
        trainer.state.model.load_state_dict(model.state_dict())
    trainer.fit()
    return out_dir


def k1_member_spec(run_dir: str | Path, name: str) -> dict:
    """The pool-file entry of a trained student (what `k1 pool add k1:RUN` writes)."""
    return {"name": name, "kind": "k1", "run": str(Path(run_dir).resolve()), "roles": ["student"]}
