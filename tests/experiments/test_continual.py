"""`k1 continual`: the metrics against hand computation, a model that persists across stages, replay
that really mixes past-domain windows, the EWC penalty and its gradient, equal sparsity for random-k,
and the command end to end (JSON schema, one-line errors)."""

import json

import pytest
import torch

from k1.data import BatchSampler, load_corpus
from k1.engine.hooks import Hook
from k1.engine.run.loop import Stage, run
from k1.engine.run.step import train_step
from k1.engine.run.build import build_model
from k1.engine.run.train import Trainer, standard_hooks
from k1.errors import ConfigError
from k1.experiments.continual import (StageRecorder, check_run, continual_metrics, domain_stages, load_configs,
                                      mean_std, run_one, strategy_state)
from k1.experiments.strategies import (QUICK_STRATEGIES, STRATEGY_ORDER, ContinualConfig, EWCPenalty,
                                       ReplaySampler, ReservoirBuffer, strategy_config)
from k1.testing.cli import run_k1
from k1.testing import tiny_config
from k1.testing.tiny import write_tiny_config_file

DOMAINS = ["prose", "code", "science"]


def tiny_setup(tmp_path, strategy: str = "gpt-naive"):
    """The tiny preset on the synthetic corpus, as `k1 continual` would run `strategy` with 4 steps per domain."""
    cfg = tiny_config(tmp_path / "data", ["train.batch_size=4", "train.eval_batches=1", "optim.warmup_steps=2"])
    cfg, _ = check_run(cfg, DOMAINS, [strategy], 1, 4)
    return cfg, load_corpus(cfg.data)


@pytest.fixture
def tiny(tmp_path):
    return tiny_setup(tmp_path)


# ---- metrics -----------------------------------------------------------------------------------------
def test_metrics_equal_hand_computation_and_the_two_forgetting_definitions_differ():
    R = [[2.0, 5.0, 6.0],  # after prose
         [1.5, 3.0, 5.5],  # after code: prose improved further, so its best is 1.5, not R[0][0] = 2.0
         [2.5, 3.5, 2.0]]  # after science
    m = continual_metrics(R, [8.0, 7.0, 6.0])
    assert m["final_avg"] == pytest.approx((2.5 + 3.5 + 2.0) / 3)
    assert m["bwt"] == pytest.approx(((2.5 - 2.0) + (3.5 - 3.0)) / 2)  # 0.5: forgetting
    assert m["forgetting_first"] == pytest.approx(0.5)
    assert m["forgetting_max"] == pytest.approx(((2.5 - 1.5) + (3.5 - 3.0)) / 2)  # 0.75
    assert m["fwt"] == pytest.approx(((5.0 - 7.0) + (5.5 - 6.0)) / 2)  # -1.25: earlier domains helped
    assert m["just_learnt"] == pytest.approx((2.0 + 3.0 + 2.0) / 3)  # the diagonal: plasticity
    # forgetting over what was learnt (R_init − R[j][j]): prose lost 1.0 of 6.0, code 0.5 of 4.0
    assert m["forgetting_rel"] == pytest.approx((1.0 / 6.0 + 0.5 / 4.0) / 2)
    improved = continual_metrics([[3.0, 4.0], [2.0, 1.0]], [5.0, 5.0])  # domain 0 got better later
    assert improved["bwt"] == pytest.approx(-1.0) and improved["forgetting_max"] == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        continual_metrics([[1.0, 2.0]], [1.0, 2.0])


def test_mean_std_is_over_seeds_with_sample_std():
    assert mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0}
    assert mean_std([4.0]) == {"mean": 4.0, "std": 0.0}


