"""`attribution`: trace the error from the root down to one culprit leaf and update only that path.

At each level the drill-down moves to the child with the largest RMS gradient among its siblings
(DESIGN.md: gradients are compared within siblings). Scales along the path are either fixed — 5 / 5 / 15 %
for root / node / agent and 100 % for the culprit (DESIGN.md, "Credit assignment") — or proportional to
each path agent's gradient relative to the largest on the path.
"""

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from k1.engine.model.plan import UpdatePlan
from k1.engine.update.policies.base import POLICIES, UpdatePolicy


class AttributionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["attribution"] = "attribution"
    mode: Literal["fixed", "proportional"] = "fixed"
    path_scales: list[float] = Field(default=[0.05, 0.05, 0.15], min_length=1)  # by level; deeper reuse the last
    culprit_scale: float = Field(default=1.0, gt=0, le=1)


@POLICIES.register("attribution")
class AttributionPolicy(UpdatePolicy):
    def __init__(self, cfg, shape, device="cpu", seed: int = 0):
        super().__init__(cfg, shape, device, seed)
        ps = cfg.path_scales
        # the fixed scales along a path of n_levels agents, built once on the device (no per-step copy)
        self.path_vals = torch.tensor([ps[min(i, len(ps) - 1)] for i in range(shape.n_levels)], device=device)
        self.culprit_val = torch.full((1,), cfg.culprit_scale, device=device)

    def blame_path(self, grad: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
        """Flat indices root → culprit ([L]); a leaf above the last level repeats itself to the end."""
        cur = torch.zeros((), dtype=torch.long, device=grad.device)  # the root is flat index 0
        path = [cur]
        for _ in range(1, self.shape.n_levels):  # a loop over levels, never over agents
            cand = torch.where(parents == cur, grad, torch.full_like(grad, -torch.inf))
            best = cand.max(0)
            cur = torch.where(torch.isfinite(best.values), best.indices, cur)
            path.append(cur)
        return torch.stack(path)

    def plan(self, signals, trust, step) -> UpdatePlan:
        g = signals.grad_rms
        return self.path_plan(g, self.blame_path(g, signals.parents))

    def path_plan(self, g: torch.Tensor, path: torch.Tensor) -> UpdatePlan:
        """The plan that updates `path` ([L], root → culprit) with the fixed or proportional scales."""
        culprit = path[-1:]
        if self.cfg.mode == "fixed":
            vals, culprit_val = self.path_vals.to(g.dtype), self.culprit_val.to(g.dtype)
        else:
            vals = g[path] / g[path].max().clamp_min(1e-12)
            culprit_val = vals[-1:].clamp_min(1e-6)
        scale = torch.zeros_like(g).index_put_((path[:-1],), vals[:-1])
        scale = scale.index_put_((culprit,), culprit_val)  # the culprit last, so it wins over repeats
        return UpdatePlan(scale, path)
