"""The stability–plasticity frontier: dominance on hand-made points, and `k1 continual --sweep` end to end
(one table per value, the plot and the points)."""

import json

import pytest

from k1.experiments.frontier import dominates, main, markdown, plot, seed_dominance
from k1.testing.cli import run_k1
from k1.testing.tiny import write_tiny_config_file


def pts(*xy):
    return [{"forgetting_max": x, "just_learnt": y} for x, y in xy]


def test_a_frontier_dominates_only_where_it_is_no_worse_on_both_and_better_on_one():
    ewc = pts((0.05, 4.5), (0.10, 4.3), (0.20, 4.1))
    assert dominates(pts((0.04, 4.5), (0.10, 4.2), (0.15, 4.1)), ewc)
    assert not dominates(pts((0.04, 4.6), (0.10, 4.2), (0.15, 4.1)), ewc)  # learns worse at the low end
    assert not dominates(ewc, ewc)  # equal is not better
    assert not dominates([], ewc) and not dominates(ewc, [])


@pytest.fixture
def cfg_file(tmp_path):
    return write_tiny_config_file(
        tmp_path, model={"branching": [2, 2], "width": 32, "mlp_width": 64, "n_heads": 2, "context": 32},
        train={"batch_size": 4, "eval_batches": 1}, optim={"warmup_steps": 2},
        continual={"ewc_batches": 2, "eval_tokens": 128})


def test_sweep_runs_one_table_per_value_and_plots_the_frontier(cfg_file, tmp_path):
    out = tmp_path / "sw"
    run_k1("continual", "--config", cfg_file, "--steps-per-domain", "2", "--strategies",
           "k1-attribution,random-path", "--sweep", "optim.lr=1e-3,5e-3", "--out", out, "--quiet", "--no-specialize")
    for v in ("1e-3", "5e-3"):
        table = json.loads((out / "sweep" / f"optim.lr={v}" / "continual.json").read_text())
        assert table["command"].endswith("--no-specialize") and [s["name"] for s in table["strategies"]] == [
            "k1-attribution", "random-path"]
    front = json.loads((out / "frontier.json").read_text())
    assert sorted((p["strategy"], p["setting"]) for p in front["points"]) == sorted(
        (s, f"optim.lr={v}") for s in ("k1-attribution", "random-path") for v in ("1e-3", "5e-3"))
    assert [(v["frontier"], v["over"]) for v in front["dominance"]] == [("k1-attribution", "random-path")]
    assert front["dominance"][0]["seeds"] == 3 and front["dominance"][0]["points"] == [2, 2]
    assert all([r["seed"] for r in p["per_seed"]] == table["seeds"] for p in front["points"])
    assert (out / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    assert 'data-plot="frontier"' in (out / "frontier.html").read_text()
    assert main([str(out), "--out", str(tmp_path / "again")]) == 0  # rebuilt from the tables, no training
    assert json.loads((tmp_path / "again" / "frontier.json").read_text())["points"] == front["points"]


def test_a_bad_sweep_is_a_one_line_error(cfg_file, tmp_path):
    r = run_k1("continual", "--config", cfg_file, "--sweep", "optim.lr", "--out", tmp_path / "x", check=False)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "--sweep" in lines[0]


def seeded(strategy, key, value, *per_seed):
    """A frontier point whose means are those of its seeds' (forgetting, just-learnt) values."""
    rows = [{"seed": 1337 + i, "forgetting_max": f, "just_learnt": j, "final_avg": j} for i, (f, j) in enumerate(per_seed)]
    mean = lambda k: sum(r[k] for r in rows) / len(rows)
    return {"strategy": strategy, "setting": f"{key}={value}", "key": key, "value": value, "seeds": len(rows),
            "forgetting_max": mean("forgetting_max"), "forgetting_std": 0.01, "just_learnt": mean("just_learnt"),
            "just_learnt_std": 0.01, "final_avg": mean("final_avg"), "table": "t", "per_seed": rows}


def test_seed_dominance_counts_the_seeds_whose_own_frontier_dominates():
    ewc = [seeded("tree-ewc", "continual.ewc_lambda", "1e5", (0.10, 4.5), (0.10, 4.5), (0.10, 4.5)),
           seeded("tree-ewc", "continual.ewc_lambda", "1e6", (0.02, 4.6), (0.02, 4.6), (0.02, 4.6))]
    # beats both tree-ewc points on seeds 1337 and 1338; on seed 1339 it learns worse than λ 1e5 there
    route = [seeded("k1-route", "optim.lr", "3e-3", (0.01, 4.4), (0.01, 4.4), (0.01, 4.55))]
    assert dominates(route, ewc)  # the means: 0.01 / 4.45
    assert seed_dominance(route, ewc) == (2, 3)
    assert seed_dominance(ewc, route) == (0, 3)
    assert seed_dominance(route, []) == (0, 0)
    # seeds are matched by number: a seed missing from one point leaves the shared ones
    short = [seeded("k1-route", "optim.lr", "3e-3", (0.01, 4.4), (0.01, 4.4))]
    assert seed_dominance(short, ewc) == (2, 2)


def test_the_plot_has_a_panel_per_swept_setting_and_the_reference_in_each(tmp_path):
    points = [seeded("tree-ewc", "continual.ewc_lambda", v, (f, j), (f + 0.01, j + 0.01))
              for v, f, j in (("1e5", 0.1, 4.5), ("1e6", 0.02, 4.6))]
    points += [seeded("k1-route", "optim.lr", v, (f, j), (f, j)) for v, f, j in (("1e-3", 0.0, 4.7), ("3e-3", 0.02, 4.45))]
    fig = plot(points)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["sweep of continual.ewc_lambda", "sweep of optim.lr"]
    labels = [t.get_text() for t in axes[1].get_legend().get_texts()]
    assert labels[0].startswith("tree-ewc (continual.ewc_lambda sweep") and labels[1] == "k1-route (2 seeds)"
    assert "tree-ewc" not in " ".join(t.get_text() for t in axes[0].get_legend().get_texts()[1:])
    md = markdown({"points": points, "dominance": [{"frontier": "k1-route", "over": "tree-ewc", "dominates": False,
                                                     "seeds_dominating": 0, "seeds": 2, "points": [2, 2]}]})
    assert "| k1-route | optim.lr=1e-3 | 2 | 0.000 ± 0.010 | 4.700 ± 0.010 |" in md
    assert "| k1-route | tree-ewc | no | 0/2 | 2 / 2 |" in md
