"""Tiny pool fixtures shared by tests/pool and bench/: a byte-level Hugging Face tokenizer and a Llama model
built from a config (no download), and small K-1 members on the synthetic corpus."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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


def tiny_llama(seed: int = 0, layers: int = 2, hidden: int = 32, heads: int = 4, positions: int = 512,
               init: float = 0.02):
    """A randomly initialised LlamaForCausalLM over the byte tokenizer's 258 tokens (`init`: weight std;
    larger values give peaked, varied next-token distributions — a teacher with something to teach)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=258, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), max_position_embeddings=positions,
                      bos_token_id=256, eos_token_id=257, tie_word_embeddings=True,
                      initializer_range=init)
    return LlamaForCausalLM(cfg).eval()


def tiny_hf_member(name: str = "tiny-hf", seed: int = 0, roles=(), **shape):
    from k1.pool.members.hf import HFMember

    return HFMember(tiny_llama(seed, **shape), byte_hf_tokenizer(), name=name, roles=roles)


def serving_within(url: str, proc, timeout_s: float) -> bool:
    """Poll `url`/models until a `k1 pool serve` answers 200: True; False once `proc` exits or `timeout_s`
    passes (the caller says why, from the process's own log)."""
    import time

    import httpx

    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < timeout_s:
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return False


@contextmanager
def serve_http(handler) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering with `handler` (an `http.server.BaseHTTPRequestHandler` class)
    in a thread of its own; → its base URL, "http://127.0.0.1:PORT". Stopped and closed on exit."""
    import http.server
    import threading

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(proc, port: int, timeout_s: float = 300) -> None:
    """Wait until a `k1 pool serve` subprocess on `port` answers /v1/models (generous: a loaded 2-core machine);
    fails with its stderr if it exits first."""
    if not serving_within(f"http://127.0.0.1:{port}/v1", proc, timeout_s):
        assert proc.poll() is None, proc.stderr.read()
        raise AssertionError("server did not come up")


def train_tiny_llama(model, text: str, steps: int = 150, seq: int = 48, lr: float = 3e-3, seed: int = 0):
    """Fit a tiny Llama to `text` (byte tokens) for a few steps, so it answers with confidence."""
    import random

    g = random.Random(seed)
    tok = byte_hf_tokenizer()
    ids = torch.tensor(tok(text)["input_ids"])
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        starts = [g.randrange(len(ids) - seq - 1) for _ in range(8)]
        x = torch.stack([ids[s:s + seq] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def synthetic_text(n_bytes: int = 20_000, seed: int = 0) -> str:
    """The synthetic prose of `k1.testing` (learnable word patterns), as one string."""
    import random

    from k1.testing.tiny import _text

    return _text("prose", n_bytes, random.Random(seed))
