"""`k1 specialize`: agent × domain measures on a real tiny run, the tree identity of gate shares, the
statistics on per-batch arrays with a known answer, and the command as a subprocess."""

import json
import os
import subprocess
import sys

import pytest
import torch

from k1.errors import ConfigError
from k1.explain.specialization import (
    bootstrap_ci,
    contrast,
    domain_means,
    holm_significant,
    permutation_pvalue,
    render_table,
    selectivity,
    specialize,
    write_outputs,
)
from k1.testing import tiny_run

KEYS = {"domains", "agents", "gate_share", "ablation_dloss", "blame_share", "score", "ci_low", "ci_high",
        "p_value", "specialist_domain", "n_batches", "method"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("spec")
    return tiny_run(root, steps=30)


@pytest.fixture(scope="module")
def result(run):
    return specialize(run, batches=2, bootstrap=300)


def test_json_schema_and_consistent_shapes(run, result):
    path, _, _ = write_outputs(run, result)
    data = json.loads(path.read_text())
    assert set(data) == KEYS and data == result
    A, D = len(data["agents"]), len(data["domains"])
    shape = json.loads((run / "shape.json").read_text())
    assert data["agents"] == [a[1] for a in shape["agents"]] and data["domains"] == ["prose", "code", "science"]
    for key in ("gate_share", "ablation_dloss", "blame_share"):
        assert len(data[key]) == A and all(len(row) == D for row in data[key])
    for key in ("score", "ci_low", "ci_high", "p_value", "specialist_domain"):
        assert len(data[key]) == A
    assert data["n_batches"] == 2 * D
    for a in range(A):
        row = data["ablation_dloss"][a]
        best = max(range(D), key=lambda d: row[d])
        assert data["specialist_domain"][a] == data["domains"][best]
        assert data["score"][a] == pytest.approx(row[best] - (sum(row) - row[best]) / (D - 1), abs=1e-9)
        assert data["ci_low"][a] <= data["ci_high"][a]
        assert 1 / 301 <= data["p_value"][a] <= 1
    assert any(abs(v) > 1e-6 for row in data["ablation_dloss"] for v in row)


def test_gate_shares_of_siblings_sum_to_the_parent(run, result):
    shape = json.loads((run / "shape.json").read_text())
    name_of = {i: n for i, n, _, _ in shape["agents"]}
    row = {n: r for n, r in zip(result["agents"], result["gate_share"])}
    assert row["root"] == pytest.approx([1.0] * 3)
    checked = 0
    for pid, pname in name_of.items():
        kids = [name_of[i] for i, _, _, parent in shape["agents"] if parent == pid]
        if kids:
            for d in range(3):
                assert sum(row[k][d] for k in kids) == pytest.approx(row[pname][d], abs=1e-6)
            checked += 1
    assert checked == 3  # root, n0, n1 of the [2, 2] tree


def test_blame_share_is_one_path_per_batch(result):
    shares = {n: r for n, r in zip(result["agents"], result["blame_share"])}
    assert shares["root"] == [1.0, 1.0, 1.0]
    for level_names in (["n0", "n1"], ["n0.a0", "n0.a1", "n1.a0", "n1.a1"]):  # one agent per level per batch
        for d in range(3):
            assert sum(shares[n][d] for n in level_names) == pytest.approx(1.0)


def test_contrast_and_holm_by_hand():
    means = torch.tensor([[1.0, 2.0], [3.0, 0.0], [2.0, 1.0]])  # [D=3, A=2]
    score, best = contrast(means)
    assert best.tolist() == [1, 0] and score.tolist() == [1.5, 1.5]  # 3 − (1+2)/2, 2 − (0+1)/2
    fixed, _ = contrast(means, torch.tensor([0, 1]))
    assert fixed.tolist() == [1 - 2.5, 0 - 1.5]
    values = torch.tensor([[1.0], [3.0], [10.0], [20.0]])
    assert domain_means(values, torch.tensor([0, 0, 1, 1]), 2).squeeze(1).tolist() == [2.0, 15.0]
    # Holm at 0.05 over 4: sorted 0.01 ≤ 0.0125 passes, 0.03 > 0.05/3 stops the step-down
    assert holm_significant(torch.tensor([0.01, 0.04, 0.03, 0.5])).tolist() == [True, False, False, False]
    assert holm_significant(torch.tensor([0.001, 0.01, 0.02])).tolist() == [True, True, True]


def _batches(per_domain: int, D: int):
    return torch.arange(D).repeat_interleave(per_domain)  # [nb] domain label per batch


def test_statistics_separate_a_specialist_from_identical_and_null_agents():
    g = torch.Generator().manual_seed(0)
    D, per = 3, 8
    labels = _batches(per, D)
    noise = torch.randn(D * per, generator=g, dtype=torch.float64) * 0.1
    specialist = noise + (labels == 1).double()  # ablating it hurts domain 1 by ~1 nat
    same = torch.rand(per, generator=g, dtype=torch.float64).repeat(D)  # the same batch values in every domain
    values = torch.stack([specialist, same], 1)  # [nb, A=2]
    n = 999
    p = permutation_pvalue(values, labels, D, n, g)
    score, best = contrast(domain_means(values, labels, D))
    lo, hi = bootstrap_ci(values, labels, D, best, n, g)
    assert best[0] == 1 and p[0] == pytest.approx(1 / (n + 1))  # no shuffle reaches the real split
    assert lo[0] > 0.5 and hi[0] < 1.5 and lo[0] <= score[0] <= hi[0]
    assert p[1] == pytest.approx(1.0)  # identical domains: every shuffle ties or beats a zero score
    null = torch.randn(D * per, 200, generator=g, dtype=torch.float64)  # 200 agents with no domain effect
    p_null = permutation_pvalue(null, labels, D, 199, g)
    assert 0.35 < p_null.mean() < 0.65 and (p_null <= 0.05).double().mean() < 0.12
    assert not holm_significant(p_null).any()


def test_bad_arguments_are_config_errors(run):
    with pytest.raises(ConfigError, match="--batches"):
        specialize(run, batches=0)


def test_table_verdict_is_honest(result):
    from rich.console import Console

    table, verdict = render_table(result, top=5, resamples=300)
    console = Console(record=True, width=200)
    console.print(table)
    shown = console.export_text()
    top = sorted(range(len(result["agents"])), key=lambda i: -result["score"][i])[:5]
    assert all(result["agents"][i] in shown for i in top) and table.row_count == 5
    n_sig = int(holm_significant(torch.tensor(result["p_value"])).sum())
    assert verdict.startswith("no agent is significantly") if n_sig == 0 else verdict.startswith(f"{n_sig} of 7")
    if n_sig == 0:  # 100 shuffles cannot reach p = 0.05 / 7 (Holm's first threshold); 2000 can
        assert "cannot go below" in render_table(result, resamples=100)[1]
        assert "cannot go below" not in render_table(result, resamples=2000)[1]
    # forged by hand: ablating n0.a0 hurts only code (selectivity 1, 0.2 nats); the root hurts all alike (0); the
    # leaves n0.a1.. lean to code but hurt everywhere (1/3); n0, n1 do nothing (0)
    dloss = [[0.3, 0.3, 0.3], [0.0] * 3, [0.0] * 3, [0.0, 0.2, -0.1]] + [[0.05, 0.1, 0.05]] * 3
    best = [max(r) for r in dloss]
    score = [m - (sum(r) - m) / 2 for r, m in zip(dloss, best)]
    forged = {**result, "ablation_dloss": dloss, "score": score, "p_value": [0.0001] * 7,
              "specialist_domain": [result["domains"][r.index(m)] for r, m in zip(dloss, best)]}
    assert selectivity(forged) == pytest.approx([0, 0, 0, 1, 1 / 3, 1 / 3, 1 / 3])
    _, verdict = render_table(forged)
    assert verdict.startswith("7 of 7") and verdict.endswith("on their domain): n0.a0 (code, 1.00)")
    forged["ablation_dloss"] = [[v / 100 for v in row] for row in dloss]  # as selective, but 0.002 nats: too small
    forged["score"] = [v / 100 for v in score]
    assert selectivity(forged)[3] == pytest.approx(1.0) and render_table(forged)[1].endswith("domain): none")


def _k1(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a shared 2-core box: OpenMP spin-waits thrash under load
    return subprocess.run([sys.executable, "-m", "k1.cli", *map(str, args)], capture_output=True, text=True, env=env)


def test_cli_writes_files_and_rejects_a_bad_run_dir(run, tmp_path):
    r = _k1("specialize", "--run", run, "--batches", "2", "--bootstrap", "200", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads((run / "specialize.json").read_text())
    assert set(data) == KEYS and data["n_batches"] == 6 and json.loads(r.stdout) == data
    try:
        import matplotlib  # noqa: F401
        assert (run / "specialize.png").stat().st_size > 1000
    except ImportError:
        assert "matplotlib is not installed" in r.stderr
    bad = _k1("specialize", "--run", tmp_path / "nowhere")
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and bad.stderr.startswith("k1: error:")
