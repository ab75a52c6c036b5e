"""`continual`: domains trained in sequence (prose → code → science); the matrix of every domain's
validation loss after every stage, and the forgetting / transfer metrics computed from it.

R[i][j] is domain j's validation bits per byte after training stage i (R_loss: the same in nats per
token); R_init[j] is before any training. All metrics are computed on bits per byte and are
lower-is-better (a loss, not an accuracy, so the signs are flipped relative to GEM's accuracy-based ones):

    final_avg        = mean_j R[n-1][j]
    bwt              = mean_{j<n-1} (R[n-1][j] − R[j][j])            > 0: forgetting; < 0: later domains helped
    forgetting_first = mean_{j<n-1} (R[n-1][j] − R[j][j])            (first-based; on losses it equals bwt)
    forgetting_max   = mean_{j<n-1} (R[n-1][j] − min_{i<n-1} R[i][j])  (max-based, Chaudhry et al. 2018)
    fwt              = mean_{j>0}   (R[j-1][j] − R_init[j])          < 0: earlier domains already helped j
    just_learnt      = mean_j       R[j][j]                          plasticity: each domain just after its stage
    forgetting_rel   = mean_{j<n-1} (R[n-1][j] − min_{i<n-1} R[i][j]) / (R_init[j] − R[j][j])
                                                                     the share of what was learnt that is lost

A strategy that forgets less only because it learnt less shows a worse `just_learnt`; `forgetting_rel`
puts forgetting against what was learnt.

One `TrainState` per (strategy, seed) persists across the stages, trained by the engine's one loop
(`k1.engine.run.loop.run`) with one stage per domain: a fresh sampler of that domain, no mid-stage evaluation.
Its learning-rate schedule spans the whole sequence (`train.steps = domains × steps_per_domain`): warmup
once, one cosine. k1-auto's autonomy acts inside each stage; a trial starts only if it ends inside its
stage, and its held-out judgement sees the current domain's validation windows only (no peeking at other
domains). The safety rails stay on for every strategy, but the loss-spike baseline restarts at each
domain switch (a new domain's higher loss is expected). Strategies are a template plus plugins
(`strategies.py`, `plugins.py`); one (strategy, seed) is `continual_run.py`; the report is
`continual_report.py`. Each (strategy, seed) leaves an ordinary run directory: config.toml, metrics and
attribution logs, a full checkpoint after every stage, and, for the tree, `specialize.json`: `k1 specialize`
run on the final weights, whose strong-specialist count enters the table. A finished (strategy, seed) whose
`continual_run.json` records the same config is read back instead of trained again; an unfinished one
resumes from its newest checkpoint (stage ends, and a resume point every `checkpoint_every` steps).

With two or more seeds the report adds paired comparisons over seeds (`paired`, below): the seeds are
shared by every strategy, so strategy A's and B's runs with one seed see the same data and initial draw.
"""

from __future__ import annotations

import itertools
import json
import logging
import statistics
import time
from pathlib import Path

import torch

from k1.common.config_files import read_toml, validate_as
from k1.common.files import write_atomic
from k1.engine.config import RunConfig, load_config, merge, parse_override
from k1.data import load_corpus
from k1.data.builtin import DEFAULT_RECIPES
from k1.data.extras import EXTRA_RECIPES
from k1.errors import ConfigError
from k1.experiments.continual_run import (RunBook, StageRecorder, count_specialists, domain_stages,  # noqa: F401
                                          finished_run, run_identity, run_one, same_training,
                                          strategy_run_config, strategy_state, write_run_result)
from k1.experiments.continual_metrics import METRICS, continual_metrics  # noqa: F401  (part of this module's API)
from k1.experiments.provenance import code_version
from k1.experiments.strategies import ContinualConfig, check_strategies

log = logging.getLogger(__name__)



def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (n − 1) over seeds; std 0 for a single seed."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def _elementwise(mats: list) -> dict:
    """Mean/std of equally shaped nested lists (vectors or matrices) over seeds, element by element."""
    t = torch.tensor(mats, dtype=torch.float64)  # [seeds, ...]
    std = t.std(0, correction=1) if t.shape[0] > 1 else torch.zeros_like(t[0])
    return {"mean": t.mean(0).tolist(), "std": std.tolist()}


