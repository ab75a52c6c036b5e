"""DREAM on tiny models: logit KD (shared tokenizer) and sequence KD (different tokenizers) make the student
closer to the teacher on held-out experiences; trust, weights and the replayed cost follow."""

import pytest

from k1.errors import BackendError
from k1.pool.config import PoolSettings
from k1.pool.learn.dream import dream, same_tokenizer
from k1.pool.members.k1 import K1Member
from k1.pool.pool import Pool
from k1.pool.route.router import Router
from k1.pool.session import open_router
from k1.pool.store import PoolStore
from k1.pool.testing import tiny_hf_member

PROMPTS = [f"{w} {i}" for i, w in enumerate("alpha beta gamma delta epsilon zeta eta theta".split())]


def _used_router(tmp_path, members, prompts, **settings):
    r = Router(Pool(members, PoolSettings(seed=0, **settings)), PoolStore(tmp_path / "p.sqlite"))
    for p in prompts:
        r.generate(p, model=members[1].name, max_tokens=4)
    return r


def test_logit_distillation_moves_the_student_to_the_teacher(tmp_path, trained_teacher, prose_prompts):
    student = tiny_hf_member("student", seed=2, hidden=32, layers=1, roles=["student"])
    assert same_tokenizer(trained_teacher, student)
    r = _used_router(tmp_path, [trained_teacher, student], prose_prompts)
    rep = dream(r, k=16, holdout=0.25, epochs=6, lr=3e-3, max_tokens=16)
    assert rep["method"] == "logit-kd" and rep["teacher"] == "teacher" and rep["student"] == "student"
    assert rep["held_out"] == 4 and rep["train"] == 12
    # held-out: the student now predicts the teacher's answers much better, and agrees with it more often
    assert rep["after"]["bits_per_byte"] < rep["before"]["bits_per_byte"] - 1.0
    assert rep["after"]["agreement"] > rep["before"]["agreement"]
    assert rep["last_loss"] < rep["first_loss"]
    # the student's trust was updated from the measurement, and the teacher's calls were charged
    assert any(m == "student" for (m, _c) in r.store.trust())
    # trust from the held-out prompts the replay does not reuse: one outcome per trust prompt
    assert rep["trust_prompts"] == rep["replay_prompts"] == 2 and rep["held_out"] == 4
    assert [o["source"] for o in r.store.outcome_history()].count("dream") == rep["trust_prompts"]
    assert sum(1 for row in r.store.ledger() if row["context"] == "dream") == rep["experiences"]
    assert rep["replay_before"]["calls"] == rep["replay_after"]["calls"] == rep["replay_prompts"]
    assert [s["to_state"] for s in r.store.state_log()][-2:] == ["DREAM", "WAKE"]
    # the weights persist: a new router over the same store applies them to a fresh student
    fresh = tiny_hf_member("student", seed=2, hidden=32, layers=1)
    r2 = open_router(Pool([trained_teacher, fresh], PoolSettings(seed=0)), PoolStore(tmp_path / "p.sqlite"))
    assert r2.consolidated == ["student"]
    assert fresh.score("the king", " walked").bits_per_byte == pytest.approx(student.score("the king", " walked").bits_per_byte)


def test_sequence_distillation_across_tokenizers(tmp_path, k1_run, trained_teacher, prose_prompts):
    student = K1Member.from_run(k1_run, name="k1-student", roles=["student"])
    assert not same_tokenizer(trained_teacher, student)
    r = _used_router(tmp_path, [trained_teacher, student], prose_prompts)
    rep = dream(r, k=16, epochs=4, lr=1e-3, max_tokens=16,
                verifier=lambda prompt, answer: float(len(answer) > 0))
    assert rep["method"] == "sequence-kd" and rep["temperature"] is None
    assert rep["after"]["bits_per_byte"] < rep["before"]["bits_per_byte"]
    assert rep["after"]["verifier_success"] is not None


def test_dream_needs_experiences_and_a_trainable_student(tmp_path):
    r = Router(Pool([tiny_hf_member("a")], PoolSettings()), PoolStore(tmp_path / "p.sqlite"))
    with pytest.raises(BackendError, match="at least 4"):
        dream(r)
    for p in PROMPTS[:4]:
        r.generate(p, max_tokens=2)
    with pytest.raises(BackendError, match="student"):
        dream(r)


def test_training_forgets_the_students_cached_states(trained_teacher, prose_prompts):
    """Found on SmolLM2: after training, the student resumed from KV states its old weights had cached (every
    chat prompt shares the template's header), so DREAM's after-measurement was not the trained student's."""
    import random

    from k1.pool.learn.dream import distill

    student = tiny_hf_member("student", seed=2, hidden=32, layers=1)
    prompt, answer = prose_prompts[0], " and the king"
    student.generate(prompt, max_tokens=4)  # leaves the old weights' states in the prefix cache
    before = student.score(prompt, answer).bits_per_byte
    assert student.prefix_cache.entries
    items = [{"prompt": p, "answer": trained_teacher.generate(p, max_tokens=8).text} for p in prose_prompts[1:5]]
    distill(student, trained_teacher, items, epochs=3, lr=3e-3, temperature=2.0, logit_kd=True, rng=random.Random(0))
    after = student.score(prompt, answer).bits_per_byte
    student.prefix_cache.clear()
    assert after == pytest.approx(student.score(prompt, answer).bits_per_byte)  # what an uncached run computes
    assert after != pytest.approx(before)


def test_verified_only_trains_on_the_answers_the_verifier_accepts(tmp_path, trained_teacher, prose_prompts):
    from collections import Counter

    student = tiny_hf_member("student", seed=2, hidden=32, layers=1, roles=["student"])
    r = _used_router(tmp_path, [trained_teacher, student], prose_prompts)
    accepted = set(prose_prompts[::2])
    seen = Counter()

    def verifier(prompt, answer):
        seen[prompt] += 1
        return float(prompt in accepted)

    rep = dream(r, k=len(prose_prompts), epochs=1, lr=1e-3, max_tokens=8, verifier=verifier, verified_only=True)
    train = {p for p, n in seen.items() if n == 1}  # held-out prompts are judged again and again, training ones once
    assert rep["verified_only"] and 0 < rep["train"] == len(train & accepted) < len(train)
    with pytest.raises(BackendError, match="passed the verifier"):
        dream(r, k=len(prose_prompts), epochs=1, max_tokens=8, verifier=lambda p, a: 0.0, verified_only=True)
    with pytest.raises(BackendError, match="needs a verifier"):
        dream(r, k=4, verified_only=True)
