"""The default pool with the real SmolLM2 (slow: converts the GGUF once, ~30-60 s on 2 cores)."""

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from k1.pool.default import smollm2_member
    return smollm2_member()


def test_smollm2_answers_a_question(smollm2):
    g = smollm2.generate([{"role": "user", "content": "What is the capital of France?"}], max_tokens=12)
    assert "paris" in g.text.lower()
    n = sum(p.numel() for p in smollm2.model.parameters())
    assert 134e6 < n < 135e6  # 134.5 M parameters
    assert g.cost.flops > 2 * 100e6 * g.prompt_tokens  # measured from its shapes


def test_student_is_a_degraded_copy_sharing_the_tokenizer(smollm2):
    from k1.pool.default import student_member
    from k1.pool.learn.dream import same_tokenizer

    student = student_member(6)
    assert student.name == "smollm2-6l" and same_tokenizer(smollm2, student)
    assert student.model.config.num_hidden_layers == 6
    q, a = "The capital of France is", " Paris, a city on the Seine."
    assert student.score(q, a).bits_per_byte > smollm2.score(q, a).bits_per_byte
    assert student.estimate_cost(32, 8) < smollm2.estimate_cost(32, 8) / 2


def test_default_pool_file_lists_every_member():
    from k1.pool.config import read_pool_config
    from k1.pool.default import default_pool_file

    cfg = read_pool_config(default_pool_file(quiet=True))
    assert [m.name for m in cfg.members] == ["smollm2", "smollm2-15l", "smollm2-6l"]
    assert cfg.pool.selection == "greedy" and all(m.kind == "hf" for m in cfg.members)  # nothing trained on first use
