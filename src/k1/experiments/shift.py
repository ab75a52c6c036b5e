"""Label-free domain shifts: a surprise detector on the training loss, and the hooks that act on it
(`k1-usage` folds usage into its background, `k1-grow` protects the tree and grows new agents).

The detector never sees a domain label: it watches the loss the engine already computes each step. It
keeps an exponential moving mean of the loss and of its step-to-step noise (half the mean squared
difference of consecutive losses: a falling loss, which the mean lags behind, does not inflate it); a step
is *surprising* when its loss exceeds the mean by `z` noise deviations, and a shift is declared after
`patience` surprising steps in a row, no sooner than `warmup` steps after the start or the last shift (the
statistics restart there). While steps are surprising the statistics are not updated, so a lasting jump is
not absorbed before it counts.
The settings (α 0.05, z 3, patience 3, warmup 15) were fixed in the commit that introduced the detector,
with the built-in prose → code → science sequence in view; it reads only the training loss, never a
held-out window (docs/continual.md, "Tuning apart from evaluation").
"""

from __future__ import annotations

import math

import torch

from k1.engine.hooks import Hook
from k1.engine.hooks.requests import Event
from k1.engine.run.measure import evaluate
from k1.engine.selforg.actions import ACTIONS


class ShiftDetector:
    def __init__(self, alpha: float = 0.05, z: float = 3.0, patience: int = 3, warmup: int = 15):
        self.alpha, self.z, self.patience, self.warmup = alpha, z, patience, warmup
        self.mean, self.var, self.n, self.above, self.last = 0.0, 0.0, 0, 0, 0.0
        self.shifts: list[int] = []  # steps at which a shift was declared

    def update(self, loss: float, step: int) -> bool:
        """Feed one step's training loss; True when a shift is declared at this step."""
        self.n += 1
        if self.n == 1:
            self.mean, self.var, self.above, self.last = loss, 0.0, 0, loss
            return False
        surprised = self.n > self.warmup and loss > self.mean + self.z * math.sqrt(self.var)
        self.above = self.above + 1 if surprised else 0
        if self.above >= self.patience:
            self.shifts.append(step)
            self.n, self.above = 0, 0  # restart the statistics on the new data
            return True
        if not surprised:
            self.mean += self.alpha * (loss - self.mean)
            self.var += self.alpha * (0.5 * (loss - self.last) ** 2 - self.var)
            self.last = loss
        return False

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var, "n": self.n, "above": self.above, "last": self.last,
                "shifts": list(self.shifts)}

    def load_state_dict(self, s: dict) -> None:
        self.mean, self.var, self.n, self.above = float(s["mean"]), float(s["var"]), int(s["n"]), int(s["above"])
        self.last = float(s["last"])
        self.shifts = [int(x) for x in s["shifts"]]


class InputShiftDetector:
    """A shift in what the data *is*, read from the step's input tokens (no label, no model).

    Each batch is summarised by its histogram of token pairs (hashed into `buckets`). The last `window`
    batches are compared with a reference — the batches before them since the last shift, weighted by an
    exponential decay `1 - alpha` per batch — by the cosine distance of their histograms; that distance is
    fed to a `ShiftDetector` (the loss detector's surprise rule: `z` noise deviations above the distance's
    moving mean, `patience` batches in a row, none in its first `warmup` values after a shift). A batch
    joins the reference when it leaves the window, unless the distance is surprising, so a lasting change
    keeps counting; at a shift everything restarts on the new data.

    Why not the loss: at code → science the training loss *falls* (science is easier than code), so a
    loss-surprise rule cannot see it, while the token-pair histogram changes at every boundary of the
    orders measured. Its blind spot: two domains with the same pair statistics (prose and science, both
    English, are not told apart at 512 tokens a batch). The settings were chosen on the tuning windows
    only (`python -m k1.experiments.shift_tuning`; docs/continual.md).
    """

    def __init__(self, z: float = 4.0, patience: int = 3, warmup: int = 10, window: int = 3,
                 alpha: float = 0.05, buckets: int = 8192):
        self.window, self.alpha, self.buckets = window, alpha, buckets
        self.scalar = ShiftDetector(alpha, z, patience, warmup)
        self.recent: list[torch.Tensor] = []  # the window's batch histograms, oldest first
        self.ref: torch.Tensor | None = None

    @property
    def shifts(self) -> list[int]:
        return self.scalar.shifts

    def histogram(self, x: torch.Tensor) -> torch.Tensor:
        """[buckets] float64: the batch's hashed token-pair counts."""
        x = x.detach().to("cpu", torch.long)
        pairs = (x[:, :-1] * 1_000_003 + x[:, 1:]) % self.buckets
        return torch.bincount(pairs.flatten(), minlength=self.buckets).double()

    def update(self, x: torch.Tensor, step: int) -> bool:
        """Feed one step's input tokens [B, T]; True when a shift is declared at this step."""
        self.recent.append(self.histogram(x))
        if len(self.recent) <= self.window:
            return False
        leaving = self.recent.pop(0)
        if self.ref is None:
            self.ref = leaving
            return False
        win = torch.stack(self.recent).sum(0)
        d = 1.0 - float(win @ self.ref / (win.norm() * self.ref.norm()).clamp_min(1e-12))
        if self.scalar.update(d, step):
            self.recent, self.ref = [], None  # restart on the new data
            return True
        if self.scalar.above == 0:
            self.ref = (1.0 - self.alpha) * self.ref + leaving
        return False

    def state_dict(self) -> dict:
        return {"scalar": self.scalar.state_dict(), "recent": torch.stack(self.recent) if self.recent else None,
                "ref": self.ref}

    def load_state_dict(self, s: dict) -> None:
        self.scalar.load_state_dict(s["scalar"])
        self.recent = [] if s["recent"] is None else list(s["recent"].double().unbind(0))
        self.ref = None if s["ref"] is None else s["ref"].double()


