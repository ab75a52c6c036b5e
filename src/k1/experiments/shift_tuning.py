"""Choosing the input-shift detector's settings on the tuning windows only.

`python -m k1.experiments.shift_tuning` draws streams of batches from the *tuning* part of each domain's
validation split (the first `tune_fraction` of it; never a training or an evaluation window): for every
ordered pair of domains of a sequence, `before` batches of one then `after` of the other, and single-domain
streams of `quiet` batches. A setting passes a stream when it fires once, within `max_lag` batches after
the change (none on a single-domain stream). The rule, fixed before the grid was run: among the settings
that pass every stream, the one with the smallest mean lag, ties to the larger z (fewer false alarms in
the long run); if none passes all, the one with the most passes.
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch

from k1.data import load_corpus
from k1.data.config import DataConfig
from k1.engine.config import load_config
from k1.experiments.shift import InputShiftDetector

SEQUENCES = {"builtin": (None, ["prose", "code", "science"]),
             "debian": ("src/k1/experiments/sequences/debian.toml", ["licences", "cheaders", "perl"])}
CHANGES = {("prose", "code"), ("code", "science"), ("science", "code"), ("code", "prose"),
           ("licences", "cheaders"), ("cheaders", "perl"), ("perl", "cheaders"), ("cheaders", "licences")}
GRID = {"z": [3.0, 4.0, 5.0, 6.0, 8.0], "patience": [2, 3, 5], "warmup": [5, 10, 15], "window": [2, 3, 4]}


def tuning_parts(data: DataConfig, tune_fraction: float) -> dict[str, torch.Tensor]:
    corpus = load_corpus(data)
    return {d: s.val[:int(s.val.numel() * tune_fraction)].long() for d, s in corpus.domains.items()}


def batches(tokens: torch.Tensor, n: int, B: int, T: int, g: torch.Generator) -> list[torch.Tensor]:
    starts = torch.randint(0, tokens.numel() - T, (n, B), generator=g)
    return [tokens[s[:, None] + torch.arange(T)] for s in starts]


def streams(parts: dict[str, torch.Tensor], reps: int, before: int, after: int, quiet: int, B: int, T: int):
    """(name, batches, index of the first changed batch or None) for every ordered pair and every domain."""
    g = torch.Generator().manual_seed(20_261_206)
    for r in range(reps):
        for a, b in itertools.permutations(parts, 2):
            yield f"{a}->{b}#{r}", batches(parts[a], before, B, T, g) + batches(parts[b], after, B, T, g), before
        for a, tokens in parts.items():
            yield f"{a}#{r}", batches(tokens, quiet, B, T, g), None


def judge(setting: dict, stream: list[torch.Tensor], change: int | None, max_lag: int) -> dict:
    det = InputShiftDetector(**setting)
    for i, x in enumerate(stream):
        det.update(x, i + 1)
    fired = [s - 1 for s in det.shifts]  # batch indices
    if change is None:
        return {"ok": not fired, "lag": None, "false": len(fired)}
    hits = [f for f in fired if change <= f <= change + max_lag]
    return {"ok": len(fired) == 1 and len(hits) == 1, "lag": hits[0] - change if hits else None,
            "false": len(fired) - len(hits)}


def _counts(name: str) -> bool:
    """Whether a stream enters the choice: a single-domain stream, or a change some order makes."""
    pair = name.split("#")[0].split("->")
    return len(pair) == 1 or tuple(pair) in CHANGES


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--before", type=int, default=40)
    ap.add_argument("--after", type=int, default=40)
    ap.add_argument("--quiet", type=int, default=130)
    ap.add_argument("--max-lag", type=int, default=10)
    ap.add_argument("--out", default=None, help="write the grid's results here (JSON)")
    a = ap.parse_args(argv)
    B, T, tune_fraction = 8, 64, 0.5  # the `small` preset's batch and context; ContinualConfig.tune_fraction
    all_streams = []
    for seq, (cfg_path, domains) in SEQUENCES.items():
        data = load_config(cfg_path).data if cfg_path else DataConfig(domains=domains)
        parts = tuning_parts(data.model_copy(update={"domains": domains}), tune_fraction)
        all_streams += [(seq, *s) for s in streams(parts, a.reps, a.before, a.after, a.quiet, B, T)]
    results = []
    for z, patience, warmup, window in itertools.product(*GRID.values()):
        setting = {"z": z, "patience": patience, "warmup": warmup, "window": window}
        judged = [judge(setting, s, c, a.max_lag) for _, _, s, c in all_streams]
        counted = [(name, j) for (_, name, _, _), j in zip(all_streams, judged) if _counts(name)]
        lags = [j["lag"] for _, j in counted if j["lag"] is not None]
        failed = [name for name, j in counted if not j["ok"]]
        apart = sorted({name.split("#")[0] for (_, name, _, _), j in zip(all_streams, judged)
                        if not _counts(name) and j["ok"]})
        results.append({**setting, "passed": len(counted) - len(failed), "streams": len(counted),
                        "mean_lag": sum(lags) / len(lags) if lags else None, "failed": failed[:8],
                        "other_pairs_told_apart": apart})
        print(f"{setting}: {len(counted) - len(failed)}/{len(counted)} passed, mean lag {results[-1]['mean_lag']}, "
              f"failed {failed[:4]}", flush=True)
    best = max(results, key=lambda r: (r["passed"], -(r["mean_lag"] or 1e9), r["z"]))
    print("chosen:", {k: best[k] for k in (*GRID, "passed", "streams", "mean_lag", "other_pairs_told_apart")})
    out = {"results": results, "chosen": best, "args": vars(a)}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
