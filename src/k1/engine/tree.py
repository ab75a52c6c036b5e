"""`AgentTree`: a language model whose body is a tree of agents (DESIGN.md, "Topology and model").

Shared token/position embedding and a tied output head around per-level stacked agents. Two wirings:
- `tree` (default): each agent refines its parent's output; the parent scores its children with their
  gate keys (softmax over siblings, per token); a leaf's weight is the product of gates along its path;
  the output mixes the leaves — a hierarchical mixture of experts whose shape is part of the computation.
- `levels`: the public prototype's semantics — every agent of a level reads the same input and a level's
  output is the mean of its agents.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from k1.engine.level import AgentLevel
from k1.engine.shape import TreeShape


class ModelConfig(BaseModel):
    """Architecture of the tree (and of the dense baseline, which copies width, heads and context)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    branching: list[int] = Field(default=[4, 3, 2], min_length=1)  # [4, 3, 2] → 41 agents
    kinds: str | list[str] = "block"  # one kind for all levels, or one per level ("block" | "mlp")
    wiring: Literal["tree", "levels"] = "tree"
    width: int = Field(default=128, ge=8)
    mlp_width: int = Field(default=256, ge=8)
    n_heads: int = Field(default=4, ge=1)
    context: int = Field(default=64, ge=2)
    vocab_size: int | None = None  # None: taken from the tokenizer
    dense_layers: int | None = None  # DenseGPT depth; None: as deep as the tree (MLP widened to match)