# ---- the model persists ---------------------------------------------------------------------------------
def test_model_persists_across_stages(tiny, tmp_path):
    cfg, corpus = tiny
    out = run_one(cfg, ContinualConfig(), "gpt-naive", 7, corpus, tmp_path / "run")
    n = len(DOMAINS)
    assert len(out["R"]) == n and all(len(row) == n for row in out["R"]) and len(out["R_init"]) == n
    assert out["steps"] == n * 4
    assert {k: out[k] for k in ("final_avg", "bwt", "fwt")} == \
        {k: continual_metrics(out["R"], out["R_init"])[k] for k in ("final_avg", "bwt", "fwt")}
    assert out["R"][1][0] != out["R"][0][0]  # training on code moved the prose loss: the same model trained on

    # the first two stages again: one state that carries on through the loop reproduces R exactly ...
    state = strategy_state(cfg, "gpt-naive", 7, corpus)
    rec = StageRecorder(DOMAINS, tmp_path / "again")
    run(state, domain_stages(DOMAINS, 4)[:2], standard_hooks(state.cfg, quiet=True, recorders=[]) + [rec],
        tmp_path / "again", final_checkpoint=False)
    for i in range(2):
        assert rec.R[i] == pytest.approx(out["R"][i], abs=1e-6)
    # ... and a fresh model trained on code alone (same steps, same schedule position) does not
    fresh = strategy_state(cfg, "gpt-naive", 7, corpus)
    fresh.progress.step = 4
    rec = StageRecorder(DOMAINS, tmp_path / "fresh")
    run(fresh, [Stage("code", 8, index=1, domains=["code"], eval_every=0)],
        standard_hooks(fresh.cfg, quiet=True, recorders=[]) + [rec], tmp_path / "fresh", final_checkpoint=False)
    assert rec.R[0] != pytest.approx(out["R"][1], abs=1e-4)


def test_a_continual_run_is_an_ordinary_run_directory(tiny, tmp_path):
    """config.toml, the logs and a weights-only checkpoint per stage: what explain and specialize read."""
    cfg, corpus = tiny
    run_one(cfg, ContinualConfig(), "k1-attribution", 7, corpus, tmp_path / "run")
    run_dir = tmp_path / "run"
    assert (run_dir / "config.toml").is_file() and (run_dir / "attribution.jsonl").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-12", "step-4", "step-8"]
    from k1.engine.run.generate import load_run_model

    model, _, _ = load_run_model(run_dir)
    assert model.shape.n_agents == 7
    r = run_k1("explain", "--run", run_dir, "--json")
    assert json.loads(r.stdout)["step"] == 12


# ---- replay ---------------------------------------------------------------------------------------------
def test_replay_mixes_past_domain_windows_at_the_configured_fraction(tiny):
    cfg, corpus = tiny
    T, B = cfg.model.context, 8
    buf = ReservoirBuffer(capacity=32, context=T, seed=0)
    first = ReplaySampler(BatchSampler(corpus, B, T, seed=1, domains=["prose"]), buf, 0, fraction=0.25)
    plain = BatchSampler(corpus, B, T, seed=1, domains=["prose"])
    for _ in range(10):  # the first domain: nothing to replay, the batch is the naive one
        x, y = first.next()
        px, py = plain.next()
        assert torch.equal(x, px) and torch.equal(y, py) and not first.last_replayed.any()
    assert len(buf) == 32 and buf.seen == 80 and (buf.domain == 0).all()

    second = ReplaySampler(BatchSampler(corpus, B, T, seed=1, domains=["code"]), buf, 1, fraction=0.25)
    plain = BatchSampler(corpus, B, T, seed=1, domains=["code"])
    prose = corpus.domains["prose"].train.long().unfold(0, T + 1, 1)  # every prose window [n, T+1]
    for _ in range(5):
        x, y = second.next()
        px, _ = plain.next()
        assert second.last_replayed.tolist() == [False] * 6 + [True] * 2  # round(0.25 · 8) rows replayed
        assert torch.equal(x[:6], px[:6])  # the current rows are the naive sampler's rows
        for row in range(6, 8):
            window = torch.cat([x[row], y[row, -1:]])
            assert torch.equal(x[row, 1:], y[row, :-1])  # still next-token aligned
            assert (buf.windows == window).all(1).any(), "a replayed row must come from the buffer"
            assert (prose == window).all(1).any(), "a replayed row must be a real prose training window"
    assert set(buf.domain.tolist()) == {0, 1}  # the reservoir keeps sampling the stream


