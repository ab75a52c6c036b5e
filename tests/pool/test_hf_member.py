"""`HFMember` on a tiny Llama built from a config: cached decoding equals transformers' own, scoring, cost."""

import math

import pytest
import torch

from k1.errors import BackendError
from k1.pool.testing import tiny_hf_member


@pytest.fixture(scope="module")
def member():
    return tiny_hf_member(layers=2, hidden=32)


def test_greedy_equals_transformers_generate(member):
    gen = member.generate("hello world", max_tokens=12)
    ids = member.tokenizer("hello world")["input_ids"]
    with torch.no_grad():
        ref = member.model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                                    pad_token_id=257)
    assert gen.text == member.decode(ref[0, len(ids):].tolist())
    assert gen.prompt_tokens == len(ids) == 11  # the byte tokenizer adds no <s>
    assert gen.completion_tokens == 12 and gen.finish_reason == "length"


def test_stream_deltas_join_to_the_generation(member):
    deltas = list(member.stream("abc", max_tokens=10, temperature=1.0, seed=3))
    assert "".join(deltas) == member.last_generation.text
    assert member.generate("abc", max_tokens=10, temperature=1.0, seed=3).text == member.last_generation.text


def test_cancelled_stream_records_its_cost(member):
    it = member.stream("abc", max_tokens=50, temperature=1.0, seed=1)
    next(it)
    it.close()
    g = member.last_generation
    assert g.finish_reason == "cancelled" and 0 < g.completion_tokens < 50 and g.cost.flops > 0


def test_score_is_bits_per_byte_of_the_continuation(member):
    s = member.score("the cat ", "sat down")
    ids = member.tokenizer("the cat ")["input_ids"]
    cont = member.encode("sat down")
    with torch.no_grad():
        logits = member.model(torch.tensor([ids + cont])).logits[0]
    nll = torch.nn.functional.cross_entropy(logits[len(ids) - 1:-1], torch.tensor(cont), reduction="sum").item()
    assert s.bits_per_byte == pytest.approx(nll / math.log(2) / 8, rel=1e-4)
    assert s.n_bytes == 8 and s.n_tokens == 8 and s.cost.atp > 0


def test_chat_messages_use_the_chat_template(member):
    msgs = [{"role": "user", "content": "hi"}]
    assert member.render(msgs) == "<|user|>hi\n<|assistant|>"
    assert member.generate(msgs, max_tokens=3).prompt_tokens == len("<|user|>hi\n<|assistant|>")


def test_stop_string_cuts_the_answer():
    m = tiny_hf_member(seed=1)
    free = m.generate("xyz", max_tokens=20).text
    stop = free[5:7]
    cut = m.generate("xyz", max_tokens=20, stop=[stop])
    assert cut.text == free[:free.index(stop)] and cut.finish_reason == "stop"
    assert "".join(m.stream("xyz", max_tokens=20, stop=[stop])) == cut.text


def test_cost_counts_flops_from_shapes(member):
    g = member.generate("ab", max_tokens=4)  # 2 prompt tokens + 3 fed back (the 4th is never fed)
    n = sum(p.numel() for p in member.model.parameters())  # tied: the embedding counted once, as the head
    assert member.matmul_params == n
    assert g.cost.flops == 2 * n * 5 + member.attn_flops_per_key * sum(range(1, 6))
    assert g.cost.atp == pytest.approx(g.cost.flops / 1e9)
    assert g.cost.latency_s > 0


def test_empty_prompt_is_a_backend_error():
    m = tiny_hf_member()
    m.tokenizer.add_bos_token = False
    with pytest.raises(BackendError):
        m.score("x", "")
