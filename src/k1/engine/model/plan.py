"""`UpdatePlan`: which agents a step updates and how strongly (0 = untouched), plus the blame path."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class UpdatePlan:
    """scale: [A] per-agent multiplier of the optimizer *update* (0 leaves the agent bit-identical).

    path: [L] flat indices of the blame path root → culprit (attribution), or None for policies without
    one; entries past the culprit of a shallow leaf repeat the culprit.
    """

    scale: torch.Tensor
    path: torch.Tensor | None = None

    @property
    def selected(self) -> torch.Tensor:
        return self.scale > 0

    def masked(self, ok: torch.Tensor) -> "UpdatePlan":
        """The same plan, but a no-op where `ok` (a device bool scalar) is False — e.g. a non-finite loss."""
        return UpdatePlan(torch.where(ok, self.scale, torch.zeros_like(self.scale)), self.path)
