"""Autonomy: diagnostics, a proposer, staged permissions with boundary breaks, tuning and self-stopping.

Every `check_every` steps (in phase 2) the trainer hands this module a window of measurements; it returns
diagnostics and concrete proposals. Which actions a stage allows:

    stage 1: grow          stage 2: + tune          stage 3: + prune          stage 4: + merge, reorganize

A proposal the stage forbids is a *boundary break*: the trainer trials it under a snapshot against a
control branch trained on the same batches, and it counts as successful only if held-out loss improves
by at least `break_epsilon` (relative); otherwise it is rolled back. Stages advance after 3 / 5 / 10
successful breaks (cumulative). Hard bounds (lr scale, top-K, tree size, patience) never move.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict, Field

STAGE_ACTIONS = {
    1: {"grow"},
    2: {"grow", "tune"},
    3: {"grow", "tune", "prune"},
    4: {"grow", "tune", "prune", "merge", "reorganize"},
}


class AutonomyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False  # `k1 train --phase2` turns it on
    phase2_step: int = Field(default=100, ge=0)  # switch to phase 2 here ...
    phase2_on_plateau: bool = True  # ... or earlier, when the training loss plateaus
    check_every: int = Field(default=50, ge=1)
    trial_steps: int = Field(default=8, ge=0)  # steps each branch of a trial trains before it is judged
    max_trials_per_check: int = Field(default=2, ge=1, le=2)  # one allowed action + one boundary break
    trial_batches: int = Field(default=2, ge=1)  # held-out batches per domain for trial decisions
    break_epsilon: float = Field(default=0.001)  # (a negative value makes every break count: tests only)  # relative improvement a boundary break needs
    stage_breaks: list[int] = [3, 5, 10]  # successful breaks to reach stage 2, 3, 4
    start_stage: int = Field(default=1, ge=1, le=4)
    lr_scale_bounds: tuple[float, float] = (0.1, 3.0)  # hard bounds, never moved
    top_k_bounds: tuple[int, int] = (1, 16)
    agent_bounds: tuple[int, int] = (3, 96)
    max_depth: int = Field(default=6, ge=2, le=8)  # levels, root included
    patience_bounds: tuple[int, int] = (2, 6)  # evaluations without improvement before stopping
    min_delta_bounds: tuple[float, float] = (0.001, 0.02)  # relative improvement that counts
    self_stop: bool = True
    plateau_rel: float = Field(default=0.005, ge=0)  # window improvement below this is a plateau
    merge_similarity: float = Field(default=0.98, gt=0, le=1)
    reorganize_margin: float = Field(default=0.05, ge=0)


@dataclass
class Proposal:
    action: str  # grow | tune | prune | merge | reorganize
    reason: str
    args: dict = field(default_factory=dict)  # agent ids, or knob changes for tune


@dataclass
class Window:
    """Measurements since the last check (host values; gathered at the check, one sync)."""

    losses: list[float]
    grad_norms: list[float]
    selected: torch.Tensor  # [A] times each agent was updated
    culprit: torch.Tensor  # [A] times each agent ended a blame path (or had the largest gradient)
    grad_rms: torch.Tensor  # [S, A] per-step RMS gradients (for similarity)
    trust: torch.Tensor  # [A]


def gini(x: torch.Tensor) -> float:
    x = torch.sort(x.double().flatten()).values
    n, total = x.numel(), x.sum()
    if n == 0 or total == 0:
        return 0.0
    idx = torch.arange(1, n + 1, dtype=torch.double)
    return float(((2 * idx - n - 1) * x).sum() / (n * total))


def diagnose(w: Window, names: list[str], cfg: AutonomyConfig) -> dict:
    """Dead agents, selection concentration, gradient explosion, plateau and instability."""
    losses = torch.tensor(w.losses, dtype=torch.double)
    half = max(1, len(losses) // 2)
    first, last = losses[:half].mean().item(), losses[half:].mean().item() if len(losses) > 1 else losses.mean().item()
    rel_improvement = (first - last) / max(abs(first), 1e-12)
    cv = (losses.std() / losses.mean()).item() if len(losses) > 1 else 0.0
    gn = torch.tensor(w.grad_norms, dtype=torch.double)
    explosion = bool(len(gn) > 2 and gn.max() > 10 * gn.median())
    sel = w.selected.double()
    share = sel / sel.sum().clamp_min(1)
    return {
        "dead": [names[i] for i in (sel == 0).nonzero().flatten().tolist()],
        "gini": gini(sel), "max_share": float(share.max()), "top_agent": names[int(share.argmax())],
        "grad_explosion": explosion, "loss_rel_improvement": rel_improvement, "loss_cv": cv,
        "plateau": rel_improvement < cfg.plateau_rel, "unstable": explosion or cv > 0.15,
    }


class Autonomy:
    """Stage book-keeping, the measurement window, the proposer and the self-stop rule.

    Part of the run state (`TrainState.autonomy`): the window accumulates device tensors per step and is
    read once per check; everything here is saved in checkpoints, so a resumed run decides the same.
    """

    def __init__(self, cfg: AutonomyConfig, shape, device):
        self.cfg, self.device = cfg, device
        self.stage = cfg.start_stage
        self.successful_breaks = 0
        self.phase = 1
        self.best_val: float | None = None
        self.evals_since_best = 0
        self.patience = cfg.patience_bounds[1]
        self.min_delta = cfg.min_delta_bounds[0]
        self.val_history: list[float] = []
        self.reset_window(shape)

    # ---- the window: per-step device tensors since the last check ----------------------------------
    def reset_window(self, shape) -> None:
        A, dev = shape.n_agents, self.device
        self.w_sel, self.w_culprit = torch.zeros(A, device=dev), torch.zeros(A, device=dev)
        self.w_grads, self.w_losses, self.w_gnorms = [], [], []
        self._leaf_mask = torch.tensor(shape.is_leaf(), device=dev)

    def observe(self, r) -> None:
        """Accumulate one step's selection, culprit, gradients and loss (no host sync)."""
        self.w_sel += r.plan.selected.float()
        if r.plan.path is not None:
            culprit = r.plan.path[-1]
        else:  # no blame path: the leaf with the largest gradient
            culprit = torch.where(self._leaf_mask, r.signals.grad_rms, -1.0).argmax()
        self.w_culprit.index_add_(0, culprit.view(1), torch.ones(1, device=culprit.device))
        self.w_grads.append(r.signals.grad_rms)
        self.w_losses.append(r.loss)
        self.w_gnorms.append(r.grad_norm)

    def window(self, trust: torch.Tensor) -> Window:
        import math

        losses = torch.stack(self.w_losses).float().tolist()  # host sync (check point)
        gnorms = torch.stack(self.w_gnorms).float().tolist()
        ok = [i for i, x in enumerate(losses) if math.isfinite(x)]
        return Window([losses[i] for i in ok], [gnorms[i] for i in ok if math.isfinite(gnorms[i])],
                      self.w_sel.cpu(), self.w_culprit.cpu(), torch.stack(self.w_grads).float().cpu(),
                      trust.float().cpu())

    _SCALARS = ("stage", "successful_breaks", "phase", "best_val", "evals_since_best", "patience", "min_delta",
                "val_history")

    def state_dict(self) -> dict:
        stack = lambda xs: torch.stack(xs) if xs else None  # noqa: E731
        return {**{k: copy.deepcopy(getattr(self, k)) for k in self._SCALARS},
                "w_sel": self.w_sel, "w_culprit": self.w_culprit, "w_grads": stack(self.w_grads),
                "w_losses": stack(self.w_losses), "w_gnorms": stack(self.w_gnorms)}

    def load_state_dict(self, s: dict, device=None) -> None:
        dev = device or self.device
        for k in self._SCALARS:
            setattr(self, k, copy.deepcopy(s[k]))
        self.w_sel, self.w_culprit = s["w_sel"].to(dev).clone(), s["w_culprit"].to(dev).clone()
        if self.w_sel.shape != self._leaf_mask.shape:
            raise ValueError(f"window has {self.w_sel.shape[0]} agents, the tree {self._leaf_mask.shape[0]}")
        for k in ("w_grads", "w_losses", "w_gnorms"):
            setattr(self, k, [] if s[k] is None else [t.to(dev).clone() for t in s[k]])

    def allows(self, action: str) -> bool:
        return action in STAGE_ACTIONS[self.stage]

    def record_break(self, success: bool) -> int | None:
        """Count a boundary break; return the new stage if it advanced."""
        if not success:
            return None
        self.successful_breaks += 1
        needed = self.cfg.stage_breaks[self.stage - 1] if self.stage <= len(self.cfg.stage_breaks) else None
        if self.stage < 4 and needed is not None and self.successful_breaks >= needed:
            self.stage += 1
            return self.stage
        return None

    # ---- the proposer -----------------------------------------------------------------------------
    def propose(self, diag: dict, w: Window, shape, knobs: dict, affinity: dict | None) -> list[Proposal]:
        """Diagnostics → concrete actions, most pressing first (one is trialled per check)."""
        c, out = self.cfg, []
        names, ids = shape.names(), [a.id for a in shape.agents]
        leaves = [i for i, leaf in enumerate(shape.is_leaf()) if leaf]
        if diag["unstable"]:
            out.append(Proposal("tune", "instability: stabilise", {
                "lr_scale": max(c.lr_scale_bounds[0], knobs["lr_scale"] * 0.7),
                "top_k": max(c.top_k_bounds[0], knobs["top_k"] - 1) if knobs["top_k"] else None}))
        culprit = int(w.culprit.argmax())
        blame_share = float(w.culprit.max()) / max(float(w.culprit.sum()), 1.0)
        can_grow = shape.n_agents < c.agent_bounds[1]
        # deepen under the culprit (exactly output-preserving) until max_depth, then widen beside it
        at_max = shape.agents[culprit].level + 1 >= c.max_depth
        grow_under = shape.flat_parents()[culprit] if at_max else culprit
        where = f"beside {names[culprit]}" if at_max else f"under {names[culprit]}"
        if blame_share > 2.0 / max(len(leaves), 1) and can_grow and grow_under >= 0:
            out.append(Proposal("grow", f"rich-get-richer: {names[culprit]} ends {blame_share:.0%} of blame "
                                        f"paths; add a child {where}", {"parent": ids[grow_under]}))
        if diag["plateau"]:
            out.append(Proposal("tune", "plateau: explore", {
                "lr_scale": min(c.lr_scale_bounds[1], knobs["lr_scale"] * 1.25),
                "top_k": min(c.top_k_bounds[1], knobs["top_k"] + 1) if knobs["top_k"] else None}))
        dead = [i for i, n in enumerate(names) if n in diag["dead"] and i != 0]
        if dead and shape.n_agents > c.agent_bounds[0]:
            worst = min(dead, key=lambda i: float(w.trust[i]))
            out.append(Proposal("prune", f"dead agent {names[worst]} (never updated in the window)",
                                {"agent": ids[worst]}))
        pair = _most_similar_leaf_siblings(w.grad_rms, shape, leaves)
        if pair is not None and pair[2] >= c.merge_similarity:
            out.append(Proposal("merge", f"{names[pair[0]]} and {names[pair[1]]} have gradient histories "
                                         f"with cosine {pair[2]:.3f}", {"keep": ids[pair[0]], "drop": ids[pair[1]]}))
        if affinity and affinity["gain"] > c.reorganize_margin:
            out.append(Proposal("reorganize", f"{affinity['agent_name']} scores {affinity['gain']:.3f} higher "
                                              f"under {affinity['parent_name']}",
                                {"agent": affinity["agent"], "parent": affinity["parent"]}))
        if can_grow and grow_under >= 0 and not any(p.action == "grow" for p in out):  # an add-only option
            out.append(Proposal("grow", f"add capacity {where} the most-blamed {names[culprit]} "
                                        f"({blame_share:.0%} of blame paths)", {"parent": ids[grow_under]}))
        return out

    # ---- self-stopping ----------------------------------------------------------------------------
    def observe_eval(self, val_loss: float, recent_rel_gain: float) -> bool:
        """Record a validation loss; return True when the run should stop.

        The controller sets min_delta to half the recent relative gain per evaluation and patience from
        how noisy that gain is, both clamped to the hard bounds.
        """
        c = self.cfg
        self.min_delta = min(max(0.5 * abs(recent_rel_gain), c.min_delta_bounds[0]), c.min_delta_bounds[1])
        flat = abs(recent_rel_gain) < c.min_delta_bounds[0]  # already flat: stop soon; still moving: wait
        self.patience = c.patience_bounds[0] if flat else c.patience_bounds[1]
        if self.best_val is None or val_loss < self.best_val * (1 - self.min_delta):
            self.best_val, self.evals_since_best = val_loss, 0
            return False
        self.evals_since_best += 1
        return c.self_stop and self.phase == 2 and self.evals_since_best >= self.patience


def _most_similar_leaf_siblings(grads: torch.Tensor, shape, leaves: list[int]):
    """(i, j, cosine) of the most similar pair of leaf siblings by their RMS-gradient histories."""
    if grads.numel() == 0 or grads.shape[0] < 2:
        return None
    parents = shape.flat_parents()
    g = grads - grads.mean(0, keepdim=True)
    g = g / g.norm(dim=0, keepdim=True).clamp_min(1e-12)  # [S, A] unit columns
    best = None
    for i in leaves:
        for j in leaves:
            if j > i and parents[i] == parents[j]:
                cos = float(g[:, i] @ g[:, j])
                if best is None or cos > best[2]:
                    best = (i, j, cos)
    return best
