"""`StepSignals`: what one step measured about each agent, on the device, with no host sync.

Gradient norms are compared per parameter (RMS = ‖g‖ / sqrt(#params)) so that agents of different size
and kind sit on a common scale (DESIGN.md, "Signals on a common scale"). One reduction per level.

With deferred weight gradients (`ModelConfig.defer_weight_grads`) the matrices have no `.grad` yet when the
signals are measured: their share of ‖g‖² is the estimate backward recorded (`AgentLevel.deferred_grad_sq`),
so the policy chooses before any matrix gradient is formed. `rank_correlation` compares the two signals.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from k1.engine.model.shape import TreeShape


@dataclass(frozen=True)
class StepSignals:
    """Per-agent measurements of one step; every tensor is [A] in flat (level-major) order."""

    grad_rms: torch.Tensor  # RMS gradient of each agent's parameters
    gate_mass: torch.Tensor  # mean path weight of each agent in the forward pass
    loss: torch.Tensor  # scalar training loss of the batch
    parents: torch.Tensor  # flat parent index (-1 for the root), long

    @classmethod
    def measure(cls, model, loss: torch.Tensor, parents: torch.Tensor) -> "StepSignals":
        per_level = []
        for level in model.agent_levels():
            params = level.agent_parameters()
            n = level.n_agents
            sq = torch.zeros(n, device=loss.device)
            count = 0
            for _, p in params:
                count += p[0].numel()
                if p.grad is not None:
                    sq = sq + p.grad.float().pow(2).reshape(n, -1).sum(1)
            if getattr(level, "deferred_grad_sq", None) is not None:
                sq = sq + level.deferred_grad_sq
            per_level.append((sq / count).sqrt())
        return cls(
            grad_rms=torch.cat(per_level),
            gate_mass=model.last_gate_mass.float(),
            loss=loss.detach().float(),
            parents=parents,
        )


def flat_parents_tensor(shape: TreeShape, device) -> torch.Tensor:
    return torch.tensor(shape.flat_parents(), dtype=torch.long, device=device)


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's ρ of two score vectors (ties broken by position): how alike two signals rank agents."""
    ra = torch.empty(len(a)).index_copy_(0, a.detach().float().cpu().argsort(), torch.arange(len(a), dtype=torch.float))
    rb = torch.empty(len(b)).index_copy_(0, b.detach().float().cpu().argsort(), torch.arange(len(b), dtype=torch.float))
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])
