"""DREAM's cheaper training and better data on tiny models: the cached teacher equals the recomputed one, a
padded batch equals its examples one by one, rejection sampling keeps only verified answers and charges every
teacher call, validation keeps the best epoch, and no held-out calibration problem is ever trained on."""

import random
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from k1.pool.config import PoolSettings
from k1.pool.learn.distill import (
    answer_logits,
    batch_loss,
    cache_teacher,
    example,
    train,
)
from k1.pool.learn.dream import dream, kept_answers
from k1.pool.pool import Pool
from k1.pool.route.router import Router
from k1.pool.store import PoolStore
from k1.pool.testing import tiny_hf_member


def distill_loss(student, teacher, prompt, answer: str, logit_kd: bool, T: float) -> torch.Tensor:
    """The original per-example loss, written out unbatched and uncached (it runs the teacher again): the
    reference the cached, batched training loss must equal."""
    e = example(student, prompt, answer)
    s = student.model(torch.tensor([e.ids])).logits[0, e.start - 1:-1]  # predictions of the answer tokens
    if logit_kd:
        with torch.no_grad():
            t = teacher.model(torch.tensor([e.ids])).logits[0, e.start - 1:-1]
        return F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True,
                        reduction="batchmean") * T * T
    return F.cross_entropy(s, torch.tensor(e.targets))  # prompt positions carry no label


def _examples(student, teacher, prompts):
    out = []
    for i, p in enumerate(prompts):
        a = teacher.generate(p, max_tokens=6 + i % 5).text or " x"
        out.append(example(student, p, a, p=p, a=a))
    return out


def test_cached_teacher_equals_recomputed_logits(trained_teacher, prose_prompts):
    student = tiny_hf_member("student", seed=2, hidden=32, layers=1)
    exs = _examples(student, trained_teacher, prose_prompts[:5])
    cache_teacher(trained_teacher, exs, temperature=2.0, topk=0)  # the whole vocabulary: the exact loss
    for e in exs:
        t = trained_teacher.model(torch.tensor([e.ids])).logits[0, e.start - 1:-1]
        assert torch.allclose(e.t_logp, torch.log_softmax(t / 2.0, -1), atol=1e-5)
        cached = batch_loss(student, [e], temperature=2.0, ce_weight=0.0)
        # the original per-example loss, which runs the teacher again
        ref = distill_loss(student, trained_teacher, e.meta["p"], e.meta["a"], True, 2.0)
        assert cached.item() == pytest.approx(ref.item(), rel=1e-4)
    top = [example(student, prose_prompts[0], " the king and")]
    cache_teacher(trained_teacher, top, temperature=2.0, topk=8)
    t = trained_teacher.model(torch.tensor([top[0].ids])).logits[0, top[0].start - 1:-1] / 2.0
    vals, idx = t.topk(8, -1)
    assert torch.equal(top[0].t_idx, idx) and torch.allclose(top[0].t_logp, torch.log_softmax(vals, -1), atol=1e-5)
    assert torch.allclose(top[0].t_logp.exp().sum(-1), torch.ones(len(idx)), atol=1e-5)  # renormalised over k


def test_a_padded_batch_equals_its_examples_one_by_one(trained_teacher, prose_prompts):
    student = tiny_hf_member("student", seed=2, hidden=32, layers=1)
    exs = []
    for i, p in enumerate(prose_prompts[:6]):
        a = trained_teacher.generate(p, max_tokens=3 + 2 * i).text or " x"
        exs.append(example(student, p, a, p=p, a=a))
    assert len({len(e.ids) for e in exs}) > 1  # really padded
    cache_teacher(trained_teacher, exs, temperature=2.0, topk=16, batch_size=4)
    one = [e.t_logp.clone() for e in exs]
    cache_teacher(trained_teacher, exs, temperature=2.0, topk=16, batch_size=1)
    assert all(torch.allclose(a, e.t_logp, atol=1e-5) for a, e in zip(one, exs))
    # the answer-position logits of a batch are each example's own
    assert torch.allclose(answer_logits(student, exs), torch.cat([answer_logits(student, [e]) for e in exs]), atol=1e-5)
    for w in (0.0, 0.5, 1.0):
        batched = batch_loss(student, exs, temperature=2.0, ce_weight=w).item()
        singles = [batch_loss(student, [e], temperature=2.0, ce_weight=w).item() for e in exs]
        assert batched == pytest.approx(sum(singles) / len(singles), rel=1e-5)
    full = exs[:3]
    cache_teacher(trained_teacher, full, temperature=2.0, topk=0)
    ref = [distill_loss(student, trained_teacher, e.meta["p"], e.meta["a"], True, 2.0).item() for e in full]
    assert batch_loss(student, full, temperature=2.0, ce_weight=0.0).item() == pytest.approx(sum(ref) / 3, rel=1e-4)
    ce = [distill_loss(student, trained_teacher, e.meta["p"], e.meta["a"], False, 2.0).item() for e in full]
    assert batch_loss(student, full, temperature=2.0, ce_weight=1.0).item() == pytest.approx(sum(ce) / 3, rel=1e-4)


