"""Training FLOPs per token, counted from the model's shapes: the engine's one FLOP counter.

Used by `bench/engine.py` (MFU, the sparse step's floor) and by anything that compares runs by compute.
Counts multiply–adds of matrix products as 2 FLOPs (PaLM's convention) and ignores elementwise work (norms,
activations, softmax, optimizer), which is what `torch.utils.flop_counter.FlopCounterMode` counts too; the
test in tests/engine/test_flops.py holds this counter to FlopCounterMode on real steps.

Per token, for width C, MLP width M, context T, vocabulary V:
- forward: each agent that sees the token does 2·(3C² + C²) (attention projections, blocks only)
  + 2·2·C·M (MLP) + 4·T·C (scores and values of causal attention, counted in full as PaLM and
  FlopCounterMode do); each gated child 2·C (its gate score); the tied head 2·C·V.
- backward: input gradients cost what the forward costs, attention's backward 2.5× its forward (flash
  attention recomputes the scores; FlopCounterMode counts it so), and the weight gradients of the matrices again what their forward costs. Weight gradients are the only part a
  sparse step can skip (`defer_weight_grads`): `train(updated_fraction_per_level=...)` scales them per level.

Routed models (`routing="top1"`, or `"topk"` with `route_k`) run k agents per level per token, padded to the
capacity factor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


@dataclass(frozen=True)
class FlopsPerToken:
    """One token's FLOPs, split the way a sparse step can and cannot skip them."""

    forward: float
    backward_input: float  # input gradients (and attention's score gradients): never skippable
    weight_levels: tuple[float, ...]  # weight gradients of each level's agent matrices, all agents
    weight_shared: float  # weight gradients of the tied head and the gate keys: always computed

    def train(self, updated_fraction_per_level: list[float] | None = None) -> float:
        """Forward + backward FLOPs of one token when level l computes the weight gradients of only
        `updated_fraction_per_level[l]` of its agents (None: every agent)."""
        frac = updated_fraction_per_level or [1.0] * len(self.weight_levels)
        if len(frac) != len(self.weight_levels):
            raise ValueError(f"need one fraction per level ({len(self.weight_levels)}), got {len(frac)}")
        return self.forward + self.backward_input + self.weight_shared + sum(
            f * w for f, w in zip(frac, self.weight_levels))


def flops_per_token(model, batch_tokens: int | None = None) -> FlopsPerToken:
    """Count from an `AgentTree` (or `DenseGPT`): its shape, width, MLP widths (read from the weights, since
    a DenseGPT widens its MLP), context, vocabulary and routing. `batch_tokens` (B·T of a step) makes the
    routed count exact: each level pads its agents to ceil(capacity_factor · B·T / N) rows."""
    cfg, shape = model.cfg, model.shape
    C, T, V = cfg.width, cfg.context, model.vocab_size
    routed = cfg.routing != "soft"
    fwd, bwd_in, weights, shared = 0.0, 0.0, [], 2.0 * C * V
    for lv, (kind, level) in enumerate(zip(shape.kinds, model.agent_levels())):
        n = level.n_agents
        mlp_width = level.fc_w.shape[-1]
        matrices = 2.0 * 2 * C * mlp_width + (2.0 * 4 * C * C if kind == "block" else 0.0)
        attention = 4.0 * T * C if kind == "block" else 0.0
        if routed and lv > 0:  # k agents per token, N · capacity rows of work per level
            k = min(n, 1 if cfg.routing == "top1" else cfg.route_k)
            if batch_tokens:
                R = batch_tokens
                per_token = n * max(1, min(R * k, math.ceil(cfg.capacity_factor * R * k / n))) / R
            else:
                per_token = min(float(n), cfg.capacity_factor * k)
            fwd += per_token * matrices + 2.0 * C * n  # the token is scored against every agent of the level
            bwd_in += per_token * matrices + 2.0 * C * n
            weights.append(per_token * matrices)
            shared += 2.0 * C * n
            continue
        gates = 2.0 * C * n if lv > 0 and cfg.wiring == "tree" else 0.0
        fwd += n * (matrices + attention) + gates
        bwd_in += n * (matrices + 2.5 * attention) + gates
        weights.append(n * matrices)
        shared += gates
    fwd += 2.0 * C * V
    bwd_in += 2.0 * C * V
    return FlopsPerToken(fwd, bwd_in, tuple(weights), shared)


def counted_flops(fn) -> int:
    """FLOPs of the matrix products `fn()` runs, by `torch.utils.flop_counter.FlopCounterMode` (with the CPU
    flash-attention kernels added: torch's table lists only the CUDA ones)."""
    aten = torch.ops.aten
    cpu_attention = {
        aten._scaled_dot_product_flash_attention_for_cpu:
            lambda q, k, v, *args, out_shape=None, **kw: sdpa_flop_count(q, k, v),
        aten._scaled_dot_product_flash_attention_for_cpu_backward:
            lambda go, q, k, v, *args, out_shape=None, **kw: sdpa_backward_flop_count(go, q, k, v),
    }
    with FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter:
        fn()
    return counter.get_total_flops()


def forward_flops_per_token(model) -> float:
    return flops_per_token(model).forward


def train_flops(model, tokens: int, updated_fraction_per_level: list[float] | None = None) -> float:
    """Training FLOPs (forward + backward) for `tokens` tokens; see `FlopsPerToken.train`."""
    return tokens * flops_per_token(model).train(updated_fraction_per_level)


def path_fractions(model) -> list[float]:
    """Per level, the fraction of agents on one blame path (attribution selects one agent per level)."""
    return [1.0 / level.n_agents for level in model.agent_levels()]
