"""Safety rails: the snapshot ring (optionally mirrored to disk) and the helpers the rails use.

A snapshot is `TrainState.snapshot()`: every field the state table marks as snapshotted (shape, model,
optimizer, trust, policy stream and top-K, torch RNG, knobs, progress). The data position is *not* in it:
after a rollback training continues on fresh batches, so a bad batch is not replayed into the same failure.
The ring itself is part of the run state, so a rollback after a resume restores the same snapshot an
uninterrupted run would.
"""

from __future__ import annotations

import copy
from collections import deque

import torch
from pydantic import BaseModel, ConfigDict, Field


class SafetyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    ring: int = Field(default=3, ge=1)  # snapshots kept in memory
    on_disk: bool = False  # also write each snapshot under <run>/snapshots/
    spike_factor: float = Field(default=3.0, gt=1)  # a loss above factor × EMA is a spike
    lr_cut: float = Field(default=0.5, gt=0, lt=1)  # lr scale multiplier after a rollback
    gate_threshold: float = Field(default=0.0, ge=0)  # how much (relative) a trialled change may worsen held-out loss


class SnapshotRing:
    """The last `size` snapshots; `latest()` is the one a rollback restores."""

    def __init__(self, size: int):
        self.ring: deque[dict] = deque(maxlen=size)

    def push(self, snap: dict) -> None:
        self.ring.append(snap)

    def latest(self) -> dict | None:
        return self.ring[-1] if self.ring else None

    def __len__(self) -> int:
        return len(self.ring)

    def state_dict(self) -> list:
        return list(self.ring)

    def load_state_dict(self, snaps: list, device=None) -> None:
        self.ring.clear()
        self.ring.extend(snaps)


def clone_tree(x):
    """A deep copy of nested dicts/lists whose tensors are detached clones (snapshots never alias the run)."""
    if torch.is_tensor(x):
        return x.detach().clone()
    if isinstance(x, dict):
        return {k: clone_tree(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clone_tree(v) for v in x]
    return copy.deepcopy(x)


def all_finite(model) -> bool:
    """True when every parameter is finite (one host sync; used only at check points)."""
    return bool(torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all())
