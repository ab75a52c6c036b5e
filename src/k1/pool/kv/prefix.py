"""`PrefixCache`: KV states of recent token sequences, so a conversation's next turn only computes its new tokens.

Entries are keyed by a hash of their token sequence (a repeated sequence replaces its entry; least recently
used entries go first). A lookup finds the entry sharing the longest token prefix with the new prompt and
resumes from a copy of its state cut to that prefix; at least one token is always computed, so the last
prompt position's logits come from the model. Positions follow the prefix length and the causal mask is
the model's own, so outputs equal an uncached run (bench/kv_reuse.py checks it on a multi-turn workload).

Every entry carries a salt (vLLM's `cache_salt`): a lookup only resumes from entries stored under the same
salt. The router salts with the tenant's name, so no tenant's call ever resumes from another tenant's prompt —
otherwise a call's measured cost (fewer FLOPs for a reused prefix) and latency would tell a guess of another
user's prompt from a wrong guess, one token at a time.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


def common_prefix(a: tuple[int, ...], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    def __init__(self, size: int = 8):
        self.size = size
        self.entries: OrderedDict[tuple, tuple[tuple[int, ...], Any, str]] = OrderedDict()
        self.hits = self.misses = self.reused_tokens = 0

    def lookup(self, ids: list[int], salt: str = "") -> tuple[int, Any]:
        """→ (tokens reusable, the stored state they come from) among entries of this salt; (0, None) on a miss."""
        best, state, key = 0, None, None
        for k, (seq, st, s) in self.entries.items():
            if s != salt:
                continue
            n = min(common_prefix(seq, ids), len(ids) - 1)
            if n > best:
                best, state, key = n, st, k
        if key is None:
            self.misses += 1
            return 0, None
        self.entries.move_to_end(key)
        self.hits += 1
        self.reused_tokens += best
        return best, state

    def store(self, ids: list[int], state: Any, salt: str = "") -> None:
        if self.size <= 0 or not ids:
            return
        key = (salt, tuple(ids))
        self.entries[key] = (tuple(ids), state, salt)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def clear(self) -> None:
        self.entries.clear()
