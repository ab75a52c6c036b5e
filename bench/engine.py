"""Training-step throughput, FLOPs and MFU, side by side in one process: AgentTree (dense policy), AgentTree
(attribution with deferred weight gradients, and without), and DenseGPT with the same parameter budget.
Prints one JSON line and saves it under runs/bench/.

    python bench/engine.py                       # CPU, the default model, synthetic data
    python bench/engine.py --reference           # the public prototype's configuration
    python bench/engine.py --reference --batch 512 --device cuda --autocast bf16 --compile   # GPU
    python bench/engine.py --routed              # adds soft vs top-1 and top-2 routed MLP trees

Every step runs `train_step` (k1/engine/run/step.py) (the code path of `k1 train`): forward, backward, signals, plan,
deferred weight gradients, sparse optimizer step, trust update. Burn-in steps are thrown away; timing sits
between device syncs; the candidates are measured in interleaved rounds (so drift in machine load hits all
alike) and each figure is the median over rounds; ratios are medians of per-round ratios.

What it reports, per row: tokens/s, seconds per step, training FLOPs per token (torch's FlopCounterMode on
one real step, checked against the shape count of `k1.engine.model.flops`) and MFU = tokens/s × FLOPs per token /
peak. The peak is, on CPU, a 2048 × 2048 fp32 matmul timed in the same rounds; on GPU the device's dense
bf16 peak from its data sheet (or a timed 8192² bf16 matmul for an unknown device). Across rows:
- `step_time_ratio_attribution_vs_dense`: measured step time of attribution (deferred) / dense policy;
- `step_time_floor_attribution_vs_dense`: the same ratio of counted FLOPs (forward and input gradients
  cannot be skipped, so this is the best a sparse step can do); `saving_realised` = (1 − ratio) / (1 − floor);
- `ratio_tree_vs_dense_gpt`: tree (dense policy) tokens/s / DenseGPT tokens/s at equal parameters.
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

from k1.engine.config import load_config
from k1.data import Corpus, DomainSplit
from k1.data.tokenizer import ByteTokenizer
from k1.engine.model.flops import counted_flops, flops_per_token, path_fractions
from k1.engine.run.step import train_step
from k1.engine.run.train import Trainer

# The public prototype's defaults (issue #2): branching [4, 3, 2], width 128, MLP 256, 4 heads, context 64,
# vocab 10000, every agent a block, `levels` wiring, AdamW lr 1e-3.
REFERENCE = {
    "model": {"branching": [4, 3, 2], "width": 128, "mlp_width": 256, "n_heads": 4, "context": 64,
              "kinds": "block", "wiring": "levels"},
    "optim": {"lr": 1e-3},
}
# Dense bf16 peak FLOP/s from the vendors' data sheets (SXM parts, without sparsity).
BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def synthetic_corpus(vocab: int, n_tokens: int = 200_000, seed: int = 0) -> Corpus:
    """Random tokens: separates compute from data loading (nanoGPT's bench.py does the same)."""
    g = torch.Generator().manual_seed(seed)
    dtype = torch.uint8 if vocab <= 256 else torch.int32
    split = DomainSplit(torch.randint(0, vocab, (n_tokens,), generator=g).to(dtype),
                        torch.randint(0, vocab, (n_tokens // 10,), generator=g).to(dtype), 1.0)
    return Corpus({"synthetic": split}, ByteTokenizer(), vocab, {})


def make_trainer(base, arch: str, policy: str, corpus: Corpus, out: Path, model: dict | None = None,
                 train: dict | None = None) -> Trainer:
    extra = {**base, "arch": arch, "policy": {"name": policy}}
    if model:
        extra["model"] = {**base["model"], **model}
    if train:
        extra["train"] = {**base["train"], **train}
    return Trainer(load_config(extra=extra), out, corpus=corpus, quiet=True, recorders=[])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(tr: Trainer, batches, steps: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) for `steps` training steps on pre-made batches (device-synced).
    On a shared CPU the CPU seconds are the steadier measure: they do not count time spent waiting for a core."""
    _sync(tr.state.device)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        train_step(tr.state, x, y)
    _sync(tr.state.device)
    return time.perf_counter() - t0, time.process_time() - c0


def time_matmul(device: torch.device, n: int, dtype: torch.dtype, repeats: int = 3) -> float:
    """FLOP/s of an n × n matmul (the CPU's practical peak, measured beside the model rows)."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return repeats * 2 * n ** 3 / (time.perf_counter() - t0)


def step_flops(tr: Trainer, batch) -> int:
    """FLOPs of one real training step by FlopCounterMode (the model is restored afterwards)."""
    snap = tr.state.snapshot("flop count")
    flops = counted_flops(lambda: train_step(tr.state, *batch))
    tr.state.restore(snap, undo_steps=True)
    return flops


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", action="store_true", help="the public prototype's configuration")
    ap.add_argument("--preset", default="default", help="k1 preset when not --reference")
    ap.add_argument("--width", type=int, help="override the model width (e.g. 512 for the MFU goal)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--burn-in", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--autocast", default="none", choices=["none", "bf16"])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--routed", action="store_true", help="add soft, top-1 and top-2 routed MLP trees")
    ap.add_argument("--no-eager", action="store_true", help="skip attribution without deferral")
    ap.add_argument("--sync-free", action="store_true",
                    help="add attribution with the optimizer's sync-free rows (k1/engine/model/rows.py; the CUDA default)")
    ap.add_argument("--with-compiled", action="store_true",
                    help="add torch.compile'd copies of the tree (dense policy) and DenseGPT, measured interleaved")
    ap.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from k1.engine.config import PRESETS, merge
    over = {"train": {"batch_size": args.batch, "device": args.device, "compile": args.compile,
                      "autocast": "bf16" if args.autocast == "bf16" else "off", "steps": 10 ** 6},
            "optim": {"warmup_steps": 0}}
    if args.width:
        over["model"] = {"width": args.width, "mlp_width": 2 * args.width}
    base = merge(REFERENCE if args.reference else PRESETS[args.preset], over)
    vocab = 10_000 if args.reference else 256
    corpus = synthetic_corpus(vocab)
    n_levels = len(base["model"]["branching"]) + 1
    mlp_tree = {"kinds": ["block"] + ["mlp"] * (n_levels - 1)}
    candidates = {"tree_dense": ("tree", "dense", None),
                  "tree_attribution": ("tree", "attribution", {"defer_weight_grads": True}),
                  "tree_attribution_eager": ("tree", "attribution", None),
                  "dense_gpt": ("dense", "dense", None)}
    if args.no_eager:
        del candidates["tree_attribution_eager"]
    if args.routed:
        candidates["tree_mlp_soft"] = ("tree", "dense", mlp_tree)
        candidates["tree_mlp_routed_top1"] = ("tree", "dense", {**mlp_tree, "routing": "top1"})
        candidates["tree_mlp_routed_top2"] = ("tree", "dense", {**mlp_tree, "routing": "topk", "route_k": 2})
    if args.with_compiled:
        candidates["tree_dense_compiled"] = ("tree", "dense", None, {"compile": True})
        candidates["dense_gpt_compiled"] = ("dense", "dense", None, {"compile": True})
    if args.sync_free:
        candidates["tree_attribution_sync_free"] = candidates["tree_attribution"]
    trainers = {k: make_trainer(base, c[0], c[1], corpus, args.out / k, *c[2:]) for k, c in candidates.items()}
    if args.sync_free:
        trainers["tree_attribution_sync_free"].state.optimizer.sync_free = True
    first = trainers["tree_dense"]
    device, T = first.state.device, first.cfg.model.context
    batches = [tuple(t.to(device) for t in first.state.sampler.next()) for _ in range(4)]
    tokens = args.batch * T

    flops = {k: step_flops(tr, batches[0]) / tokens for k, tr in trainers.items()}
    analytic = {k: flops_per_token(tr.state.model, tokens).train() for k, tr in trainers.items()}
    for k in ("tree_attribution", "tree_attribution_sync_free"):  # deferred: the path's weight gradients only
        if k in trainers:
            analytic[k] = flops_per_token(first.state.model, tokens).train(path_fractions(first.state.model))

    for tr in trainers.values():
        time_steps(tr, batches, args.burn_in)  # burn-in: allocator warm-up, compilation
    gpu_name = torch.cuda.get_device_name() if device.type == "cuda" else ""
    table_peak = next((v for k, v in BF16_PEAK.items() if k in gpu_name), None)
    secs: dict[str, list[float]] = {k: [] for k in trainers}
    cpu: dict[str, list[float]] = {k: [] for k in trainers}
    peaks: list[float] = []
    for _ in range(args.rounds):  # interleaved
        if table_peak is None:
            peaks.append(time_matmul(device, 2048, torch.float32) if device.type == "cpu"
                         else time_matmul(device, 8192, torch.bfloat16))
        for k, tr in trainers.items():
            wall, cpu_s = time_steps(tr, batches, args.steps)
            secs[k].append(wall / args.steps)
            cpu[k].append(cpu_s / args.steps)
    peak = table_peak or statistics.median(peaks)
    step_s = {k: statistics.median(v) for k, v in secs.items()}
    tps = {k: tokens / v for k, v in step_s.items()}

    def per_round(a: str, b: str, clock=secs) -> float:
        return statistics.median(x / y for x, y in zip(clock[a], clock[b]))

    ratio = per_round("tree_attribution", "tree_dense")
    floor = flops["tree_attribution"] / flops["tree_dense"]
    result = {
        "tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
        "step_s": {k: round(v, 4) for k, v in step_s.items()},
        "train_flops_per_token": {k: round(v) for k, v in flops.items()},
        "train_flops_per_token_from_shapes": {k: round(v) for k, v in analytic.items()},
        "mfu": {k: round(tps[k] * flops[k] / peak, 4) for k in trainers},
        "peak_flops": round(peak), "peak_from": ("data sheet, dense bf16: " + gpu_name) if table_peak else
        ("2048x2048 fp32 matmul, same rounds" if device.type == "cpu" else "8192x8192 bf16 matmul, same rounds"),
        "step_time_ratio_attribution_vs_dense": round(ratio, 3),
        "step_time_floor_attribution_vs_dense": round(floor, 3),
        "saving_realised": round((1 - ratio) / (1 - floor), 3),
        "goal_ratio_at_most": round(floor + 0.3 * (1 - floor), 3),
        "ratio_attribution_vs_dense": round(1 / ratio, 3),  # throughput, as this bench printed before
        "ratio_tree_vs_dense_gpt": round(per_round("dense_gpt", "tree_dense"), 3),
        "mfu_ratio_tree_vs_dense_gpt": None,  # filled below: FLOP-normalised, the tree does more FLOPs per token
        "cpu_time": {  # the same ratios from process CPU seconds (steadier on a shared machine)
            "step_s": {k: round(statistics.median(v), 4) for k, v in cpu.items()},
            "step_time_ratio_attribution_vs_dense": round(per_round("tree_attribution", "tree_dense", cpu), 3),
            "ratio_tree_vs_dense_gpt": round(per_round("dense_gpt", "tree_dense", cpu), 3),
        },
        "params": first.state.total_params, "dense_gpt_params": trainers["dense_gpt"].state.total_params,
        "config": "reference" if args.reference else args.preset, "width": first.cfg.model.width,
        "batch": args.batch, "context": T, "rounds": args.rounds, "steps_per_round": args.steps,
        "device": str(device) + (f" ({gpu_name})" if gpu_name else ""), "autocast": args.autocast,
        "compile": args.compile, "torch": torch.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "command": "python " + " ".join(sys.argv),
    }
    result["mfu_ratio_tree_vs_dense_gpt"] = round(result["mfu"]["tree_dense"] / result["mfu"]["dense_gpt"], 3)
    if args.sync_free:
        result["step_time_ratio_sync_free_vs_host_rows"] = round(
            per_round("tree_attribution_sync_free", "tree_attribution"), 3)
        result["cpu_time"]["step_time_ratio_sync_free_vs_host_rows"] = round(
            per_round("tree_attribution_sync_free", "tree_attribution", cpu), 3)
    if args.with_compiled:
        for name, clock in (("", secs), ("cpu", cpu)):
            out = result["cpu_time"] if name else result
            out["speedup_compiled_tree"] = round(per_round("tree_dense", "tree_dense_compiled", clock), 3)
            out["speedup_compiled_dense_gpt"] = round(per_round("dense_gpt", "dense_gpt_compiled", clock), 3)
            out["ratio_tree_vs_dense_gpt_compiled"] = round(per_round("dense_gpt_compiled", "tree_dense_compiled", clock), 3)
    if "tree_attribution_eager" in trainers:
        result["step_time_ratio_attribution_eager_vs_dense"] = round(per_round("tree_attribution_eager", "tree_dense"), 3)
        result["cpu_time"]["step_time_ratio_attribution_eager_vs_dense"] = round(
            per_round("tree_attribution_eager", "tree_dense", cpu), 3)
    if args.routed:
        result["ratio_routed_vs_soft_mlp_tree"] = round(per_round("tree_mlp_soft", "tree_mlp_routed_top1"), 3)
        result["cpu_time"]["ratio_routed_vs_soft_mlp_tree"] = round(
            per_round("tree_mlp_soft", "tree_mlp_routed_top1", cpu), 3)
        result["ratio_routed_top2_vs_soft_mlp_tree"] = round(per_round("tree_mlp_soft", "tree_mlp_routed_top2"), 3)
        result["cpu_time"]["ratio_routed_top2_vs_soft_mlp_tree"] = round(
            per_round("tree_mlp_soft", "tree_mlp_routed_top2", cpu), 3)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"engine-{result['config']}-w{result['width']}-b{args.batch}-{args.device.replace(':', '')}.json"
    (args.out / name).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