def test_training_keeps_the_best_validated_epoch(trained_teacher, prose_prompts):
    student = tiny_hf_member("student", seed=2, hidden=32, layers=1)
    exs = [example(student, p, trained_teacher.generate(p, max_tokens=8).text) for p in prose_prompts[:8]]
    cache_teacher(trained_teacher, exs, temperature=2.0)
    scores = iter([0.0, 0.5, 0.2, 0.1, 0.9])  # before training, then after epochs 1, 2, 3 (stops: patience 2)
    snaps = []

    def validate():
        snaps.append({k: v.clone() for k, v in student.model.state_dict().items()})
        return next(scores)

    rec = train(student, exs, epochs=5, lr=3e-3, batch_size=4, temperature=2.0, ce_weight=0.3,
                rng=random.Random(0), validate=validate, patience=2)
    assert rec["val"] == [0.0, 0.5, 0.2, 0.1] and rec["best_epoch"] == 1 and rec["steps"] == 3 * 2
    assert all(torch.equal(v, snaps[1][k]) for k, v in student.model.state_dict().items())  # epoch 1's weights


def test_kept_answers_are_the_verified_distinct_first_lines():
    items = [{"prompt_text": "p1", "answer": " 7 + 5 = 12\nmore", "samples": [" 12", " 7 + 5 = 12", " 13", ""]},
             {"prompt_text": "p2", "answer": " wrong", "samples": [" wrong too"]}]

    def verifier(prompt, answer):
        return float(answer.strip().split("\n")[0].endswith("12"))

    kept = kept_answers(items, verifier, first_line=True)
    assert [k["answer"] for k in kept] == [" 7 + 5 = 12", " 12"]
    assert [k["answer"] for k in kept_answers(items, verifier, first_line=False)] == \
        [" 7 + 5 = 12\nmore", " 12", " 7 + 5 = 12"]


def _used_router(tmp_path, members, prompts):
    r = Router(Pool(members, PoolSettings(seed=0)), PoolStore(tmp_path / "p.sqlite"))
    for p in prompts:
        r.generate(p, model=members[0].name, max_tokens=4)
    return r


def test_rejection_sampling_trains_on_verified_answers_and_charges_every_call(tmp_path, trained_teacher,
                                                                               prose_prompts):
    student = tiny_hf_member("student", seed=2, hidden=32, layers=1, roles=["student"])
    r = _used_router(tmp_path, [trained_teacher, student], prose_prompts)
    judged = []

    def verifier(prompt, answer):  # a stand-in judge: accepts answers that start with one of three letters
        ok = float(bool(answer.strip()) and answer.strip()[0] in "tkw")
        judged.append((prompt, answer, ok))
        return ok

    rep = dream(r, k=16, holdout=0.25, val=0.25, epochs=2, lr=1e-3, max_tokens=8, samples=3, sample_temperature=1.0,
                verifier=verifier, first_line=True, ce_weight=0.5, batch_size=4)
    assert rep["held_out"] == 4 and rep["validation"] == 3 and rep["train_prompts"] == 9
    # every teacher call is on the ledger: one greedy answer per experience, 3 samples per training experience
    assert rep["teacher_calls"] == 16 + 3 * 9
    assert sum(1 for row in r.store.ledger() if row["context"] == "dream") == rep["teacher_calls"]
    # the training examples are exactly the distinct accepted answers of the training experiences
    train_prompts = Counter(p for p, _a, _ok in judged)
    accepted = {(p, a.strip().split("\n")[0].strip()) for p, a, ok in judged if ok}
    assert 0 < rep["train"] <= len(accepted)
    assert rep["verified_only"] and rep["samples"] == 3 and rep["val"] and rep["best_epoch"] is not None
    assert train_prompts  # the verifier judged something


def test_no_held_out_calibration_problem_is_trained_on(tmp_path, trained_teacher, prose_prompts):
    """The 16 held-out problems of a class measure the student; one routed through the pool as an experience
    must not reach training, validation or the held-out experiences."""
    from k1.pool.learn.calibrate import calibration_tasks

    held = [c for c in calibration_tasks(16) if c.cls == "prose"]
    student = tiny_hf_member("student", seed=2, hidden=32, layers=1, roles=["student"])
    r = _used_router(tmp_path, [trained_teacher, student], [c.prompt for c in held[:6]] + prose_prompts)
    classes = Counter(e["context"] for e in r.store.experiences())
    texts = {c.text for c in held}
    routed_held = sum(1 for e in r.store.experiences() if e["context"] == "prose" and e["prompt"] in texts)
    assert routed_held >= 3  # the classifier puts (most of) them in their class, beside the training prose
    seen = set()

    def verifier(prompt, answer):
        seen.add(prompt)
        return 1.0

    rep = dream(r, k=64, epochs=1, lr=1e-3, max_tokens=4, samples=1, verifier=verifier, task_class="prose",
                class_tasks=16, val=0.2)
    assert rep["experiences"] == classes["prose"] - routed_held  # the held-out texts were left out
    assert seen and not seen & texts


def test_the_teacher_can_read_its_own_prompt(trained_teacher, prose_prompts):
    """Context distillation: the cache holds the teacher's distribution after its own (instructed) prompt, over
    the answer tokens the student reads after the plain one."""
    student = tiny_hf_member("student", seed=2, hidden=32, layers=1)
    plain, told = prose_prompts[1], "Be brief. " + prose_prompts[1]
    e, view = example(student, plain, " the king"), example(trained_teacher, told, " the king")
    cache_teacher(trained_teacher, [e], temperature=1.0, topk=0, views=[view])
    t = trained_teacher.model(torch.tensor([view.ids])).logits[0, view.start - 1:-1]
    assert torch.allclose(e.t_logp, torch.log_softmax(t, -1), atol=1e-5)
    plain_t = trained_teacher.model(torch.tensor([e.ids])).logits[0, e.start - 1:-1]
    assert not torch.allclose(e.t_logp, torch.log_softmax(plain_t, -1), atol=1e-3)
    with pytest.raises(ValueError, match="same answer tokens"):
        cache_teacher(trained_teacher, [e], temperature=1.0, views=[example(trained_teacher, told, " a")])
