"""Tiny pool fixtures shared by tests/pool and bench/: a byte-level Hugging Face tokenizer and a Llama model
built from a config (no download), and small K-1 members on the synthetic corpus."""

from __future__ import annotations

import torch

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def byte_hf_tokenizer():
    """A real `PreTrainedTokenizerFast`: 256 byte-level tokens + <s> (256) and </s> (257), no merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab.update({"<s>": 256, "</s>": 257})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llama(seed: int = 0, layers: int = 2, hidden: int = 32, heads: int = 4):
    """A randomly initialised LlamaForCausalLM over the byte tokenizer's 258 tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=258, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), max_position_embeddings=512,
                      bos_token_id=256, eos_token_id=257, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def tiny_hf_member(name: str = "tiny-hf", seed: int = 0, roles=(), **shape):
    from k1.pool.members.hf import HFMember

    return HFMember(tiny_llama(seed, **shape), byte_hf_tokenizer(), name=name, roles=roles)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
