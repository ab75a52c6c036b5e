"""Safety rails: a ring of in-memory snapshots (optionally mirrored to disk) and the checks that use it.

A snapshot holds everything a rollback must restore: the tree shape, model parameters, optimizer state
(moments and per-agent steps), trust, the policy's generator, the torch RNG, and the run-time knobs the
controller tunes (lr scale, top-K). The data position is *not* rolled back: after a rollback training
continues on fresh batches, so a bad batch is not replayed into the same failure.
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from k1.engine.checkpoint import save_checkpoint


class SafetyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    ring: int = Field(default=3, ge=1)  # snapshots kept in memory
    on_disk: bool = False  # also write each snapshot under <run>/snapshots/
    spike_factor: float = Field(default=3.0, gt=1)  # a loss above factor × EMA is a spike
    lr_cut: float = Field(default=0.5, gt=0, lt=1)  # lr scale multiplier after a rollback
    gate_threshold: float = Field(default=0.0, ge=0)  # how much (relative) a trialled change may worsen held-out loss


@dataclass
class Snapshot:
    step: int
    shape: dict
    model: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    trust: dict[str, torch.Tensor]
    policy_rng: torch.Tensor
    torch_rng: torch.Tensor
    knobs: dict
    reason: str


class SnapshotRing:
    """The last `size` snapshots; `latest()` is the one a rollback restores."""

    def __init__(self, size: int, disk_dir: Path | None = None):
        self.ring: deque[Snapshot] = deque(maxlen=size)
        self.disk_dir = disk_dir

    def push(self, snap: Snapshot) -> None:
        self.ring.append(snap)
        if self.disk_dir is not None:
            save_checkpoint(self.disk_dir / f"step-{snap.step}", snap.model,
                            {**{f"optim.{k}": v for k, v in snap.optimizer.items()},
                             **{f"trust.{k}": v for k, v in snap.trust.items()}},
                            {"step": snap.step, "shape": snap.shape, "reason": snap.reason,
                             "knobs": {k: v for k, v in snap.knobs.items() if k != "counters"}})

    def latest(self) -> Snapshot | None:
        return self.ring[-1] if self.ring else None

    def __len__(self) -> int:
        return len(self.ring)


def clone_tensors(d: dict) -> dict:
    return {k: (v.detach().clone() if torch.is_tensor(v) else copy.deepcopy(v)) for k, v in d.items()}


def all_finite(model) -> bool:
    """True when every parameter is finite (one host sync; used only at check points)."""
    return bool(torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all())
