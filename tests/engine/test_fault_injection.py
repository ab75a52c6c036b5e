"""Kill -9 at a random moment — between steps, inside a phase-2 trial, in the middle of a save — then
`k1 train --resume`: the run ends with exactly the per-step losses (trial steps included) and the decisions
of an uninterrupted run. A few cases run by default; the full 20+ case sweep is slow-marked."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from k1.testing.tiny import write_tiny_config_file

CASES = {
    "dense": {"policy": {"name": "dense"}},
    "attribution": {"policy": {"name": "attribution"}},
    "hybrid": {"policy": {"name": "hybrid", "phase2_step": 6}},
    "trust": {"policy": {"name": "trust"}},
    "random": {"policy": {"name": "random"}},
    "phase2": {"policy": {"name": "attribution"},
               "autonomy": {"enabled": True, "phase2_step": 0, "check_every": 5, "trial_steps": 2,
                            "break_epsilon": -1.0},
               "safety": {"gate_threshold": 1.0}},
}


def k1_cmd(*args):
    return [sys.executable, "-m", "k1", *map(str, args)]


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def config(root, case):
    return write_tiny_config_file(root, train={"steps": 20, "log_every": 1, "eval_every": 8,
                                               "checkpoint_every": 2, "keep_checkpoints": 3},
                                  **CASES[case])


def record(run_dir):
    """Every logged step's loss keyed by (step, trial, branch), and every decision, in log order."""
    rows = [json.loads(x) for x in open(run_dir / "attribution.jsonl")]
    steps = [((r["step"], r.get("trial"), r.get("branch")), r["loss"]) for r in rows if "event" not in r]
    events = [(r["event"], r["step"], r.get("trial"), r.get("decision"), r.get("action"))
              for r in rows if "event" in r and r["event"] not in ("diagnostics", "proposals")]
    return steps, events


def finish(run_dir, cfg):
    """Resume (or, if killed before its first checkpoint, restart) until the run completes."""
    for _ in range(5):
        has_ckpt = any(p.is_dir() and not p.name.endswith((".tmp", ".old"))
                       for p in (run_dir / "checkpoints").glob("step-*")) if (run_dir / "checkpoints").is_dir() else False
        cmd = k1_cmd("train", "--resume", run_dir, "--quiet") if has_ckpt else \
            k1_cmd("train", "--config", cfg, "--out", run_dir, "--quiet")
        r = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=900)
        if r.returncode == 0:
            return
        assert "Traceback" not in r.stderr, r.stderr
    raise AssertionError(f"could not finish {run_dir}: {r.stderr}")


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    cache = {}

    def get(case):
        if case not in cache:
            root = tmp_path_factory.mktemp(f"ref-{case}")
            cfg = config(root, case)
            t0 = time.perf_counter()
            subprocess.run(k1_cmd("train", "--config", cfg, "--out", root / "run", "--quiet"), check=True,
                           capture_output=True, env=env(), timeout=900)
            cache[case] = (record(root / "run"), time.perf_counter() - t0)
        return cache[case]

    return get


def kill_and_resume(case, seed, tmp_path, references):
    (ref_steps, ref_events), wall = references(case)
    cfg = config(tmp_path, case)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(k1_cmd("train", "--config", cfg, "--out", run_dir, "--quiet"), env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random(seed).uniform(0.2, 0.95) * wall)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finish(run_dir, cfg)
    steps, events = record(run_dir)
    assert steps == ref_steps
    assert events == ref_events
    if case == "phase2":
        assert any(e[0] == "trial" for e in events)


@pytest.mark.parametrize("case, seed", [("dense", 1), ("phase2", 2)])
def test_kill_then_resume_is_exact(case, seed, tmp_path, references):
    kill_and_resume(case, seed, tmp_path, references)


@pytest.mark.slow
@pytest.mark.parametrize("case, seed", [(c, s) for c in CASES for s in range(4)])
def test_kill_then_resume_is_exact_sweep(case, seed, tmp_path, references):
    kill_and_resume(case, 100 + seed, tmp_path, references)
