"""Calibration, task classes and trust per (member, task class), with tiny real models."""

import json
import random

import pytest
import torch
from typer.testing import CliRunner

from k1.errors import ConfigError
from k1.pool.learn.calibrate import CalTask, calibrate, calibration_tasks, class_summary, missing
from k1.pool.config import PoolSettings
from k1.pool.pool import Pool
from k1.pool.route.router import Router
from k1.pool.store import PoolStore
from k1.pool.route.taskclass import HELD_OUT, TASK_CLASSES, TaskClassifier, held_out_accuracy, training_prompts

QA = {"What is 7 + 5?": 12, "What is 3 + 4?": 7, "What is 9 - 2?": 7, "What is 6 + 2?": 8}


def test_task_classifier_on_held_out_prompts():
    acc = held_out_accuracy()
    assert acc["n"] == len(HELD_OUT) >= 30 and acc["accuracy"] >= 0.9
    held = {p for p, _ in HELD_OUT}
    assert not held & {p for p, _ in training_prompts()}  # disjoint phrasings
    clf = TaskClassifier()
    assert clf.classify("What is 7 + 5?") == "arithmetic"
    assert clf.classify("Write a Python function `cube(x)` that returns x cubed.") == "code"
    assert clf.classify("What is the capital of France?") == "facts"
    assert sorted(clf.classes) == sorted(TASK_CLASSES)


def test_task_classifier_learns_a_new_class():
    clf = TaskClassifier()
    clf.fit([(f"Translate '{w}' into French.", "translate") for w in ("dog", "cat", "house", "tree", "water")])
    assert clf.classify("Translate 'bread' into French.") == "translate"
    assert clf.classify("What is 12 - 4?") == "arithmetic"


@pytest.fixture(scope="module")
def arithmetic_member():
    """A tiny Llama fitted to answer four sums through its chat template: it knows arithmetic, nothing else."""
    from k1.pool.testing import tiny_hf_member, train_tiny_llama

    torch.set_num_threads(1)
    m = tiny_hf_member("adder", seed=3, hidden=64, layers=2)
    rng = random.Random(0)
    lines = [f"<|user|>{q}\n<|assistant|>{a}\n" for q, a in QA.items()]
    text = "".join(rng.choice(lines) for _ in range(400))
    train_tiny_llama(m.model, text, steps=200, seq=40, lr=3e-3)
    return m


def arithmetic_tasks():
    from k1.tasks.task import Task
    from k1.tasks.verifiers import verify

    out = []
    for q, a in QA.items():
        t = Task(q, "arithmetic", q, {"answer": a})
        out.append(CalTask("arithmetic", q, [{"role": "user", "content": q}], lambda r, t=t: verify(t, r)))
    out.append(CalTask("facts", "paris", [{"role": "user", "content": "What is the capital of France?"}],
                       lambda r: float("paris" in r.lower())))
    return out


def test_calibration_seeds_trust_and_auto_answers(tmp_path, arithmetic_member):
    from k1.pool.testing import tiny_hf_member

    cheap = tiny_hf_member("cheap", seed=0, hidden=32, layers=1)
    pool = Pool([arithmetic_member, cheap], PoolSettings(selection="greedy", store=str(tmp_path / "s.sqlite")))
    router = Router(pool, PoolStore(tmp_path / "s.sqlite"))
    assert missing(router) == ["adder", "cheap"]
    # with equal (no) trust the cheapest member wins: the failure the calibration is for
    assert router.choose("arithmetic").member == "cheap"
    summary = calibrate(router, quiet=True, tasks=arithmetic_tasks())
    assert summary["adder"]["arithmetic"]["solved"] == 4 and summary["cheap"]["arithmetic"]["solved"] == 0
    assert missing(router) == []
    cal = router.store.calibration_summary()
    assert cal[("adder", "arithmetic")]["n"] == 4 and cal[("adder", "arithmetic")]["atp"] > 0
    cand = {c.name: c for c in router.candidates("arithmetic", 8, 8)}
    assert (cand["adder"].successes, cand["adder"].failures) == (4.0, 0.0)
    assert (cand["cheap"].successes, cand["cheap"].failures) == (0.0, 4.0)
    assert cand["cheap"].cost < cand["adder"].cost  # calibration measured what a call costs

    out = router.generate([{"role": "user", "content": "What is 7 + 5?"}], max_tokens=4)
    assert out.task_class == "arithmetic"  # the task class, from the prompt
    assert out.member == "adder" and out.generation.text.strip().startswith("12")

    # live outcomes land on (member, task class) and move the trust from the calibrated prior
    router.feedback(out.request, 0.0)
    assert router.store.trust("arithmetic")[("adder", "arithmetic")] == (0.0, 1.0)
    cand = {c.name: c for c in router.candidates("arithmetic", 8, 8)}
    assert (cand["adder"].successes, cand["adder"].failures) == (4.0, 1.0)

    # calibrating again replaces a member's results instead of adding to them
    calibrate(router, ["adder"], quiet=True, tasks=arithmetic_tasks()[:2])
    assert router.store.calibration_summary()[("adder", "arithmetic")]["n"] == 2

    # the weight of a calibration answer is a setting
    pool.settings = router.settings = PoolSettings(selection="greedy", calibration_weight=0.5)
    cand = {c.name: c for c in router.candidates("arithmetic", 8, 8)}
    assert (cand["adder"].successes, cand["adder"].failures) == (1.0, 1.0)
    router.close()


