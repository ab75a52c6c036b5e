"""Sparse optimizers with per-agent state: the plan's scale multiplies the *update*, not the gradient.

Why not scale gradients? Under Adam a zero gradient still moves a parameter (momentum, weight decay, and
Adam's scale invariance undoes any scaling), which is how the public prototype moved 100 % of its
parameters while reporting 7 %. Here an agent with scale 0 is skipped inside the optimizer: its parameters,
both moments and its step count stay bit-identical, because the optimizer touches only the selected rows:
consecutive rows (attribution's path has one agent per level) are updated in place through a view, other
sets are gathered (`index_select`), updated and written back (`index_copy_`), so a step that selects 4 of
41 agents does about 4/41 of the optimizer's work. Finding the rows is one
`nonzero` per step (a host sync on GPU); when every row is selected (the dense policy) the update runs in
place on the whole tensor with no gather at all.

Shared parameters (embeddings, final norm, tied head) are used by every path, so the rule is: they are
updated every step at scale 1 (`shared="always"`), or never (`shared="frozen"`); a non-finite step skips
them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from k1.engine.level import is_decayed, row_selector, selected_rows
from k1.engine.plan import UpdatePlan
from k1.registry import Registry

OPTIMIZERS: Registry["SparseOptimizer"] = Registry("optimizer")


class OptimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(default=1e-3, gt=0)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)  # cosine decays to lr · min_lr_ratio
    warmup_steps: int = Field(default=20, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)  # sgd only
    grad_clip: float = Field(default=1.0, ge=0)  # 0 disables clipping
    shared: Literal["always", "frozen"] = "always"


@dataclass(frozen=True)
class OptimStats:
    """Counted on the device after each step (tensors; read them only when logging)."""

    agents_updated: torch.Tensor  # number of agents with scale > 0
    params_changed: torch.Tensor  # elements whose value actually changed (agents + shared)
    update_norm: torch.Tensor  # ‖Δθ‖₂ over every parameter


class SparseOptimizer:
    """Base: holds per-level stacked agent parameters ([N, ...]) and the shared ones.

    `groups[lv]` is the list of (name, param) of level lv; agent i of level lv owns row i of each.
    `step(plan, lr)` applies the update to rows with scale > 0 and returns `OptimStats`.
    """

    def __init__(self, model, cfg: OptimConfig):
        self.cfg = cfg
        self.groups = [level.agent_parameters() for level in model.agent_levels()]
        self.offsets, off = [], 0
        for level in model.agent_levels():
            self.offsets.append(off)
            off += level.n_agents
        self.shared = model.shared_parameters()
        device = self.shared[0][1].device
        self.agent_steps = [torch.zeros(lv.n_agents, device=device) for lv in model.agent_levels()]
        self.shared_steps = torch.zeros((), device=device)
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        self._names = {id(p): n for n, p in model.named_parameters()}

    state_keys: tuple[str, ...] = ()  # per-parameter state tensors, each shaped like the parameter

    @torch.no_grad()
    def step(self, plan: UpdatePlan, lr: float, ok: torch.Tensor | None = None) -> OptimStats:
        """Update selected agents (and shared params per the rule); `ok=False` makes the step a no-op."""
        scale = plan.scale if ok is None else plan.masked(ok).scale
        changed = torch.zeros((), dtype=torch.long, device=scale.device)
        norm_sq = torch.zeros((), device=scale.device)
        sizes = [len(s) for s in self.agent_steps]
        for lv, (params, rows) in enumerate(zip(self.groups, selected_rows(scale, self.offsets, sizes))):
            s = scale[self.offsets[lv]:self.offsets[lv] + sizes[lv]]
            if not rows:  # nothing to do, but the state exists from the first step on (checkpoint layout)
                for _, p in params:
                    self._state(self._names[id(p)], p)
                continue
            self.agent_steps[lv] = self.agent_steps[lv] + (s > 0).float()
            idx = None if len(rows) == sizes[lv] else row_selector(rows, scale.device)
            for name, p in params:
                c, n = self._step_rows(p, _grad(p), self._names[id(p)], idx, s, self.agent_steps[lv], lr,
                                       is_decayed(name))
                changed, norm_sq = changed + c, norm_sq + n
        if self.cfg.shared == "always" and (ok is None or bool(ok)):
            one = torch.ones(1, device=scale.device)
            self.shared_steps = self.shared_steps + 1
            for name, p in self.shared:  # a shared tensor is one "agent" row: view it as [1, ...]
                c, n = self._step_rows(p.unsqueeze(0), _grad(p).unsqueeze(0), name, None, one,
                                       self.shared_steps.view(1), lr, p.dim() >= 2)
                changed, norm_sq = changed + c, norm_sq + n
        return OptimStats(scale.gt(0).sum(), changed, norm_sq.sqrt())

    def _state(self, name: str, p: torch.Tensor) -> dict[str, torch.Tensor]:
        st = self.state.get(name)
        if st is None:
            st = self.state[name] = {k: torch.zeros_like(p) for k in self.state_keys}
        return st

    def _step_rows(self, p, g, name, idx, s, steps, lr, decay):
        """Update rows `idx` of p ([N, ...], possibly a view; idx None: all rows) and their state in place;
        return (elements changed, ‖Δ‖²). Rows not in idx are never read or written."""
        st = self._state(name, p)
        if idx is None:
            new = self._update(p, g, st, s, steps, lr, decay)  # updates the state tensors in place
            changed, norm_sq = _count(p, new)
            p.copy_(new)
            return changed, norm_sq
        if isinstance(idx, slice):  # consecutive rows: views, updated in place
            rows, p_r = {k: v[idx] for k, v in st.items()}, p[idx]
            new = self._update(p_r, g[idx], rows, s[idx], steps[idx], lr, decay)
            changed, norm_sq = _count(p_r, new)
            p_r.copy_(new)
            return changed, norm_sq
        rows = {k: v.index_select(0, idx) for k, v in st.items()}
        p_r = p.index_select(0, idx)
        new = self._update(p_r, g.index_select(0, idx), rows, s.index_select(0, idx), steps.index_select(0, idx),
                           lr, decay)
        for k, v in rows.items():
            st[k].index_copy_(0, idx, v)
        changed, norm_sq = _count(p_r, new)
        p.index_copy_(0, idx, new)
        return changed, norm_sq

    def _update(self, p, g, st, s, steps, lr, decay) -> torch.Tensor:
        """The update rule on rows p ([R, ...]) with gradient g, state rows `st` (updated in place), per-row
        scale s and step count `steps` ([R]); → the new values of p."""
        raise NotImplementedError

    # ---- checkpointing: every tensor goes to safetensors ---------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"steps.level{lv}": s for lv, s in enumerate(self.agent_steps)}
        out["steps.shared"] = self.shared_steps
        for name, st in self.state.items():
            for k, v in st.items():
                out[f"{k}.{name}"] = v
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for lv in range(len(self.agent_steps)):
            self.agent_steps[lv] = state[f"steps.level{lv}"].clone()
        self.shared_steps = state["steps.shared"].clone()
        self.state = {}
        for key, v in state.items():
            if key.startswith("steps."):
                continue
            k, name = key.split(".", 1)
            self.state.setdefault(name, {})[k] = v.clone()


def _count(old: torch.Tensor, new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Elements that really changed (NaN → NaN is not a change) and the squared update norm."""
    # an update of a NaN parameter is NaN again, so "old is a number" is the whole NaN correction
    return torch.count_nonzero((new != old) & (old == old)), (new - old).float().pow(2).sum()


