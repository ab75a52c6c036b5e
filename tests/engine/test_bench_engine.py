"""bench/engine.py runs end to end on CPU (tiny preset): every candidate, the routed rows (top-1 and top-2),
FLOPs counted equal to the shape count, and the ratios the README quotes."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))


@pytest.fixture
def bench_main():
    from engine import main

    return main


def test_bench_reports_every_candidate_and_ratio(bench_main, tmp_path):
    r = bench_main(["--preset", "tiny", "--steps", "1", "--rounds", "2", "--burn-in", "1", "--threads", "1",
                    "--routed", "--no-eager", "--sync-free", "--out", str(tmp_path)])
    names = {"tree_dense", "tree_attribution", "dense_gpt", "tree_mlp_soft", "tree_mlp_routed_top1",
             "tree_mlp_routed_top2", "tree_attribution_sync_free"}
    assert set(r["tokens_per_s"]) == names
    assert r["train_flops_per_token"] == r["train_flops_per_token_from_shapes"]
    f = r["train_flops_per_token"]
    assert f["tree_mlp_routed_top1"] < f["tree_mlp_routed_top2"] < f["tree_mlp_soft"]
    assert 0 < r["step_time_floor_attribution_vs_dense"] < 1
    for key in ("step_time_ratio_attribution_vs_dense", "ratio_tree_vs_dense_gpt", "ratio_routed_vs_soft_mlp_tree",
                "ratio_routed_top2_vs_soft_mlp_tree", "step_time_ratio_sync_free_vs_host_rows"):
        assert r[key] > 0 and r["cpu_time"][key] > 0
    assert list(tmp_path.glob("engine-tiny-*.json"))
