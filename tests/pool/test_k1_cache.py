"""The K-1 KV cache gives the uncached sampler's outputs, inside the context and across window slides."""

import pytest
import torch

from k1.engine.model.shape import TreeShape
from k1.engine.model.tree import AgentTree, ModelConfig
from k1.engine.model.baseline import DenseGPT
from k1.pool.kv.k1_cache import K1Window
from k1.pool.members.k1 import K1Member


def _model(wiring="tree", kinds="block", context=16, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(branching=[2, 2], kinds=kinds, wiring=wiring, width=16, mlp_width=32, n_heads=2, context=context)
    model = AgentTree(TreeShape.from_branching(cfg.branching, cfg.kinds), cfg, vocab_size=256).eval()
    for p in model.parameters():  # a trained-looking model: random gates, so the tree's mixing matters
        p.data.add_(torch.randn_like(p) * 0.05)
    return model


MODELS = {
    "tree": lambda: _model("tree"),
    "levels": lambda: _model("levels"),
    "mixed-kinds": lambda: _model("tree", kinds=["block", "mlp", "block"]),
    "dense": lambda: DenseGPT(ModelConfig(width=16, mlp_width=32, n_heads=2, context=16, branching=[2]), 256, n_layers=2).eval(),
}


@pytest.mark.parametrize("name", MODELS)
def test_feed_matches_uncached_forward_across_slides(name):
    model = MODELS[name]()
    ids = torch.randint(0, 256, (40,)).tolist()  # 40 > context 16: the window slides 24 times
    w = K1Window(model)
    got = torch.cat([w.feed(ids[:5]), w.feed(ids[5:9]), torch.cat([w.feed([t]) for t in ids[9:]])])
    with torch.no_grad():
        want = torch.stack([model(torch.tensor([ids[:i + 1][-16:]]))[0][0, -1] for i in range(len(ids))])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("temperature", [0.0, 0.9])
@pytest.mark.parametrize("name", ["tree", "dense"])
def test_cached_sampling_equals_model_generate(name, temperature):
    model = MODELS[name]()
    member = K1Member(model, _ByteTok(), name="m")
    prompt = "the river "
    gen = member.generate(prompt, max_tokens=30, temperature=temperature, seed=7)  # 10 + 30 > 16: slides
    prompt_ids = list(prompt.encode())
    if temperature == 0.0:
        ref_ids = _greedy(model, prompt_ids, 30)
    else:  # the engine's uncached sampler with the same seed draws the same tokens
        ref = model.generate(torch.tensor([prompt_ids]), 30, temperature, None, generator=torch.Generator().manual_seed(7))
        ref_ids = ref[0, len(prompt_ids):].tolist()
    assert gen.text == _ByteTok().decode(ref_ids)
    assert gen.completion_tokens == 30 and gen.finish_reason == "length"
    assert len(gen.token_logprobs) == 30 and all(lp <= 0 for lp in gen.token_logprobs)


def _greedy(model, ids, n):
    ids = list(ids)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids[-model.cfg.context:]]))[0][0, -1].argmax()))
    return ids[-n:]


def test_cache_computes_fewer_tokens_inside_the_window():
    model = MODELS["tree"]()
    member = K1Member(model, _ByteTok(), name="m")
    gen = member.generate("ab", max_tokens=10)  # 12 ≤ 16: never slides
    # 2 prompt tokens once + 9 fed tokens (the 10th is never fed back): 11 token positions computed
    assert gen.cost.flops == pytest.approx(2 * member.matmul_params * 11 + member.attn_flops_per_key * sum(range(1, 12)))


class _ByteTok:
    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")


def test_score_inside_the_context_equals_token_by_token_and_strides_past_it():
    import math

    model = MODELS["tree"]()  # context 16
    m = K1Member(model, _ByteTok(), name="m")
    prompt, cont = "ab", "cdefgh"  # 8 ≤ 16: one window
    ids = list((prompt + cont).encode())
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]]))[0][0]
    nll = torch.nn.functional.cross_entropy(logits[1:], torch.tensor(ids[2:]), reduction="sum").item()
    assert m.score(prompt, cont).bits_per_byte == pytest.approx(nll / math.log(2) / 6, rel=1e-5)
    long = m.score("the river ", "walked slowly across the old bridge to town")  # 53 tokens > 16
    assert long.n_tokens == 43 and 0 < long.bits_per_byte < 16
    # each token sees ≥ 7 tokens: the strided score is close to the exact sliding one on a smooth model
    exact = []
    seq = list("the river walked slowly across the old bridge to town".encode())
    with torch.no_grad():
        for t in range(10, len(seq)):
            lg = model(torch.tensor([seq[max(0, t - 16):t]]))[0][0, -1]
            exact.append(-torch.log_softmax(lg, -1)[seq[t]].item())
    assert long.bits_per_byte == pytest.approx(sum(exact) / math.log(2) / 43, rel=0.05)
