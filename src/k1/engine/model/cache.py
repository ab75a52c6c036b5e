"""`KVCache`: the keys and values of every attention level for positions 0..length-1, so that decoding
computes only the new tokens (`AgentTree.forward(idx, cache=cache)`).

Everything but attention is per token (gates score a token from its parent's output at that token), so
attention is all that needs a cache. One slot per level ([N·B, heads, T, head size]; empty for `mlp`
levels)."""

from __future__ import annotations

import torch


class LevelKV:
    """One level's cached keys and values; `extend` appends the new positions and returns them all."""

    def __init__(self, k: torch.Tensor | None = None, v: torch.Tensor | None = None):
        self.k, self.v = k, v

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.k is not None:
            k, v = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
        self.k, self.v = k, v
        return k, v

    def cut(self, n: int) -> "LevelKV":
        """A copy holding the first `n` positions."""
        return LevelKV(None if self.k is None else self.k[:, :, :n].clone(),
                       None if self.v is None else self.v[:, :, :n].clone())


class KVCache:
    """Positions 0..length-1 of one sequence batch, per level."""

    def __init__(self, n_levels: int):
        self.levels = [LevelKV() for _ in range(n_levels)]
        self.length = 0

    def cropped(self, n: int) -> "KVCache":
        """A copy holding positions 0..n-1 only (a shared prefix)."""
        c = KVCache(0)
        c.levels, c.length = [lv.cut(n) for lv in self.levels], n
        return c

    def clone(self) -> "KVCache":
        return self.cropped(self.length)
