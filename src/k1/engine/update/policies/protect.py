"""`protect`: attribution that shields what earlier domains relied on (importance protection).

Plain attribution drills down to the child with the largest gradient. The agents that carry most of the
traffic also get the largest gradients, so every new domain is blamed on the same agents and overwrites
them. This policy keeps, per agent, how much each finished domain used it ("use": by default its mean
path weight, the share of the domain's traffic that flows through it; with `usage = "grad"` its RMS
gradient over the step's largest), averaged over the domain's steps; the past importance is the maximum
over finished domains. Two things follow, in the spirit of sparse memory fine-tuning (update the slots
the new data uses *more than* the background data does):

- the drill-down ranks siblings by gradient ÷ (1 + shield · importance), so a new domain's error goes to
  agents the old domains did not need, when their gradient is comparable;
- the update scale of each path agent is divided by the same factor, so an agent that must move anyway
  (the root is on every path) moves less.

Before the first `consolidate()` every importance is 0 and the policy is exactly `attribution`. The
boundary between domains is a call: `k1 continual`'s `k1-protect` strategy makes it at every stage's end.
Usage is kept on the device and updated without a host sync.
"""

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from k1.engine.model.plan import UpdatePlan
from k1.engine.update.policies.attribution import AttributionPolicy
from k1.engine.update.policies.base import POLICIES


class ProtectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["protect"] = "protect"
    mode: Literal["fixed", "proportional"] = "fixed"
    path_scales: list[float] = Field(default=[0.05, 0.05, 0.15], min_length=1)  # as attribution
    culprit_scale: float = Field(default=1.0, gt=0, le=1)
    shield: float = Field(default=4.0, ge=0)  # 0: plain attribution; 4: an agent of full importance gets 1/5
    usage: Literal["gate", "grad"] = "gate"  # an agent's use: its share of the traffic, or of the blame


@POLICIES.register("protect")
class ProtectPolicy(AttributionPolicy):
    def __init__(self, cfg, shape, device="cpu", seed: int = 0):
        super().__init__(cfg, shape, device, seed)
        A = shape.n_agents
        self.use_now = torch.zeros(A, device=device)  # Σ over this domain's steps of grad / max grad
        self.steps_now = torch.zeros((), device=device)
        self.importance = torch.zeros(A, device=device)  # max over finished domains of the mean use

    def shield_factor(self) -> torch.Tensor:
        """[A] 1 + shield · importance / max importance (1 everywhere before the first consolidate)."""
        rel = self.importance / self.importance.max().clamp_min(1e-12)
        return 1.0 + self.cfg.shield * rel

    def plan(self, signals, trust, step) -> UpdatePlan:
        g = signals.grad_rms
        use = g / g.max().clamp_min(1e-12) if self.cfg.usage == "grad" else signals.gate_mass
        self.use_now += use.to(self.use_now.dtype)
        self.steps_now += 1
        factor = self.shield_factor().to(g.dtype)
        plan = self.path_plan(g, self.blame_path(g / factor, signals.parents))
        return UpdatePlan(plan.scale / factor, plan.path)

    def consolidate(self) -> None:
        """A domain ended: fold its mean use into the importance and start counting the next one."""
        mean_use = self.use_now / self.steps_now.clamp_min(1)
        self.importance = torch.maximum(self.importance, mean_use)
        self.use_now.zero_()
        self.steps_now.zero_()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "use_now": self.use_now, "steps_now": self.steps_now,
                "importance": self.importance}

    def load_state_dict(self, state: dict) -> None:
        """The usage follows the run (checkpoints, snapshots); after a change of shape it starts afresh."""
        super().load_state_dict(state)
        if "importance" in state and state["importance"].shape == self.importance.shape:
            d = self.importance.device
            self.use_now = state["use_now"].to(d).clone()
            self.steps_now = state["steps_now"].to(d).clone()
            self.importance = state["importance"].to(d).clone()
