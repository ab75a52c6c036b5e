"""Issue 26's controls and isolation: the random-path control (attribution's scales on a random path),
tuning windows apart from evaluation windows, Holm's correction beside the pre-registered primary tests,
the code version a run is matched by, the shared part frozen after the first domain (bit-identical from
then on) and EWC on the shared part only."""

import json

import pytest
import torch

from k1.data import load_corpus
from k1.engine.run.measure import trial_batches
from k1.engine.run.state import TrainState
from k1.engine.run.step import train_step
from k1.engine.run.train import Trainer
from k1.engine.selforg.plasticity import extract
from k1.experiments.continual import PRIMARY, check_run, held_out, holm, paired, run_one
from k1.experiments.ewc import EWCPenalty
from k1.experiments.plugins import ContinualConfig
from k1.experiments.provenance import code_version, same_code
from k1.experiments.strategies import strategy_config
from k1.testing import tiny_config

DOMAINS = ["prose", "code", "science"]


@pytest.fixture
def tiny(tmp_path):
    cfg = tiny_config(tmp_path / "data", ["train.batch_size=4", "train.eval_batches=1", "optim.warmup_steps=2"])
    cfg, _ = check_run(cfg, DOMAINS, ["k1-attribution"], 1, 4)
    return cfg, load_corpus(cfg.data)


def rows(tr) -> dict[int, dict[str, torch.Tensor]]:
    return {i: {k: v for k, v in r.items() if k.startswith("param.")}
            for i, r in extract(tr.state.model, tr.state.optimizer).items()}


# ---- random-path ------------------------------------------------------------------------------------------
def test_random_path_moves_a_random_root_to_leaf_path_with_attributions_scales(tiny, tmp_path):
    cfg, corpus = tiny
    tr = Trainer(strategy_config("random-path", cfg), tmp_path / "rp", corpus=corpus, quiet=True, recorders=[])
    att = Trainer(strategy_config("k1-attribution", cfg), tmp_path / "a", corpus=corpus, quiet=True, recorders=[])
    shape, leaves = tr.state.shape, set()
    for _ in range(12):
        before = rows(tr)
        plan = train_step(tr.state, *tr.state.sampler.next()).plan
        after = rows(tr)
        path = plan.path.tolist()
        assert path[0] == 0 and len(path) == shape.n_levels
        for i in range(1, len(path)):  # each a child of the one before: a path, not K loose agents
            assert shape.agents[path[i]].parent == shape.agents[path[i - 1]].id
        leaves.add(path[-1])
        a_plan = train_step(att.state, *att.state.sampler.next()).plan
        assert sorted(plan.scale[plan.scale > 0].tolist()) == sorted(a_plan.scale[a_plan.scale > 0].tolist())
        for flat, a in enumerate(shape.agents):  # sparsity stays real: the rest is bit-identical
            same = all(torch.equal(before[a.id][k], after[a.id][k]) for k in before[a.id])
            assert same == (flat not in path)
    assert len(leaves) > 1, "the path must vary: it is drawn at random"


def test_random_path_is_independent_of_the_gradient(tiny, tmp_path):
    """The same policy stream gives the same paths whatever the gradients say."""
    cfg, corpus = tiny
    from k1.engine.update.policies import build_policy
    from k1.engine.update.signals import StepSignals

    tr = Trainer(strategy_config("random-path", cfg), tmp_path / "rp", corpus=corpus, quiet=True, recorders=[])
    shape, parents = tr.state.shape, tr.state.parents
    paths = []
    for g in (torch.rand(shape.n_agents), torch.rand(shape.n_agents) * 100):
        pol = build_policy(tr.state.cfg.policy, shape, seed=5)
        sig = StepSignals(grad_rms=g, gate_mass=torch.ones(shape.n_agents), loss=torch.zeros(()), parents=parents)
        paths.append([pol.plan(sig, None, s).path.tolist() for s in range(6)])
    assert paths[0] == paths[1]


# ---- tuning windows apart from evaluation windows ---------------------------------------------------------
def test_tuning_and_evaluation_windows_are_disjoint_and_trials_judge_on_tuning(tiny):
    cfg, corpus = tiny
    ccfg = ContinualConfig(eval_tokens=300, tune_fraction=0.5)
    c = held_out(cfg, ccfg)
    B, T = c.train.batch_size, c.model.context
    assert c.train.eval_batches * B * T >= 300 and c.train.tune_fraction == 0.5
    st = TrainState(c, corpus)
    for d, s in corpus.domains.items():
        cut = int(s.val.numel() * 0.5)
        tune = {tuple(r.tolist()) for x, _ in st.tune_sets[d] for r in x}
        ev = {tuple(r.tolist()) for x, _ in st.eval_sets[d] for r in x}
        assert not tune & ev
        val = s.val.tolist()  # every evaluation window lies in the split's second part
        first = st.eval_sets[d][0][0][0].tolist()
        assert any(val[i:i + T] == first for i in range(cut, len(val) - T + 1))
    st.trial_domains = ["prose"]
    assert all(torch.equal(x, tx) for (x, _), (tx, _) in zip(trial_batches(st), st.tune_sets["prose"]))
    tuned = TrainState(held_out(cfg, ccfg, "tune"), corpus)  # --eval-on tune: evaluate where settings are chosen
    assert all(torch.equal(a[0], b[0]) for a, b in zip(tuned.eval_sets["code"], tuned.tune_sets["code"]))


