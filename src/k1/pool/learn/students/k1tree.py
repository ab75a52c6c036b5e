"""A K-1 tree as a narrow student: trained with the engine (`Trainer`, attributed sparse updates) on one class's
verified examples, served by the pool as a `k1:RUN` member.

What the tree reads in training is exactly what it reads when the pool serves it: each example is the token ids
of the served prompt as a K-1 member renders it (`prompt_text`: the `role: content` lines, then `assistant:`),
followed by the ids of the accepted answer (" ANSWER\\n": the first line, and the line end that closes it).
Each batch row is one whole example from its first token (`ExampleSampler`), so the prompt is never cut from its
answer and positions count from the prompt's start, as in generation; and the loss is on the answer's tokens
only (the prompt's targets are -100, which the model's cross-entropy ignores): the prompt's random strings and
numbers are inputs to condition on, not text to predict. Without both, most of the loss went to predicting the
prompts' random characters, and a tree trained on 158 verified `copy` examples solved 0 of 200 held-out ones.

Everything else is the engine's own step (`train_step`: the attribution policy picks a root → culprit path of
agents each step and only their rows move). A fresh student starts from the `small` preset (a four-level tree,
width 48, context 128 here so a prompt and its answer fit); a student for a second class continues from the
first class's run with the same config, so its update is again the engine's sparse update, and what the first
class learnt is measured afterwards rather than assumed to survive.
"""

from __future__ import annotations

from pathlib import Path

import torch

from k1.errors import DataError
from k1.pool.learn.students.data import Example

CONTEXT = 128
IGNORE = -100  # the target index `F.cross_entropy` skips: no loss, no gradient


def answer_text(answer: str) -> str:
    """What follows `assistant:` in training: a space, the answer's first line, the line end that stops it."""
    return " " + answer.strip().split("\n")[0].strip() + "\n"


def training_text(examples: list[Example]) -> str:
    """The examples as one text (each served prompt and its answer, blank-line separated): the corpus the
    trainer's own held-out loss is measured on."""
    from k1.pool.members.base import prompt_text

    if not examples:
        raise DataError("no verified examples to train a student on")
    return "".join(f"{prompt_text(p)}{answer_text(a)}\n" for p, a in examples)


def example_rows(examples: list[Example], tokenizer, context: int) -> list[tuple[list[int], int]]:
    """(ids of served prompt + answer, number of prompt ids) per example — the prompt's ids are those the
    served member reads (`encode(prompt_text(prompt))`). A longer example than context + 1 ids keeps its last
    context + 1, as the served member reads a long prompt through its last `context` tokens; one whose answer
    alone does not fit is left out."""
    from k1.pool.members.base import prompt_text

    rows = []
    for p, a in examples:
        head, tail = tokenizer.encode(prompt_text(p)), tokenizer.encode(answer_text(a))
        cut = max(0, len(head) + len(tail) - (context + 1))
        if head and tail and cut < len(head):
            rows.append(((head + tail)[cut:], len(head) - cut))
    if not rows:
        raise DataError(f"no answer of the {len(examples)} examples fits the student's context of {context} tokens")
    return rows


class ExampleSampler:
    """Batches of whole examples for the engine's loop (`TrainState.sampler`): row i is one example from its
    first token, right-padded; `y` is the next token on the answer's positions and -100 elsewhere (prompt and
    padding). Examples are drawn without replacement, a fresh shuffle per pass; `state_dict()` resumes it."""

    def __init__(self, rows: list[tuple[list[int], int]], batch_size: int, seed: int = 0):
        if not rows:
            raise DataError("no examples to sample")
        self.rows, self.batch_size = rows, batch_size
        self._generator = torch.Generator().manual_seed(seed)
        self._order: list[int] = []
        self.batches_drawn = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        picks = []
        for _ in range(self.batch_size):
            if not self._order:
                self._order = torch.randperm(len(self.rows), generator=self._generator).tolist()
            picks.append(self.rows[self._order.pop()])
        T = max(len(ids) for ids, _ in picks) - 1
        x = torch.zeros(len(picks), T, dtype=torch.long)
        y = torch.full((len(picks), T), IGNORE, dtype=torch.long)
        for i, (ids, n_prompt) in enumerate(picks):
            t = torch.tensor(ids)
            x[i, :len(ids) - 1] = t[:-1]
            y[i, n_prompt - 1:len(ids) - 1] = t[n_prompt:]  # y[j] predicts ids[j + 1]: answer ids only
        self.batches_drawn += 1
        return x, y

    def state_dict(self) -> dict:
        return {"generator": self._generator.get_state(), "order": list(self._order),
                "batches_drawn": self.batches_drawn}

    def load_state_dict(self, s: dict) -> None:
        self._generator.set_state(s["generator"])
        self._order, self.batches_drawn = list(s["order"]), s["batches_drawn"]


def train_k1_student(examples: list[Example], out_dir: str | Path, *, base_run: str | Path | None = None,
                     preset: str = "small", steps: int = 400, seed: int = 0, batch_size: int = 16,
                     overrides: list[str] | None = None, quiet: bool = True, init: dict | None = None,
                     checkpoint_every: int | None = None) -> Path:
    """Train a K-1 tree on `examples` into the run directory `out_dir` (a fresh tree of `preset`, or a copy of
    `base_run` trained further — from `init`, a state dict of the same tree, where given: the weights a served
    student holds now, DREAM's earlier cycles included); → `out_dir`, ready for `k1 pool add k1:OUT_DIR`.

    The safety rails (rollback on a loss spike or a non-finite loss) are off for a student: its answer-only loss
    on a few hundred examples falls towards zero, where a batch at three times the running mean is noise, and a
    rollback would restore the untrained tree (the only snapshot before the run's single evaluation)."""
    from k1.data import load_tokenizer
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
             "log_every": max(1, steps // 4), "checkpoint_every": checkpoint_every or steps, "recorders": ["metrics", "attribution"]}
    extra = {"name": out_dir.name, "data": data, "train": train, "safety": {"enabled": False}}
    if base_run is None:
        cfg = load_config(preset=preset, overrides=[f"model.context={CONTEXT}", *(overrides or [])], extra=extra)
    else:
        cfg = RunDir(Path(base_run)).read_config(extra=extra)
    rows = example_rows(examples, load_tokenizer(cfg.data.tokenizer), cfg.model.context)
    body = corpus.read_text()
    trainer = Trainer(cfg, out_dir, corpus=text_corpus(body, body, cfg.data.tokenizer, domain="student"), quiet=quiet)
    trainer.state.sampler = ExampleSampler(rows, batch_size, seed=seed)
    if init is not None:
        trainer.state.model.load_state_dict(init)
    elif base_run is not None:
        model, _, _ = load_run_model(Path(base_run))
        trainer.state.model.load_state_dict(model.state_dict())
    trainer.fit()
    return out_dir


def k1_member_spec(run_dir: str | Path, name: str) -> dict:
    """The pool-file entry of a trained student (what `k1 pool add k1:RUN` writes, and the line end that closes
    every answer it was trained on: it stops there instead of writing filler up to max_tokens)."""
    return {"name": name, "kind": "k1", "run": str(Path(run_dir).resolve()), "roles": ["student"], "stop": ["\n"]}
