"""`LocalMember`: the token loop shared by members whose weights run in this process (K-1, Hugging Face).

A subclass supplies a tokenizer (`encode`/`decode`, `eos_ids`), a `DecodeSession` that feeds tokens through
the model with its KV cache, and its shapes (`matmul_params`, `attn_flops_per_key`). This file owns
sampling, stop strings, streaming, scoring and the measured cost, so both kinds behave the same.

FLOPs are counted, not typed in (Kaplan et al. 2020): a token run through the model costs
2 × (parameters in matrix multiplies) plus, per attention layer, 4 × width × (keys it attends to).
"""

from __future__ import annotations

import math
import random
import time
from abc import abstractmethod
from typing import Iterator

import torch
import torch.nn.functional as F

from k1.errors import BackendError
from k1.pool.members.base import FLOPS_PER_ATP, Cost, Generation, Member, Prompt, Score, StopScanner, prompt_text


class DecodeSession:
    """Feeds tokens through a model, keeping its KV cache; counts the compute it spends.

    `feed(ids, last_only=False)` → logits [t, V] for the t new tokens, each conditioned on everything fed
    before ([1, V], the last row only, with `last_only`: a member may then skip work).
    `tokens_run` counts token positions computed; `keys_attended` sums, over them, the keys each one attended.
    """

    tokens_run: int = 0
    keys_attended: int = 0
    n_cached: int = 0  # tokens already in the cache when the session started (a reused prefix)

    @abstractmethod
    def feed(self, ids: list[int], last_only: bool = False) -> torch.Tensor: ...

    def snapshot(self):
        """(ids so far, KV state) for the prefix cache, or None when the state cannot be reused."""
        return None


