"""The stability–plasticity frontier: dominance on hand-made points, and `k1 continual --sweep` end to end
(one table per value, the plot and the points)."""

import json

import pytest

from k1.experiments.frontier import dominates, main
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
    assert (out / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    assert 'data-plot="frontier"' in (out / "frontier.html").read_text()
    assert main([str(out), "--out", str(tmp_path / "again")]) == 0  # rebuilt from the tables, no training
    assert json.loads((tmp_path / "again" / "frontier.json").read_text())["points"] == front["points"]


def test_a_bad_sweep_is_a_one_line_error(cfg_file, tmp_path):
    r = run_k1("continual", "--config", cfg_file, "--sweep", "optim.lr", "--out", tmp_path / "x", check=False)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "--sweep" in lines[0]