def test_without_a_tuning_fraction_both_are_the_same_windows(tiny):
    cfg, corpus = tiny
    st = TrainState(cfg, corpus)
    assert all(st.eval_sets[d] is st.tune_sets[d] for d in st.eval_sets)


# ---- statistics -------------------------------------------------------------------------------------------
def test_holm_adjusts_step_down_and_monotone():
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.3, 0.6]) == pytest.approx([0.6, 0.6])
    assert holm([]) == []


def test_primary_tests_stand_alone_and_the_rest_are_holm_corrected():
    def runs(f):
        return [{"seed": s, "forgetting_max": f + 0.01 * s, "final_avg": 4.0, "just_learnt": 3.0} for s in range(8)]

    results = {"tree-naive": runs(0.3), "random-path": runs(0.25), "k1-attribution": runs(0.1)}
    out = paired(results)
    prim = [c for c in out if c["primary"]]
    assert [(c["candidate"], c["reference"], c["metric"]) for c in prim] == [PRIMARY[0]]
    assert prim[0]["p_value"] == pytest.approx(2 / 256) and prim[0]["p_holm"] == prim[0]["p_value"]
    rest = [c for c in out if not c["primary"]]
    assert rest and all(c["p_holm"] >= c["p_value"] for c in rest)
    assert max(c["p_holm"] for c in rest if c["metric"] == "forgetting_max") == pytest.approx(
        min(1.0, len(rest) * 2 / 256))


# ---- the code version ------------------------------------------------------------------------------------
def test_a_run_of_other_code_is_neither_reused_nor_resumed(tiny, tmp_path):
    cfg, corpus = tiny
    v = code_version()
    assert len(v["source"]) == 64 and v["dirty"] in (True, False, None)
    assert same_code(v, v) and not same_code({**v, "source": "0" * 64}, v) and not same_code(None, v)
    ccfg = ContinualConfig()
    run_dir = tmp_path / "r"
    first = run_one(cfg, ccfg, "k1-attribution", 3, corpus, run_dir)
    assert first["code"] == v
    from k1.experiments.continual_run import finished_run, run_identity

    ident = run_identity(cfg, ccfg, "k1-attribution", 3)
    assert finished_run(run_dir, ident) is not None
    saved = json.loads((run_dir / "continual_run.json").read_text())
    saved["identity"]["code"]["source"] = "f" * 64  # trained by other code
    (run_dir / "continual_run.json").write_text(json.dumps(saved))
    assert finished_run(run_dir, ident) is None


# ---- the shared part: frozen, or shielded ------------------------------------------------------------------
def shared(state) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in state.model.shared_parameters()}


def test_freeze_shared_leaves_the_shared_part_bit_identical_after_the_first_domain(tiny, tmp_path):
    from k1.engine.hooks import Hook

    cfg, corpus = tiny
    seen = []

    class Watch(Hook):
        def on_stage_start(self, state, stage):
            seen.append((stage.index, shared(state), {k: v.clone() for k, v in state.optimizer.state_dict().items()
                                                      if "emb" in k or "ln_f" in k}))

        def on_stage_end(self, state, stage, metrics):
            seen.append((stage.index, shared(state), None))

    run_one(cfg, ContinualConfig(), "k1-freeze", 1, corpus, tmp_path / "f", extra_hooks=[Watch()])
    (_, s0, _), (_, e0, _), (_, s1, _), _, _, (_, e2, _) = seen
    assert any(not torch.equal(s0[n], e0[n]) for n in s0), "the first domain trains the shared part"
    assert all(torch.equal(s1[n], e2[n]) for n in s1), "after it, the shared part stays bit-identical"
    tree = run_one(cfg, ContinualConfig(), "tree-freeze", 1, corpus, tmp_path / "t")
    assert tree["frac_params_changed"] > 0


def test_shared_only_ewc_anchors_the_shared_part_and_leaves_agents_free(tiny):
    cfg, corpus = tiny
    st = TrainState(strategy_config("k1-ewc-shared", cfg), corpus)
    from k1.data import BatchSampler

    sampler = BatchSampler(corpus, 4, cfg.model.context, seed=3, domains=["prose"])
    ewc = EWCPenalty(100.0, "shared")
    ewc.consolidate(st.model, [sampler.next() for _ in range(2)])
    fisher, _ = ewc.anchors[0]
    assert fisher and not any(n.startswith("levels.") for n in fisher)
    assert set(fisher) == {n for n, _ in st.model.shared_parameters()}
    with torch.no_grad():
        for p in st.model.parameters():
            p += 0.01
    ewc(st.model).backward()
    for n, p in st.model.named_parameters():
        assert (p.grad is None or not p.grad.any()) == n.startswith("levels."), n
    with pytest.raises(ValueError):
        EWCPenalty(1.0, "agents")
