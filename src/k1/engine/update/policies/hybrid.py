"""`hybrid`: score = w_g·grad + w_t·trust + w_d·diversity on normalised terms, top-K (DESIGN.md).

Phase 1 (step < `phase2_step`): top-(K−1) by gradient plus one agent drawn at random from the rest, so
every agent gets a chance to earn trust. Phase 2: the weighted score. Diversity is the number of steps
since the agent was last updated, so neglected agents rise.
"""

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from k1.engine.model.plan import UpdatePlan
from k1.engine.update.policies.base import POLICIES, UpdatePolicy, normalise


class HybridConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["hybrid"] = "hybrid"
    top_k: int = Field(default=4, ge=1)
    w_grad: float = Field(default=0.7, ge=0)
    w_trust: float = Field(default=0.2, ge=0)
    w_diversity: float = Field(default=0.1, ge=0)
    phase2_step: int = Field(default=100, ge=0)


@POLICIES.register("hybrid")
class HybridPolicy(UpdatePolicy):

    def plan(self, signals, trust, step) -> UpdatePlan:
        g, k = signals.grad_rms, self.k
        if step < self.cfg.phase2_step:
            top = torch.topk(g, min(k - 1, g.numel())).indices
            rand = self.random_scores(g).index_fill_(0, top, -1.0)  # draw the extra agent from the rest
            idx = torch.cat([top, rand.argmax().view(1)]) if k > 1 else rand.argmax().view(1)
            return UpdatePlan(torch.zeros_like(g).index_fill_(0, idx, 1.0))
        c = self.cfg
        score = (c.w_grad * normalise(g) + c.w_trust * normalise(trust.trust)
                 + c.w_diversity * normalise(trust.staleness(step)))
        return self.top_k(score, k)
