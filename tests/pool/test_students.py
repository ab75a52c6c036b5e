"""Students and their measurement: held-out families split by problem, data from the pool's own use only,
controls beside every student, and the K-1 tree and LoRA students trained on tiny models."""

import random

import pytest

from k1.pool.learn.students import train_student
from k1.pool.learn.students.data import (
    from_experiences,
    practice_prompt,
    practice_prompts,
    practise,
)
from k1.pool.learn.students.evaluate import (
    ConstantMember,
    constant_answer,
    evaluate,
    format_only,
)
from k1.pool.learn.students.families import copied, heldout, judge
from k1.pool.learn.verifiers import class_verifier
from k1.tasks.split import disjoint


@pytest.mark.parametrize("family", ["arithmetic-d3", "arithmetic-d4", "copy", "prose-cloze"])
def test_families_hold_out_200_problems_disjoint_by_problem(family):
    train, held = heldout(family, 200)
    assert len(held) >= 200 and len(train) >= 200 and disjoint(train, held)
    assert not {t.prompt for t in train} & {t.prompt for t in held}
    assert heldout(family, 200)[1] == held  # fixed


def test_code_family_holds_out_whole_templates():
    train, held = heldout("code")
    assert disjoint(train, held) and {t.id.split("-")[1] for t in held}.isdisjoint({t.id.split("-")[1] for t in train})


def test_prose_cloze_is_the_corpus_word_strictly_and_its_control_gets_other_words():
    from k1.pool.learn.students.families import cloze_tasks, next_word

    tasks = cloze_tasks()
    assert len(tasks) >= 1000 and all(t.kind == "cloze" and t.check["answer"].isalpha() for t in tasks)
    t = tasks[0]
    assert judge(t, " " + t.check["answer"] + " of the") and judge(t, t.check["answer"].upper() + ".")
    assert not judge(t, "The " + t.check["answer"]) and not judge(t, "")
    assert next_word(" China.", "china") and not next_word("Chinese", "China")
    ex = [([{"role": "user", "content": t.prompt}], f"{t.check['answer']} and more") for t in tasks[:40]]
    wrong = format_only(ex)
    assert all(not judge(t, a) for t, (_, a) in zip(tasks, wrong))  # every control answer fails
    assert all(a.endswith(" and more") for _, a in wrong)            # the same form: one other word first


def test_copy_judge_is_strict():
    assert copied("abc123", "abc123") and copied(' "abc123".', "abc123") and copied("abc123\nmore", "abc123")
    assert not copied("abc12", "abc123") and not copied("abc123 is the string", "abc123")
    assert not copied("Sure! abc123", "abc123")


def test_data_comes_only_from_accepted_answers_and_templates():
    v = class_verifier("arithmetic")
    rows = [{"prompt": "user: What is 12 + 30?\nassistant:", "response": "12 + 30 = 42\nmore", "context": "arithmetic"},
            {"prompt": "user: What is 1 + 0?\nassistant:", "response": "1 + 1 = 1", "context": "arithmetic"},
            {"prompt": "user: What is 1 + 0?\nassistant:", "response": "1", "context": "facts"},
            {"prompt": "user: Name a colour.\nassistant:", "response": "blue", "context": "arithmetic"}]
    ex = from_experiences(rows, v, "arithmetic")
    assert ex == [("user: What is 12 + 30?\nassistant:", "12 + 30 = 42")]  # wrong equation, other class, unjudgeable: out
    rng = random.Random(0)
    p = practice_prompt("What is 12 + 30?", rng)
    assert p.startswith("What is ") and [len(x) for x in p[8:-1].split(" + ")] == [2, 2]
    assert len(practice_prompt("Repeat this exactly: abc123", rng).split()[-1]) == 6
    made = practice_prompts(["What is 12 + 30?"], 50, exclude={"What is 11 + 11?"})
    assert len(set(made)) == 50 and "What is 11 + 11?" not in made and "What is 12 + 30?" not in made
    kept, rec = practise(ConstantMember("42"), ["What is 12 + 30?", "What is 20 + 20?", "What is 40 + 2?"], v)
    assert [a for _, a in kept] == ["42", "42"] and rec["asked"] == 3 and rec["kept"] == 2  # 20 + 20 rejected


def test_controls_guess_and_learn_the_format_with_wrong_numbers():
    _, held = heldout("arithmetic-d3", 200)
    ex = [([{"role": "user", "content": t.prompt}], f"{t.prompt[8:-1]} = {t.check['answer']}") for t in held[:50]]
    wrong = format_only(ex)
    assert all(p == q for (p, _), (q, _) in zip(ex, wrong))
    assert all(judge(t, a) for t, (_, a) in zip(held, ex))            # the real answers pass
    assert not any(judge(t, a) for t, (_, a) in zip(held, wrong))     # the control's answers fail, same shape
    assert all(len(a) == len(b) for (_, a), (_, b) in zip(ex, wrong))
    c = constant_answer([(None, "5"), (None, "7"), (None, "5")])
    assert c == "5"
    r = evaluate(ConstantMember(c), held, "arithmetic-d3")
    assert r["n"] == len(held) and r["solved"] == sum(t.check["answer"] == 5 for t in held) and r["atp_per_call"] == 0.0