class AgentTree(nn.Module):
    """forward(idx [B, T], targets [B, T] | None) → (logits [B, T, V], loss | None)."""

    def __init__(self, shape: TreeShape, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.shape, self.cfg, self.vocab_size = shape, cfg, vocab_size
        C = cfg.width
        self.tok_emb = nn.Embedding(vocab_size, C)
        self.pos_emb = nn.Embedding(cfg.context, C)
        self.ln_f = nn.LayerNorm(C)
        nn.init.normal_(self.tok_emb.weight, 0.0, 0.02)
        nn.init.normal_(self.pos_emb.weight, 0.0, 0.02)
        self.levels = nn.ModuleList(
            AgentLevel(kind, n, C, cfg.mlp_width, cfg.n_heads, depth=shape.n_levels)
            for kind, n in zip(shape.kinds, shape.level_sizes())
        )
        self._register_topology(shape)
        self.last_gate_mass: torch.Tensor | None = None  # [n_agents] mean path weight of the last forward

    def _register_topology(self, shape: TreeShape) -> None:
        leaf = torch.tensor(shape.is_leaf())
        offs = shape.level_offsets()
        for lv, n in enumerate(shape.level_sizes()):
            self.register_buffer(f"parent_idx_{lv}", torch.tensor(shape.parent_index(lv)), persistent=False)
            self.register_buffer(f"leaf_{lv}", leaf[offs[lv]:offs[lv] + n].float(), persistent=False)

    # ---- parameter groups (used by the sparse optimizer and the signals) -----------------------
    def agent_levels(self) -> list[AgentLevel]:
        return list(self.levels)

    def shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Parameters every path uses (embeddings, final norm; the head is tied to tok_emb)."""
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("levels.")]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- forward ---------------------------------------------------------------------------------
    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, ablate: torch.Tensor | None = None):
        """`ablate` ([A] bool, flat order) removes those agents' contributions: an ablated agent passes its
        input through unchanged (its residual refinement is dropped), so its subtree still runs."""
        B, T = idx.shape
        if T > self.cfg.context:
            raise ValueError(f"sequence length {T} exceeds the model context {self.cfg.context}")
        pos = torch.arange(T, device=idx.device)
        h = self.tok_emb(idx) + self.pos_emb(pos)  # [B, T, C]
        keep = None if ablate is None else ~ablate.bool()
        h = self._tree(h, keep) if self.cfg.wiring == "tree" else self._levels(h, keep)
        logits = F.linear(self.ln_f(h), self.tok_emb.weight)  # tied head, [B, T, V]
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def _level_keep(self, keep: torch.Tensor | None, lv: int) -> torch.Tensor | None:
        if keep is None:
            return None
        off = self.shape.level_offsets()[lv]
        return keep[off:off + self.levels[lv].n_agents].view(-1, 1, 1, 1)

    def _run_level(self, lv: int, inp: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        y = self.levels[lv](inp)
        k = self._level_keep(keep, lv)
        return y if k is None else torch.where(k, y, inp)  # ablated: identity

    def _tree(self, h: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = h.shape
        prev_out = h.unsqueeze(0)  # [1, B, T, C]: the embedding is the root's "parent"
        prev_w = h.new_ones(1, B, T)  # path weight of each agent of the previous level
        out = torch.zeros_like(h)
        masses = []
        for lv, level in enumerate(self.levels):
            pidx = getattr(self, f"parent_idx_{lv}")
            inp = prev_out.index_select(0, pidx)  # [N, B, T, C] each agent reads its parent's output
            y = self._run_level(lv, inp, keep)
            if lv == 0:
                w = prev_w
            else:  # the parent scores its children: softmax over siblings of <norm(parent out), child key>
                scores = torch.einsum("nbtc,nc->nbt", F.layer_norm(inp, (C,)), level.gate_key) / math.sqrt(C)
                scores = scores + level.gate_bias.view(-1, 1, 1)
                w = prev_w.index_select(0, pidx) * _grouped_softmax(scores, pidx, prev_w.shape[0])
            out = out + torch.einsum("nbt,nbtc->btc", w * getattr(self, f"leaf_{lv}").view(-1, 1, 1), y)
            masses.append(w.detach().mean(dim=(1, 2)))
            prev_out, prev_w = y, w
        self.last_gate_mass = torch.cat(masses)
        return out

    @torch.no_grad()
    def gate_affinity(self, idx: torch.Tensor) -> dict[int, torch.Tensor]:
        """For each level l ≥ 2: [N_{l-1}, N_l], the mean gate score every agent of level l-1 would give
        every agent of level l (<norm(parent output), child key> + bias): where a child fits (reorganize)."""
        C = self.cfg.width
        prev = (self.tok_emb(idx) + self.pos_emb(torch.arange(idx.shape[1], device=idx.device))).unsqueeze(0)
        ys = []
        for lv, level in enumerate(self.levels):
            prev = level(prev.index_select(0, getattr(self, f"parent_idx_{lv}")))
            ys.append(prev)
        out = {}
        for lv in range(2, len(self.levels)):
            pooled = F.layer_norm(ys[lv - 1], (C,)).mean(dim=(1, 2))  # [N_{l-1}, C]: score is linear in it
            out[lv] = pooled @ self.levels[lv].gate_key.T / math.sqrt(C) + self.levels[lv].gate_bias
        return out

    def _levels(self, h: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        for lv, level in enumerate(self.levels):
            h = self._run_level(lv, h.unsqueeze(0).expand(level.n_agents, *h.shape), keep).mean(0)
        self.last_gate_mass = torch.cat([h.new_full((lv.n_agents,), 1.0 / lv.n_agents) for lv in self.levels])
        return h

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample continuation tokens (idx: [B, T]) with a sliding context window."""
        return sample(self, idx, max_new_tokens, temperature, top_k, generator)


def _grouped_softmax(scores: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Softmax of scores [N, B, T] within groups of siblings (group[i] = parent index of agent i)."""
    idx = group.view(-1, 1, 1).expand_as(scores)
    gmax = scores.new_full((n_groups, *scores.shape[1:]), -torch.inf)
    gmax = gmax.scatter_reduce(0, idx, scores.detach(), reduce="amax")  # per-group max for stability
    e = torch.exp(scores - gmax.index_select(0, group))
    denom = torch.zeros_like(gmax).index_add_(0, group, e)
    return e / denom.index_select(0, group)


@torch.no_grad()
def sample(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
           top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Autoregressive sampling shared by the tree and the dense baseline."""
    context = model.cfg.context
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -context:])
        logits = logits[:, -1, :] / max(temperature, 1e-6)
        if top_k:
            v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
            logits[logits < v[:, [-1]]] = -torch.inf
        nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
        idx = torch.cat([idx, nxt], dim=1)
    return idx
