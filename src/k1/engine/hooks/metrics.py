"""`metrics`: appends training and evaluation metrics to `metrics.jsonl` in the run directory."""

from __future__ import annotations

import json

from k1.engine.hooks.base import HOOKS, Hook


@HOOKS.register("metrics")
class MetricsHook(Hook):
    def on_train_start(self, state, info):
        self.file = open(info.out_dir / "metrics.jsonl", "a")

    def on_step_end(self, state, r):
        if not r.log_due:
            return
        row = {  # host sync (log interval)
            "kind": "train", **r.key(), "loss": r.loss.item(), "lr": r.lr,
            "tokens_per_s": r.tokens_per_s, "grad_norm": r.grad_norm.item(),
            "agents_updated": int(r.stats.agents_updated.item()),
            "frac_params_changed": r.stats.params_changed.item() / r.total_params,
        }
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def on_eval(self, state, step, metrics):
        self.file.write(json.dumps({"kind": "eval", "step": step, **metrics}) + "\n")
        self.file.flush()

    def on_train_end(self, state, summary):
        self.file.close()
