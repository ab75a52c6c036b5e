"""KV prefix reuse: a conversation's next turn computes only its new tokens, and answers exactly as without reuse."""

import pytest

from k1.pool.kv.prefix import PrefixCache, common_prefix
from k1.pool.members.k1 import K1Member
from k1.pool.testing import tiny_hf_member


def _conversation(member, turns, max_tokens=8):
    msgs, answers, computed = [], [], []
    for t in turns:
        msgs.append({"role": "user", "content": t})
        g = member.generate(list(msgs), max_tokens=max_tokens)
        msgs.append({"role": "assistant", "content": g.text})
        answers.append(g.text)
        computed.append(g.cost.flops)
    return answers, computed


TURNS = ["hello there", "tell me more", "and then?", "thanks"]


def test_hf_multi_turn_reuse_gives_the_same_answers_for_less_compute():
    reuse = tiny_hf_member("a", seed=4, hidden=64, init=0.1)
    plain = tiny_hf_member("a", seed=4, hidden=64, init=0.1)
    plain.enable_prefix_cache(0)
    got, flops_reuse = _conversation(reuse, TURNS)
    want, flops_plain = _conversation(plain, TURNS)
    assert got == want
    assert flops_reuse[0] == flops_plain[0]  # nothing to reuse on the first turn
    assert all(r < p for r, p in zip(flops_reuse[1:], flops_plain[1:]))
    assert reuse.prefix_cache.hits == 3 and reuse.prefix_cache.reused_tokens > 0


def test_k1_reuse_inside_the_context(k1_run):
    from k1.engine.run.generate import load_run_model

    model, tok, _ = load_run_model(k1_run)
    reuse, plain = K1Member(model, tok, "k"), K1Member(model, tok, "k", prefix_cache=0)
    p1 = "the king "
    g1 = reuse.generate(p1, max_tokens=6)
    p2 = p1 + g1.text + " and"
    assert reuse.generate(p2, max_tokens=6).text == plain.generate(p2, max_tokens=6).text
    assert reuse.prefix_cache.hits == 1


def test_scores_equal_with_and_without_a_reused_prefix():
    m = tiny_hf_member("a", seed=5, init=0.1)
    cold = m.score("the cat sat", " on the mat").bits_per_byte
    m.generate("the cat sat", max_tokens=4)  # leaves the prompt's state in the cache
    warm = m.score("the cat sat", " on the mat")
    assert m.prefix_cache.hits >= 1
    assert warm.bits_per_byte == pytest.approx(cold, rel=1e-5)


def test_prefix_cache_lookup_and_eviction():
    c = PrefixCache(size=2)
    c.store([1, 2, 3], "a")
    c.store([1, 2, 9, 9], "b")
    assert c.lookup([1, 2, 9, 9, 5]) == (4, "b")
    assert c.lookup([1, 2, 3]) == (2, "a")  # always leave one token to compute
    assert c.lookup([7]) == (0, None)
    c.store([5], "c")  # evicts the least recently used ("b" was used after "a", then "a" again)
    assert c.lookup([1, 2, 9, 9, 5])[1] == "a"
    assert common_prefix((1, 2, 3), [1, 2, 4]) == 2