def _d1():
    from k1.tasks.task import arithmetic_tasks

    tasks = arithmetic_tasks("d1")
    return tasks, [([{"role": "user", "content": t.prompt}], str(t.check["answer"])) for t in tasks]


def _states_numbers(member, tasks) -> int:
    from k1.tasks.verifiers import stated_answer

    return sum(stated_answer(member.generate([{"role": "user", "content": t.prompt}], max_tokens=4).text) is not None
               for t in tasks)


def test_k1_tree_student_learns_from_examples_with_the_engine_and_is_served(tmp_path, k1_run):
    """A tiny tree learns the class's answer form in seconds (not the sums: see docs/results-pool.md), trained by
    the engine's attributed sparse update, and the pool serves the result as a k1 member."""
    import json
    from pathlib import Path

    from k1.pool.members.k1 import K1Member

    tasks, ex = _d1()
    spec = train_student("k1", ex, tmp_path / "student", name="s", preset="tiny", steps=300, batch_size=8,
                         overrides=["optim.lr=1e-2"])
    assert spec["kind"] == "k1" and spec["name"] == "s" and Path(spec["run"]).is_dir() and "student" in spec["roles"]
    summary = json.loads((Path(spec["run"]) / "summary.json").read_text())
    assert "attribution" in json.dumps(summary)  # the engine's attributed update, not a dense fine-tune
    before = _states_numbers(K1Member.from_run(k1_run), tasks)   # a tree that never saw the class
    after = _states_numbers(K1Member.from_run(spec["run"]), tasks)
    assert after >= 0.8 * len(tasks) > before


def test_a_second_class_continues_from_the_first_students_weights(tmp_path):
    from k1.pool.members.k1 import K1Member

    tasks, ex = _d1()
    first = train_student("k1", ex, tmp_path / "a", name="a", preset="tiny", steps=40)
    second = [([{"role": "user", "content": f"Repeat this exactly: w{i}"}], f"w{i}") for i in range(20)]
    cont = train_student("k1", second, tmp_path / "b", name="b", base=first["run"], steps=1,
                         overrides=None)
    fresh = train_student("k1", second, tmp_path / "c", name="c", preset="tiny", steps=1, seed=5)
    a, b, c = (K1Member.from_run(s["run"]) for s in (first, cont, fresh))
    pa = a.prompt_ids([{"role": "user", "content": tasks[3].prompt}])
    import torch

    with torch.no_grad():
        la, lb, lc = (m.model(torch.tensor([pa]))[0][0, -1] for m in (a, b, c))
    assert (la - lb).abs().max() < (la - lc).abs().max()  # one step from the first class's weights, not from scratch


def test_lora_student_on_a_tiny_llama(tmp_path, hf_dir):
    from k1.pool.members.hf import HFMember

    base = HFMember.from_pretrained(hf_dir, name="tiny")
    ex = [([{"role": "user", "content": f"What is {a} + 1?"}], str(a + 1)) for a in range(8)]
    spec = train_student("lora", ex, tmp_path / "lora", name="tiny-lora", base=base, epochs=4, lr=1e-2)
    assert spec["kind"] == "hf" and spec["record"]["loss_last"] < spec["record"]["loss_first"]
    served = HFMember.from_pretrained(spec["path"], name="tiny-lora")  # the pool serves it as an hf member
    assert served.generate(ex[0][0], max_tokens=2).text is not None
    p = base.prompt_ids(ex[0][0])
    import torch

    with torch.no_grad():
        assert not torch.equal(base.model(torch.tensor([p])).logits, served.model(torch.tensor([p])).logits)


def test_student_from_the_pools_own_store(tmp_path, hf_dir):
    """Served prompts + accepted answers from a real store, practice prompts made from their templates (kept only
    where the verifier accepts the teacher's answer), then a K-1 tree student."""
    from k1.pool.config import PoolSettings
    from k1.pool.learn.students.from_pool import student_from_store
    from k1.pool.members.hf import HFMember
    from k1.pool.pool import Pool
    from k1.pool.route.router import Router
    from k1.pool.store import PoolStore

    adder = ConstantMember("42", name="adder")  # right only where the sum is 42
    tiny = HFMember.from_pretrained(hf_dir, name="tiny")
    router = Router(Pool([adder, tiny], PoolSettings(store=str(tmp_path / "s.sqlite"))), PoolStore(tmp_path / "s.sqlite"))
    for q in ("What is 40 + 2?", "What is 21 + 21?", "What is 12 + 7?", "What is 30 + 12?"):
        router.generate([{"role": "user", "content": q}], model="adder", context="arithmetic", max_tokens=4)
    out = student_from_store(router, "arithmetic", tmp_path / "st", teacher="adder", practice=30, preset="tiny",
                             steps=5)
    assert out["from_store"] == 3  # 12 + 7 = 42 is rejected by the verifier
    assert out["practice"]["asked"] == 30 and out["examples"] == 3 + out["practice"]["kept"]
    assert out["member"]["kind"] == "k1" and out["member"]["name"] == "k1-arithmetic"
    router.close()
