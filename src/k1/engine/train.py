"""`Trainer`: one `k1 train` run — a `TrainState`, the standard hooks, one stage — driven by `loop.run`.

The step lives in `step.py`, the loop in `loop.py`, the run state in `state.py`; this file only puts them
together for the common case and writes the run summary.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from k1.config import RunConfig
from k1.data import load_corpus
from k1.engine.callbacks import CALLBACKS
from k1.engine.checkpoint import latest_checkpoint
from k1.engine.distributed import Dist
from k1.engine.events import fmt
from k1.engine.hooks import AutonomyHook, Hook, SafetyHook
from k1.engine.loop import Loop, Stage
from k1.engine.state import TrainState, build_model, resolve_device  # noqa: F401  (re-exported)
from k1.engine.step import lr_at, train_step  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


def standard_hooks(cfg: RunConfig, quiet: bool = False, recorders: list[Hook] | None = None) -> list[Hook]:
    """The rails, autonomy when enabled, then the configured recorders (progress, metrics, attribution, ...)."""
    hooks: list[Hook] = [SafetyHook()] if cfg.safety.enabled else []
    if cfg.autonomy.enabled:
        hooks.append(AutonomyHook())
    if recorders is None:
        recorders = [CALLBACKS.get(n)() for n in cfg.train.callbacks if not (quiet and n == "progress")]
    return hooks + recorders


class Trainer:
    """`Trainer(cfg, out_dir).fit()`: build the state, (optionally) `restore()` a checkpoint, run."""

    def __init__(self, cfg: RunConfig, out_dir: str | Path, corpus=None, quiet: bool = False,
                 callbacks: list[Hook] | None = None, dist: Dist | None = None):
        self.cfg, self.out_dir, self.dist = cfg, Path(out_dir), dist or Dist()
        self.state = TrainState(cfg, corpus if corpus is not None else load_corpus(cfg.data), dist=self.dist)
        main = self.dist.is_main  # under torchrun only rank 0 records, prints and writes
        hooks = standard_hooks(cfg, quiet or not main, callbacks if main else [])
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


def summary_markdown(s: dict) -> str:
    """A readable run summary: final numbers, then every structural, safety and autonomy event."""
    lines = [f"# Run summary: {s['name']}", "",
             f"- policy `{s['policy']}`, {s['steps']} steps ({s.get('steps_executed', s['steps'])} executed, "
             f"trial branches included), {s['params']:,} parameters, "
             f"agents {s['agents']} at the start, {s['final_agents']} at the end",
             f"- validation loss {s['val_loss']:.4f}, bits per byte {s['val_bpb']:.3f}",
             f"- parameters changed per step: {s['frac_params_changed']:.1%}; agents updated per step: "
             f"{s['agents_updated']:.2f}", f"- stopped early (self-stop): {s['stopped_early']}",
             f"- safety: {s.get('safety')}", f"- autonomy: {s.get('autonomy', 'off')}", ""]
    shown = [e for e in s["events"] if e["kind"] not in ("diagnostics", "proposals")]
    if not shown:
        lines.append("No structural, safety or autonomy events happened in this run.")
    else:
        lines += ["| step | event | details |", "|---|---|---|"]
        for e in shown:
            det = ", ".join(f"{k}={fmt(v)}" for k, v in e.items() if k not in ("step", "kind"))
            lines.append(f"| {e['step']} | {e['kind']} | {det} |")
    kinds = {(e["kind"], e.get("decision")) for e in s["events"]}
    checks = {"committed change": ("trial", "commit") in kinds, "rolled-back change": ("trial", "rollback") in kinds
              or any(e["kind"] == "rollback" for e in s["events"]),
              "stage advance": any(e["kind"] == "stage" for e in s["events"]), "self-stop": s["stopped_early"]}
    lines += ["", "What this run exercised. An unticked item did not happen in this run; the scenarios in "
              "tests/engine/test_autonomy.py and tests/engine/test_safety.py trigger each of them on purpose:", ""]
    lines += [f"- [{'x' if v else ' '}] {k}" for k, v in checks.items()]
    return "\n".join(lines) + "\n"
