"""`Trainer`: one `k1 train` run — a `TrainState`, the standard hooks, one stage — driven by `loop.run`.

The step lives in `step.py`, the loop in `loop.py`, the run state in `state.py`; this file only puts them
together for the common case and writes the run summary.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from k1.engine.config import RunConfig
from k1.data import load_corpus
from k1.engine.run.checkpoint import latest_checkpoint
from k1.engine.run.distributed import Dist
from k1.engine.hooks import HOOKS, AutonomyHook, Hook, SafetyHook
from k1.engine.run.loop import Loop, Stage
from k1.engine.run.state import TrainState

log = logging.getLogger(__name__)


def standard_hooks(cfg: RunConfig, quiet: bool = False, recorders: list[Hook] | None = None) -> list[Hook]:
    """The rails, autonomy when enabled, then the configured recorders (progress, metrics, attribution, ...)."""
    hooks: list[Hook] = [SafetyHook()] if cfg.safety.enabled else []
    if cfg.autonomy.enabled:
        hooks.append(AutonomyHook())
    if recorders is None:
        recorders = [HOOKS.get(n)() for n in cfg.train.recorders if not (quiet and n == "progress")]
    return hooks + recorders


class Trainer:
    """`Trainer(cfg, out_dir).fit()`: build the state, (optionally) `restore()` a checkpoint, run."""

    def __init__(self, cfg: RunConfig, out_dir: str | Path, corpus=None, quiet: bool = False,
                 recorders: list[Hook] | None = None, dist: Dist | None = None):
        self.cfg, self.out_dir, self.dist = cfg, Path(out_dir), dist or Dist()
        self.state = TrainState(cfg, corpus if corpus is not None else load_corpus(cfg.data), dist=self.dist)
        main = self.dist.is_main  # under torchrun only rank 0 records, prints and writes
        hooks = standard_hooks(cfg, quiet or not main, recorders if main else [])
        self.loop = Loop(self.state, hooks, self.out_dir if main else None)

    def restore(self, ckpt: Path | None = None) -> int:
        """Load the latest complete (or the given) checkpoint and cut the run's logs back to its step."""
        ckpt = ckpt or latest_checkpoint(self.out_dir)
        self.state.load(ckpt)
        step = self.state.step
        for name in ("metrics.jsonl", "attribution.jsonl", "shapes.jsonl") if self.dist.is_main else ():
            truncate_log(self.out_dir / name, step)
        log.info("resumed %s at step %d", self.out_dir, step)
        return step

    def fit(self) -> dict:
        return self.loop.run([Stage("train", self.cfg.train.steps)])


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after `step` (they belong to the interrupted tail of the run)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if line.strip() and json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:  # a line torn by the kill
            continue
    path.write_text("".join(line + "\n" for line in keep))
