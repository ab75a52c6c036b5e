"""A KV cache for K-1 models (`AgentTree`, `DenseGPT`): the same forward as `AgentTree.forward`, one new
token at a time, with each attention agent's keys and values kept.

K-1 models have learned absolute positions and a short context (64 by default). While the sequence fits,
a new token is computed once against the cached keys of every token before it. Once it does not, the
uncached sampler (`k1.engine.model.tree.sample`) re-reads the last `context` tokens at positions 0..context-1,
so every position shifts with each new token: the cache is rebuilt from that window, which is exactly the
uncached computation. Outputs equal the uncached ones (tests/pool/test_k1_cache.py); the speedup inside
the window is measured by `bench/kv_reuse.py`.

Everything but attention is per token (gates score a token from its parent's output at that token), so
only attention needs a cache. Shapes: N agents in a level, B batch, t new tokens, T cached + new, C width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from k1.engine.model.tree import AgentTree, _grouped_softmax
from k1.errors import BackendError


class K1Cache:
    """Keys and values per level ([N·B, nh, T, hs], None for `mlp` levels) for positions 0..length-1."""

    def __init__(self, n_levels: int):
        self.k: list[torch.Tensor | None] = [None] * n_levels
        self.v: list[torch.Tensor | None] = [None] * n_levels
        self.length = 0

    def clone(self) -> "K1Cache":
        c = K1Cache(len(self.k))
        c.k = [None if t is None else t.clone() for t in self.k]
        c.v = [None if t is None else t.clone() for t in self.v]
        c.length = self.length
        return c

    def cropped(self, n: int) -> "K1Cache":
        """A copy holding positions 0..n-1 only."""
        c = K1Cache(len(self.k))
        c.k = [None if t is None else t[:, :, :n].clone() for t in self.k]
        c.v = [None if t is None else t[:, :, :n].clone() for t in self.v]
        c.length = n
        return c

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v if t is not None)


def _level_step(level, lv: int, x: torch.Tensor, cache: K1Cache) -> torch.Tensor:
    """x: [N, B, t, C] → [N, B, t, C]; appends this level's new keys/values to the cache."""
    if level.kind != "block":
        return x + level._mlp(x)
    N, B, t, C = x.shape
    nh = level.n_heads
    qkv = level._linear(level._norm(x, level.ln1_w, level.ln1_b), "qkv_w", level.qkv_b)  # [N, B, t, 3C]
    q, k, v = qkv.view(N * B, t, 3, nh, C // nh).permute(2, 0, 3, 1, 4)  # each [N·B, nh, t, hs]
    if cache.k[lv] is not None:
        k = torch.cat([cache.k[lv], k], dim=2)  # [N·B, nh, T, hs]
        v = torch.cat([cache.v[lv], v], dim=2)
    cache.k[lv], cache.v[lv] = k, v
    T = k.shape[2]
    # new token i sits at position T - t + i and may see keys 0..T - t + i (causal, offset by the cache)
    mask = None if t == 1 else torch.ones(t, T, dtype=torch.bool, device=x.device).tril(diagonal=T - t)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    x = x + level._linear(y.transpose(1, 2).reshape(N, B, t, C), "proj_w", level.proj_b)
    return x + level._mlp(x)


@torch.no_grad()
def forward_cached(model: AgentTree, idx: torch.Tensor, cache: K1Cache) -> torch.Tensor:
    """idx [B, t] at positions cache.length.. → logits [B, t, V]; the cache grows by t.

    Raises ValueError past the context: the caller slides the window and starts a new cache."""
    B, t = idx.shape
    p0 = cache.length
    if p0 + t > model.cfg.context:
        raise ValueError(f"positions {p0}..{p0 + t - 1} exceed the model context {model.cfg.context}")
    h = model.tok_emb(idx) + model.pos_emb(torch.arange(p0, p0 + t, device=idx.device))  # [B, t, C]
    if model.cfg.wiring == "tree":
        h = _tree(model, h, cache)
    else:
        for lv, level in enumerate(model.levels):
            h = _level_step(level, lv, h.unsqueeze(0).expand(level.n_agents, *h.shape), cache).mean(0)
    cache.length += t
    return F.linear(model.ln_f(h), model.tok_emb.weight)  # tied head, [B, t, V]


def _tree(model: AgentTree, h: torch.Tensor, cache: K1Cache) -> torch.Tensor:
    """`AgentTree._tree` over the new tokens only (see its docstring for the gating rule)."""
    C = h.shape[-1]
    prev_out, prev_w = h.unsqueeze(0), h.new_ones(1, *h.shape[:2])  # [1, B, t, C], [1, B, t]
    out = torch.zeros_like(h)
    for lv, level in enumerate(model.levels):
        pidx = getattr(model, f"parent_idx_{lv}")
        inp = prev_out.index_select(0, pidx)  # [N, B, t, C]
        y = _level_step(level, lv, inp, cache)
        if lv == 0:
            w = prev_w
        else:
            scores = torch.einsum("nbtc,nc->nbt", F.layer_norm(inp, (C,)), level.gate_key) / math.sqrt(C)
            scores = scores + level.gate_bias.view(-1, 1, 1)
            w = prev_w.index_select(0, pidx) * _grouped_softmax(scores, pidx, prev_w.shape[0])
        out = out + torch.einsum("nbt,nbtc->btc", w * getattr(model, f"leaf_{lv}").view(-1, 1, 1), y)
        prev_out, prev_w = y, w
    return out


class K1Window:
    """The decode state of one sequence: all its tokens, and a cache valid while they fit the context.

    `feed(ids)` → logits [t, V], each exactly what `model(ids_so_far[-context:])[:, -1]` gives."""

    def __init__(self, model: AgentTree, cache: K1Cache | None = None, ids: list[int] | None = None):
        if getattr(model.cfg, "routing", "soft") != "soft":
            raise BackendError("the K-1 KV cache supports soft-gated trees; this checkpoint routes tokens "
                               f"({model.cfg.routing}), which cached decoding does not implement yet")
        self.model, self.context = model, model.cfg.context
        self.cache = cache or K1Cache(len(model.levels))
        self.ids: list[int] = list(ids or [])
        self.tokens_run = 0
        self.keys_attended = 0
        assert self.cache.length == len(self.ids)

    @property
    def n_cached(self) -> int:
        """Tokens already in the cache (a session resumed from a prefix starts with some)."""
        return len(self.ids)

    def snapshot(self):
        """(ids, cache) to store for prefix reuse, or None once the window has slid (positions moved)."""
        return (list(self.ids), self.cache) if self.cache.length == len(self.ids) and self.ids else None

    def _run(self, new: list[int]) -> torch.Tensor:
        p0 = self.cache.length
        logits = forward_cached(self.model, torch.tensor([new]), self.cache)[0]
        self.tokens_run += len(new)
        self.keys_attended += sum(p0 + i + 1 for i in range(len(new)))
        return logits

    def feed(self, ids: list[int], last_only: bool = False) -> torch.Tensor:
        """Logits [t, V] for the new tokens (only the last row, [1, V], with `last_only`)."""
        valid = self.cache.length == len(self.ids)
        fit = max(0, min(len(ids), self.context - len(self.ids))) if valid else 0
        rows = []
        if fit:  # inside the window: only the new tokens are computed
            rows.append(self._run(ids[:fit]))
            self.ids += ids[:fit]
        rest = ids[fit:]
        if last_only and rest:  # only the final window matters
            self.ids += rest[:-1]
            rest = rest[-1:]
        for tok in rest:  # the window slides: positions shift, so re-read the last `context` tokens
            self.ids.append(tok)
            self.cache = K1Cache(len(self.model.levels))
            rows.append(self._run(self.ids[-self.context:])[-1:])
            self.cache.length = -1  # a slid window's cache no longer matches self.ids: never extend it
        logits = torch.cat(rows)
        return logits[-1:] if last_only else logits
