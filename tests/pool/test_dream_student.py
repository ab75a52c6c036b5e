"""DREAM builds its student from the pool's own use (`student_kind`): accepted answers and verified practice
only, trust from prompts neither trained on nor replayed (split by problem), and the new weights published so
a serving pool takes them up without a restart."""

import pytest

from k1.pool.learn.dream import dream
from k1.pool.learn.dream_student import split_prompts
from k1.pool.learn.students.data import problem_key
from k1.pool.learn.students.evaluate import ConstantMember

SUMS = [(a, 42 - a) for a in range(10, 33)] + [(a, 50 - a) for a in range(10, 20)]  # 23 make 42, 10 make 50


class Asked(ConstantMember):
    """A teacher that answers "42" (right only where the sum is 42) and remembers every prompt it was put."""

    def __init__(self):
        super().__init__("42", name="adder")
        self.roles, self.asked = ("teacher",), []

    def stream(self, prompt, **kw):
        self.asked.append(prompt[-1]["content"] if isinstance(prompt, list) else prompt)
        yield from super().stream(prompt, **kw)


@pytest.fixture
def used(tmp_path, k1_run):
    from k1.pool.config import PoolSettings
    from k1.pool.members.k1 import K1Member
    from k1.pool.pool import Pool
    from k1.pool.route.router import Router
    from k1.pool.store import PoolStore

    teacher = Asked()
    student = K1Member.from_run(k1_run, name="tree", roles=["student"])
    store = tmp_path / "s.sqlite"
    router = Router(Pool([teacher, student], PoolSettings(store=str(store))), PoolStore(store))
    for a, b in SUMS:  # the pool's own use: the teacher answered these, as served
        router.generate([{"role": "user", "content": f"What is {a} + {b}?"}], model="adder", context="arithmetic",
                        max_tokens=4)
    teacher.asked.clear()
    yield router, teacher, student, store
    router.close()


def test_split_keeps_each_problem_on_one_side():
    exps = [{"prompt": f"user: What is {a} + {b}?\nassistant:", "context": "arithmetic"} for a, b in SUMS]
    exps += [{"prompt": f"user: What is {b} + {a}?\nassistant:", "context": "arithmetic"} for a, b in SUMS]  # twins
    train, trust, replay = split_prompts(exps, "arithmetic", 0.3, seed=0)
    keys = [{problem_key("arithmetic", e["prompt"]) for e in side} for side in (train, trust, replay)]
    assert keys[0] and keys[1] and keys[2] and len(train) + len(trust) + len(replay) == len(exps)
    assert not keys[0] & keys[1] and not keys[0] & keys[2] and not keys[1] & keys[2]
    assert problem_key("arithmetic", "What is 3 + 4?") == problem_key(None, "user: What is 4 + 3?\nassistant:")
    assert problem_key("copy", "Repeat this exactly: ab") != problem_key("copy", "Repeat this exactly: ba")


def test_dream_trains_a_k1_student_from_the_pools_use_and_trusts_it_on_unused_prompts(used, tmp_path):
    import torch

    from k1.pool.config import PoolSettings
    from k1.pool.learn.weights import take_up_new_students
    from k1.pool.members.k1 import K1Member
    from k1.pool.pool import Pool
    from k1.pool.route.router import Router
    from k1.pool.store import PoolStore

    router, teacher, student, store = used
    w0 = {k: v.clone() for k, v in student.model.state_dict().items()}
    rep = dream(router, student_kind="k1", task_class="arithmetic", holdout=0.3, practice=12, shots=2,
                max_tokens=4, student_options={"steps": 5}, weights_dir=tmp_path / "w")
    assert rep["method"] == "student:k1" and rep["teacher"] == "adder" and rep["student"] == "tree"
    assert rep["train_prompts"] + rep["trust_prompts"] + rep["replay_prompts"] == len(SUMS)
    assert rep["trust_prompts"] >= 1 and rep["replay_prompts"] >= 1
    # trained only on accepted answers: the stored ones of the training side that make 42, and practice kept
    assert rep["train"] == rep["from_store"] + rep["practice"]["kept"] and rep["practice"]["asked"] == 12
    # no practice prompt is a trust or replay problem, nor a served one
    served = {f"What is {a} + {b}?" for a, b in SUMS}
    held = {problem_key("arithmetic", e) for e in rep_held(router, rep)}
    practice = [p for p in teacher.asked if p not in served]
    assert len(practice) >= 12 and not {problem_key("arithmetic", p) for p in practice} & held
    # the teacher's practice calls are DREAM's on the ledger
    assert sum(r["kind"] == "dream" for r in router.store.ledger()) >= 12
    # trust: one outcome per trust prompt, source "dream"
    assert sum(o["source"] == "dream" and o["member"] == "tree" for o in router.store.outcome_history()) == \
        rep["trust_prompts"]
    # the weights moved, were published, and another pool on the same store takes them up without a restart
    assert any(not torch.equal(w0[k], v) for k, v in student.model.state_dict().items())
    assert router.store.version("student:tree") is not None
    other = K1Member.from_run(student.run_dir, name="tree", roles=["student"])
    r2 = Router(Pool([ConstantMember("42", name="adder"), other], PoolSettings(store=str(store))), PoolStore(store))
    assert take_up_new_students(r2) == ["tree"]
    for k, v in student.model.state_dict().items():
        assert torch.equal(other.model.state_dict()[k], v)
    r2.close()
    # a second cycle continues from the weights the member holds now, not from its run's checkpoint
    w1 = {k: v.clone() for k, v in student.model.state_dict().items()}
    dream(router, student_kind="k1", task_class="arithmetic", holdout=0.3, max_tokens=4, student_options={"steps": 1},
          weights_dir=tmp_path / "w")
    w2 = student.model.state_dict()
    dist = lambda a, b: sum((a[k].float() - b[k].float()).norm() ** 2 for k in a) ** 0.5
    assert dist(w2, w1) < dist(w2, w0)


