"""A tiny K-1 target that knows the question format but not arithmetic, for tests and the README demo.

It is trained on "Q: What is a + b?\\nA: r" lines whose answers r are random digits: it learns to answer
with one number (so it succeeds sometimes, by chance) without ever seeing a correct sum. Whatever it
gains in the loop it gains from verified answers alone.
"""

from __future__ import annotations

import random
from pathlib import Path


def format_text(n_lines: int = 3_000, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(f"Q: What is {rng.randint(0, 4)} + {rng.randint(0, 4)}?\nA: {rng.randint(0, 8)}\n\n"
                   for _ in range(n_lines))


def format_run(root: Path, steps: int = 150, seed: int = 0) -> Path:
    """Train the tiny preset on the random-answer corpus into `root/run`; returns the run directory."""
    from k1.engine.run.train import Trainer
    from k1.pool.learn.train_k1 import text_corpus
    from k1.testing import tiny_config

    corpus_dir = root / "format"
    corpus_dir.mkdir(parents=True, exist_ok=True)
    train, val = format_text(seed=seed), format_text(300, seed=seed + 1)
    (corpus_dir / "qa.txt").write_text(train)  # for the record: the run's config points here
    cfg = tiny_config(root / "data", [f"train.steps={steps}", f"train.seed={seed}"],
                      data={"domains": ["qa"], "paths": {"qa": str(corpus_dir / "qa.txt")}})
    Trainer(cfg, root / "run", corpus=text_corpus(train, val, domain="qa"), quiet=True).fit()
    return root / "run"