# ---- EWC -----------------------------------------------------------------------------------------------
def test_ewc_penalty_is_zero_at_anchor_and_its_gradient_is_lambda_f_delta(tiny):
    cfg, corpus = tiny
    torch.manual_seed(0)
    model = build_model(strategy_config("gpt-ewc", cfg), corpus.vocab_size)
    sampler = BatchSampler(corpus, 4, cfg.model.context, seed=3, domains=["prose"])
    ewc = EWCPenalty(lam=50.0)
    ewc.consolidate(model, [sampler.next() for _ in range(3)])
    fisher, star = ewc.anchors[0]
    assert all(p.grad is None for p in model.parameters())  # Fisher batches leave no gradients behind
    assert sum(float(f.sum()) for f in fisher.values()) > 0 and all((f >= 0).all() for f in fisher.values())
    assert float(ewc(model).detach()) == 0.0

    delta = {}
    with torch.no_grad():
        for n, p in model.named_parameters():
            delta[n] = 0.01 * torch.randn_like(p)
            p += delta[n]
    penalty = ewc(model)
    expected = 0.5 * 50.0 * sum(float((fisher[n] * delta[n] ** 2).sum()) for n in delta)
    assert penalty.item() > 0 and penalty.item() == pytest.approx(expected, rel=1e-4)
    penalty.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 50.0 * fisher[n] * (p.detach() - star[n]), rtol=1e-4, atol=1e-10)


# ---- strategies -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, arch, policy", [
    ("gpt-naive", "dense", "dense"), ("gpt-replay", "dense", "dense"), ("gpt-ewc", "dense", "dense"),
    ("tree-naive", "tree", "dense"), ("tree-replay", "tree", "dense"), ("tree-ewc", "tree", "dense"),
    ("random-k", "tree", "random"), ("k1-attribution", "tree", "attribution"), ("k1-hybrid", "tree", "hybrid"),
    ("k1-auto", "tree", "attribution"), ("k1-replay", "tree", "attribution"), ("k1-protect", "tree", "protect"),
    ("k1-balance", "tree", "attribution"), ("k1-grow", "tree", "grow"), ("k1-usage", "tree", "usage"),
    ("k1-ewc", "tree", "attribution"),
])
def test_strategy_configs_differ_only_in_model_policy_and_autonomy(tiny, name, arch, policy):
    cfg, _ = tiny
    s = strategy_config(name, cfg, steps_per_domain=40)
    assert (s.arch, s.policy.name, s.autonomy.enabled) == (arch, policy, name == "k1-auto")
    assert (s.data, s.optim, s.train) == (cfg.data, cfg.optim, cfg.train)
    if name == "k1-balance":  # the one model option a strategy sets
        assert s.model == cfg.model.model_copy(update={"gate_balance": 0.1})
    else:
        assert s.model == cfg.model
    if name == "k1-auto":  # a fixed budget per stage, and room for trials inside a stage
        assert not s.autonomy.self_stop and s.autonomy.check_every == min(cfg.autonomy.check_every, 20)


# ---- equal sparsity ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("branching", [[2, 2], [3, 2, 2]])
def test_random_k_and_hybrid_update_as_many_agents_per_step_as_attribution(tiny, tmp_path, branching):
    cfg, corpus = tiny
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"branching": branching})})
    counts = {}
    for name in ("k1-attribution", "random-k", "k1-hybrid"):
        tr = Trainer(strategy_config(name, cfg), tmp_path / name, corpus=corpus, quiet=True, recorders=[])
        counts[name] = [int(train_step(tr.state, *tr.state.sampler.next()).plan.selected.sum()) for _ in range(4)]
        assert tr.state.shape.n_levels == len(branching) + 1
    assert counts["random-k"] == counts["k1-attribution"] == counts["k1-hybrid"] == [len(branching) + 1] * 4


# ---- the experiment and the command ------------------------------------------------------------------------
k1 = run_k1


@pytest.fixture
def cfg_file(tmp_path):
    return write_tiny_config_file(
        tmp_path, model={"branching": [2, 2], "width": 32, "mlp_width": 64, "n_heads": 2, "context": 32},
        train={"batch_size": 4, "eval_batches": 1}, optim={"warmup_steps": 2},
        # k1-auto checks (and trials a change) every 2 steps, so trials happen inside these short stages
        autonomy={"phase2_step": 0, "check_every": 2, "trial_steps": 1, "trial_batches": 1},
        continual={"replay_buffer": 16, "ewc_batches": 2, "eval_tokens": 128})


