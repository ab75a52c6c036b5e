"""torchrun with 2 gloo processes on the CPU: the ranks see different data, their parameters stay
bit-identical under a sparse policy and through phase-2 trials, the dense policy at 2 × batch B matches one
process at batch 2B, and a killed job resumes exactly from rank 0's checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from k1.engine.config import load_config
from k1.engine.run.train import Trainer
from k1.testing.tiny import write_tiny_config_file

WORKER = Path(__file__).with_name("dist_worker.py")


def torchrun(cfg, out, mode="run", check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(WORKER), str(cfg), str(out), mode], capture_output=True, text=True, env=env, timeout=600)
    if check and r.returncode != 0:
        raise AssertionError("\n".join(l for l in r.stderr.splitlines() if "Error" in l or "error" in l)[-3000:])
    return r


def losses(run):
    rows = [json.loads(x) for x in open(run / "attribution.jsonl")]
    return [((r["step"], r.get("trial"), r.get("branch")), r["loss"]) for r in rows if "event" not in r]


def test_two_ranks_differ_in_data_agree_in_parameters_and_resume_exactly(tmp_path):
    cfg = write_tiny_config_file(
        tmp_path, train={"steps": 10, "batch_size": 4, "log_every": 1, "checkpoint_every": 4},
        policy={"name": "attribution"},
        autonomy={"enabled": True, "phase2_step": 0, "check_every": 4, "trial_steps": 1, "break_epsilon": -1.0},
        safety={"gate_threshold": 1.0})
    full = tmp_path / "full"
    torchrun(cfg, full)
    r0, r1 = (load_file(full / f"rank{r}-run.safetensors") for r in (0, 1))
    assert not torch.equal(r0["first_batch"], r1["first_batch"]), "each rank trains on its own slice"
    assert all(torch.equal(r0[k], r1[k]) for k in r0 if k != "first_batch"), "parameters identical across ranks"
    summary = json.loads((full / "summary.json").read_text())
    assert any(e["kind"] == "trial" for e in summary["events"]), "phase 2 ran its trials on both ranks"
    assert not (full / "rank1").exists() and len(list(full.glob("metrics.jsonl"))) == 1  # rank 0 writes

    cut = tmp_path / "cut"
    r = torchrun(cfg, cut, "kill=7", check=False)  # after the checkpoint that follows the first trials
    assert r.returncode != 0
    torchrun(cfg, cut, "resume")
    assert losses(cut) == losses(full)
    c0, f0 = load_file(cut / "rank0-resume.safetensors"), r0
    assert all(torch.equal(c0[k], f0[k]) for k in f0 if k != "first_batch")


def test_dense_at_two_times_b_matches_one_process_at_2b(tmp_path):
    cfg = write_tiny_config_file(tmp_path, train={"steps": 3, "batch_size": 4}, policy={"name": "dense"})
    torchrun(cfg, tmp_path / "two")
    two = load_file(tmp_path / "two" / "rank0-run.safetensors")
    one_cfg = load_config(cfg)
    one_cfg = one_cfg.model_copy(update={"train": one_cfg.train.model_copy(update={"batch_size": 8})})
    torch.set_num_threads(1)
    tr = Trainer(one_cfg, tmp_path / "one", quiet=True, recorders=[])
    tr.fit()
    one = tr.state.model.state_dict()
    for k, v in one.items():
        torch.testing.assert_close(two[k], v, rtol=1e-4, atol=1e-6)


def test_torchrun_runs_the_cli_and_only_rank_0_prints(tmp_path):
    cfg = write_tiny_config_file(tmp_path, train={"steps": 3, "batch_size": 2}, policy={"name": "random"})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "k1", "train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--quiet"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    summaries = [line for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and json.loads(summaries[0])["steps"] == 3
