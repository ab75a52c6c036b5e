"""Context classes from measured signals, and the metabolic state machine (transitions logged, policy applied)."""


from k1.pool.config import PoolSettings
from k1.pool.route.context import ContextClassifier, ContextSettings
from k1.pool.route.metabolic import Metabolism, MetabolicSettings
from k1.pool.pool import Pool
from k1.pool.route.router import Router
from k1.pool.store import PoolStore
from k1.pool.testing import tiny_hf_member


def test_context_classes_follow_the_conversation():
    c = ContextClassifier(ContextSettings(unstable_window=3, unstable_shifts=3))
    labels = [c.observe("s", p).label for p in [
        "how do I sort a list in python",          # first prompt of the session
        "how do I sort a list in python quickly",  # near-repeat
        "how do I sort a dict in python",          # close to what came before
        "the capital of france is paris",         # new topic
        "how do I sort a list in python",          # back to a known topic: a shift, but not novel
    ]]
    assert labels[0] == "novel" and labels[1] == "stable" and labels[3] == "novel" and labels[4] == "moving"
    assert c.observe("other", "how do I sort a list in python").label == "novel"  # history is per session


def test_a_jumping_conversation_is_unstable():
    c = ContextClassifier(ContextSettings(unstable_window=3, unstable_shifts=3, novel_at=0.99))
    for p in ["alpha beta gamma", "delta epsilon", "alpha beta gamma"]:
        c.observe("s", p)
    r = c.observe("s", "delta epsilon")
    assert r.shift >= 0.6 and r.label == "unstable"


def test_surprise_under_a_reference_member_is_measured():
    ref = tiny_hf_member("ref")
    c = ContextClassifier(ContextSettings(surprise_at=0.0), reference=ref)
    c.observe("s", "hello there")
    r = c.observe("s", "hello there!")
    assert r.surprise is not None and r.surprise > 0 and r.label == "unstable"


def test_state_machine_transitions_and_policies():
    now = [0.0]
    log = []
    m = Metabolism(MetabolicSettings(crisis_window=4, crisis_failures=3, recover_successes=2, rest_budget=0.1,
                                     rest_after_s=100, focus_at=0.6, salience_window=2),
                   log=lambda a, b, why: log.append((a, b)), clock=lambda: now[0])
    assert m.state == "WAKE"
    m.after_call(True, 0.9, 1.0)
    m.after_call(True, 0.8, 1.0)
    assert m.state == "FOCUS" and m.policy.cost_scale == 0.5
    m.after_call(False, 0.1, 0.9)
    m.after_call(False, 0.1, 0.9)
    assert m.state == "WAKE"  # salience fell below focus_at / 2
    m.after_call(False, 0.1, 0.9)
    assert m.state == "CRISIS" and m.policy.mode == "greedy" and m.policy.cost_scale == 0
    m.after_call(True, 0.1, 0.9)
    m.after_call(True, 0.1, 0.9)
    assert m.state == "WAKE"
    now[0] = 500.0
    assert m.idle_check() == "REST" and m.policy.unload_idle
    m.before_call(0.05)  # a request, but the budget is nearly gone: stay resting
    assert m.state == "REST"
    m.before_call(0.5)
    assert m.state == "WAKE"
    m.enter_dream()
    m.after_call(False, 1.0, 0.5)
    assert m.state == "DREAM"  # consolidation is not interrupted
    m.leave_dream()
    assert log == [("WAKE", "FOCUS"), ("FOCUS", "WAKE"), ("WAKE", "CRISIS"), ("CRISIS", "WAKE"), ("WAKE", "REST"), ("REST", "WAKE"),
                   ("WAKE", "DREAM"), ("DREAM", "WAKE")]


def test_crisis_routes_to_the_most_trusted_member_regardless_of_cost(tmp_path):
    big, small = tiny_hf_member("big", hidden=64), tiny_hf_member("small", hidden=16, layers=1)
    settings = PoolSettings(seed=0, selection="greedy", cost_weight=1.0,
                            metabolic=MetabolicSettings(crisis_window=3, crisis_failures=3))
    r = Router(Pool([big, small], settings), PoolStore(tmp_path / "p.sqlite"))
    for _ in range(4):
        r.store.record_outcome("big", "c", 1.0, "feedback")
        r.store.record_outcome("small", "c", 0.5, "feedback")
    assert r.generate("x", context="c", max_tokens=1).member == "small"  # cheaper wins in WAKE
    for i in range(3):
        r.generate(f"x{i}", model="small", context="c", verifier=lambda p, a: False, max_tokens=1)
    assert r.metabolism.state == "CRISIS"
    assert r.generate("y", context="c", max_tokens=1).member == "big"
    assert r.store.state_log()[-1]["to_state"] == "CRISIS" and "failed" in r.store.state_log()[-1]["reason"]


def test_rest_unloads_idle_local_members_and_they_reload(tmp_path, hf_dir):
    from k1.pool.config import HFSpec
    from k1.pool.pool import load_member

    spec = HFSpec(name="h", path=str(hf_dir))
    pool = Pool([load_member(spec)], PoolSettings(), {"h": spec})
    pool.last_used["h"] = 0.0
    assert pool.unload_idle(idle_s=10, now=100.0) == ["h"] and "h" in pool.unloaded
    assert pool["h"].generate("hi", max_tokens=2).completion_tokens == 2  # reloaded on use
    assert "h" not in pool.unloaded
