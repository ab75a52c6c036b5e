"""Decoding K-1 models (`AgentTree`, `DenseGPT`) with a KV cache: a sequence's window of tokens over the
model's own cached forward (`model(idx, cache=...)`, the engine's `KVCache`).

K-1 models have learned absolute positions and a short context (64 by default). While the sequence fits,
a new token is computed once against the cached keys of every token before it. Once it does not, the
uncached sampler (`k1.engine.model.tree.sample`) re-reads the last `context` tokens at positions 0..context-1,
so every position shifts with each new token: the cache is rebuilt from that window, which is exactly the
uncached computation. Outputs equal the uncached ones (tests/pool/test_k1_cache.py); the speedup inside
the window is measured by `bench/kv_reuse.py`.
"""

from __future__ import annotations

import torch

from k1.engine.model.cache import KVCache
from k1.engine.model.tree import AgentTree
from k1.errors import BackendError


class K1Window:
    """The decode state of one sequence: all its tokens, and a cache valid while they fit the context.

    `feed(ids)` → logits [t, V], each exactly what `model(ids_so_far[-context:])[:, -1]` gives."""

    def __init__(self, model: AgentTree, cache: KVCache | None = None, ids: list[int] | None = None):
        if getattr(model.cfg, "routing", "soft") != "soft":
            raise BackendError("the K-1 KV cache supports soft-gated trees; this checkpoint routes tokens "
                               f"({model.cfg.routing}), which cached decoding does not implement yet")
        self.model, self.context = model, model.cfg.context
        self.cache = cache or model.new_cache()
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
        with torch.no_grad():
            logits = self.model(torch.tensor([new]), cache=self.cache)[0][0]
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
            self.cache = self.model.new_cache()
            rows.append(self._run(self.ids[-self.context:])[-1:])
            self.cache.length = -1  # a slid window's cache no longer matches self.ids: never extend it
        logits = torch.cat(rows)
        return logits[-1:] if last_only else logits
