"""`dense`: the backprop baseline — every agent, scale 1."""

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict

from k1.engine.model.plan import UpdatePlan
from k1.engine.update.policies.base import POLICIES, UpdatePolicy


class DenseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["dense"] = "dense"


@POLICIES.register("dense")
class DensePolicy(UpdatePolicy):
    def plan(self, signals, trust, step) -> UpdatePlan:
        return UpdatePlan(torch.ones_like(signals.grad_rms))
