"""The task classifier learns from the pool's experiences with a stated class (the caller's, or one given
with feedback) and from calibration prompts: refit when the pool opens, capped, in a real SQLite store."""

import pytest

from k1.pool.config import PoolSettings
from k1.pool.pool import Pool
from k1.pool.route.router import Router
from k1.pool.route.taskclass import HELD_OUT_COPY, held_out_accuracy, learned_examples
from k1.pool.store import PoolStore
from k1.pool.testing import tiny_hf_member

WORDS = ["apple", "river", "garden", "yellow", "window", "silver", "pencil", "orange", "button", "candle"]


@pytest.fixture(scope="module")
def member():
    return tiny_hf_member("tiny", seed=0, hidden=32, layers=1)


def _router(tmp_path, member, **settings):
    return Router(Pool([member], PoolSettings(seed=0, **settings)), PoolStore(tmp_path / "s.sqlite"))


def test_a_class_it_could_not_tell_apart_is_learned_from_experiences(tmp_path, member):
    r = _router(tmp_path, member)
    probe = [p for p, _ in HELD_OUT_COPY[:4]]  # "Repeat this word exactly: zebra", …: words never seen below
    assert "copy" not in r.task_classes.classes and all(r.task_classes.classify(p) != "copy" for p in probe)
    for w in WORDS:  # the caller states the class, as the routing bench does
        r.generate([{"role": "user", "content": f"Repeat this word exactly: {w}"}], context="copy", max_tokens=1)
    r.generate("What is 2 + 2?", max_tokens=1)  # the classifier's own guess: never learned from
    r.close()
    r = _router(tmp_path, member)  # refit when the pool opens
    assert learned_examples(r.store) == [(f"Repeat this word exactly: {w}", "copy") for w in reversed(WORDS)]
    assert [r.task_classes.classify(p) for p in probe] == ["copy"] * 4
    assert held_out_accuracy(r.task_classes)["accuracy"] >= 0.9  # the four known classes are still read right
    out = r.generate([{"role": "user", "content": "Repeat this word exactly: zebra"}], max_tokens=1)
    assert out.task_class == "copy"  # and the router keys trust by it
    r.close()
    # the cap: with task_class_examples = 0 the pool keeps the built-in classifier only
    r = _router(tmp_path, member, task_class_examples=0)
    assert "copy" not in r.task_classes.classes
    r.close()
    r = _router(tmp_path, member, task_class_form="multinomial")
    assert r.task_classes.form == "multinomial" and r.task_classes.classify(probe[0]) == "copy"
    r.close()
    r = _router(tmp_path, member, task_class_examples=3)
    assert len(learned_examples(r.store, 3)) == 3 and "copy" in r.task_classes.classes
    r.close()


def test_feedback_with_a_class_relabels_the_experience(tmp_path, member):
    r = _router(tmp_path, member)
    prompts = [f"Who painted {x}?" for x in ("the Mona Lisa", "the Night Watch", "Guernica", "the Sistine ceiling",
                                            "The Starry Night", "The Scream")]
    assert r.task_classes.classify("Who painted the Mona Lisa?") == "prose"  # the built-in classifier's miss
    ids = [r.generate(p, max_tokens=1) for p in prompts]
    assert {o.task_class for o in ids} != {"facts"}
    for o in ids[1:]:
        fb = r.feedback(o.request, 1.0, task_class="facts")
        assert fb["context"] == "facts"
    assert r.store.experience(ids[1].request)["context"] == "facts"
    assert r.store.trust("facts")[("tiny", "facts")] == (5.0, 0.0)  # the outcomes count for the stated class
    info = r.refit_task_classes()
    assert info["examples"] == 5
    assert r.task_classes.classify("Who painted the Mona Lisa?") == "facts"  # held out: never labelled
    r.close()


def test_calibration_prompts_are_learned_from(tmp_path, member):
    from k1.pool.learn.calibrate import CalTask, calibrate

    tasks = [CalTask("translate", f"t{i}", [{"role": "user", "content": f"Translate '{w}' into French."}],
                     lambda a: 0.0) for i, w in enumerate(("dog", "cat", "house", "tree"))]
    r = _router(tmp_path, member)
    calibrate(r, quiet=True, tasks=tasks)
    assert r.task_classes.classify("Translate 'bread' into French.") == "translate"
    r.close()


def test_server_feedback_takes_a_task_class(tmp_path, member):
    import httpx

    from k1.pool.server.thread import ServedPool

    r = _router(tmp_path, member)
    with ServedPool(r) as s:
        a = httpx.post(f"{s.url}/completions", json={"model": "auto", "prompt": "Repeat this word exactly: apple",
                                                     "max_tokens": 1}, timeout=60)
        rid = a.json()["k1"]["request"]
        bad = httpx.post(f"{s.url}/feedback", json={"request": rid, "success": 1, "task_class": "bad class!"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "task_class"
        ok = httpx.post(f"{s.url}/feedback", json={"request": rid, "success": 1, "task_class": "copy"})
        assert ok.status_code == 200 and ok.json()["context"] == "copy"
    assert r.store.labelled_prompts(10) == [("Repeat this word exactly: apple", "copy")]
    r.close()
