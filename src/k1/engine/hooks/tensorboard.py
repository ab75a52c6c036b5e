"""`tensorboard`: training and evaluation scalars and per-agent histograms under `<run>/tensorboard/`.

Scalars at each log interval (loss, lr, parameters changed, agents updated, tokens/s, gradient norm) and
after each evaluation (validation loss and bits per byte, mean and per domain); histograms of how often
each agent was selected over the interval and of the trust vector. Selection counts accumulate on the
device, so the only host sync is the one the log interval already makes.
"""

from __future__ import annotations

import logging

import torch

from k1.engine.hooks.base import HOOKS, Hook
from k1.errors import ConfigError

log = logging.getLogger(__name__)


@HOOKS.register("tensorboard")
class TensorBoardHook(Hook):
    """Writes TensorBoard event files; needs the `tensorboard` package (`pip install tensorboard`)."""

    def on_train_start(self, state, info):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("train.recorders lists 'tensorboard' but the tensorboard package is missing; "
                              "install it (pip install tensorboard) or remove the callback") from None
        # on a resume, purge_step hides anything an earlier writer logged after the restored step
        self.writer = SummaryWriter(str(info.out_dir / "tensorboard"), purge_step=info.start_step or None)
        self.counts: torch.Tensor | None = None  # [A] selections per agent since the last log interval
        self.names: list[str] = []
        self.last_step = info.start_step

    def on_step_end(self, state, r):
        if r.trial is not None:  # trial branches reuse step numbers; they are in the JSONL logs
            return
        if r.agent_names != self.names:  # first step, or the tree was reshaped between steps
            self._write_selection(self.last_step)
            self.names = r.agent_names
            self.counts = torch.zeros(len(r.agent_names), device=r.plan.scale.device)
            self.writer.add_text("agents", "flat index → agent: " + ", ".join(
                f"{i} {n}" for i, n in enumerate(self.names)), r.step)
        self.counts += r.plan.selected  # stays on the device
        self.last_step = r.step
        if not r.log_due:
            return
        loss, grad_norm, changed, agents = torch.stack([  # host sync (log interval): one transfer
            r.loss.float(), r.grad_norm.float(), r.stats.params_changed.float(),
            r.stats.agents_updated.float()]).tolist()
        w = self.writer
        w.add_scalar("train/loss", loss, r.step)
        w.add_scalar("train/lr", r.lr, r.step)
        w.add_scalar("train/grad_norm", grad_norm, r.step)
        w.add_scalar("train/frac_params_changed", changed / r.total_params, r.step)
        w.add_scalar("train/agents_updated", agents, r.step)
        if r.tokens_per_s is not None:
            w.add_scalar("train/tokens_per_s", r.tokens_per_s, r.step)
        w.add_histogram("trust", r.trust.float().cpu(), r.step)
        self._write_selection(r.step)

    def _write_selection(self, step: int) -> None:
        """The selection counts of the interval as a histogram over flat agent index (bucket i = agent i)."""
        if self.counts is None or step <= 0:
            return
        counts = self.counts.tolist()  # host sync: a log interval, or a reshape (which already synced)
        self.counts.zero_()
        if not any(counts):
            return
        idx = [i for i, c in enumerate(counts) if c > 0]
        self.writer.add_histogram_raw(
            "selection_counts", min=float(idx[0]), max=float(idx[-1]), num=int(sum(counts)),
            sum=float(sum(i * c for i, c in enumerate(counts))),
            sum_squares=float(sum(i * i * c for i, c in enumerate(counts))),
            bucket_limits=[i + 0.5 for i in range(len(counts))], bucket_counts=counts, global_step=step)

    def on_eval(self, state, step, metrics):
        w = self.writer
        w.add_scalar("eval/val_loss", metrics["val_loss"], step)
        w.add_scalar("eval/val_bpb", metrics["val_bpb"], step)
        for d, m in metrics.get("domains", {}).items():
            w.add_scalar(f"eval/{d}/loss", m["loss"], step)
            w.add_scalar(f"eval/{d}/bpb", m["bpb"], step)

    def on_event(self, state, event):
        if event["kind"] in ("diagnostics", "proposals"):
            return
        rest = ", ".join(f"{k}={v}" for k, v in event.items()
                         if k not in ("kind", "step") and not isinstance(v, (dict, list)))
        self.writer.add_text("events", f"{event['kind']}: {rest}", event["step"])

    def on_checkpoint(self, state, step, path):
        self.writer.flush()  # what a resume can restore is on disk

    def on_train_end(self, state, summary):
        self.writer.flush()
        self.writer.close()
