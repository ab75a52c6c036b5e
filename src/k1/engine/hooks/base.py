"""`Hook`: everything that watches or steers a run — recorders, progress, safety, autonomy, continual
baselines — through one interface. Hooks read the state and the step result and *return requests*
(`k1.engine.hooks.requests`); the loop applies and records them. A hook never holds a reference to the loop or
the state: both are passed in. State a hook must keep lives in the run state (its own field, or
`state.extras[name]`), so it is checkpointed with everything else.

Every method is a no-op by default, so a hook implements only what it needs. Methods that may steer return
a list of requests (or None).
"""

from __future__ import annotations

from k1.engine.hooks.record import RunInfo, StepResult
from k1.registry import Registry

HOOKS: Registry["Hook"] = Registry("hook")


class Hook:
    def on_train_start(self, state, info: RunInfo):
        """Once, before the first step (after a resume: before the first new step). → requests"""

    def on_stage_start(self, state, stage):
        """Before the first step of a stage (continual runs have one per domain). → requests"""

    def loss_terms(self, state) -> list:
        """Extra objective terms, callables model → scalar (e.g. the EWC penalty)."""
        return []

    def on_step_end(self, state, result: StepResult):
        """After every optimizer step, trial branches included (`result.trial`); convert tensors only when
        `result.log_due`. → requests"""

    def on_eval(self, state, step: int, metrics: dict):
        """After each evaluation on the validation split. → requests"""

    def on_check(self, state, step: int):
        """Once per step, after its evaluation: the one point where structure may change. → requests"""

    def on_event(self, state, event: dict) -> None:
        """A structural, safety or autonomy event (trial, rollback, stage change, self-stop, ...)."""

    def on_checkpoint(self, state, step: int, path) -> None:
        """After a checkpoint is written to `path`."""

    def on_stage_end(self, state, stage, metrics: dict):
        """After a stage's last step and its evaluation. → requests"""

    def on_train_end(self, state, summary: dict) -> None:
        """Once, after the last step and the final evaluation; flush and close here."""
