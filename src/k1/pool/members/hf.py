"""`HFMember`: a Hugging Face causal LM (transformers) as a pool member, decoding with its KV cache."""

from __future__ import annotations

import copy
import inspect
from pathlib import Path

import torch

from k1.errors import BackendError
from k1.pool.members.base import Prompt, prompt_text
from k1.pool.members.local import DecodeSession, LocalMember


class HFSession(DecodeSession):
    """Feeds tokens through the model with `past_key_values` (positions follow the cache length)."""

    def __init__(self, member: "HFMember", past=None, ids: list[int] | None = None):
        self.member, self.past = member, past
        self.ids = list(ids or [])
        self.length = self.n_cached = len(self.ids)
        self.tokens_run = 0
        self.keys_attended = 0

    def snapshot(self):
        return (list(self.ids), self.past) if self.past is not None and self.ids else None

    def feed(self, ids: list[int], last_only: bool = False) -> torch.Tensor:
        m = self.member
        if m.max_positions and self.length + len(ids) > m.max_positions:
            raise BackendError(f"member {m.name!r}: {self.length + len(ids)} tokens exceed its "
                               f"{m.max_positions} positions; shorten the prompt")
        kw = {"logits_to_keep": 1} if last_only and m._keeps_logits else {}
        kw[m._cache_arg] = self.past
        out = m.model(input_ids=torch.tensor([ids], device=m.device), use_cache=True, **kw)
        self.past = getattr(out, m._cache_arg)
        self.tokens_run += len(ids)
        self.keys_attended += sum(self.length + i + 1 for i in range(len(ids)))
        self.length += len(ids)
        self.ids += ids
        logits = out.logits[0]  # [t, V]
        return logits[-1:] if last_only else logits


class HFMember(LocalMember):
    """A transformers causal LM and its tokenizer. Chat messages go through the tokenizer's chat template
    when it has one; a plain string is read as raw text (with the tokenizer's usual special tokens)."""

    kind = "hf"

    def __init__(self, model, tokenizer, name: str = "hf", roles=(), device: str = "cpu", prefix_cache: int = 8):
        super().__init__(name, roles)
        self.enable_prefix_cache(prefix_cache)
        self.model, self.tokenizer, self.device = model.eval().to(device), tokenizer, device
        cfg = model.config
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        C = text_cfg.hidden_size
        n_heads = text_cfg.num_attention_heads
        head_dim = getattr(text_cfg, "head_dim", None) or C // n_heads
        emb = model.get_input_embeddings().weight
        tied = model.get_output_embeddings() is not None and model.get_output_embeddings().weight is emb
        total = sum(p.numel() for p in model.parameters())
        # the input embedding is a lookup; a tied output head still multiplies by it once per token
        self.matmul_params = total - emb.numel() + (emb.numel() if tied else 0)
        self.attn_flops_per_key = 4 * text_cfg.num_hidden_layers * n_heads * head_dim
        self.max_positions = getattr(text_cfg, "max_position_embeddings", None)
        params = inspect.signature(model.forward).parameters
        self._keeps_logits = "logits_to_keep" in params
        self._cache_arg = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.x
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if tokenizer.eos_token_id is not None:
            eos.append(tokenizer.eos_token_id)
        self._eos = set(eos)

    @classmethod
    def from_pretrained(cls, path: str | Path, name: str | None = None, roles=(), *, gguf_file: str | None = None,
                        dtype: torch.dtype = torch.float32, device: str = "cpu") -> "HFMember":
        """Load from a local directory (or hub id, if online); `gguf_file` reads a GGUF checkpoint."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kw = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            tok = AutoTokenizer.from_pretrained(str(path), **kw)
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **kw)
        except (OSError, ValueError) as e:
            raise BackendError(f"could not load a Hugging Face model from {path} ({str(e).splitlines()[0]})") from None
        return cls(model, tok, name=name or Path(str(path)).name, roles=roles, device=device)

    @property
    def eos_ids(self) -> set[int]:
        return self._eos

    def render(self, prompt: Prompt) -> str:
        if isinstance(prompt, list) and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return prompt_text(prompt)

    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        text = self.render(prompt)
        templated = isinstance(prompt, list) and getattr(self.tokenizer, "chat_template", None)
        ids = self.tokenizer(text, add_special_tokens=not templated)["input_ids"]
        if not ids:
            raise BackendError(f"member {self.name!r}: the prompt is empty; give at least one character")
        return list(ids)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def new_session(self) -> HFSession:
        return HFSession(self)

    def resume_session(self, ids, state, n) -> HFSession | None:
        past = copy.deepcopy(state)  # the stored state stays as it was for the next reuse
        if n < past.get_seq_length():
            try:
                past.crop(n - past.get_seq_length())  # crop() takes a negative count of tokens to drop
            except (RuntimeError, ValueError):  # a sliding-window cache already past its window cannot be cut back
                return None
        return HFSession(self, past, ids[:n])

    def info(self) -> dict:
        return {**super().info(), "parameters": sum(p.numel() for p in self.model.parameters()),
                "max_positions": self.max_positions}

    def close(self) -> None:
        self.model = None
