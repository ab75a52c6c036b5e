"""The `tensorboard` callback: a real tiny run, its event file read back with TensorBoard's own reader."""

import pytest

pytest.importorskip("tensorboard", reason="the tensorboard callback needs the tensorboard package")

import k1.engine.hooks.tensorboard  # noqa: E402,F401  (registers "tensorboard")
from k1.engine.run.train import Trainer  # noqa: E402


def _accumulator(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert files, "no event file under tensorboard/"
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def test_scalars_and_histograms_at_the_logged_steps(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.steps=12", "train.log_every=4", "train.eval_every=6", policy={"name": "hybrid"},
                   train={"recorders": ["metrics", "attribution", "tensorboard"]})
    run = tmp_path / "run"
    summary = Trainer(cfg, run, quiet=True).fit()
    acc = _accumulator(run)
    tags = acc.Tags()
    log_steps = [4, 8, 12]
    for tag in ("train/loss", "train/lr", "train/frac_params_changed", "train/agents_updated",
                "train/tokens_per_s", "train/grad_norm"):
        assert [e.step for e in acc.Scalars(tag)] == log_steps, tag
    for tag in ["eval/val_loss", "eval/val_bpb", *[f"eval/{d}/{m}" for d in summary["domains"] for m in ("loss", "bpb")]]:
        assert [e.step for e in acc.Scalars(tag)] == [6, 12], tag
    # the logged values are the run's own numbers
    assert acc.Scalars("eval/val_loss")[-1].value == pytest.approx(summary["val_loss"], rel=1e-5)
    for d, m in summary["domains"].items():
        assert acc.Scalars(f"eval/{d}/bpb")[-1].value == pytest.approx(m["bpb"], rel=1e-5)
    train_rows = [r for r in map(__import__("json").loads, open(run / "metrics.jsonl")) if r["kind"] == "train"]
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([r["loss"] for r in train_rows], rel=1e-5)
    assert [e.value for e in acc.Scalars("train/agents_updated")] == [r["agents_updated"] for r in train_rows]

    assert set(tags["histograms"]) == {"trust", "selection_counts"}
    assert [e.step for e in acc.Histograms("trust")] == log_steps
    n_agents = summary["agents"]
    for e in acc.Histograms("trust"):
        assert e.histogram_value.num == n_agents and 0.0 <= e.histogram_value.min <= e.histogram_value.max <= 1.0
    selections = acc.Histograms("selection_counts")
    assert [e.step for e in selections] == log_steps
    # the counts of each interval equal the selections attribution.jsonl logged for those steps
    rows = [r for r in map(__import__("json").loads, open(run / "attribution.jsonl")) if "event" not in r]
    for e, (lo, hi) in zip(selections, [(1, 4), (5, 8), (9, 12)]):
        logged = sum(len(r["selected"]) for r in rows if lo <= r["step"] <= hi)
        assert e.histogram_value.num == logged
        assert sum(e.histogram_value.bucket) == logged and len(e.histogram_value.bucket) == n_agents


def test_selection_counts_survive_a_reshaped_tree(tiny_cfg, tmp_path):
    # autonomy from step 0 with a negative break threshold: trials commit surgeries that reshape the tree
    cfg = tiny_cfg("train.steps=24", "train.log_every=4", "train.eval_every=8", "autonomy.enabled=true",
                   "autonomy.phase2_step=0", "autonomy.check_every=6", "autonomy.trial_steps=1",
                   "autonomy.break_epsilon=-1.0", policy={"name": "hybrid"},
                   train={"recorders": ["metrics", "attribution", "tensorboard"]})
    run = tmp_path / "run"
    summary = Trainer(cfg, run, quiet=True).fit()
    assert any(e["kind"] == "trial" and e["decision"] == "commit" for e in summary["events"])
    rows = [r for r in map(__import__("json").loads, open(run / "attribution.jsonl")) if "event" not in r]
    assert len({len(r["grad_rms"]) for r in rows}) > 1, "the scenario should change the number of agents"
    selections = _accumulator(run).Histograms("selection_counts")
    # every logged main-line step's selections land in exactly one histogram, before or after a reshape
    # (trial branches reuse step numbers: they are in attribution.jsonl, keyed by trial, not in TensorBoard)
    main = [r for r in rows if "trial" not in r]
    assert len(main) < len(rows), "the scenario's trial steps should be in the attribution log"
    assert sum(e.histogram_value.num for e in selections) == sum(len(r["selected"]) for r in main)
    sizes = {r["step"]: len(r["grad_rms"]) for r in rows}
    for e in selections:  # one bucket per agent of the tree at that step
        assert len(e.histogram_value.bucket) == sizes[e.step]
