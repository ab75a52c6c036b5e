"""Validates the deferred step's signal against the exact one on the built-in data; one JSON line.

    python bench/deferral.py                         # default preset, 250 steps, seeds 0 1
    python bench/deferral.py --steps 100 --seeds 0 --threads 1

1. Rank agreement: a model trained for `--warm` steps scores every agent on `--batches` fresh batches both
   ways, the exact RMS gradient (every weight gradient formed) and the deferred estimate (level.py's
   Σ‖x‖²‖g‖² on sampled tokens); reports Spearman's ρ, how often attribution's blame path is the same, and
   ρ of the cheapest alternative (the exact vector gradients alone, no estimate for the matrices).
2. Loss curve: `attribution` trained eagerly and with deferred weight gradients, same seeds, same data;
   reports each run's training-loss curve (the batch loss logged every `log_every` steps) and final validation bpb.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from k1.engine.config import load_config
from k1.engine.update.signals import StepSignals, rank_correlation
from k1.engine.run.step import train_step
from k1.engine.run.train import Trainer


def rank_agreement(preset: str, warm: int, batches: int, out: Path) -> dict:
    cfg = load_config(preset=preset, overrides=[f"train.steps={warm + batches}", 'policy="attribution"'])
    tr = Trainer(cfg, out, quiet=True, recorders=[])
    for _ in range(warm):
        train_step(tr.state, *tr.state.sampler.next())
    model, rhos, rhos_vec, same_path = tr.state.model, [], [], 0
    for _ in range(batches):
        x, y = tr.state.sampler.next()
        scores = []
        for defer in (False, True):
            for level in model.levels:
                level.defer_weight_grads = defer
            model.zero_grad(set_to_none=True)
            loss = model(x, y)[1]
            loss.backward()
            scores.append(StepSignals.measure(model, loss, tr.state.parents).grad_rms)
            if defer:  # the cheapest alternative: rank by the exact vector gradients alone
                for level in model.levels:
                    level.deferred_grad_sq = None
                vectors_only = StepSignals.measure(model, loss, tr.state.parents).grad_rms
            for level in model.levels:
                level.clear_deferred()
        model.zero_grad(set_to_none=True)
        rhos.append(rank_correlation(*scores))
        rhos_vec.append(rank_correlation(scores[0], vectors_only))
        paths = [tr.state.policy.blame_path(s, tr.state.parents) for s in scores]
        same_path += bool(torch.equal(*paths))
    return {"spearman_mean": round(statistics.mean(rhos), 3), "spearman_min": round(min(rhos), 3),
            "same_blame_path": f"{same_path}/{batches}", "warm_steps": warm,
            "spearman_vectors_only_mean": round(statistics.mean(rhos_vec), 3),
            "spearman_vectors_only_min": round(min(rhos_vec), 3)}


def curve(preset: str, steps: int, seed: int, defer: bool, out: Path) -> dict:
    cfg = load_config(preset=preset, overrides=[f"train.steps={steps}", f"train.seed={seed}", 'policy="attribution"',
                                                f"model.defer_weight_grads={str(defer).lower()}"])
    tr = Trainer(cfg, out, quiet=True)
    s = tr.fit()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r.get("kind") == "train"]
    return {"val_bpb": round(s["val_bpb"], 4), "train_loss_curve": [round(v, 3) for v in losses],
            "tokens_per_s": round(s["tokens_per_s"], 1)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1], help="none: the rank agreement only")
    ap.add_argument("--warm", type=int, default=50)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/signal"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"rank": rank_agreement(args.preset, args.warm, args.batches, args.out / "rank"), "runs": {}}
    for seed in args.seeds:
        for defer in (False, True):
            name = f"{'deferred' if defer else 'eager'}-seed{seed}"
            result["runs"][name] = curve(args.preset, args.steps, seed, defer, args.out / name)
    if args.seeds:
        bpb = {d: [r["val_bpb"] for n, r in result["runs"].items() if n.startswith(d)] for d in ("eager", "deferred")}
        result["val_bpb_mean"] = {d: round(statistics.mean(v), 4) for d, v in bpb.items()}
        result["val_bpb_seed_spread_eager"] = round(max(bpb["eager"]) - min(bpb["eager"]), 4)
    result.update({"preset": args.preset, "steps": args.steps, "seeds": args.seeds,
                   "threads": torch.get_num_threads(), "command": "python " + " ".join(sys.argv)})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"signal-{args.preset}-{args.steps}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
