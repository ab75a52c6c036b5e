"""Routed compute, quality against speed: the same tree of MLP agents (a block at the root) trained with soft
gating, top-1 routing and top-k routing for the same number of tokens on the built-in data; one JSON line.

    python bench/routing.py                      # default preset, 250 steps each, CPU, k = 2
    python bench/routing.py --steps 100 --threads 1 --k 2
    python bench/routing.py --threads 1 --set model.route_z=1e-3   # with the router z-loss on the routed rows

Quality is the validation bits per byte at the end of `Trainer.fit` (routing's balance term is added to the
training loss only, never to evaluation). Speed is tokens/s over the training steps of each run (run one after
the other, so load drift on a shared machine can tilt it; `bench/engine.py --routed` measures the same pair
interleaved) and training FLOPs per token from `k1.engine.model.flops`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from k1.engine.config import load_config
from k1.engine.model.flops import flops_per_token
from k1.engine.run.train import Trainer


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--policy", default="dense")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--k", type=int, default=2, help="children per level for the top-k row")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/routing"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every row, e.g. --set model.route_z=1e-3 (repeatable)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_config(preset=args.preset)
    kinds = ["block"] + ["mlp"] * len(base.model.branching)
    rows = {}
    topk = f"top{args.k}"
    for name, routing in (("soft", "soft"), ("top1", "top1"), (topk, "topk")):
        cfg = load_config(preset=args.preset, overrides=[
            f"train.steps={args.steps}", f"model.kinds={json.dumps(kinds)}", f'model.routing="{routing}"',
            f"model.route_k={args.k}", f'policy="{args.policy}"', "train.checkpoint_every=0", *args.set])
        tr = Trainer(cfg, args.out / name, quiet=True, recorders=[])
        s = tr.fit()
        T = cfg.train.batch_size * cfg.model.context
        rows[name] = {"val_bpb": round(s["val_bpb"], 4), "val_loss": round(s["val_loss"], 4),
                      "tokens_per_s": round(s["tokens_per_s"], 1), "params": s["params"],
                      "train_flops_per_token": round(flops_per_token(tr.state.model, T).train()),
                      "tokens": args.steps * T}
    result = {"rows": rows, "speedup_top1_vs_soft": round(rows["top1"]["tokens_per_s"] / rows["soft"]["tokens_per_s"], 3),
              "flops_ratio_top1_vs_soft": round(rows["top1"]["train_flops_per_token"] / rows["soft"]["train_flops_per_token"], 3),
              "bpb_gap_top1_minus_soft": round(rows["top1"]["val_bpb"] - rows["soft"]["val_bpb"], 4),
              f"speedup_{topk}_vs_soft": round(rows[topk]["tokens_per_s"] / rows["soft"]["tokens_per_s"], 3),
              f"flops_ratio_{topk}_vs_soft": round(rows[topk]["train_flops_per_token"] / rows["soft"]["train_flops_per_token"], 3),
              f"bpb_gap_{topk}_minus_soft": round(rows[topk]["val_bpb"] - rows["soft"]["val_bpb"], 4),
              "preset": args.preset, "overrides": args.set, "kinds": kinds, "steps": args.steps, "policy": args.policy,
              "threads": torch.get_num_threads(), "command": "python " + " ".join(sys.argv)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"routing-{args.preset}-{args.steps}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
