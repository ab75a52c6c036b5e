"""`SafetyHook`: the rails. Non-finite or spiking losses → a rollback request; healthy evaluations → a
snapshot on the ring. Losses are buffered on the device and checked at log intervals (one host sync)."""

from __future__ import annotations

import math

import torch

from k1.engine.hooks.base import Hook
from k1.engine.hooks.requests import PushSnapshot, Rollback
from k1.engine.selforg.safety import all_finite


class SafetyHook(Hook):
    def on_train_start(self, state, info):
        return [PushSnapshot("start")] if len(state.ring) == 0 else []

    def on_stage_start(self, state, stage):
        if stage.index > 0:  # a new domain's higher loss is expected, not a spike to roll back
            state.safety.loss_ema, state.safety.pending = None, []

    def on_step_end(self, state, r):
        if r.trial is not None:  # a trial judges its branches itself
            return None
        s = state.safety
        s.pending.append((r.loss, r.grad_norm))
        if not r.log_due:
            return None
        vals = torch.stack([torch.stack([a.float(), b.float()]) for a, b in s.pending]).tolist()  # host sync
        s.pending = []
        losses = [v[0] for v in vals]
        bad = next((x for x in losses if not math.isfinite(x)), None)
        spike = s.loss_ema is not None and bad is None and max(losses) > state.cfg.safety.spike_factor * s.loss_ema
        if bad is not None or spike or not all(math.isfinite(v[1]) for v in vals):
            reason = "non-finite loss" if bad is not None else ("loss spike" if spike else "non-finite gradient")
            return [Rollback(reason, {"max_loss": max(losses) if bad is None else str(bad), "loss_ema": s.loss_ema})]
        for x in losses:
            s.loss_ema = x if s.loss_ema is None else 0.9 * s.loss_ema + 0.1 * x
        return None

    def on_eval(self, state, step, metrics):
        if math.isfinite(metrics["val_loss"]) and all_finite(state.model):
            return [PushSnapshot("eval")]
        return None
