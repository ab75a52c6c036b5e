"""`train_step(state, x, y)`: one training step, the only place one happens (train, compare, continual and
phase-2 trials all call it), in this order:

    batch → forward → loss (+ hook loss terms) → backward → [all-reduce under torchrun] → StepSignals
          → policy.plan → rows → finish_weight_grads(plan, rows) → clip → optimizer.step(plan, rows)
          → trust.update → StepResult

With `model.defer_weight_grads` the matrices' weight gradients are formed after the plan, for the selected
agents only (`AgentLevel`); the plan never depends on clipping.

What differs between policies lives in the policy and the optimizer, not in branches here. No host syncs:
every value in the result stays on the device; recorders convert them only when `log_due` is set.
"""

from __future__ import annotations

import math

import torch

from k1.engine.hooks.record import StepResult
from k1.engine.run.measure import probe_loss
from k1.engine.update.signals import StepSignals


def lr_at(step: int, cfg) -> float:
    """Linear warmup, then cosine decay to lr · min_lr_ratio at the last step (`step` is 0-based)."""
    o, total = cfg.optim, cfg.train.steps
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    frac = (step - o.warmup_steps) / max(1, total - o.warmup_steps)
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def step_flops_per_token(state, plan):
    """Training FLOPs per token of this step (flops.py): with deferred weight gradients only the selected
    agents' matrices get them, so each level counts its selected share (on the device, no sync)."""
    f = state.flops
    if not state.cfg.model.defer_weight_grads or state.cfg.arch == "dense":
        return f.train()
    sel = torch.zeros_like(state.level_sizes).index_add_(0, state.agent_level, plan.selected.double())
    return f.forward + f.backward_input + f.weight_shared + (state.level_weight_flops * sel / state.level_sizes).sum()


def clip_(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale `grads` in place so that their global L2 norm is at most `max_norm` (0: no clipping, the norm is
    still measured); returns the norm before clipping. Takes gradient tensors rather than parameters, so a
    deferred matrix's compact rows are clipped like any `.grad` (the same rule as torch's clip_grad_norm_)."""
    norm = torch.nn.utils.get_total_norm(grads, 2.0, foreach=True)
    if max_norm > 0 and grads:
        torch._foreach_mul_(grads, (max_norm / (norm + 1e-6)).clamp(max=1.0))
    return norm


def train_step(state, x: torch.Tensor, y: torch.Tensor, log_due: bool = False, loss_terms=(),
               trial: int | None = None, branch: str | None = None) -> StepResult:
    """Train `state` on one batch. `loss_terms`: callables model → scalar added to the objective (EWC);
    the logged loss stays the data loss, so runs compare on the same measure."""
    cfg = state.cfg
    lr = lr_at(state.step, cfg) * state.lr_scale
    x, y = x.to(state.device, non_blocking=True), y.to(state.device, non_blocking=True)
    with state.autocast():
        _, loss = state.forward(x, y)
    objective = loss
    for term in loss_terms:
        objective = objective + term(state.model)
    objective.backward()
    if state.dist.enabled:  # every rank continues with the global mean gradient and loss
        loss = loss.detach().clone()
        state.dist.average_([p.grad for p in state.model.parameters() if p.grad is not None] + [loss])
    signals = StepSignals.measure(state.model, loss, state.parents)
    plan = state.policy.plan(signals, state.trust, state.step)
    rows = state.optimizer.select(plan)  # the rows this step touches, found once (rows.py)
    # deferred matrix gradients of those rows only, kept compact (no-op if off); clipped with every .grad
    grads = state.model.finish_weight_grads(plan, rows)
    grads += [p.grad for p in state.model.parameters() if p.grad is not None]
    grad_norm = clip_(grads, cfg.optim.grad_clip)
    finite = torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)  # stays on the device
    stats = state.optimizer.step(plan, lr, ok=finite, rows=rows)
    if state.probe is None:
        state.trust.update(plan.masked(finite), loss, state.step)
    else:
        state.trust.update_probe(plan.masked(finite), probe_loss(state), state.step)
    state.model.zero_grad(set_to_none=True)
    p = state.progress
    p.step += 1
    p.frac_changed += stats.params_changed / state.total_params  # a fraction: the tree may be resized
    p.agents += stats.agents_updated
    state.record.steps_executed += 1
    state.train_flops += x.numel() * step_flops_per_token(state, plan)
    return StepResult(p.step, lr, x.numel(), loss.detach(), finite, grad_norm.detach(), signals, plan, stats,
                      state.trust.trust, log_due, state.agent_names, state.total_params, trial=trial, branch=branch,
                      inputs=x)
