"""`K1Member`: a trained K-1 checkpoint (a run directory) as a pool member, sampling with a KV cache."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from k1.errors import BackendError, CheckpointError
from k1.pool.kv.k1_cache import K1Window
from k1.pool.members.base import FLOPS_PER_ATP, Cost, Score
from k1.pool.members.local import LocalMember


class K1Member(LocalMember):
    """A K-1 model (`AgentTree` or `DenseGPT`) with its tokenizer. Every agent runs on every token, so
    the FLOPs count all agents; generation slides the model's short context like `k1 generate` does. A tree has
    no end-of-text token: `stop` strings (the pool file's `stop`) end every answer, besides a caller's own."""

    kind = "k1"

    def __init__(self, model, tokenizer, name: str = "k1", roles=(), run_dir: Path | None = None,
                 prefix_cache: int = 8, stop=()):
        super().__init__(name, roles)
        self.stop = list(stop)
        self.enable_prefix_cache(prefix_cache)
        self.model, self.tokenizer, self.run_dir = model.eval(), tokenizer, run_dir
        self.context = model.cfg.context
        C, V = model.cfg.width, model.vocab_size
        agents = sum(p.numel() for lv in model.levels for p in lv.parameters())
        self.matmul_params = agents + V * C  # every agent's matrices (gates, norms: small extras) + the tied head
        n_attn = sum(lv.n_agents for lv in model.levels if lv.kind == "block")
        self.attn_flops_per_key = 4 * C * n_attn

    @classmethod
    def from_run(cls, run_dir: str | Path, name: str | None = None, roles=(), stop=()) -> "K1Member":
        from k1.engine.run.generate import load_run_model

        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise CheckpointError(f"K-1 member: {run_dir} is not a directory; give a k1 run directory")
        model, tok, cfg = load_run_model(run_dir)
        return cls(model, tok, name=name or cfg.name or run_dir.name, roles=roles, run_dir=run_dir, stop=stop)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def new_session(self) -> K1Window:
        return K1Window(self.model)

    def resume_session(self, ids, state, n) -> K1Window:
        return K1Window(self.model, cache=state.cropped(n), ids=ids[:n])

    def stream(self, prompt, *, stop: list[str] | None = None, **options):
        return super().stream(prompt, stop=[*self.stop, *(stop or [])], **options)

    @torch.no_grad()
    def score(self, prompt, continuation: str) -> Score:
        """Bits per byte, read in windows of `context` tokens that advance by half a context: every scored
        token sees at least context/2 − 1 tokens before it. Inside one context this is exactly the
        token-by-token score; past it, it costs two forwards per context instead of one per token (the
        sliding window of generation would re-read the whole window for every token)."""
        t0 = time.perf_counter()
        ids, cont = self._prompt_ids(prompt), self.encode(continuation)
        n_bytes = len(continuation.encode("utf-8"))
        if not cont or not n_bytes:
            raise BackendError(f"member {self.name!r}: nothing to score; the continuation is empty")
        seq, ctx = ids + cont, self.context
        stride = max(1, ctx // 2)
        nll, pos, run, keys = 0.0, len(ids), 0, 0
        while pos < len(seq):
            end = min(pos + stride, len(seq)) if len(seq) > ctx else len(seq)
            lo = max(0, end - ctx)
            window = seq[lo:end - 1]  # inputs; they predict seq[lo + 1:end]
            logits = self.model(torch.tensor([window]))[0][0]  # [len(window), V]
            run, keys = run + len(window), keys + len(window) * (len(window) + 1) // 2
            targets = torch.tensor(seq[pos:end])
            nll += F.cross_entropy(logits[pos - 1 - lo:].float(), targets, reduction="sum").item()
            pos = end
        flops = 2.0 * self.matmul_params * run + float(self.attn_flops_per_key) * keys
        cost = Cost(flops=flops, latency_s=time.perf_counter() - t0, atp=flops / FLOPS_PER_ATP)
        return Score(bits_per_byte=nll / math.log(2) / n_bytes, n_bytes=n_bytes, n_tokens=len(cont), cost=cost)

    def info(self) -> dict:
        return {**super().info(), "context": self.context, "stop": self.stop, "parameters": self.model.num_parameters(),
                "run_dir": str(self.run_dir) if self.run_dir else None}

    def close(self) -> None:
        self.model = None