# ---- configuration ----------------------------------------------------------------------------------
def load_configs(path: Path | None, preset: str, overrides: list[str]) -> tuple[RunConfig, ContinualConfig]:
    """The run config (preset ← file ← --set) and the `[continual]` table, split from the same sources."""
    file_data = read_toml(path) if path is not None else {}
    table = dict(file_data.pop("continual", {}))
    run_overrides = []
    for item in overrides:
        parsed = parse_override(item)
        if "continual" not in parsed:
            run_overrides.append(item)
        elif isinstance(parsed["continual"], dict):
            table = merge(table, parsed["continual"])
        else:
            raise ConfigError(f"--set {item!r}: name a key of the [continual] table, e.g. continual.ewc_lambda=1e5")
    try:  # the file's tables (less [continual]) go in as `extra`: same precedence as load_config(path)
        cfg = load_config(None, preset=preset, overrides=run_overrides, extra=file_data)
    except ConfigError as e:
        raise ConfigError(str(e).replace("defaults: ", f"{path}: ") if path else str(e)) from None
    return cfg, validate_as(ContinualConfig, table, str(path or "config"), at="continual")


def available_domains(cfg: RunConfig) -> list[str]:
    d = cfg.data
    if d.source == "builtin":
        return [*DEFAULT_RECIPES, *EXTRA_RECIPES]
    return list(d.paths if d.source == "files" else d.hf_datasets)


def check_run(cfg: RunConfig, domains: list[str], strategies: list[str], n_seeds: int,
              steps_per_domain: int, ccfg: ContinualConfig | None = None,
              eval_on: str = "eval") -> tuple[RunConfig, list[str]]:
    """Validate the sequence; return the config whose data holds exactly `domains`, and the strategies.

    With `ccfg`, the held-out windows follow it (`held_out`): tuning windows apart from evaluation windows,
    and at least `ccfg.eval_tokens` evaluation tokens per domain; `eval_on="tune"` evaluates on the tuning
    windows (for choosing settings)."""
    domains = [d.strip() for d in domains if d.strip()]
    known = available_domains(cfg)
    for d in domains:
        if d not in known:
            raise ConfigError(f"unknown domain {d!r} in --domains; data source {cfg.data.source!r} has: "
                              f"{', '.join(known)}")
    if len(set(domains)) != len(domains):
        raise ConfigError(f"--domains {','.join(domains)}: a domain appears twice; list each once")
    if len(domains) < 2:
        raise ConfigError(f"--domains needs at least 2 domains for a sequence, got {len(domains)}: {','.join(domains)}")
    if n_seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {n_seeds}")
    if steps_per_domain < 1:
        raise ConfigError(f"--steps-per-domain must be at least 1, got {steps_per_domain}")
    total = len(domains) * steps_per_domain
    train = cfg.train.model_copy(update={"steps": total})
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"domains": domains}), "train": train})
    if ccfg is not None:
        cfg = held_out(cfg, ccfg, eval_on)
    return cfg, check_strategies(strategies)


