"""Where the tree's training step loses to DenseGPT at equal parameters: torch.profiler, op by op.

    python bench/profile_tree.py                 # default preset, batch 16, CPU, 1 thread
    python bench/profile_tree.py --reference

Profiles `train_step` (k1/engine/run/step.py) (dense policy) of both models after a burn-in and prints, per aten op, the
self CPU milliseconds per step and calls per step of each, sorted by the tree's excess time. The summary of
one run is in docs/performance.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from engine import REFERENCE, make_trainer, synthetic_corpus, time_steps  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", action="store_true")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=25)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from k1.engine.config import PRESETS, merge
    base = merge(REFERENCE if args.reference else PRESETS["default"],
                 {"train": {"batch_size": args.batch, "device": "cpu", "steps": 10 ** 6}, "optim": {"warmup_steps": 0}})
    corpus = synthetic_corpus(10_000 if args.reference else 256)
    out = Path("runs/bench/profile")
    trainers = {"tree": make_trainer(base, "tree", "dense", corpus, out / "tree"),
                "gpt": make_trainer(base, "dense", "dense", corpus, out / "gpt")}
    batches = [tuple(trainers["tree"].state.sampler.next()) for _ in range(2)]
    per_op = {}
    for name, tr in trainers.items():
        time_steps(tr, batches, 2)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            time_steps(tr, batches, args.steps)
        per_op[name] = {e.key: (e.self_cpu_time_total / 1000 / args.steps, e.count / args.steps)
                        for e in prof.key_averages()}
    ops = sorted(set(per_op["tree"]) | set(per_op["gpt"]),
                 key=lambda k: -(per_op["tree"].get(k, (0, 0))[0] - per_op["gpt"].get(k, (0, 0))[0]))
    print(f"| op | tree ms/step | DenseGPT ms/step | tree calls/step | DenseGPT calls/step |")
    print("|---|---:|---:|---:|---:|")
    for op in ops[:args.rows]:
        a, b = per_op["tree"].get(op, (0, 0)), per_op["gpt"].get(op, (0, 0))
        print(f"| `{op[:60]}` | {a[0]:.1f} | {b[0]:.1f} | {a[1]:.0f} | {b[1]:.0f} |")
    totals = {k: sum(t for t, _ in v.values()) for k, v in per_op.items()}
    print(f"| **total (self CPU)** | {totals['tree']:.1f} | {totals['gpt']:.1f} | | |")
    print(f"\nparams: tree {trainers['tree'].state.total_params:,}, DenseGPT {trainers['gpt'].state.total_params:,}; "
          f"threads {torch.get_num_threads()}; command: python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
