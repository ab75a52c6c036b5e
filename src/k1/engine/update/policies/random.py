"""`random`: K agents drawn uniformly at random — the control that shows whether attribution matters."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from k1.engine.model.plan import UpdatePlan
from k1.engine.update.policies.base import POLICIES, UpdatePolicy


class RandomConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["random"] = "random"
    top_k: int = Field(default=4, ge=1)  # same count as attribution's path on a 4-level tree


@POLICIES.register("random")
class RandomPolicy(UpdatePolicy):
    def plan(self, signals, trust, step) -> UpdatePlan:
        return self.top_k(self.random_scores(signals.grad_rms), self.k)
