"""`StepResult`: the read-only account of one training step that hooks receive.

Tensors stay on the device; a recorder converts them only when `log_due` is set (the one host sync
point of the loop), so an unlogged step costs no synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from k1.engine.model.plan import UpdatePlan
from k1.engine.update.optim import OptimStats
from k1.engine.update.signals import StepSignals


@dataclass(frozen=True)
class StepResult:
    step: int  # 1-based index of the step just taken
    lr: float
    tokens: int  # tokens in this step's batch
    loss: torch.Tensor
    finite: torch.Tensor  # False: loss or gradient was non-finite and the update was skipped
    grad_norm: torch.Tensor  # global gradient norm before clipping
    signals: StepSignals
    plan: UpdatePlan
    stats: OptimStats
    trust: torch.Tensor  # [A] trust after this step's ledger update
    log_due: bool
    agent_names: list[str]  # names in flat order for this step's tree (it may be reshaped between steps)
    total_params: int  # all parameters of this step's model, shared ones included
    tokens_per_s: float | None = None  # measured over the last log interval (set when log_due)
    trial: int | None = None  # a phase-2 trial's number when this step ran inside one of its branches
    branch: str | None = None  # "control" or "change" inside a trial
    inputs: torch.Tensor | None = None  # [B, T] the step's input tokens (what an input-shift detector reads)

    def key(self) -> dict:
        """What identifies this step in the logs: the step, plus trial and branch inside a trial."""
        return {"step": self.step} if self.trial is None else {"step": self.step, "trial": self.trial,
                                                               "branch": self.branch}



@dataclass(frozen=True)
class RunInfo:
    """What recorders may know about the run (never the state itself)."""

    run_dir: object  # the run directory (a `RunDir`: its files are named there), None when nothing is written
    agent_names: list[str]
    total_params: int
    steps: int
    policy: str
    start_step: int  # > 0 when resuming
    domains: list[str]