def held_out(cfg: RunConfig, ccfg: ContinualConfig, eval_on: str = "eval") -> RunConfig:
    """`cfg` evaluating on ≥ `ccfg.eval_tokens` tokens per domain from the evaluation part of each
    validation split, with its first `ccfg.tune_fraction` kept as tuning windows (trials judge there)."""
    if eval_on not in ("eval", "tune"):
        raise ConfigError(f"--eval-on must be 'eval' or 'tune', got {eval_on!r}")
    per_batch = cfg.train.batch_size * cfg.model.context
    batches = -(-ccfg.eval_tokens // per_batch)  # ceil
    train = cfg.train.model_copy(update={"eval_batches": batches, "tune_fraction": ccfg.tune_fraction,
                                         "eval_on": eval_on})
    return cfg.model_copy(update={"train": train})


# ---- the experiment -----------------------------------------------------------------------------------
def aggregate(name: str, runs: list[dict]) -> dict:
    """One strategy's entry of continual.json: mean ± std over seeds of R, R_loss, R_init and every metric."""
    entry = {"name": name, "R": _elementwise([r["R"] for r in runs]),
             "R_loss": _elementwise([r["R_loss"] for r in runs]), "R_init": _elementwise([r["R_init"] for r in runs])}
    for key in [*METRICS, "frac_params_changed", "params", "train_flops"]:
        entry[key] = mean_std([r[key] for r in runs])
    if all(r.get("strong_specialists") is not None for r in runs):
        entry["strong_specialists"] = mean_std([float(r["strong_specialists"]) for r in runs])
    if all(r.get("agents_after_stage") for r in runs):  # a grown tree ends larger than it started
        entry["final_agents"] = mean_std([float(r["agents_after_stage"][-1]) for r in runs])
    if all(r.get("shifts_detected") is not None for r in runs):
        entry["shifts_detected"] = mean_std([float(len(r["shifts_detected"])) for r in runs])
    if all(r.get("forgetting_sources") for r in runs):
        entry["forgetting_sources"] = forgetting_sources(runs)
    entry["just_learnt_per_domain"] = _elementwise([[r["R"][j][j] for j in range(len(r["R"]))] for r in runs])
    entry["per_seed"] = [{k: v for k, v in r.items() if k != "identity"} for r in runs]
    return entry


def forgetting_sources(runs: list[dict]) -> list[dict]:
    """Per earlier domain, mean over seeds of the final bits per byte and of the three counterfactuals
    (`shift.ForgettingSources`): the shared parameters put back, the agents grown later switched off, both."""
    keys = ("final", "shared_restored", "new_gates_off", "both")
    out = []
    for j, row in enumerate(runs[0]["forgetting_sources"]):
        vals = {k: statistics.fmean(r["forgetting_sources"][j][k] for r in runs) for k in keys}
        best = statistics.fmean(min(R[i][j] for i in range(len(R) - 1)) for R in (r["R"] for r in runs))
        out.append({"domain": row["domain"], "best": best, **vals})
    return out


# ---- paired comparisons over seeds ---------------------------------------------------------------------
# The pre-registered primary test of each claim (docs/continual.md, committed before the runs that test
# them): (candidate, reference, metric). Every other paired test is reported with Holm's correction.
PRIMARY = [
    ("k1-attribution", "random-path", "forgetting_max"),  # the choice matters (sparse updates, no protection)
    ("k1-ewc", "random-path-ewc", "forgetting_max"),  # the choice matters under EWC
    ("k1-freeze", "random-path-freeze", "forgetting_max"),  # the choice matters with the shared part frozen
    ("k1-freeze", "tree-naive", "forgetting_max"),  # freezing the shared part removes forgetting
    ("k1-ewc-shared", "tree-naive", "forgetting_max"),  # shielding the shared part removes forgetting
    ("k1-route", "random-path-route", "forgetting_max"),  # the choice matters over hard routes
    ("k1-route-adapter", "k1-route", "forgetting_max"),  # the per-shift adapter removes forgetting (round 2)
    ("k1-usage-route", "random-path-route", "forgetting_max"),  # usage-relative choice over hard routes (round 3)
]


def comparisons(names: list[str]) -> list[tuple[str, str]]:
    """The pairs a claim rests on, among the strategies run: (candidate, reference).

    Every sparse tree strategy against tree-naive (same architecture, every agent updated); the K-1
    selection rules against random-K (does choosing by blame, or by usage, matter?); every K-1 mechanism
    without replay against tree-ewc (the classic regulariser); K-1 + replay against tree-replay.
    """
    pairs = [(a, b) for a, b, _ in PRIMARY]
    pairs += [(n, "tree-naive") for n in names if n.startswith(("k1-", "random-"))]
    pairs += [("k1-attribution", "random-k"), ("k1-usage", "random-k"), ("k1-replay", "tree-replay"),
              ("k1-freeze", "tree-freeze"), ("tree-freeze", "tree-naive")]
    pairs += [(n, "tree-ewc") for n in names if n.startswith("k1-") and n != "k1-replay"]
    pairs += [("k1-adapter", "k1-freeze"), ("k1-adapter", "k1-attribution")]
    return list(dict.fromkeys((a, b) for a, b in pairs if a in names and b in names))


def sign_flip_pvalue(diffs: list[float], max_exact: int = 16, n_random: int = 100_000, seed: int = 0) -> float:
    """Two-sided paired sign-flip permutation test of mean(diffs) = 0.

    Under the null each seed's difference is as likely positive as negative, so the p-value is the share of
    the 2ⁿ sign patterns whose |mean| reaches the observed one: exact up to `max_exact` seeds, else
    `n_random` random patterns (with the observed one counted). With n seeds the smallest p is 2 / 2ⁿ
    (3 seeds: 0.25; 8 seeds: 0.0078), which is why a claim needs ≥ 8 seeds.
    """
    d = torch.tensor(diffs, dtype=torch.float64)
    n = d.numel()
    if n == 0:
        raise ValueError("no paired differences")
    observed = d.mean().abs() - 1e-12 * max(1.0, float(d.abs().max()))  # ties count as "as extreme"
    if n <= max_exact:
        signs = torch.tensor(list(itertools.product([1.0, -1.0], repeat=n)), dtype=torch.float64)
        return float(((signs * d).mean(1).abs() >= observed).double().mean())
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (n_random, n), generator=g).double() * 2 - 1
    return float((((signs * d).mean(1).abs() >= observed).sum() + 1) / (n_random + 1))