class ShiftHook(Hook):
    """Feed the detector every training step's loss (trial branches excluded); act between steps."""

    def __init__(self, detector: ShiftDetector):
        self.detector, self.pending, self.run_dir = detector, False, None

    def on_train_start(self, state, info):
        self.run_dir = info.run_dir  # a RunDir, or None when nothing is written

    def on_step_end(self, state, r):
        if getattr(r, "trial", None) is not None:
            return
        signal = r.inputs if isinstance(self.detector, InputShiftDetector) else float(r.loss)
        if self.detector.update(signal, state.step):
            self.pending = True

    def on_check(self, state, step):
        if not self.pending:
            return []
        self.pending = False
        return [Event({"kind": "shift", "detected_at": step, **self.act(state)})]

    def act(self, state) -> dict:
        raise NotImplementedError


class ConsolidateOnShift(ShiftHook):
    """At a detected shift, tell the policy (`usage` folds the traffic so far into its background)."""

    def act(self, state) -> dict:
        state.policy.consolidate()
        return {"action": "consolidate"}


class GrowOnShift(ShiftHook):
    """At a detected shift, protect every agent the tree has and grow one fresh child under each agent of
    level `under` (the existing `grow` action), so the new data is learnt by new agents."""

    def __init__(self, detector: ShiftDetector, under: int = 1):
        super().__init__(detector)
        self.under = under

    def act(self, state) -> dict:
        protected = state.policy.protect_all()
        parents = [a.id for a in state.shape.agents if a.level == self.under]
        grown = [ACTIONS.get("grow")(state, {"parent": p})["child"] for p in parents]
        if self.run_dir is not None:
            self.run_dir.write_shape(state.shape, state.step)
        return {"action": "grow", "protected": len(protected), "grown": grown, "agents": state.shape.n_agents}


class ForgettingSources(Hook):
    """For a grown tree: how much of each earlier domain's forgetting comes from the gates and how much from
    the shared embedding. After each stage it keeps the shared parameters and the agent ids; after the
    last it evaluates the final model with (a) the shared parameters of the end of domain j, (b) the
    agents grown after domain j switched off (their gate bias at −10⁴), (c) both. This uses the domain
    boundaries for measurement only; the mechanism never sees them."""

    def __init__(self, domains: list[str]):
        self.domains = domains
        self.shared: list[dict] = []  # per finished stage: name → tensor
        self.ids: list[list[int]] = []
        self.result: list[dict] = []

    def on_stage_end(self, state, stage, metrics):
        self.shared.append({n: p.detach().clone() for n, p in state.model.shared_parameters()})
        self.ids.append([a.id for a in state.shape.agents])
        if stage.index == len(self.domains) - 1:
            self.result = self.measure(state, metrics)

    def measure(self, state, final: dict) -> list[dict]:
        out = []
        for j in range(len(self.domains) - 1):
            d = self.domains[j]
            row = {"domain": d, "final": final["domains"][d]["bpb"]}
            for name, shared, gates in (("shared_restored", True, False), ("new_gates_off", False, True),
                                        ("both", True, True)):
                with self._variant(state, j, shared, gates):
                    row[name] = evaluate(state)["domains"][d]["bpb"]
            out.append(row)
        return out

    def _variant(self, state, j: int, shared: bool, gates: bool):
        hook = self

        class Variant:
            def __enter__(self):
                self.saved = {n: p.detach().clone() for n, p in state.model.named_parameters()}
                with torch.no_grad():
                    params = dict(state.model.named_parameters())
                    if shared:
                        for n, t in hook.shared[j].items():
                            params[n].copy_(t)
                    if gates:
                        keep, offs = set(hook.ids[j]), state.shape.level_offsets()
                        for lv, level in enumerate(state.model.agent_levels()):
                            for i in range(level.n_agents):
                                if state.shape.agents[offs[lv] + i].id not in keep and lv > 0:
                                    level.gate_bias[i] = -1e4

            def __exit__(self, *exc):
                with torch.no_grad():
                    for n, p in state.model.named_parameters():
                        p.copy_(self.saved[n])

        return Variant()

    def state_dict(self) -> dict:
        return {"shared": self.shared, "ids": self.ids, "result": self.result}

    def load_state_dict(self, s: dict) -> None:
        self.shared = [{n: t.clone() for n, t in d.items()} for d in s["shared"]]
        self.ids = [[int(i) for i in ids] for ids in s["ids"]]
        self.result = list(s["result"])
