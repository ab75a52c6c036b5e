"""`AgentLevel`: all agents of one tree level as stacked parameters, run as batched kernels.

Every parameter has a leading agent dimension N, so a level of 24 agents is a handful of `baddbmm` calls
and one fused attention call over N·B sequences, never a Python loop over agents. Shapes: N agents,
B batch, T time, C width, M MLP width, nh heads, hs head size.

Deferred weight gradients (`defer_weight_grads`): a sparse step updates a few agents, so computing every
agent's matrix gradient (a third of a step's FLOPs) is mostly wasted. With deferral on, backward computes
input gradients and the cheap vector gradients (norms, biases, gates) as usual but only *stashes* each
matrix's input X and output gradient G; `finish_weight_grads(rows)` then forms X[rows]ᵀ·G[rows] for the
selected agents alone and keeps them compact (`row_grads`: no zero rows are built, clipped or read). The
policy decides from a per-agent estimate of the matrix gradient norm that backward computes cheaply
(`deferred_grad_sq`, see `DeferredLinear`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from k1.engine.model.rows import LevelRows, take

# Parameter names per agent kind; each is stored as [N, ...].
BLOCK_PARAMS = ("ln1_w", "ln1_b", "qkv_w", "qkv_b", "proj_w", "proj_b", "ln2_w", "ln2_b", "fc_w", "fc_b", "out_w", "out_b")
MLP_PARAMS = ("ln2_w", "ln2_b", "fc_w", "fc_b", "out_w", "out_b")


def _shapes(kind: str, C: int, M: int) -> dict[str, tuple[int, ...]]:
    shapes = {
        "ln2_w": (C,), "ln2_b": (C,), "fc_w": (C, M), "fc_b": (M,), "out_w": (M, C), "out_b": (C,),
    }
    if kind == "block":
        shapes.update({"ln1_w": (C,), "ln1_b": (C,), "qkv_w": (C, 3 * C), "qkv_b": (3 * C,),
                       "proj_w": (C, C), "proj_b": (C,)})
    elif kind != "mlp":
        raise ValueError(f"unknown agent kind {kind!r}")
    shapes["gate_key"] = (C,)  # a child owns its gate key and bias; its parent scores it (see tree.py)
    shapes["gate_bias"] = ()
    return shapes


def is_decayed(param_name: str) -> bool:
    """Weight decay applies to matrices only (nanoGPT's rule): not to norms, biases or gates."""
    return param_name.endswith("_w") and not param_name.startswith("ln")


# Residual-branch outputs: zeroing them makes an agent the identity map (used to grow without changing output).
RESIDUAL_OUTPUTS = ("proj_w", "proj_b", "out_w", "out_b")


def agent_param_count(kind: str, C: int, M: int) -> int:
    return sum(math.prod(s) for s in _shapes(kind, C, M).values())


# The signal's estimate reads 1/ESTIMATE_SHARE of the tokens, a contiguous block of rows (the first sequences
# of the batch): rank agreement with the exact norm stays high (docs/performance.md) while its cost, a pass
# over X and G, drops to 1/ESTIMATE_SHARE. A block reads faster than every 8th row on CPU, and ranks
# agents as well (Spearman 0.964 against 0.967 over 60 batches, the same blame path on all 60).
ESTIMATE_SHARE = 8

# Stacked matrices whose weight gradient can be deferred (they carry the FLOPs; vectors are cheap).
MATRICES = ("qkv_w", "proj_w", "fc_w", "out_w")


class DeferredLinear(torch.autograd.Function):
    """y = b + x·w per agent ([N, R, in] · [N, in, out]); backward returns dL/dx and dL/db now and stashes
    (x, G) for the weight gradient, which `AgentLevel.finish_weight_grads` computes for chosen rows only.

    The policy's signal needs ‖dL/dw_i‖ before the weight gradients exist. dL/dw_i = Σ_t x_tᵀ g_t over the
    R rows (tokens) of agent i; its squared norm is Σ_t Σ_s (x_t·x_s)(g_t·g_s). Backward records the
    diagonal of that sum, Σ_t ‖x_t‖²‖g_t‖² (the sum of per-token gradient norms², O(R·(in+out)) per agent,
    against O(R·in·out) for the gradient itself). Its rank agreement with the exact norm is tested in
    tests/engine/test_weight_grad_deferral.py and reported in docs/performance.md.
    """

    @staticmethod
    def forward(ctx, x, w, b, level, name):
        ctx.save_for_backward(x, w)
        ctx.level, ctx.name = level, name
        return torch.baddbmm(b.unsqueeze(1), x, w)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        g = g.contiguous()  # a strided g made the norms below 10× slower on CPU, and it is stashed
        gx = torch.bmm(g, w.to(g.dtype).transpose(1, 2))
        gb = g.sum(1).to(w.dtype)
        ctx.level._stash(ctx.name, x, g)
        return gx, None, gb, None, None


class AgentLevel(nn.Module):
    """N agents of one kind ("block": pre-norm causal attention + MLP; "mlp": pre-norm MLP), stacked."""

    def __init__(self, kind: str, n_agents: int, width: int, mlp_width: int, n_heads: int, depth: int):
        super().__init__()
        if kind == "block" and width % n_heads:
            raise ValueError(f"width {width} is not divisible by n_heads {n_heads}")
        self.kind, self.n_heads = kind, n_heads
        std, proj_std = 0.02, 0.02 / math.sqrt(2 * max(depth, 1))  # GPT-2 scaled init of residual projections
        for name, shape in _shapes(kind, width, mlp_width).items():
            t = torch.zeros(n_agents, *shape)
            if name.startswith("ln") and name.endswith("_w"):
                t.fill_(1.0)
            elif name in ("proj_w", "out_w"):
                t.normal_(0.0, proj_std)
            elif name.endswith("_w"):
                t.normal_(0.0, std)
            # biases and gate keys start at zero: uniform gates, identity-friendly growth
            self.register_parameter(name, nn.Parameter(t))
        self.defer_weight_grads = False  # set by the model (ModelConfig.defer_weight_grads)
        self._pending: list[tuple[str, torch.Tensor, torch.Tensor]] = []  # (matrix, X, G) stashed in backward
        self.deferred_grad_sq: torch.Tensor | None = None  # [N] estimated Σ‖dL/dW‖² of the deferred matrices
        self.row_grads: dict[str, torch.Tensor] = {}  # compact matrix gradients of `grad_rows` (finish_weight_grads)
        self.grad_rows: LevelRows | None = None

    @property
    def n_agents(self) -> int:
        return self.gate_key.shape[0]

    def agent_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return list(self.named_parameters(recurse=False))

    def forward(self, x: torch.Tensor, normed: torch.Tensor | None = None) -> torch.Tensor:
        """x: [N, B, T, C] (agent i reads x[i]) → [N, B, T, C], each agent a residual refinement.

        `normed`, if given, is `layer_norm(x)` without affine, already computed by the caller (the tree
        shares it with the gate scores): it saves this level's first normalisation."""
        if self.kind == "block":
            x = x + self._attention(x, normed)
            normed = None
        return x + self._mlp(x, normed)

    def _norm(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, normed: torch.Tensor | None = None):
        N, C = w.shape
        n = F.layer_norm(x, (C,)) if normed is None else normed
        shape = (N,) + (1,) * (x.dim() - 2) + (C,)
        return torch.addcmul(b.view(shape), n, w.view(shape))

    def _linear(self, x: torch.Tensor, name: str, b: torch.Tensor) -> torch.Tensor:
        w = getattr(self, name)
        x2 = x.reshape(x.shape[0], -1, x.shape[-1])  # [N, rows, in]
        # under torch.compile the stash (a Python side effect in backward) would break the graph: the
        # compiled step forms every weight gradient, and the signals read them as usual
        if self.defer_weight_grads and torch.is_grad_enabled() and w.requires_grad \
                and not torch.compiler.is_compiling():
            y = DeferredLinear.apply(x2, w, b, self, name)
        else:
            y = torch.baddbmm(b.unsqueeze(1), x2, w)  # [N, rows, out]
        return y.view(*x.shape[:-1], -1)

    # ---- deferred weight gradients ----------------------------------------------------------------
    def _stash(self, name: str, x: torch.Tensor, g: torch.Tensor) -> None:
        # [N], see DeferredLinear; vector_norm is a fused reduction (x·x then sum was 4× slower on CPU)
        rows = max(1, x.shape[1] // ESTIMATE_SHARE)  # a fixed block of the rows (tokens), read contiguously
        est = (torch.linalg.vector_norm(x[:, :rows], dim=-1).float().square()
               * torch.linalg.vector_norm(g[:, :rows], dim=-1).float().square()).sum(-1) * (x.shape[1] / rows)
        self.deferred_grad_sq = est if self.deferred_grad_sq is None else self.deferred_grad_sq + est
        self._pending.append((name, x, g))

    @torch.no_grad()  # X was saved from the forward graph: the product must not extend it
    def finish_weight_grads(self, rows: LevelRows | None = None, scale: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Form the stashed matrix gradients of `rows` (None or every row: into `.grad` as usual) and free
        the stash. For a subset of rows the gradient is kept compact, [rows, in, out], in `row_grads[name]`
        (aligned with `rows`), and `.grad` stays None: no zero rows are allocated, clipped or read, and the
        optimizer takes the rows as they are. With static rows (rows.py) a row whose `scale` ([N]) is 0 gets
        a zero gradient. Returns the compact gradients formed (the step clips them with the others)."""
        formed = []
        if rows is None or not rows.empty:
            for name, x, g in self._pending:
                w = getattr(self, name)
                x = x.to(g.dtype)  # under autocast the product ran in g's dtype (bf16); the gradient is fp32
                if rows is None or rows.index is None:
                    gw = torch.bmm(x.transpose(1, 2), g).to(w.dtype)
                    w.grad = gw if w.grad is None else w.grad + gw
                    continue
                gw = torch.bmm(take(x, rows).transpose(1, 2), take(g, rows)).to(w.dtype)
                if rows.static:  # a gathered row the plan did not select (the path ends above this level)
                    gw = gw * take(scale, rows).gt(0).to(gw.dtype).view(-1, 1, 1)
                self.row_grads[name] = gw
                formed.append(gw)
            self.grad_rows = rows
        self._pending, self.deferred_grad_sq = [], None
        return formed

    def weight_grad(self, name: str) -> torch.Tensor | None:
        """The full [N, ...] gradient of one parameter, zero in rows without one (for inspection and tests;
        a step never builds it)."""
        p = getattr(self, name)
        if name not in self.row_grads:
            return p.grad
        rows, gw = self.grad_rows, self.row_grads[name]
        full = torch.zeros_like(p) if p.grad is None else p.grad.clone()
        if isinstance(rows.index, slice):
            full[rows.index] += gw
        else:
            full.index_add_(0, rows.index, gw)
        return full

    def clear_deferred(self) -> None:
        """Drop the stash, the estimate and the compact row gradients (after a step, or when stale)."""
        self._pending, self.deferred_grad_sq, self.row_grads, self.grad_rows = [], None, {}, None

    def _attention(self, x: torch.Tensor, normed: torch.Tensor | None = None) -> torch.Tensor:
        N, B, T, C = x.shape
        nh = self.n_heads
        qkv = self._linear(self._norm(x, self.ln1_w, self.ln1_b, normed), "qkv_w", self.qkv_b)  # [N, B, T, 3C]
        # split, not unbind: backward is then one contiguous cat (unbind's stack + permute cost a copy more)
        q, k, v = (t.view(N * B, T, nh, C // nh).transpose(1, 2) for t in qkv.split(C, dim=-1))  # [N*B, nh, T, hs]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # causal mask: no look-ahead
        y = y.transpose(1, 2).reshape(N, B, T, C)
        return self._linear(y, "proj_w", self.proj_b)

    def _mlp(self, x: torch.Tensor, normed: torch.Tensor | None = None) -> torch.Tensor:
        """x: [N, ..., C] (any number of middle dims: [N, B, T, C], or [N, capacity, C] when routed)."""
        h = F.gelu(self._linear(self._norm(x, self.ln2_w, self.ln2_b, normed), "fc_w", self.fc_b))
        return self._linear(h, "out_w", self.out_b)
