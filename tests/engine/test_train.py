"""The trainer: run directory contents, exact resume, repeatable seeds, checkpoint errors."""

import json

import pytest

from k1.engine.run.step import lr_at
from k1.engine.run.train import Trainer
from k1.errors import CheckpointError


def losses(run_dir):
    return [json.loads(line)["loss"] for line in open(run_dir / "attribution.jsonl")]


def test_run_directory_has_config_metrics_attribution_and_checkpoint(tiny_cfg, tmp_path):
    run = tmp_path / "run"
    summary = Trainer(tiny_cfg("train.steps=12", policy={"name": "hybrid"}), run, quiet=True).fit()
    assert (run / "config.toml").is_file() and (run / "summary.json").is_file()
    rows = [json.loads(x) for x in open(run / "attribution.jsonl")]
    assert [r["step"] for r in rows] == list(range(1, 13))
    for r in rows:
        assert {"step", "selected", "params_changed", "blame_path", "scale", "grad_rms", "frac_params_changed",
                "update_norm", "policy"} <= set(r)
        assert len(r["selected"]) == 4
    metrics = [json.loads(x) for x in open(run / "metrics.jsonl")]
    assert any(m["kind"] == "eval" and "domains" in m for m in metrics)
    ckpt = run / "checkpoints" / "step-12"
    assert {p.name for p in ckpt.iterdir()} == {"model.safetensors", "state.safetensors", "state.json"}
    assert 0 < summary["frac_params_changed"] < 1 and summary["agents_updated"] == 4


def test_same_seed_same_losses(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.steps=8", policy={"name": "random"})
    Trainer(cfg, tmp_path / "a", quiet=True).fit()
    Trainer(cfg, tmp_path / "b", quiet=True).fit()
    assert losses(tmp_path / "a") == losses(tmp_path / "b")


@pytest.mark.parametrize("policy", ["attribution", "hybrid", "random"])
def test_resume_continues_exactly(policy, tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.steps=16", "train.checkpoint_every=6", "policy.name=" + policy,
                   **({"policy": {"name": "hybrid", "phase2_step": 8}} if policy == "hybrid" else {}))
    Trainer(cfg, tmp_path / "full", quiet=True).fit()
    # the interrupted run: stop after step 10 (checkpoint at 6), then resume from the checkpoint
    part = Trainer(cfg, tmp_path / "part", quiet=True)
    part.cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 10})})
    part.fit()
    resumed = Trainer(cfg, tmp_path / "part", quiet=True)
    assert resumed.restore(tmp_path / "part" / "checkpoints" / "step-6") == 6
    resumed.fit()
    assert losses(tmp_path / "part") == losses(tmp_path / "full")


def test_corrupt_or_truncated_checkpoint_is_a_one_line_error(tiny_cfg, tmp_path):
    run = tmp_path / "run"
    tr = Trainer(tiny_cfg("train.steps=3"), run, quiet=True)
    tr.fit()
    f = run / "checkpoints" / "step-3" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors") as e:
        Trainer(tiny_cfg("train.steps=3"), run, quiet=True).restore()
    assert "\n" not in str(e.value)


def test_warmup_then_cosine(tiny_cfg):
    cfg = tiny_cfg("train.steps=100", "optim.warmup_steps=10", "optim.lr=1e-3", "optim.min_lr_ratio=0.1")
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(55, cfg) == pytest.approx(0.55e-3, rel=1e-6)
    assert lr_at(100, cfg) == pytest.approx(1e-4)


def test_training_learns_below_unigram_entropy(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.steps=150", "optim.lr=5e-3", "train.batch_size=16", "optim.warmup_steps=10",
                   policy={"name": "dense"})
    tr = Trainer(cfg, tmp_path / "run", quiet=True)
    s = tr.fit()
    unigram = tr.state.corpus.unigram_bits_per_byte()
    assert s["val_bpb"] < sum(unigram.values()) / len(unigram)
