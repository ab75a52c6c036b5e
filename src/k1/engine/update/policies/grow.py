"""`grow`: attribution until the data shifts; from then on only agents grown after the shift learn.

At a shift (a call, `protect_all()`; `k1 continual`'s `k1-grow` makes it when its loss-surprise detector
fires, never from a domain label) every agent the tree has is protected: its update scale is 0 for the
rest of the run, so what earlier data stored in it cannot be overwritten. The caller then grows fresh
agents (the `grow` action), and every unprotected agent gets a full update each step, so the new data is
learnt by the new agents and routed to them by their own gates. What can still forget is outside the
agents' rows: the gates' competition (a new child's gate takes traffic from its old siblings for every
input) and the shared embedding, which every step updates.

Protection is kept by agent id, so it survives the surgery that grows the tree.
"""

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from k1.engine.model.plan import UpdatePlan
from k1.engine.update.policies.attribution import AttributionPolicy
from k1.engine.update.policies.base import POLICIES


class GrowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["grow"] = "grow"
    mode: Literal["fixed", "proportional"] = "fixed"
    path_scales: list[float] = Field(default=[0.05, 0.05, 0.15], min_length=1)  # as attribution
    culprit_scale: float = Field(default=1.0, gt=0, le=1)


@POLICIES.register("grow")
class GrowPolicy(AttributionPolicy):
    def __init__(self, cfg, shape, device="cpu", seed: int = 0):
        super().__init__(cfg, shape, device, seed)
        self.protected_ids: list[int] = []
        self._mask()

    def _mask(self) -> None:
        ids = set(self.protected_ids)
        self.free = torch.tensor([0.0 if a.id in ids else 1.0 for a in self.shape.agents],
                                 device=self.path_vals.device)  # [A] 1: may learn

    def protect_all(self) -> list[int]:
        """Protect every agent of the current tree; → the ids newly protected."""
        new = [a.id for a in self.shape.agents if a.id not in set(self.protected_ids)]
        self.protected_ids = sorted(set(self.protected_ids) | set(new))
        self._mask()
        return new

    def plan(self, signals, trust, step) -> UpdatePlan:
        if not self.protected_ids:
            return super().plan(signals, trust, step)
        return UpdatePlan(self.free.to(signals.grad_rms.dtype))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "protected": torch.tensor(self.protected_ids, dtype=torch.long)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "protected" in state:
            self.protected_ids = [int(i) for i in state["protected"].tolist()]
            self._mask()