def test_status_shows_calibrated_trust(tmp_path, arithmetic_member):
    from k1.pool.status import pool_status

    pool = Pool([arithmetic_member], PoolSettings(store=str(tmp_path / "s.sqlite")))
    router = Router(pool, PoolStore(tmp_path / "s.sqlite"))
    calibrate(router, quiet=True, tasks=arithmetic_tasks())
    st = pool_status(router)
    rows = {(r["member"], r["context"]): r for r in st["trust"]}
    assert rows[("adder", "arithmetic")]["cal_n"] == 4 and rows[("adder", "arithmetic")]["mean"] == pytest.approx(5 / 6)
    assert rows[("adder", "facts")]["cal_solved"] == 0
    router.close()


def test_builtin_calibration_set_is_fixed():
    a, b = calibration_tasks(4), calibration_tasks(4)
    assert [t.id for t in a] == [t.id for t in b]
    classes = {t.cls for t in a}
    assert {"arithmetic", "facts", "prose"} <= classes <= set(TASK_CLASSES)
    assert all(sum(t.cls == c for t in a) == 4 for c in classes)
    t = next(t for t in a if t.cls == "arithmetic")
    from k1.tasks.task import arithmetic_tasks as loop_tasks
    answer = next(x.check["answer"] for x in loop_tasks("d2") if x.id == t.id)
    assert t.judge(f"The answer is {answer}.") == 1.0 and t.judge("I do not know") == 0.0
    assert class_summary([{"cls": "x", "score": 1.0, "atp": 2.0}, {"cls": "x", "score": 0.0, "atp": 4.0}]) == \
        {"x": {"n": 2, "solved": 1.0, "atp": 3.0, "rate": 0.5}}