def rep_held(router, rep):
    """The trust and replay prompts DREAM held out (recomputed from the same split)."""
    from k1.pool.learn.dream_student import split_prompts

    exps = [e for e in router.store.experiences() if e["context"] == "arithmetic"]
    _, trust, replay = split_prompts(exps, "arithmetic", 0.3, 0)
    assert len(trust) == rep["trust_prompts"] and len(replay) == rep["replay_prompts"]
    return [e["prompt"] for e in trust + replay]


def test_dream_student_errors_are_clear(used):
    from k1.errors import BackendError

    router, *_ = used
    with pytest.raises(BackendError, match="needs --task-class"):
        dream(router, student_kind="k1")
    with pytest.raises(BackendError, match="'lora' student must be a hf member"):
        dream(router, student_kind="lora", task_class="arithmetic")


class Copier(ConstantMember):
    """Repeats the string only when told how (a system message or earlier turns), else rambles; records whether
    it was shown earlier accepted answers."""

    def __init__(self):
        super().__init__("", name="copier")
        self.roles, self.shown = ("teacher",), []

    def stream(self, prompt, **kw):
        turns = [m for m in prompt if m["role"] == "assistant"] if isinstance(prompt, list) else []
        self.shown.append(len(turns))
        told = isinstance(prompt, list) and len(prompt) > 1
        last = prompt[-1]["content"] if isinstance(prompt, list) else prompt
        self.text = last.split(": ")[-1] if told else "Sure! Here is the text you asked for."
        yield from super().stream(prompt, **kw)


def test_dream_bootstraps_a_class_without_accepted_answers_and_calibrates_on_trust_prompts(tmp_path, k1_run):
    from k1.pool.config import PoolSettings
    from k1.pool.members.k1 import K1Member
    from k1.pool.pool import Pool
    from k1.pool.route.router import Router
    from k1.pool.store import PoolStore

    teacher = Copier()
    router = Router(Pool([teacher, K1Member.from_run(k1_run, name="tree", roles=["student"])],
                         PoolSettings(store=str(tmp_path / "s.sqlite"))), PoolStore(tmp_path / "s.sqlite"))
    for i in range(12):  # served plainly: the copier rambles, nothing to learn from the store
        router.generate([{"role": "user", "content": f"Repeat this exactly: w{i}x{i}"}], model="copier",
                        context="copy", max_tokens=8)
    teacher.shown.clear()
    rep = dream(router, student_kind="k1", task_class="copy", practice=20, shots=2, teacher_system="Repeat only.",
                max_tokens=8, student_options={"steps": 3}, weights_dir=tmp_path / "w")
    assert rep["from_store"] == 0 and rep["practice"]["kept"] == 20 == rep["train"]
    assert teacher.shown[0] == 0 and max(teacher.shown) == 2  # later rounds show the first accepted answers
    cal = router.store.calibration_summary()[("tree", "copy")]
    assert rep["calibrated_on"] == "trust prompts" and cal["n"] == rep["trust_prompts"] >= 1
    router.close()