def test_cli_writes_continual_json_with_the_schema(cfg_file, tmp_path):
    out = tmp_path / "cont"
    r = k1("continual", "--config", cfg_file, "--steps-per-domain", "3", "--seeds", "2",
           "--set", "continual.ewc_lambda=10", "--out", out, "--quiet", "--no-specialize")
    report = json.loads((out / "continual.json").read_text())
    assert set(report) == {"domains", "seeds", "steps_per_domain", "metric", "command", "strategies", "paired",
                           "reused_runs", "code", "held_out"}
    assert report["held_out"] == {"eval_on": "eval", "tune_fraction": 0.5, "eval_tokens_per_domain": 128}
    assert set(report["code"]) == {"commit", "dirty", "source"} and len(report["code"]["source"]) == 64
    assert report["domains"] == DOMAINS and report["seeds"] == [1337, 1338] and report["steps_per_domain"] == 3
    assert report["metric"] == "bpb" and report["command"].startswith("k1 continual --config")
    assert [s["name"] for s in report["strategies"]] == STRATEGY_ORDER
    keys = {"name", "R", "R_loss", "R_init", "final_avg", "bwt", "forgetting_first", "forgetting_max", "fwt",
            "just_learnt", "forgetting_rel", "frac_params_changed", "params", "train_flops", "per_seed",
            "just_learnt_per_domain"}
    optional = {"final_agents", "shifts_detected", "forgetting_sources"}
    for s in report["strategies"]:
        assert keys <= set(s) <= keys | optional
        for m in ("R", "R_loss"):
            assert len(s[m]["mean"]) == 3 and all(len(row) == 3 for row in s[m]["mean"] + s[m]["std"])
        assert len(s["R_init"]["mean"]) == len(s["R_init"]["std"]) == 3
        assert all(set(s[k]) == {"mean", "std"} for k in keys - {"name", "R", "R_loss", "R_init", "per_seed"})
        assert s["just_learnt_per_domain"]["mean"] == pytest.approx([s["R"]["mean"][j][j] for j in range(3)])
        seeds = s["per_seed"]
        assert [r["seed"] for r in seeds] == [1337, 1338] and all(r["steps"] == 9 for r in seeds)  # no overrun
        assert s["R"]["mean"][2][1] == pytest.approx((seeds[0]["R"][2][1] + seeds[1]["R"][2][1]) / 2)
        for m in ("final_avg", "bwt", "forgetting_max", "fwt", "just_learnt", "forgetting_rel"):
            assert s[m] == pytest.approx(mean_std([continual_metrics(r["R"], r["R_init"])[m] for r in seeds]))
    by_name = {s["name"]: s for s in report["strategies"]}
    for naive in ("gpt-naive", "tree-naive"):
        assert by_name[naive]["frac_params_changed"]["mean"] > by_name["random-k"]["frac_params_changed"]["mean"]
    # FLOPs are counted for every executed step: k1-auto's trial branches cost compute on top of its steps
    assert by_name["k1-auto"]["train_flops"]["mean"] > by_name["k1-attribution"]["train_flops"]["mean"]
    auto = by_name["k1-auto"]["per_seed"][0]["organizer"]
    assert auto["commits"] + auto["trial_rollbacks"] > 0, "k1-auto's autonomy must act inside the stages"
    md = (out / "continual.md").read_text()
    assert "| strategy | final avg bpb | BWT |" in md and "## k1-auto: R (bits per byte)" in md
    assert "k1-attribution" in r.stdout and "forgetting" in r.stdout
    # the paired comparisons a claim rests on, one row per pair and metric, over both seeds
    pairs = {(c["candidate"], c["reference"]) for c in report["paired"]}
    assert {("k1-attribution", "random-k"), ("k1-replay", "tree-replay"), ("k1-protect", "tree-naive")} <= pairs
    # with 2 seeds the only possible p-values are 0.5 (both seeds agree in sign) and 1
    assert all(c["seeds"] == 2 and c["p_value"] in (0.5, 1.0) for c in report["paired"])
    primary = {(c["candidate"], c["reference"], c["metric"]) for c in report["paired"] if c["primary"]}
    assert ("k1-attribution", "random-path", "forgetting_max") in primary
    assert all(c["p_holm"] >= c["p_value"] for c in report["paired"])
    assert "| primary |" in md and "| secondary |" in md and "Code version: commit" in md
    assert "## Paired comparisons over seeds" in md
    assert {("k1-usage", "random-k"), ("k1-grow", "tree-ewc"), ("k1-ewc", "tree-ewc")} <= pairs
    assert "shifts_detected" in by_name["k1-grow"] and "shifts_detected" in by_name["k1-usage"]


