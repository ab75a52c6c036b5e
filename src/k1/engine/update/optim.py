"""Sparse optimizers with per-agent state: the plan's scale multiplies the *update*, not the gradient.

Why not scale gradients? Under Adam a zero gradient still moves a parameter (momentum, weight decay, and
Adam's scale invariance undoes any scaling), which is how the public prototype moved 100 % of its
parameters while reporting 7 %. Here an agent with scale 0 is skipped inside the optimizer: its parameters,
both moments and its step count stay bit-identical, because the optimizer touches only the selected rows
(k1/engine/model/rows.py): consecutive rows (attribution's path has one agent per level) are updated in place
through a view, other sets are gathered (`index_select`), updated and written back (`index_copy_`), so a
step that selects 4 of 41 agents does about 4/41 of the optimizer's work. When every row is selected (the
dense policy) the update runs in place on the whole tensor with no gather at all. A deferred matrix's
gradient arrives as compact rows (`AgentLevel.row_grads`) and is used as it is.

Host syncs. On CPU the rows are read on the host (one copy of the plan's mask) and a non-finite step is
skipped by reading `ok`; both are free there. `sync_free` (the default on CUDA) reads nothing: a plan with a blame path gives
one row per level on the device (static shapes), and every update is masked (`torch.where` on scale > 0),
so a gathered row the plan did not select, or a whole non-finite step, leaves parameters and state
bit-identical. Other plans (top-K, dense) still find their rows with one host read.

Shared parameters (embeddings, final norm, tied head) are used by every path, so the rule is: they are
updated every step at scale 1 (`shared="always"`), or never (`shared="frozen"`); a non-finite step skips
them too. `shared_scale` is the run-time form of the same rule (a continual plugin freezes them after the
first domain by setting it to 0): at 0 the shared parameters and their state stay bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from k1.engine.model.level import is_decayed
from k1.engine.model.plan import UpdatePlan
from k1.engine.model.rows import LevelRows, select_rows, take
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
    `sync_free` (default: on CUDA) finds the rows without a host read and masks every update (rows.py).
    """

    def __init__(self, model, cfg: OptimConfig, sync_free: bool | None = None):
        self.cfg = cfg
        self.levels = model.agent_levels()
        self.groups = [level.agent_parameters() for level in self.levels]
        self.offsets, off = [], 0
        for level in self.levels:
            self.offsets.append(off)
            off += level.n_agents
        self.shared = model.shared_parameters()
        device = self.shared[0][1].device
        self.sync_free = device.type == "cuda" if sync_free is None else sync_free
        self.agent_steps = [torch.zeros(lv.n_agents, device=device) for lv in self.levels]
        self.shared_steps = torch.zeros((), device=device)
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        self._names = {id(p): n for n, p in model.named_parameters()}
        self.shared_scale = 1.0  # run-time multiplier of the shared parameters' update; 0: frozen

    state_keys: tuple[str, ...] = ()  # per-parameter state tensors, each shaped like the parameter

    def select(self, plan: UpdatePlan) -> list[LevelRows]:
        """The rows `plan` updates, per level (rows.py); the step finds them once and shares them with the
        deferred weight gradients."""
        return select_rows(plan, self.offsets, [len(s) for s in self.agent_steps], static=self.sync_free)

    @torch.no_grad()
    def step(self, plan: UpdatePlan, lr: float, ok: torch.Tensor | None = None,
             rows: list[LevelRows] | None = None) -> OptimStats:
        """Update selected agents (and shared params per the rule); `ok=False` makes the step a no-op.
        `rows`: the step's row selection (`select(plan)`, found here if not given)."""
        scale = plan.scale if ok is None else plan.masked(ok).scale
        rows = self.select(plan) if rows is None else rows
        # Host rows come from the unmasked plan, so a non-finite step is skipped by one host read of `ok`
        # (free on CPU). Sync-free, every update is masked by its scale instead, and `ok` is never read.
        masked = self.sync_free
        skip = not masked and ok is not None and not bool(ok)
        changed = torch.zeros((), dtype=torch.long, device=scale.device)
        norm_sq = torch.zeros((), device=scale.device)
        for lv, (params, level, r) in enumerate(zip(self.groups, self.levels, rows)):
            n = len(self.agent_steps[lv])
            s = scale[self.offsets[lv]:self.offsets[lv] + n]
            if skip or r.empty:  # nothing to do, but the state exists from the first step on (checkpoint layout)
                for _, p in params:
                    self._state(self._names[id(p)], p)
                continue
            self.agent_steps[lv] = self.agent_steps[lv] + (s > 0).float()
            if level.row_grads and not _same_rows(level.grad_rows, r):
                raise RuntimeError("the deferred weight gradients were formed for other rows than this step "
                                   "updates: pass the same `rows` to finish_weight_grads and step")
            for name, p in params:
                g = level.row_grads.get(name)  # a deferred matrix's compact rows (level.py), aligned with r
                c, n_sq = self._step_rows(p, _grad(p) if g is None else g, g is not None, self._names[id(p)], r,
                                          s, self.agent_steps[lv], lr, is_decayed(name), masked or r.static)
                changed, norm_sq = changed + c, norm_sq + n_sq
        if self.cfg.shared == "always" and self.shared_scale > 0 and not skip:
            one = torch.ones(1, device=scale.device) if ok is None else ok.float().view(1)
            self.shared_steps = self.shared_steps + one[0]
            one = one * self.shared_scale
            for name, p in self.shared:  # a shared tensor is one "agent" row: view it as [1, ...]
                c, n_sq = self._step_rows(p.unsqueeze(0), _grad(p).unsqueeze(0), False, name, LevelRows(None),
                                          one, self.shared_steps.view(1), lr, p.dim() >= 2, masked)
                changed, norm_sq = changed + c, norm_sq + n_sq
        return OptimStats(scale.gt(0).sum(), changed, norm_sq.sqrt())

    def _state(self, name: str, p: torch.Tensor) -> dict[str, torch.Tensor]:
        st = self.state.get(name)
        if st is None:
            st = self.state[name] = {k: torch.zeros_like(p) for k in self.state_keys}
        return st

    def _step_rows(self, p, g, compact, name, rows, s, steps, lr, decay, masked):
        """Update `rows` of p ([N, ...], possibly a view) and their state; return (elements changed, ‖Δ‖²).
        `g` is the full gradient, or (`compact`) the gradient of these rows only. `masked`: rows with scale 0
        keep their parameters and state bit-identical (torch.where), whatever the update computed. Rows
        outside `rows` are never read or written."""
        st = self._state(name, p)
        p_r = take(p, rows)  # the whole tensor, a view (slice) or a gathered copy (index)
        g_r = g if compact else take(g, rows)
        st_r = {k: take(v, rows) for k, v in st.items()}
        in_place = not isinstance(rows.index, torch.Tensor)  # views: the update writes the state itself
        if masked:
            old, st_r = st_r, {k: v.clone() for k, v in st_r.items()}
        new = self._update(p_r, g_r, st_r, take(s, rows), take(steps, rows), lr, decay)  # state updated in place
        if masked:
            keep = _bcast(take(s, rows) > 0, p_r)
            new = torch.where(keep, new, p_r)
            st_r = {k: torch.where(keep, v, old[k]) for k, v in st_r.items()}
        changed, norm_sq = _count(p_r, new)
        for k, v in st_r.items():
            if masked or not in_place:
                _put(st[k], rows, v)
        _put(p, rows, new)
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


def _same_rows(a: LevelRows | None, b: LevelRows) -> bool:
    if a is b:
        return True
    if a is None or a.static != b.static or type(a.index) is not type(b.index):
        return False
    return a.index == b.index if isinstance(a.index, slice) else a.index.shape == b.index.shape


def _put(t: torch.Tensor, rows: LevelRows, v: torch.Tensor) -> None:
    """Write rows `v` back into the stacked tensor t (the inverse of rows.take)."""
    if rows.index is None:
        t.copy_(v)
    elif isinstance(rows.index, slice):
        t[rows.index].copy_(v)
    else:
        t.index_copy_(0, rows.index, v)


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
