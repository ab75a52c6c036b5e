"""`usage`: update the agents the current data uses much more than earlier data did (usage-relative
selection, in the spirit of sparse memory fine-tuning's TF-IDF ranking of memory slots).

Each step the policy reads every agent's traffic (its mean path weight, `signals.gate_mass`) and keeps

- the *current* use: an exponential moving average of the traffic over the last steps (`ema`);
- the *background* use: the mean traffic over all steps before the last data shift.

An agent's score is TF-IDF-like, current · log((1 + ε) / (background + ε)): high for agents the present
data relies on and earlier data did not; 0 for an agent every input uses (the root). The `top_k` best
(default: as many as the tree has levels, the sparsity of attribution and random-k) get a full update.
Before the first shift the background is empty and the rule updates the most-used agents.

A shift is a call, `consolidate()`: `k1 continual`'s `k1-usage` makes it when its loss-surprise detector
fires, never from a domain label. Selection is a `topk` on the device, with no host sync.
"""

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from k1.engine.model.plan import UpdatePlan
from k1.engine.update.policies.base import POLICIES, UpdatePolicy


class UsageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["usage"] = "usage"
    top_k: int | None = Field(default=None, ge=1)  # None: one agent per level of the tree
    ema: float = Field(default=0.9, ge=0, lt=1)  # the current use averages over about 1 / (1 − ema) steps
    eps: float = Field(default=1e-3, gt=0)  # background floor: an agent earlier data never used scores log(1/ε)


@POLICIES.register("usage")
class UsagePolicy(UpdatePolicy):
    def __init__(self, cfg, shape, device="cpu", seed: int = 0):
        super().__init__(cfg, shape, device, seed)
        self.k = cfg.top_k or shape.n_levels
        A = shape.n_agents
        self.current = torch.zeros(A, device=device)  # EMA of the traffic
        self.use_sum = torch.zeros(A, device=device)  # Σ traffic since the last shift
        self.use_steps = torch.zeros((), device=device)
        self.background = torch.zeros(A, device=device)  # mean traffic of every step before the last shift
        self.bg_steps = torch.zeros((), device=device)

    def scores(self) -> torch.Tensor:
        """[A] current use · log((1 + ε) / (background use + ε))."""
        eps = self.cfg.eps
        return self.current * torch.log((1 + eps) / (self.background + eps))

    def plan(self, signals, trust, step) -> UpdatePlan:
        m = signals.gate_mass.to(self.current.dtype)
        self.current.mul_(self.cfg.ema).add_(m, alpha=1 - self.cfg.ema)
        self.use_sum += m
        self.use_steps += 1
        return self.top_k(self.scores(), self.k)

    def consolidate(self) -> None:
        """The data shifted: fold the traffic since the last shift into the background."""
        total = self.bg_steps + self.use_steps
        self.background = (self.background * self.bg_steps + self.use_sum) / total.clamp_min(1)
        self.bg_steps = total
        self.use_sum.zero_()
        self.use_steps.zero_()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "current": self.current, "use_sum": self.use_sum,
                "use_steps": self.use_steps, "background": self.background, "bg_steps": self.bg_steps}

    def load_state_dict(self, state: dict) -> None:
        """The usage follows the run (checkpoints, snapshots); after a change of shape it starts afresh."""
        super().load_state_dict(state)
        if "background" in state and state["background"].shape == self.background.shape:
            d = self.background.device
            for k in ("current", "use_sum", "use_steps", "background", "bg_steps"):
                setattr(self, k, state[k].to(d).clone())
