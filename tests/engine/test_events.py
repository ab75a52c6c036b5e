"""Console event lines are short and human: 3–4 significant digits, the agent's name, the decision."""

from k1.engine.hooks.events import format_event


def test_a_trial_reads_as_one_short_line():
    e = {"step": 120, "kind": "trial", "trial": 3, "action": "prune", "agent": "n3.a1.s2", "boundary_break": False,
         "decision": "commit", "held_out_control": 2.7123456789012, "held_out_with_change": 2.70498765432,
         "rel_gain": 0.0027123, "surgery": "prune", "removed": ["n3.a1.s2"]}
    assert format_event(e) == "step 120  trial 3  prune n3.a1.s2  held-out 2.712 → 2.705  commit"


def test_rollbacks_stops_and_stages_have_their_own_lines():
    assert format_event({"step": 7, "kind": "rollback", "reason": "loss spike", "restored_step": 5,
                         "lr_scale": 0.5}) == "step 7  rollback (loss spike)  restored step 5  lr scale 0.5"
    assert format_event({"step": 90, "kind": "self_stop", "val_loss": 2.71234567, "best_val": 2.7012345}) == \
        "step 90  self-stop  val 2.712 (best 2.701)"
    assert format_event({"step": 38, "kind": "stage", "stage": 2, "successful_breaks": 3}) == \
        "step 38  autonomy stage 2 (3 successful breaks)"
    line = format_event({"step": 1, "kind": "something_new", "x": 0.123456789, "nested": {"a": 1}})
    assert line == "step 1  something_new  x 0.1235"
