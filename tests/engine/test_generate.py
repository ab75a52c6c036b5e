"""Sampling checked token by token, not only by its prefix: each new token is what the model's own logits
over the sliding window allow (greedy = argmax; top-k = one of the k most likely), past the context length."""

import torch

from k1.engine.model.shape import TreeShape
from k1.engine.model.tree import AgentTree, ModelConfig


def model():
    torch.manual_seed(0)
    return AgentTree(TreeShape.from_branching([2, 2]), ModelConfig(branching=[2, 2], width=32, mlp_width=64,
                                                                    n_heads=2, context=16), vocab_size=50).eval()


def test_greedy_tokens_are_the_argmax_of_the_sliding_window_beyond_the_context():
    m = model()
    prompt = torch.randint(0, 50, (2, 5))
    out = m.generate(prompt, 30, temperature=1e-8)  # 35 > context 16: the window slides
    assert out.shape == (2, 35) and torch.equal(out[:, :5], prompt)
    for t in range(5, 35):
        window = out[:, max(0, t - 16):t]
        with torch.no_grad():
            logits, _ = m(window)
        assert torch.equal(out[:, t], logits[:, -1].argmax(-1)), t


def test_top_k_samples_stay_within_the_k_most_likely_and_the_seed_decides():
    m = model()
    prompt = torch.randint(0, 50, (3, 4))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = m.generate(prompt, 20, temperature=1.0, top_k=3, generator=g1)
    b = m.generate(prompt, 20, temperature=1.0, top_k=3, generator=g2)
    assert torch.equal(a, b)
    for t in range(4, 24):
        with torch.no_grad():
            logits, _ = m(a[:, max(0, t - 16):t])
        top3 = logits[:, -1].topk(3).indices
        assert (top3 == a[:, t:t + 1]).any(1).all(), t
    c = m.generate(prompt, 20, temperature=1.0, top_k=3, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(a, c)