def test_quick_is_a_one_seed_smoke_test_of_a_representative_subset(cfg_file, tmp_path):
    out = tmp_path / "quick"
    k1("continual", "--quick", "--config", cfg_file, "--steps-per-domain", "2", "--out", out, "--quiet",
       "--no-specialize")
    report = json.loads((out / "continual.json").read_text())
    assert [s["name"] for s in report["strategies"]] == QUICK_STRATEGIES and report["seeds"] == [1337]
    assert set(QUICK_STRATEGIES) < set(STRATEGY_ORDER)
    kinds = {strategy_config(n, load_configs(cfg_file, "small", [])[0]).policy.name for n in QUICK_STRATEGIES}
    assert {"dense", "random", "attribution"} <= kinds  # the baselines, the control and a K-1 rule


class Interrupt(Hook):
    """Stop the run after `step`, as a kill would (`KeyboardInterrupt`: the loop saves first; anything
    else: the process dies with only the resume points on disk)."""

    def __init__(self, step: int, exc: type[BaseException]):
        self.step, self.exc = step, exc

    def on_check(self, state, step):
        if step == self.step:
            raise self.exc()


@pytest.mark.parametrize("name", ["k1-replay", "tree-ewc", "k1-protect", "k1-auto"])
@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_a_run_interrupted_mid_stage_resumes_to_the_same_result(tiny, tmp_path, name, exc):
    cfg, corpus = tiny
    whole = run_one(cfg, ContinualConfig(replay_buffer=16, ewc_batches=2, ewc_lambda=10.0), name, 3, corpus,
                    tmp_path / "whole", checkpoint_every=2)
    ccfg = ContinualConfig(replay_buffer=16, ewc_batches=2, ewc_lambda=10.0)
    run_dir = tmp_path / "cut"
    with pytest.raises(exc):  # step 7: inside the second domain, after its replay/EWC state exists
        run_one(cfg, ccfg, name, 3, corpus, run_dir, checkpoint_every=2, extra_hooks=[Interrupt(7, exc)])
    assert not (run_dir / "continual_run.json").exists()
    again = run_one(cfg, ccfg, name, 3, corpus, run_dir, checkpoint_every=2)
    assert again["resumed_from"] == ("step-7" if exc is KeyboardInterrupt else "step-6")
    for key in ("R", "R_loss", "R_init", "train_flops", "frac_params_changed", "steps", "agents_after_stage"):
        assert again[key] == whole[key], key
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-12", "step-4", "step-8"]
    assert not (run_dir / "resume").exists()
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    rows = [(x["step"], x["kind"]) for x in lines]
    steps = [step for step, _ in rows]
    assert steps == sorted(steps) and len(rows) == len(set(rows)), "the interrupted tail is not logged twice"


def test_a_changed_identity_is_not_resumed(tiny, tmp_path):
    cfg, corpus = tiny
    ccfg = ContinualConfig()
    with pytest.raises(RuntimeError):
        run_one(cfg, ccfg, "k1-attribution", 3, corpus, tmp_path / "r", checkpoint_every=2,
                extra_hooks=[Interrupt(6, RuntimeError)])
    other = run_one(cfg, ccfg, "k1-attribution", 4, corpus, tmp_path / "r", checkpoint_every=2)
    assert other["resumed_from"] is None and other["seed"] == 4


def test_sign_flip_pvalue_is_exact_over_all_sign_patterns():
    from k1.experiments.continual import sign_flip_pvalue

    assert sign_flip_pvalue([-0.1, -0.2, -0.3]) == 2 / 8  # every seed favours one side: the smallest p
    assert sign_flip_pvalue([-0.1] * 8) == pytest.approx(2 / 256)
    assert sign_flip_pvalue([0.3, -0.3, 0.1, -0.1]) == 1.0  # mean 0
    # |sum| = 0.3; patterns 0.4a + 0.1(b + c + d) reach it unless a and the rest nearly cancel: 14 of 16
    assert sign_flip_pvalue([0.4, 0.1, -0.1, -0.1]) == pytest.approx(14 / 16)
    diffs = [0.5, 0.2, 0.3, -0.1, 0.4, 0.25, 0.35, 0.15, 0.05, 0.45, 0.3, 0.2, -0.05, 0.1, 0.6, 0.2, 0.3]
    exact = sign_flip_pvalue(diffs, max_exact=20)
    assert sign_flip_pvalue(diffs) == pytest.approx(exact, abs=0.002)  # the random-pattern estimate agrees


