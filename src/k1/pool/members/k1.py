"""`K1Member`: a trained K-1 checkpoint (a run directory) as a pool member, sampling with a KV cache."""

from __future__ import annotations

from pathlib import Path

from k1.errors import CheckpointError
from k1.pool.kv.k1_cache import K1Window
from k1.pool.members.local import LocalMember


class K1Member(LocalMember):
    """A K-1 model (`AgentTree` or `DenseGPT`) with its tokenizer. Every agent runs on every token, so
    the FLOPs count all agents; generation slides the model's short context like `k1 generate` does."""

    kind = "k1"

    def __init__(self, model, tokenizer, name: str = "k1", roles=(), run_dir: Path | None = None):
        super().__init__(name, roles)
        self.model, self.tokenizer, self.run_dir = model.eval(), tokenizer, run_dir
        self.context = model.cfg.context
        C, V = model.cfg.width, model.vocab_size
        agents = sum(p.numel() for lv in model.levels for p in lv.parameters())
        self.matmul_params = agents + V * C  # every agent's matrices (gates, norms: small extras) + the tied head
        n_attn = sum(lv.n_agents for lv in model.levels if lv.kind == "block")
        self.attn_flops_per_key = 4 * C * n_attn

    @classmethod
    def from_run(cls, run_dir: str | Path, name: str | None = None, roles=()) -> "K1Member":
        from k1.engine.generate import load_run_model

        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise CheckpointError(f"K-1 member: {run_dir} is not a directory; give a k1 run directory")
        model, tok, cfg = load_run_model(run_dir)
        return cls(model, tok, name=name or cfg.name or run_dir.name, roles=roles, run_dir=run_dir)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def session(self, prompt_ids=None) -> K1Window:
        return K1Window(self.model)

    def info(self) -> dict:
        return {**super().info(), "context": self.context, "parameters": self.model.num_parameters(),
                "run_dir": str(self.run_dir) if self.run_dir else None}

    def close(self) -> None:
        self.model = None
