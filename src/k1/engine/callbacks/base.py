"""`Callback`: hooks that run after the step, in the order the config lists them.

Callbacks read; they never write to the trainer. Every hook is a no-op by default, so a callback
implements only what it needs.
"""

from __future__ import annotations

from k1.engine.record import RunInfo, StepRecord
from k1.registry import Registry

CALLBACKS: Registry["Callback"] = Registry("callback")


class Callback:
    def on_train_start(self, info: RunInfo) -> None:
        """Once, before the first step (after a resume: before the first new step)."""

    def on_step_end(self, record: StepRecord) -> None:
        """After every optimizer step; convert tensors only when `record.log_due`."""

    def on_eval(self, step: int, metrics: dict) -> None:
        """After each evaluation on the validation split (per-domain loss and bits per byte)."""

    def on_checkpoint(self, step: int, path) -> None:
        """After a checkpoint is written to `path`."""

    def on_event(self, event: dict) -> None:
        """A structural, safety or autonomy event (prune, grow, rollback, stage change, self-stop, ...)."""

    def on_train_end(self, summary: dict) -> None:
        """Once, after the last step and the final evaluation; flush and close here."""
