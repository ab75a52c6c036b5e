"""`trust`: score = responsibility × (1 + trust), top-K (DESIGN.md, "Credit assignment").

Responsibility is the agent's RMS gradient divided by the largest one this step, so it lies in [0, 1].
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from k1.engine.model.plan import UpdatePlan
from k1.engine.update.policies.base import POLICIES, UpdatePolicy


class TrustConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["trust"] = "trust"
    top_k: int = Field(default=4, ge=1)


@POLICIES.register("trust")
class TrustPolicy(UpdatePolicy):

    def plan(self, signals, trust, step) -> UpdatePlan:
        g = signals.grad_rms
        responsibility = g / g.max().clamp_min(1e-12)
        return self.top_k(responsibility * (1.0 + trust.trust), self.k)
