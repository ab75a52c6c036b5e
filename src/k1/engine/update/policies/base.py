"""`UpdatePolicy`: maps a step's signals (+ trust, step) to an `UpdatePlan`; one verb, `plan`.

Policies run on the device with no host sync: selections are `topk`/`argmax` on tensors, randomness comes
from the policy's own generator (saved in checkpoints so a resumed run draws the same agents).
"""

from __future__ import annotations

import torch

from k1.engine.model.plan import UpdatePlan
from k1.engine.model.shape import TreeShape
from k1.engine.update.signals import StepSignals
from k1.registry import Registry

POLICIES: Registry["UpdatePolicy"] = Registry("policy")


class UpdatePolicy:
    """Base class. Subclasses set `name` (by registration) and implement `plan`."""

    name: str = "base"

    def __init__(self, cfg, shape: TreeShape, device: torch.device | str = "cpu", seed: int = 0):
        self.cfg, self.shape = cfg, shape
        self.k: int | None = getattr(cfg, "top_k", None)  # run-time top-K (the autonomy controller tunes it)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed + 7919)  # a stream of its own, apart from data and init

    def plan(self, signals: StepSignals, trust, step: int) -> UpdatePlan:
        """Decide the per-agent update scale for this step."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    # ---- helpers shared by policies -------------------------------------------------------------
    def top_k(self, score: torch.Tensor, k: int) -> UpdatePlan:
        idx = torch.topk(score, min(k, score.numel())).indices
        return UpdatePlan(torch.zeros_like(score).index_fill_(0, idx, 1.0))

    def random_scores(self, like: torch.Tensor) -> torch.Tensor:
        return torch.rand(like.shape, generator=self.generator, device=like.device)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Min–max normalise to [0, 1] across agents so that terms on different scales can be weighted."""
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo).clamp_min(1e-12)
