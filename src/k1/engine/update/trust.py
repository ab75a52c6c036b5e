"""`TrustVector`: per-agent trust in [0, 1] earned from measured outcomes (the engine's simple ledger).

Rule (symmetric, applied after every step, on the device):
  outcome  o = tanh((ema − loss) / (ema · tau))        relative improvement of this batch's loss over the
                                                       EMA of recent losses, squashed to (−1, 1)
  trust_i += rate · scale_i · o                        for the agents the *previous* step updated
  trust   += decay · (prior − trust)                   every agent drifts back towards the prior
  trust    = clamp(trust, 0, 1)
The outcome of an update is the next batch's loss, so the reward goes to the plan that preceded it.
Option `outcome = "probe"`: a fixed held-out probe batch is scored after every update, and the outcome
tanh((probe_before − probe_after) / (probe_before · tau)) is credited to the plan that was just applied
(one extra forward pass per step; cleaner credit, since batch-to-batch noise drops out).
`last_update` (step each agent was last updated) feeds hybrid's diversity term.
"""

from __future__ import annotations

import torch
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from k1.engine.model.plan import UpdatePlan


class TrustVectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prior: float = Field(default=0.5, ge=0, le=1)
    rate: float = Field(default=0.05, ge=0)
    decay: float = Field(default=0.001, ge=0, le=1)
    tau: float = Field(default=0.01, gt=0)  # relative loss change that counts as a clear outcome
    ema: float = Field(default=0.9, ge=0, lt=1)
    outcome: Literal["ema", "probe"] = "ema"


class TrustVector:
    def __init__(self, n_agents: int, cfg: TrustVectorConfig | None = None, device="cpu"):
        self.cfg = cfg or TrustVectorConfig()
        self.trust = torch.full((n_agents,), self.cfg.prior, device=device)
        self.last_update = torch.zeros(n_agents, device=device)
        self.loss_ema = torch.zeros((), device=device)
        self.count = torch.zeros((), device=device)  # steps seen (the EMA is only valid after one)
        self.prev_scale = torch.zeros(n_agents, device=device)

    def _outcome(self, loss: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """tanh of the relative improvement of `loss` over the reference `loss_ema` (0 where not valid)."""
        rel = (self.loss_ema - loss) / (self.loss_ema.abs() * self.cfg.tau).clamp_min(1e-12)
        return torch.where(valid, torch.tanh(rel), torch.zeros_like(loss))

    def _credit(self, scale: torch.Tensor, outcome: torch.Tensor, plan: UpdatePlan, step: int) -> None:
        """The symmetric rule: reward/penalty by scale × outcome, decay towards the prior, clamp."""
        c = self.cfg
        self.trust = self.trust + c.rate * scale * outcome
        self.trust = (self.trust + c.decay * (c.prior - self.trust)).clamp(0.0, 1.0)
        self.last_update = torch.where(plan.selected, torch.full_like(self.last_update, float(step)), self.last_update)

    def update(self, plan: UpdatePlan, loss: torch.Tensor, step: int) -> torch.Tensor:
        """Credit the previous plan with this batch's loss, then remember this plan. Returns the outcome."""
        c = self.cfg
        loss = loss.detach().float()
        finite = torch.isfinite(loss)
        outcome = self._outcome(loss, (self.count > 0) & finite)
        self._credit(self.prev_scale, outcome, plan, step)
        new_ema = torch.where(self.count > 0, c.ema * self.loss_ema + (1 - c.ema) * loss, loss)
        self.loss_ema = torch.where(finite, new_ema, self.loss_ema)
        self.count = self.count + finite.float()
        self.prev_scale = plan.scale.detach().float()
        return outcome

    def update_probe(self, plan: UpdatePlan, probe_loss: torch.Tensor, step: int) -> torch.Tensor:
        """Probe mode: credit *this* plan with the change of the held-out probe loss it caused
        (`loss_ema` then holds the previous probe loss)."""
        probe = probe_loss.detach().float()
        outcome = self._outcome(probe, (self.count > 0) & torch.isfinite(probe))
        self._credit(plan.scale.float(), outcome, plan, step)
        self.loss_ema = torch.where(torch.isfinite(probe), probe, self.loss_ema)
        self.count = self.count + 1
        return outcome

    def staleness(self, step: int) -> torch.Tensor:
        """Steps since each agent was last updated."""
        return step - self.last_update

    def remap(self, old_shape, new_shape, merged: dict[int, list[int]] | None = None) -> None:
        """Follow agents through surgery by id: survivors keep their rows, merged agents average theirs,
        new agents start at the prior (called only between steps)."""
        old = old_shape.flat_index()
        merged = merged or {}
        for name in ("trust", "last_update", "prev_scale"):
            t = getattr(self, name)
            fill = self.cfg.prior if name == "trust" else 0.0
            rows = []
            for a in new_shape.agents:
                src = [old[i] for i in merged.get(a.id, [a.id]) if i in old]
                rows.append(t[src].mean() if src else t.new_tensor(fill))
            setattr(self, name, torch.stack(rows))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"trust": self.trust, "last_update": self.last_update, "loss_ema": self.loss_ema,
                "count": self.count, "prev_scale": self.prev_scale}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            setattr(self, k, v.to(self.trust.device).clone())