def test_a_finished_run_is_read_back_and_a_changed_config_trains_again(cfg_file, tmp_path):
    cfg, ccfg = load_configs(cfg_file, "small", [])
    cfg, names = check_run(cfg, DOMAINS, ["k1-protect"], 1, 2)
    from k1.experiments.continual import run_continual

    first = run_continual(cfg, ccfg, tmp_path / "c", names, [5], quiet=True, specialise=False)
    run_dir = tmp_path / "c" / "runs" / "k1-protect-seed5"
    assert (run_dir / "config.toml").exists() and not (run_dir / "specialize.json").exists()
    assert "strong_specialists" not in first["strategies"][0]
    # the same command with the specialist count: the finished run is read back and counted, not retrained
    again = run_continual(cfg, ccfg, tmp_path / "c", names, [5], quiet=True, specialise=True)
    assert again["reused_runs"] == 1 and (run_dir / "specialize.json").exists()
    spec = again["strategies"][0].pop("strong_specialists")
    assert spec["mean"] == int(spec["mean"]) >= 0
    for entry in (first, again):  # the per-seed copy carries the count too
        for r in entry["strategies"][0]["per_seed"]:
            r.pop("strong_specialists")
    assert again["strategies"] == first["strategies"]
    changed = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"lr": cfg.optim.lr / 2})})
    third = run_continual(changed, ccfg, tmp_path / "c", names, [5], quiet=True, specialise=False)
    assert third["reused_runs"] == 0 and third["strategies"][0]["R"] != first["strategies"][0]["R"]


@pytest.mark.parametrize("domains, strategies, seeds, overrides, needle", [
    (DOMAINS, ["gpt-naive", "nope"], 1, [], "unknown strategy 'nope'"),
    (["prose", "poetry"], ["gpt-naive"], 1, [], "unknown domain 'poetry'"),
    (["prose"], ["gpt-naive"], 1, [], "at least 2 domains"),
    (["prose", "prose"], ["gpt-naive"], 1, [], "appears twice"),
    (DOMAINS, ["gpt-naive"], 0, [], "--seeds must be at least 1"),
    (DOMAINS, ["gpt-naive"], 1, ["continual.replay_fraction=2"], "continual.replay_fraction"),
    (DOMAINS, ["gpt-naive"], 1, ["continual.ewc_lambdda=1"], "continual.ewc_lambdda"),
])
def test_bad_input_is_a_one_line_config_error(cfg_file, domains, strategies, seeds, overrides, needle):
    with pytest.raises(ConfigError) as e:
        cfg, _ = load_configs(cfg_file, "small", overrides)
        check_run(cfg, domains, strategies, seeds, 3)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_cli_error_is_one_line_and_exit_code_2(cfg_file, tmp_path):
    r = k1("continual", "--config", cfg_file, "--out", tmp_path / "x", "--strategies", "gpt-naive,nope", check=False)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("k1: error:") and "nope" in lines[0]


def test_a_saved_identity_matches_when_only_a_later_default_is_missing():
    import tomllib

    import tomli_w

    from k1.experiments.continual import run_identity, same_training

    cfg, ccfg = load_configs(None, "small", [])
    cfg, _ = check_run(cfg, DOMAINS, ["k1-balance"], 1, 4)
    now = run_identity(cfg, ccfg, "k1-balance", 3)
    older = tomllib.loads(now["config"])
    del older["model"]["route_k"]  # saved by a version of the code before that option existed
    assert same_training({**now, "config": tomli_w.dumps(older)}, now)
    older["model"]["gate_balance"] = 0.5  # a setting that changes training
    assert not same_training({**now, "config": tomli_w.dumps(older)}, now)
    assert not same_training({**now, "continual": {**now["continual"], "replay_fraction": 0.5}}, now)
    assert not same_training({"config": "not [toml"}, now) and not same_training(None, now)