def _grad(p: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(p) if p.grad is None else p.grad


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[N] → [N, 1, 1, ...] to broadcast against a stacked parameter [N, ...]."""
    return v.view(-1, *([1] * (like.dim() - 1)))


@OPTIMIZERS.register("adamw")
class SparseAdamW(SparseOptimizer):
    """AdamW with per-agent step counts and bias corrections; decoupled weight decay on matrices."""

    state_keys = ("exp_avg", "exp_avg_sq")

    def _update(self, p, g, st, s, steps, lr, decay):
        b1, b2 = self.cfg.betas
        m, v = st["exp_avg"], st["exp_avg_sq"]
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        t = _bcast(steps.clamp_min(1.0), p)
        denom = (v / (1 - b2 ** t)).sqrt_().add_(self.cfg.eps)
        step_size = _bcast(s, p) * lr
        new = p - step_size * (m / (1 - b1 ** t)) / denom
        if decay and self.cfg.weight_decay:
            new = new - step_size * self.cfg.weight_decay * p
        return new


@OPTIMIZERS.register("sgd")
class SparseSGD(SparseOptimizer):
    """SGD with momentum (per-agent buffers) and decoupled weight decay."""

    state_keys = ("momentum",)

    def _update(self, p, g, st, s, steps, lr, decay):
        buf = st["momentum"]
        buf.mul_(self.cfg.momentum).add_(g)
        step_size = _bcast(s, p) * lr
        new = p - step_size * buf
        if decay and self.cfg.weight_decay:
            new = new - step_size * self.cfg.weight_decay * p
        return new


def build_optimizer(model, cfg: OptimConfig) -> SparseOptimizer:
    return OPTIMIZERS.get(cfg.name)(model, cfg)
