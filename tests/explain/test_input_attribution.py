"""Per-input attribution (`k1 explain --text`) on a real tiny run: loss, grads, gates, blame path, ablations."""

import json
import math

import pytest
import torch

from k1.engine.run.generate import load_run_model
from k1.errors import DataError
from k1.explain.input_attribution import explain_input, render_input_text
from k1.testing import tiny_run

TEXT = "the old king walked slowly across the bridge to market. def f(x): return x + y"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("attr")
    return tiny_run(root, steps=30)


def _xy(run_dir, text):
    model, tok, _ = load_run_model(run_dir)
    ids = torch.tensor([tok.encode(text)[-(model.cfg.context + 1):]])
    return model, ids[:, :-1], ids[:, 1:]


def _hand_blame_path(model, x, y) -> list[str]:
    """Recomputed without StepSignals or the policy: RMS grad per agent slice, then a Python walk down."""
    model.zero_grad(set_to_none=True)
    model(x, y)[1].backward()
    rms = []
    for level in model.levels:
        params = [p for _, p in level.agent_parameters()]
        for i in range(level.n_agents):
            sq = sum(float(p.grad[i].pow(2).sum()) if p.grad is not None else 0.0 for p in params)
            rms.append(math.sqrt(sq / sum(p[i].numel() for p in params)))
    names, parents = model.shape.names(), model.shape.flat_parents()
    path, cur = ["root"], 0
    while True:
        kids = [i for i, p in enumerate(parents) if p == cur]
        if not kids:
            return path
        cur = max(kids, key=lambda i: rms[i])
        path.append(names[cur])


def test_one_entry_per_agent_and_blame_path_from_root_to_leaf(run):
    res = explain_input(run, TEXT)
    shape = json.loads((run / "shape.json").read_text())
    assert [a["name"] for a in res["agents"]] == [a[1] for a in shape["agents"]]
    by_name = {a["name"]: a for a in res["agents"]}
    path = res["blame_path"]
    assert path[0] == "root" and not any(a["parent"] == path[-1] for a in res["agents"])  # ends at a leaf
    assert all(by_name[child]["parent"] == parent for parent, child in zip(path, path[1:]))
    assert [a["name"] for a in res["agents"] if a["role"] == "culprit"] == [path[-1]]
    assert {a["name"] for a in res["agents"] if a["role"] == "path"} == set(path[:-1])
    model, x, y = _xy(run, TEXT)
    assert path == _hand_blame_path(model, x, y)


def test_loss_and_ablation_dloss_match_a_hand_recomputation(run):
    res = explain_input(run, TEXT)
    model, x, y = _xy(run, TEXT)
    with torch.no_grad():
        base = model(x, y)[1].item()
        assert res["loss"] == pytest.approx(base, abs=1e-5)
        assert res["bits_per_byte"] == pytest.approx(base / math.log(2), abs=1e-5)  # byte tokenizer
        for i in (0, len(res["agents"]) - 1, max(range(len(res["agents"])),
                                                 key=lambda i: abs(res["agents"][i]["ablation_dloss"]))):
            mask = torch.zeros(len(res["agents"]), dtype=torch.bool)
            mask[i] = True
            ablated = model(x, y, ablate=mask)[1].item()
            assert res["agents"][i]["ablation_dloss"] == pytest.approx(ablated - base, abs=1e-5)
    assert any(abs(a["ablation_dloss"]) > 1e-6 for a in res["agents"])  # ablation really changes something
    gates = {a["name"]: a["gate_mass"] for a in res["agents"]}
    assert gates["root"] == pytest.approx(1.0)
    for name in gates:  # tree wiring: the children's gate mass adds up to the parent's
        kids = [a["gate_mass"] for a in res["agents"] if a["parent"] == name]
        if kids:
            assert sum(kids) == pytest.approx(gates[name], abs=1e-5)


def test_long_text_is_windowed_and_short_text_refused(run):
    model, tok, _ = load_run_model(run)
    long = TEXT * 3
    res = explain_input(run, long)
    assert res["truncated"] and res["tokens"] == model.cfg.context + 1
    assert res["tokens_total"] == len(tok.encode(long))
    assert "the last" in render_input_text(res)
    short = explain_input(run, "ab")
    assert not short["truncated"] and short["tokens"] == 2
    with pytest.raises(DataError, match="at least 2"):
        explain_input(run, "a")


def test_text_rendering_names_every_agent(run):
    res = explain_input(run, TEXT)
    text = render_input_text(res)
    rows = {line[:28].split()[-1]: line for line in text.splitlines()[2:2 + len(res["agents"])]}
    assert set(rows) == {a["name"] for a in res["agents"]}
    for a in res["agents"]:
        assert rows[a["name"]].endswith(a["role"]) and f"{a['ablation_dloss']:+.4f}" in rows[a["name"]]
    assert "blame path: " + " → ".join(res["blame_path"]) in text
    assert json.loads(json.dumps(res)) == res  # JSON-able as is (for --json)
