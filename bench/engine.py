"""Training-step throughput, side by side in one process: AgentTree (dense policy), AgentTree (attribution),
and DenseGPT with the same parameter budget. Prints one JSON line with tokens/s and
`ratio_attribution_vs_dense`, and saves it under runs/bench/.

    python bench/engine.py                       # CPU, the default model, synthetic data
    python bench/engine.py --reference --batch 32 --device cuda   # the public prototype's configuration

Every step runs `Trainer.train_step` (the code path of `k1 train`): forward, backward, signals, plan,
sparse optimizer step, trust update. Burn-in steps are thrown away; timing sits between device syncs;
the three candidates are measured in interleaved rounds and the median round is reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from k1.config import load_config
from k1.data import Corpus, DomainSplit
from k1.data.tokenizer import ByteTokenizer
from k1.engine.train import Trainer

# The public prototype's defaults (issue #2): branching [4, 3, 2], width 128, MLP 256, 4 heads, context 64,
# vocab 10000, every agent a block, `levels` wiring, AdamW lr 1e-3.
REFERENCE = {
    "model": {"branching": [4, 3, 2], "width": 128, "mlp_width": 256, "n_heads": 4, "context": 64,
              "kinds": "block", "wiring": "levels"},
    "optim": {"lr": 1e-3},
}


def synthetic_corpus(vocab: int, n_tokens: int = 200_000, seed: int = 0) -> Corpus:
    """Random tokens: separates compute from data loading (nanoGPT's bench.py does the same)."""
    g = torch.Generator().manual_seed(seed)
    dtype = torch.uint8 if vocab <= 256 else torch.int32
    split = DomainSplit(torch.randint(0, vocab, (n_tokens,), generator=g).to(dtype),
                        torch.randint(0, vocab, (n_tokens // 10,), generator=g).to(dtype), 1.0)
    return Corpus({"synthetic": split}, ByteTokenizer(), vocab, {})


def make_trainer(base, arch: str, policy: str, corpus: Corpus, out: Path) -> Trainer:
    cfg = load_config(extra={**base, "arch": arch, "policy": {"name": policy}})
    return Trainer(cfg, out, corpus=corpus, quiet=True, callbacks=[])


def time_steps(tr: Trainer, batches, steps: int) -> float:
    """Seconds for `steps` training steps on pre-made batches (device-synchronised)."""
    sync = torch.cuda.synchronize if tr.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        tr.train_step(x, y)
    sync()
    return time.perf_counter() - t0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", action="store_true", help="the public prototype's configuration")
    ap.add_argument("--preset", default="default", help="k1 preset when not --reference")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--burn-in", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = ap.parse_args(argv)

    from k1.config import PRESETS, merge
    base = merge(REFERENCE if args.reference else PRESETS[args.preset],
                 {"train": {"batch_size": args.batch, "device": args.device, "compile": args.compile,
                            "steps": 10 ** 6}, "optim": {"warmup_steps": 0}})
    vocab = 10_000 if args.reference else 256
    corpus = synthetic_corpus(vocab)
    candidates = {"tree_dense": ("tree", "dense"), "tree_attribution": ("tree", "attribution"),
                  "dense_gpt": ("dense", "dense")}
    trainers = {k: make_trainer(base, a, p, corpus, args.out / k) for k, (a, p) in candidates.items()}
    T = trainers["tree_dense"].cfg.model.context
    batches = [tuple(t.to(trainers["tree_dense"].device) for t in trainers["tree_dense"].sampler.next())
               for _ in range(4)]
    for tr in trainers.values():
        time_steps(tr, batches, args.burn_in)  # burn-in: allocator warm-up, compilation
    rounds: dict[str, list[float]] = {k: [] for k in trainers}
    for _ in range(args.rounds):  # interleaved, so drift in machine load hits every candidate alike
        for k, tr in trainers.items():
            rounds[k].append(args.steps * args.batch * T / time_steps(tr, batches, args.steps))
    tps = {k: statistics.median(v) for k, v in rounds.items()}
    result = {
        "tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
        "ratio_attribution_vs_dense": round(tps["tree_attribution"] / tps["tree_dense"], 3),
        "ratio_tree_vs_dense_gpt": round(tps["tree_dense"] / tps["dense_gpt"], 3),
        "params": trainers["tree_dense"].total_params,
        "config": "reference" if args.reference else args.preset, "batch": args.batch, "context": T,
        "device": str(trainers["tree_dense"].device) + (f" ({torch.cuda.get_device_name()})"
                                                        if args.device.startswith("cuda") else ""),
        "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
        "command": "python " + " ".join(sys.argv),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"engine-{result['config']}-b{args.batch}-{args.device.replace(':', '')}.json"
    (args.out / name).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
