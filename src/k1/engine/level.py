"""`AgentLevel`: all agents of one tree level as stacked parameters, run as batched kernels.

Every parameter has a leading agent dimension N, so a level of 24 agents is a handful of `baddbmm` calls
and one fused attention call over N·B sequences, never a Python loop over agents. Shapes: N agents,
B batch, T time, C width, M MLP width, nh heads, hs head size.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

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


def param_shapes(kind: str, C: int, M: int) -> dict[str, tuple[int, ...]]:
    """Per-agent parameter shapes of one kind (without the leading agent dimension)."""
    return _shapes(kind, C, M)


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

    @property
    def n_agents(self) -> int:
        return self.gate_key.shape[0]

    def agent_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return list(self.named_parameters(recurse=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, B, T, C] (agent i reads x[i]) → [N, B, T, C], each agent a residual refinement."""
        N, B, T, C = x.shape
        if self.kind == "block":
            x = x + self._attention(x)
        return x + self._mlp(x)

    def _norm(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        N, C = w.shape
        return torch.addcmul(b.view(N, 1, 1, C), F.layer_norm(x, (C,)), w.view(N, 1, 1, C))

    def _linear(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        N, B, T, _ = x.shape
        y = torch.baddbmm(b.unsqueeze(1), x.reshape(N, B * T, -1), w)  # [N, B*T, out]
        return y.view(N, B, T, -1)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        N, B, T, C = x.shape
        nh = self.n_heads
        qkv = self._linear(self._norm(x, self.ln1_w, self.ln1_b), self.qkv_w, self.qkv_b)  # [N, B, T, 3C]
        q, k, v = qkv.view(N * B, T, 3, nh, C // nh).permute(2, 0, 3, 1, 4)  # each [N*B, nh, T, hs]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # causal mask: no look-ahead
        y = y.transpose(1, 2).reshape(N, B, T, C)
        return self._linear(y, self.proj_w, self.proj_b)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self._linear(self._norm(x, self.ln2_w, self.ln2_b), self.fc_w, self.fc_b))
        return self._linear(h, self.out_w, self.out_b)
