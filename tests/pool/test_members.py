"""Members from pool files: K-1 run directories, Hugging Face folders, OpenAI-compatible servers (retries,
circuit breaker against a real closed port), and the errors bad specs give."""

import random
import time

import pytest

from k1.errors import CheckpointError, ConfigError
from k1.pool import CallFailed, load_member, load_pool
from k1.pool.members.openai import CircuitBreaker, OpenAIMember

from k1.pool.testing import free_port


def test_k1_member_from_run_generates_and_scores(k1_run):
    m = load_member({"name": "tiny-k1", "kind": "k1", "run": str(k1_run), "roles": ["student"]})
    g = m.generate("the river ", max_tokens=8, temperature=0.8, seed=1)
    assert g.member == "tiny-k1" and g.completion_tokens == 8 and g.cost.atp > 0 and g.cost.flops > 0
    assert m.generate("the river ", max_tokens=8, temperature=0.8, seed=1).text == g.text  # seeded
    s = m.score("the river ", "walked slowly")
    assert 0 < s.bits_per_byte < 20 and s.n_bytes == 13
    assert m.roles == ["student"] and m.info()["context"] == m.model.cfg.context


def test_trained_k1_member_predicts_its_domain_better_than_noise(k1_run):
    m = load_member({"name": "k", "kind": "k1", "run": str(k1_run)})
    # the tiny corpus's prose: a model trained on it must beat shuffled bytes of the same text
    text = "the river town old king walked slowly"
    chars = list(text)
    random.Random(0).shuffle(chars)
    shuffled = "".join(chars)
    assert m.score("the old ", text).bits_per_byte < m.score("the old ", shuffled).bits_per_byte


def test_bad_member_specs_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="kind"):
        load_member({"name": "x", "kind": "gpt5"})
    with pytest.raises(ConfigError, match="run"):
        load_member({"name": "x", "kind": "k1"})
    with pytest.raises(CheckpointError):
        load_member({"name": "x", "kind": "k1", "run": str(tmp_path / "nope")})


def test_load_pool_reads_every_kind(tmp_path, k1_run, hf_dir):
    f = tmp_path / "pool.toml"
    f.write_text(f'''
[pool]
budget_atp = 50
[[members]]
name = "k1"
kind = "k1"
run = "{k1_run}"
[[members]]
name = "tiny-hf"
kind = "hf"
path = "{hf_dir}"
roles = ["teacher"]
[[members]]
name = "remote"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
price_per_1k_tokens = 3.5
''')
    with load_pool(f) as pool:
        assert list(pool.members) == ["k1", "tiny-hf", "remote"]
        assert pool.config.pool.budget_atp == 50
        assert [m.name for m in pool.with_role("teacher")] == ["tiny-hf"]
        assert pool["tiny-hf"].generate("hi", max_tokens=3).completion_tokens == 3
        assert pool["remote"].price_per_1k_tokens == 3.5
        with pytest.raises(ConfigError, match="no member"):
            pool["nope"]


def test_pool_file_errors_name_the_field(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[[members]]\nname = "a"\nkind = "openai"\nbase_url = "http://x"\nprice_per_1k_tokens = -1\n'
                 '[[members]]\nname = "a"\nkind = "openai"\nbase_url = "http://x"\n')
    with pytest.raises(ConfigError, match="price_per_1k_tokens"):
        load_pool(f)
    f.write_text('[[members]]\nname = "a"\nkind = "openai"\nbase_url = "http://x"\n' * 2)
    with pytest.raises(ConfigError, match="unique"):
        load_pool(f)
    with pytest.raises(ConfigError, match="does not exist"):
        load_pool(tmp_path / "missing.toml")


def test_openai_member_retries_then_opens_the_breaker():
    port = free_port()  # nothing listens: every attempt is refused by a real socket
    m = OpenAIMember("remote", f"http://127.0.0.1:{port}/v1", retries=2, backoff_s=0.01, breaker_failures=2,
                     breaker_cooldown_s=60, timeout_s=2)
    for _ in range(2):
        with pytest.raises(CallFailed) as e:
            m.generate("hi")
        assert e.value.reason == "unavailable" and e.value.cost.atp == 0
    assert m.breaker.state == "open"
    t0 = time.perf_counter()
    with pytest.raises(CallFailed, match="circuit open"):
        m.generate("hi")
    assert time.perf_counter() - t0 < 0.05  # fails fast, without touching the network
    m.close()


def test_circuit_breaker_half_opens_after_cooldown():
    now = [0.0]
    b = CircuitBreaker(failures=2, cooldown_s=10, clock=lambda: now[0])
    b.failure()
    assert b.allow()
    b.failure()
    assert not b.allow() and b.state == "open"
    now[0] = 10.0
    assert b.state == "half-open" and b.allow()
    b.failure()  # the trial call failed: open again for a full cooldown
    assert not b.allow()
    now[0] = 20.0
    b.success()
    assert b.state == "closed" and b.count == 0
