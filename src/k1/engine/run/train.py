"""`Trainer`: one `k1 train` run — a `TrainState`, the standard hooks, one stage — driven by `loop.run`.

The step lives in `step.py`, the loop in `loop.py`, the run state in `state.py`; this file only puts them
together for the common case and writes the run summary.
"""

from __future__ import annotations

import logging
from pathlib import Path

from k1.data import load_corpus
from k1.engine.config import RunConfig
from k1.engine.hooks import HOOKS, AutonomyHook, Hook, SafetyHook
from k1.engine.run.distributed import Dist
from k1.engine.run.loop import Loop, Stage
from k1.engine.run.rundir import RunDir
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
        run = RunDir(self.out_dir)
        self.state.load(ckpt or run.latest_checkpoint())
        step = self.state.step
        if self.dist.is_main:
            run.truncate_logs(step)
        log.info("resumed %s at step %d", self.out_dir, step)
        return step

    def fit(self) -> dict:
        return self.loop.run([Stage("train", self.cfg.train.steps)])