class LocalMember(Member):
    is_local = True
    supports_score = True
    matmul_params: int = 0  # parameters used in a matrix multiply per token (embedding lookups excluded)
    attn_flops_per_key: int = 0  # 4 × width × attention layers: FLOPs per (token, attended key)
    max_positions: int | None = None  # absolute limit on prompt + answer (None: the member slides its window)
    prefix_cache = None  # a `PrefixCache` when reuse is on (`enable_prefix_cache`)
    cache_salt = ""  # whose prefixes this call may reuse (the router sets the tenant's, holding the member's gate)

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def decode(self, ids: list[int]) -> str: ...

    @property
    def eos_ids(self) -> set[int]:
        return set()

    @abstractmethod
    def new_session(self) -> DecodeSession:
        """A decode session with an empty cache."""

    def resume_session(self, ids: list[int], state, n: int) -> DecodeSession | None:
        """A session whose cache holds `ids[:n]`, copied from a stored `state` (prefix reuse); None where the
        stored state cannot be cut back to `n` tokens (then the prompt is read afresh)."""
        raise NotImplementedError

    def session(self, prompt_ids: list[int]) -> DecodeSession:
        """A decode session for `prompt_ids`, resumed from the longest cached prefix when there is one."""
        if self.prefix_cache is not None:
            n, state = self.prefix_cache.lookup(prompt_ids, self.cache_salt)
            if n:
                resumed = self.resume_session(prompt_ids, state, n)
                if resumed is not None:
                    return resumed
        return self.new_session()

    def remember(self, s: DecodeSession) -> None:
        if self.prefix_cache is not None:
            snap = s.snapshot()
            if snap is not None:
                self.prefix_cache.store(*snap, salt=self.cache_salt)

    def enable_prefix_cache(self, size: int = 8) -> None:
        """Keep KV states of the last `size` sequences (0 turns reuse off)."""
        from k1.pool.kv.prefix import PrefixCache

        self.prefix_cache = PrefixCache(size) if size > 0 else None

    def render(self, prompt: Prompt) -> str:
        """The text the model reads for `prompt` (chat members override this with their chat template)."""
        return prompt_text(prompt)

    def flops(self, s: DecodeSession) -> float:
        return 2.0 * self.matmul_params * s.tokens_run + float(self.attn_flops_per_key) * s.keys_attended

    def estimate_cost(self, prompt_tokens: int, max_tokens: int) -> float:
        n = prompt_tokens + max_tokens
        return (2.0 * self.matmul_params * n + self.attn_flops_per_key * n * (n + 1) / 2) / FLOPS_PER_ATP

    def _cost(self, s: DecodeSession, t0: float) -> Cost:
        f = self.flops(s)
        return Cost(flops=f, latency_s=time.perf_counter() - t0, atp=f / FLOPS_PER_ATP)

    def prompt_tokens(self, prompt: Prompt) -> int:
        return len(self.encode(self.render(prompt)))

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """The token ids this member reads for `prompt` (public: DREAM and the loop build training examples)."""
        return self._prompt_ids(prompt)

    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        ids = self.encode(self.render(prompt))
        if not ids:
            raise BackendError(f"member {self.name!r}: the prompt is empty; give at least one character")
        return ids

    @torch.no_grad()
    def stream(self, prompt: Prompt, *, max_tokens: int = 64, temperature: float = 0.0,
               stop: list[str] | None = None, seed: int | None = None) -> Iterator[str]:
        t0 = time.perf_counter()
        ids = self._prompt_ids(prompt)
        s = self.session(ids)
        gen = torch.Generator().manual_seed(seed if seed is not None else random.getrandbits(63))
        scanner = StopScanner(list(stop or []))
        out: list[int] = []
        logprobs: list[float] = []
        entropies: list[float] = []
        emitted, text, finish = "", "", "length"

        def record(reason: str) -> None:
            self.last_generation = Generation(text=text, member=self.name, prompt_tokens=len(ids),
                                              completion_tokens=len(out), cost=self._cost(s, t0),
                                              finish_reason=reason, token_logprobs=logprobs,
                                              token_entropies=entropies)

        reason = "cancelled"  # unless the loop below finishes: a close at any yield is a cancellation
        try:
            logits = s.feed(ids[s.n_cached:], last_only=True)[-1] if max_tokens > 0 else None
            for _ in range(max_tokens):
                tok = pick_token(logits, temperature, gen)
                if tok in self.eos_ids:
                    finish = "stop"
                    break
                out.append(tok)
                logp = F.log_softmax(logits.float(), dim=-1)
                logprobs.append(float(logp[tok]))
                entropies.append(float(-(logp.exp() * logp).sum()) / math.log(logp.numel()))
                text, hit = scanner.cut(self.decode(out))
                if hit:
                    finish = "stop"
                    break
                safe = scanner.safe_prefix(text)
                if len(safe) > len(emitted) and safe.startswith(emitted):
                    delta, emitted = safe[len(emitted):], safe
                    yield delta
                if self.max_positions and len(ids) + len(out) >= self.max_positions:
                    break  # out of positions: finish as "length"
                if len(out) < max_tokens:
                    logits = s.feed([tok])[-1]
            self.remember(s)
            if text.startswith(emitted) and len(text) > len(emitted):
                yield text[len(emitted):]  # a close here is still a cancellation, charged what was computed
            reason = finish
        finally:  # every way out (finished, closed at any yield, raised) records what this call computed
            record(reason)

    @torch.no_grad()
    def score(self, prompt: Prompt, continuation: str) -> Score:
        t0 = time.perf_counter()
        ids, cont = self._prompt_ids(prompt), self.encode(continuation)
        n_bytes = len(continuation.encode("utf-8"))
        if not cont or not n_bytes:
            raise BackendError(f"member {self.name!r}: nothing to score; the continuation is empty")
        s = self.session(ids)
        first = s.feed(ids[s.n_cached:], last_only=True)
        logits = torch.cat([first, s.feed(cont[:-1])]) if len(cont) > 1 else first
        nll = F.cross_entropy(logits.float(), torch.tensor(cont), reduction="sum").item()  # nats
        return Score(bits_per_byte=nll / math.log(2) / n_bytes, n_bytes=n_bytes, n_tokens=len(cont),
                     cost=self._cost(s, t0))


def pick_token(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> int:
    """Greedy at temperature 0, else one multinomial draw — the same draw as `k1.engine.model.tree.sample`, so a
    seeded cached run reproduces the uncached sampler token for token."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = F.softmax(logits.float().unsqueeze(0) / max(temperature, 1e-6), dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))