def test_cli_add_and_calibrate(tmp_path, hf_dir):
    from k1.cli import app

    pool_file = tmp_path / "pool.toml"
    pool_file.write_text(f'[pool]\nstore = "s.sqlite"\n\n[[members]]\nname = "a"\nkind = "hf"\npath = "{hf_dir}"\n')
    r = CliRunner().invoke(app, ["pool", "add", f"hf:{hf_dir}", "--name", "b", "--role", "student",
                                 "--pool", str(pool_file)])
    assert r.exit_code == 0, r.output
    from k1.pool.config import read_pool_config
    cfg = read_pool_config(pool_file)
    assert [m.name for m in cfg.members] == ["a", "b"] and cfg.members[1].roles == ["student"]
    s = PoolStore(tmp_path / "s.sqlite")
    assert {m for m, _ in s.calibration_summary()} == {"b"}  # `add` calibrated the new member only
    s.close()
    r = CliRunner().invoke(app, ["pool", "calibrate", "--pool", str(pool_file), "--per-class", "1", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(out["calibration"]) == {"a", "b"} and out["task_classifier"]["accuracy"] >= 0.9
    # bad input: a ConfigError (one line on the command line), and the pool file is left as it was
    before = pool_file.read_text()
    for args, msg in ((["hf:/no/such/dir"], "does not exist"), ([f"hf:{hf_dir}", "--name", "a"], "already has a member 'a'"),
                      (["nonsense"], "k1:RUN_DIR"), ([f"hf:{hf_dir}", "--name", "c", "--stop", "\\n"], "--stop is for k1")):
        r = CliRunner().invoke(app, ["pool", "add", *args, "--pool", str(pool_file)])
        assert isinstance(r.exception, ConfigError) and msg in str(r.exception)
    assert pool_file.read_text() == before


def test_dream_per_task_class_measures_and_recalibrates_the_student(tmp_path, arithmetic_member):
    from k1.pool.learn.dream import dream
    from k1.pool.testing import tiny_hf_member

    student = tiny_hf_member("student", seed=0, hidden=32, layers=1, roles=["student"])
    pool = Pool([arithmetic_member, student], PoolSettings(selection="greedy", store=str(tmp_path / "s.sqlite")))
    router = Router(pool, PoolStore(tmp_path / "s.sqlite"))
    calibrate(router, quiet=True, tasks=arithmetic_tasks())
    for q in QA:  # arithmetic experiences, and prose ones that a per-class DREAM must leave out
        router.generate([{"role": "user", "content": q}], model="adder", max_tokens=4)
    for p in ("Once upon a", "The door creaked open and"):
        router.generate(p, model="adder", max_tokens=4)
    rep = dream(router, teacher="adder", student="student", k=8, epochs=1, lr=1e-3, max_tokens=4,
                task_class="arithmetic", class_tasks=3, weights_dir=tmp_path / "w")
    assert rep["task_class"] == "arithmetic" and rep["experiences"] == len(QA)  # only the class's experiences
    assert rep["class_before"]["n"] == rep["class_after"]["n"] == 3
    assert 0.0 <= rep["class_after"]["success"] <= 1.0
    cal = router.store.calibration_summary()
    assert cal[("student", "arithmetic")]["n"] == 3  # the measurement replaced the class's calibration
    assert cal[("student", "facts")]["n"] == 1  # other classes untouched
    assert cal[("adder", "arithmetic")]["n"] == 4
    with pytest.raises(Exception, match="of class 'code'"):
        dream(router, teacher="adder", student="student", task_class="code")
    router.close()


def test_calibration_sets_nest_and_tell_nothing_from_45_percent():
    from k1.pool.learn.calibrate import ENOUGH_PER_CLASS, MAX_PER_CLASS
    from k1.pool.config import PoolSettings as S

    assert S().calibration_per_class >= ENOUGH_PER_CLASS and 0.55 ** ENOUGH_PER_CLASS < 0.01
    small, large = calibration_tasks(3), calibration_tasks(MAX_PER_CLASS)
    for cls in {t.cls for t in small}:  # a smaller set is a prefix of a larger one: benches can leave out the largest
        assert [t.text for t in small if t.cls == cls] == [t.text for t in large if t.cls == cls][:3]
    with pytest.raises(ValueError):
        calibration_tasks(MAX_PER_CLASS + 1)


def test_route_bench_is_disjoint_from_calibration_by_problem():
    """The old draw let py-last_n-7 and py-last_n-8 be both calibration and bench tasks."""
    import importlib.util
    from pathlib import Path

    from k1.pool.learn.calibrate import MAX_PER_CLASS, reserved_problems
    from k1.tasks.split import problem_key
    from k1.tasks.task import arithmetic_tasks, python_tasks

    spec = importlib.util.spec_from_file_location("route", Path(__file__).parents[2] / "bench" / "route.py")
    route = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(route)
    reserved = reserved_problems()
    loop = {t.prompt: t for t in arithmetic_tasks("d2") + python_tasks()}
    for n in (20, 30):
        tasks = route.build_tasks(n)
        prompts = {t["prompt"] for t in tasks}
        assert not prompts & {c.text for c in calibration_tasks(MAX_PER_CLASS)}
        keys = {problem_key(loop[t["prompt"]]) for t in tasks if t["prompt"] in loop}
        assert len(keys) >= n and not keys & reserved  # no commuted twin, no calibration template
    cal_code = {t.id for t in calibration_tasks(MAX_PER_CLASS) if t.cls == "code"}
    bench_code = {t.id for t in python_tasks() if t.prompt in {x["prompt"] for x in route.build_tasks(30)}}
    assert not cal_code & bench_code and not {"py-last_n-7", "py-last_n-8"} & bench_code


def test_pool_arithmetic_verifier_is_strict():
    from k1.pool.learn.verifiers import class_verifier

    v = class_verifier("arithmetic")
    assert v("What is 1 + 0?", "1") == 1.0 and v("What is 1 + 0?", "1 + 1 = 1") == 0.0
    assert v("What is 7 + 5?", "7 + 5 = 12.") == 1.0 and v("What is 7 + 5?", "7 + 7 = 12") == 0.0


def test_dream_ladder_trains_on_no_twin_of_a_held_out_problem():
    import importlib.util
    from pathlib import Path

    from k1.pool.learn.calibrate import MAX_PER_CLASS
    from k1.tasks.split import problem_key
    from k1.tasks.task import arithmetic_tasks

    spec = importlib.util.spec_from_file_location("ladder", Path(__file__).parents[2] / "bench" / "dream_ladder.py")
    ladder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ladder)
    task = {t.id: t for t in arithmetic_tasks("d2")}
    held = {c.key for c in calibration_tasks(MAX_PER_CLASS) if c.cls == "arithmetic"}
    train = ladder.training_tasks(500, 0)
    assert train and not {problem_key(t) for t in train} & held
    assert all(problem_key(task[c.id]) == c.key for c in calibration_tasks(MAX_PER_CLASS) if c.cls == "arithmetic")
