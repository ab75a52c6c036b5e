"""Selection: Thompson explores then exploits, UCB tries every member, greedy takes the mean; cost counts."""

import random

import pytest

from k1.pool.route.select import Candidate, select


def test_greedy_takes_the_best_mean_and_cost_can_outweigh_it():
    cands = [Candidate("strong", 9, 1, cost=10.0), Candidate("weak", 6, 4, cost=1.0)]
    assert select(cands, "greedy", cost_weight=0.0).member == "strong"
    # utility = mean − λ·cost/max: strong 0.833 − λ, weak 0.583 − 0.1λ → weak wins for λ > 0.278
    assert select(cands, "greedy", cost_weight=0.3).member == "weak"
    d = select(cands, "greedy", cost_weight=0.2)
    assert d.member == "strong" and d.utilities["strong"] == pytest.approx(10 / 12 - 0.2)


def test_ucb_tries_untried_members_first():
    cands = [Candidate("a", 50, 0, 1.0), Candidate("new", 0, 0, 1.0)]
    assert select(cands, "ucb", cost_weight=0.0).member == "new"


def test_thompson_learns_which_member_succeeds():
    rng = random.Random(0)
    truth = {"good": 0.9, "bad": 0.3}
    counts = {k: [0, 0] for k in truth}
    picks = []
    for _ in range(300):
        c = [Candidate(k, *counts[k], cost=1.0) for k in truth]
        m = select(c, "thompson", cost_weight=0.0, rng=rng).member
        ok = rng.random() < truth[m]
        counts[m][0 if ok else 1] += 1
        picks.append(m)
    assert picks[-100:].count("good") > 85  # exploits the better arm
    assert picks.count("bad") >= 1  # but tried the other


def test_unknown_mode_and_empty_candidates_raise():
    with pytest.raises(ValueError):
        select([Candidate("a", 0, 0, 1)], "argmax")
    with pytest.raises(ValueError):
        select([], "greedy")


def test_selection_modes_are_a_registry():
    import random as _random

    import pytest as _pytest

    from k1.pool.route import select as sel

    cands = [sel.Candidate("a", 9, 1, 1.0), sel.Candidate("b", 1, 9, 1.0)]
    assert set(sel.MODES) == {"thompson", "ucb", "greedy"}
    with _pytest.raises(ValueError, match="unknown selection mode 'nope'; thompson, ucb, greedy"):
        sel.select(cands, "nope")
    sel.MODES["pessimist"] = lambda c, total, rng, k: -c.mean  # a new mode is one entry, no if-chain
    try:
        assert sel.select(cands, "pessimist", 0.0, _random.Random(0)).member == "b"
    finally:
        del sel.MODES["pessimist"]
