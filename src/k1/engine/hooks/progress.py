"""`progress`: a rich progress bar with loss, tokens/s and agents updated (refreshed at log intervals)."""

from __future__ import annotations

from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from k1.engine.hooks.base import HOOKS, Hook
from k1.engine.hooks.events import format_event


def label(info) -> str:
    """The run's name (its directory: a compare row such as `gpt` or `k1-auto`), with the policy when it differs."""
    name = Path(info.run_dir).name if info.run_dir is not None else info.policy
    return name if name == info.policy else f"{name} ({info.policy})"


@HOOKS.register("progress")
class ProgressHook(Hook):
    def on_train_start(self, state, info):
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"), TimeRemainingColumn(), transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(label(info), total=info.steps, completed=info.start_step, status="")

    def on_step_end(self, state, r):
        if r.log_due and r.trial is None:  # host sync (log interval)
            status = (f"loss {r.loss.item():.3f}  {r.tokens_per_s or 0:,.0f} tok/s  "
                      f"agents {int(r.stats.agents_updated.item())}")
            self.progress.update(self.task, completed=r.step, status=status)

    def on_eval(self, state, step, metrics):
        self.progress.console.print(f"step {step}: val loss {metrics['val_loss']:.4f}  bpb {metrics['val_bpb']:.3f}")

    def on_event(self, state, event):
        if event["kind"] not in ("diagnostics", "proposals"):  # those stay in the logs
            self.progress.console.print(format_event(event), highlight=False)

    def on_train_end(self, state, summary):
        self.progress.stop()
