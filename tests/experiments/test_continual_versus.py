"""The ratio to tree-naive's forgetting, in the table the continual goals are read from."""

from k1.experiments.continual_report import versus, versus_cells


def _report(naive_forgetting: float) -> dict:
    def s(name, forgetting, final):
        return {"name": name, "forgetting_max": {"mean": forgetting, "std": 0.0}, "final_avg": {"mean": final, "std": 0.0}}
    return {"strategies": [s("tree-naive", naive_forgetting, 4.0), s("k1-ewc", 0.02, 4.2)]}


def test_ratio_and_relative_final_average():
    v = versus(_report(0.1))
    assert abs(v["k1-ewc"][0] - 0.2) < 1e-12 and abs(v["k1-ewc"][1] - 0.05) < 1e-12
    assert versus_cells(_report(0.1), "k1-ewc") == ["0.20×", "+5.0%", "—"]


def test_no_ratio_when_tree_naive_forgot_nothing():
    """Later domains improved earlier ones: dividing by that is meaningless, so the table says n/a, not nan×."""
    for f0 in (0.0, -0.046):
        assert versus(_report(f0))["k1-ewc"][0] is None
        assert versus_cells(_report(f0), "k1-ewc") == ["n/a", "+5.0%", "—"]


def test_worst_just_learnt_gap_is_over_the_domains_after_the_first():
    rep = _report(0.1)
    diag = {"tree-naive": [3.0, 4.0, 2.0], "k1-ewc": [2.0, 4.2, 2.01]}  # the first domain does not count
    for s in rep["strategies"]:
        s["just_learnt_per_domain"] = {"mean": diag[s["name"]], "std": [0.0] * 3}
    assert abs(versus(rep)["k1-ewc"][2] - 0.05) < 1e-12
    assert versus_cells(rep, "k1-ewc")[2] == "+5.0%"
