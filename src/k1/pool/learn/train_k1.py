"""Fine-tune a K-1 target on verified answers with the engine's own trainer (`Trainer(...).fit()`): the
self-learning loop's improved responses, and the pool's K-1 tree students (here, below both, so neither imports
the other).

The corpus is the improved examples as plain text ("Q: ...\\nA: ...") repeated to a minimum size, in one
domain "loop", handed to the trainer directly (its validation split is the same text: the loop's real
held-out measure is the verifier on unseen tasks, not this loss); the model starts from the target's latest checkpoint and trains `steps` more steps with the run's
own config (policy, tree, optimizer), so the update is the engine's attributed sparse update.
"""

from __future__ import annotations

from pathlib import Path

from k1.errors import DataError

MIN_CORPUS_BYTES = 8_000  # the trainer cuts train/val splits and context windows; tiny files are repeated


def write_corpus(texts: list[str], path: Path, min_bytes: int = MIN_CORPUS_BYTES) -> Path:
    if not texts:
        raise DataError("no improved responses to train on: every candidate failed its verifier")
    body = "".join(texts)
    reps = max(1, -(-min_bytes // max(len(body.encode()), 1)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body * reps)
    return path


def text_corpus(train: str, val: str, tokenizer_spec: str = "byte", domain: str = "loop"):
    """A one-domain `Corpus` from two strings (the engine's file loader splits whole files, not lines)."""
    from k1.data import load_tokenizer
    from k1.data.corpus import Corpus, DomainSplit, encode_bytes

    tok = load_tokenizer(tokenizer_spec)
    tr, va = encode_bytes(tok, train.encode()), encode_bytes(tok, val.encode())
    return Corpus({domain: DomainSplit(tr, va, len(val.encode()) / max(va.numel(), 1))}, tok, tok.vocab_size,
                  {"source": "loop", "domains": {domain: {"bytes": {"train": len(train), "val": len(val)}}}})


def finetune_k1(run_dir: Path, texts: list[str], out_dir: Path, *, steps: int = 60, seed: int = 0) -> dict:
    """Train a copy of the K-1 run in `run_dir` on `texts`; writes a run directory at `out_dir`."""
    from k1.engine.run.generate import load_run_model
    from k1.engine.run.rundir import RunDir
    from k1.engine.run.train import Trainer

    corpus_file = write_corpus(texts, out_dir.parent / f"{out_dir.name}-corpus" / "loop.txt")
    model, _, cfg0 = load_run_model(run_dir)
    cfg = RunDir(run_dir).read_config(extra={
        "name": out_dir.name,
        "data": {"source": "files", "domains": ["loop"], "paths": {"loop": str(corpus_file)}, "max_train_bytes": None},
        "train": {"steps": steps, "seed": seed, "device": "cpu", "eval_every": steps, "log_every": max(1, steps // 4),
                  "checkpoint_every": steps},
    })
    text = corpus_file.read_text()
    trainer = Trainer(cfg, out_dir, corpus=text_corpus(text, text, cfg.data.tokenizer), quiet=True)
    trainer.state.model.load_state_dict(model.state_dict())  # start from the target, not from a fresh init
    return trainer.fit()
