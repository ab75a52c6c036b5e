"""Where a training step spends its time, phase by phase: the tree with the `dense` policy, with `attribution`
(deferred weight gradients), and DenseGPT; process CPU milliseconds per phase, minor page faults and system
time per step. One table; the phases are those of `train_step` (k1/engine/run/step.py), timed one by one.

    python bench/profile_step.py --reference     # the public prototype's configuration
    python bench/profile_step.py                 # default preset
    K1_KEEP_FREED_MEMORY=0 python bench/profile_step.py --reference   # glibc's default malloc (host_memory.py)

The candidates run interleaved, one step each per round, on the same batch; each figure is the median over
rounds. The phases below mirror train_step; keep them in step with it.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from engine import REFERENCE, make_trainer, synthetic_corpus  # noqa: E402

from k1.engine.run.host_memory import keep_freed_memory  # noqa: E402
from k1.engine.update.signals import StepSignals  # noqa: E402
from k1.engine.run.step import clip_, lr_at  # noqa: E402

PHASES = ("forward", "backward", "signals", "plan", "finish", "clip", "optimizer", "trust", "zero_grad")


def timed_step(state, x, y) -> dict[str, float]:
    """One train_step, phase by phase: CPU seconds per phase, plus page faults and system seconds."""
    clk, marks = time.process_time, []
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    marks.append(clk())
    _, loss = state.forward(x, y)
    marks.append(clk())
    loss.backward()
    marks.append(clk())
    signals = StepSignals.measure(state.model, loss, state.parents)
    marks.append(clk())
    plan = state.policy.plan(signals, state.trust, state.step)
    marks.append(clk())
    rows = state.optimizer.select(plan)
    grads = state.model.finish_weight_grads(plan, rows)
    marks.append(clk())
    grads += [p.grad for p in state.model.parameters() if p.grad is not None]
    grad_norm = clip_(grads, state.cfg.optim.grad_clip)
    marks.append(clk())
    finite = torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)
    state.optimizer.step(plan, lr_at(state.step, state.cfg), ok=finite, rows=rows)
    marks.append(clk())
    state.trust.update(plan.masked(finite), loss, state.step)
    marks.append(clk())
    state.model.zero_grad(set_to_none=True)
    marks.append(clk())
    state.progress.step += 1
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    out = {name: b - a for name, a, b in zip(PHASES, marks, marks[1:])}
    out.update(total=marks[-1] - marks[0], faults=r1.ru_minflt - r0.ru_minflt, system=r1.ru_stime - r0.ru_stime)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", action="store_true")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from k1.engine.config import PRESETS, merge
    base = merge(REFERENCE if args.reference else PRESETS["default"],
                 {"train": {"batch_size": args.batch, "device": "cpu", "steps": 10 ** 6}, "optim": {"warmup_steps": 0}})
    corpus = synthetic_corpus(10_000 if args.reference else 256)
    out = Path("runs/bench/profile_step")
    trainers = {"tree dense": make_trainer(base, "tree", "dense", corpus, out / "dense"),
                "tree attribution": make_trainer(base, "tree", "attribution", corpus, out / "attribution",
                                                 {"defer_weight_grads": True}),
                "DenseGPT": make_trainer(base, "dense", "dense", corpus, out / "gpt")}
    x, y = trainers["tree dense"].state.sampler.next()
    for tr in trainers.values():  # burn-in
        for _ in range(2):
            timed_step(tr.state, x, y)
    runs = {k: [] for k in trainers}
    for _ in range(args.rounds):
        for k, tr in trainers.items():
            runs[k].append(timed_step(tr.state, x, y))
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in runs.items()}
    names = list(trainers)
    print("| phase (CPU ms per step) | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for m in PHASES + ("total", "system"):
        print(f"| {m} | " + " | ".join(f"{1000 * med[k][m]:.1f}" for k in names) + " |")
    print("| minor page faults | " + " | ".join(f"{med[k]['faults']:,.0f}" for k in names) + " |")
    ratio = med["tree attribution"]["total"] / med["tree dense"]["total"]
    print(f"\nattribution / dense CPU time: {ratio:.3f}; keep_freed_memory: {keep_freed_memory()}; "
          f"threads {torch.get_num_threads()}; rounds {args.rounds}; command: python {' '.join(sys.argv)}")
    return med


if __name__ == "__main__":
    main()