def holm(pvalues: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def paired(results: dict[str, list[dict]], keys=("forgetting_max", "final_avg", "just_learnt")) -> list[dict]:
    """Per comparison and metric: mean difference candidate − reference over seeds (negative = the
    candidate is lower, i.e. better), its sample std, how many seeds favour the candidate, and the p-value.

    A test in `PRIMARY` is its claim's pre-registered test and stands alone (`primary: True`, `p_holm` =
    its p); every other test gets Holm's correction over all the non-primary tests of the report."""
    out = []
    for a, b in comparisons(list(results)):
        by_seed = {r["seed"]: r for r in results[b]}
        for key in keys:
            diffs = [r[key] - by_seed[r["seed"]][key] for r in results[a] if r["seed"] in by_seed]
            if len(diffs) < 2:
                continue
            out.append({"candidate": a, "reference": b, "metric": key, "seeds": len(diffs),
                        "mean_diff": statistics.fmean(diffs), "std_diff": statistics.stdev(diffs),
                        "candidate_better": sum(x < 0 for x in diffs), "p_value": sign_flip_pvalue(diffs),
                        "test": "paired sign-flip permutation, two-sided",
                        "primary": (a, b, key) in PRIMARY})
    rest = [c for c in out if not c["primary"]]
    for c, p in zip(rest, holm([c["p_value"] for c in rest])):
        c["p_holm"] = p
    for c in out:
        if c["primary"]:
            c["p_holm"] = c["p_value"]
    return out


def run_continual(cfg: RunConfig, ccfg: ContinualConfig, out_dir: Path, strategies: list[str], seeds: list[int],
                  command: str = "k1 continual", quiet: bool = False, console=None, specialise: bool = True,
                  reuse: bool = True, checkpoint_every: int = 20) -> dict:
    """Every (strategy, seed) through `cfg.data.domains` in order; writes continual.json and .md; returns the JSON.

    `cfg` comes from `check_run` (its `train.steps` is domains × steps per domain). The progress bar counts
    (strategy, seed, stage) units. `reuse`: read back finished runs of the same identity from `out_dir`
    (an unfinished one is resumed from its newest checkpoint, one every `checkpoint_every` steps).
    """
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from k1.experiments.continual_report import describe, paired_table, to_markdown, to_table

    console = console or Console()
    domains = list(cfg.data.domains)
    spd = cfg.train.steps // len(domains)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus(cfg.data)
    console.print(describe(cfg, ccfg, strategies, seeds))
    t0 = time.perf_counter()
    results: dict[str, list[dict]] = {s: [] for s in strategies}
    reused = 0
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=quiet)
    with progress:
        task = progress.add_task("continual", total=len(strategies) * len(seeds) * len(domains))
        for name in strategies:
            for seed in seeds:
                def on_stage(i, name=name, seed=seed):  # stage i is done; say which one runs next
                    nxt = f": {domains[i + 1]}" if i + 1 < len(domains) else ""
                    progress.update(task, advance=1, description=f"{name} seed {seed}{nxt}")
                run_dir = out_dir / "runs" / f"{name}-seed{seed}"
                done = finished_run(run_dir, run_identity(cfg, ccfg, name, seed), specialise) if reuse else None
                if done is not None:
                    results[name].append(done)
                    reused += 1
                    progress.update(task, advance=len(domains), description=f"{name} seed {seed}: reused")
                    continue
                progress.update(task, description=f"{name} seed {seed}: {domains[0]}")
                results[name].append(run_one(cfg, ccfg, name, seed, corpus, run_dir, on_stage, specialise,
                                             checkpoint_every, resume=reuse))
    if reused:
        console.print(f"reused {reused} finished run{'s' if reused > 1 else ''} of the same config from {out_dir / 'runs'}")
    report = {"domains": domains, "seeds": seeds, "steps_per_domain": spd, "metric": "bpb", "command": command,
              "strategies": [aggregate(name, runs) for name, runs in results.items()],
              "paired": paired(results), "reused_runs": reused, "code": code_version(),
              "held_out": {"eval_on": cfg.train.eval_on, "tune_fraction": cfg.train.tune_fraction,
                           "eval_tokens_per_domain": cfg.train.eval_batches * cfg.train.batch_size * cfg.model.context}}
    seconds = time.perf_counter() - t0
    write_atomic(out_dir / "continual.json", json.dumps(report, indent=1))
    write_atomic(out_dir / "continual.md", to_markdown(report, cfg, ccfg, seconds))
    console.print(to_table(report))
    if report["paired"]:
        console.print(paired_table(report))
    from k1.report import write_report

    page = write_report(out_dir)
    console.print(f"{seconds:.0f} s; wrote {out_dir / 'continual.md'}, {out_dir / 'continual.json'} and the report {page}")
    log.info("continual: %d runs in %.1f s", len(strategies) * len(seeds), seconds)
    return report
