"""Requests: what hooks ask the loop to do. The loop applies each one and records it as an event.

A hook never changes the structure, schedule or weights of a run itself; it returns one of these.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Evaluate:
    """Evaluate on the validation split now (hooks then see `on_eval`)."""


@dataclass
class PushSnapshot:
    """Put a snapshot of the current state on the safety ring."""
    reason: str


@dataclass
class Rollback:
    """Restore the latest snapshot (the step count moves on) and cut the learning-rate scale."""
    reason: str
    measured: dict = field(default_factory=dict)


@dataclass
class Stop:
    """End the run after this step (self-stop)."""
    reason: str
    measured: dict = field(default_factory=dict)


@dataclass
class Trial:
    """Train `trial_steps` on two branches from the same point — control and with `proposal` applied —
    judge both on held-out data, commit the change or roll back to the control branch."""
    proposal: object  # k1.engine.selforg.autonomy.Proposal
    boundary_break: bool = False


@dataclass
class Event:
    """Record an event (diagnostics, proposals, phase change) without changing anything."""
    data: dict


@dataclass
class UseSampler:
    """Draw the following batches from `sampler` (e.g. a replay mixture at the start of a stage)."""
    sampler: object
