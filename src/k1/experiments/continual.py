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

One Trainer per (strategy, seed) persists across the stages; only its sampler changes. Its learning-rate
schedule spans the whole sequence (`train.steps = domains × steps_per_domain`): warmup once, one cosine.
The stage loop drives `Trainer.train_step` and the organizer's hooks itself (as `Trainer.fit` does,
without callbacks, checkpoints or mid-stage evaluations) so that k1-auto's autonomy acts inside each
stage; a trial starts only if it ends inside its stage, and its held-out judgement sees the current
domain's validation windows only (no peeking at other domains). The safety rails stay on for every
strategy, but the loss-spike baseline restarts at each domain switch (a new domain's higher loss is
expected). Strategies and the replay / EWC baselines live in `strategies.py`; the report in
`continual_report.py`.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
import tomllib
from pathlib import Path

import torch
from pydantic import ValidationError

from k1.config import RunConfig, load_config, merge, parse_override
from k1.data import BatchSampler, load_corpus
from k1.data.builtin import DEFAULT_RECIPES
from k1.data.extras import EXTRA_RECIPES
from k1.errors import ConfigError
from k1.experiments.strategies import (ContinualConfig, EWCPenalty, ReplaySampler, ReservoirBuffer,
                                       check_strategies, strategy_config)

log = logging.getLogger(__name__)

METRICS = ["final_avg", "bwt", "forgetting_first", "forgetting_max", "fwt"]


# ---- metrics on one matrix -------------------------------------------------------------------------
def continual_metrics(R: list[list[float]], R_init: list[float]) -> dict[str, float]:
    """The five metrics of the module docstring from R ([stages][domains], square) and R_init ([domains])."""
    n = len(R)
    if n < 2 or any(len(row) != n for row in R) or len(R_init) != n:
        raise ValueError(f"R must be square with at least 2 stages and R_init one entry per domain; got {n} rows")
    last = n - 1
    first = [R[last][j] - R[j][j] for j in range(last)]
    best = [R[last][j] - min(R[i][j] for i in range(last)) for j in range(last)]
    fwt = [R[j - 1][j] - R_init[j] for j in range(1, n)]
    return {"final_avg": sum(R[last]) / n, "bwt": sum(first) / last, "forgetting_first": sum(first) / last,
            "forgetting_max": sum(best) / last, "fwt": sum(fwt) / last}


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
    file_data: dict = {}
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            file_data = tomllib.loads(Path(path).read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from None
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
    try:
        ccfg = ContinualConfig.model_validate(table)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"{path or 'config'}: continual.{where}: {err['msg']} "
                          f"(got {err.get('input')!r})") from None
    return cfg, ccfg


def available_domains(cfg: RunConfig) -> list[str]:
    d = cfg.data
    if d.source == "builtin":
        return [*DEFAULT_RECIPES, *EXTRA_RECIPES]
    return list(d.paths if d.source == "files" else d.hf_datasets)


def check_run(cfg: RunConfig, domains: list[str], strategies: list[str], n_seeds: int,
              steps_per_domain: int) -> tuple[RunConfig, list[str]]:
    """Validate the sequence; return the config whose data holds exactly `domains`, and the strategies."""
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
    return cfg, check_strategies(strategies)


# ---- one (strategy, seed) ----------------------------------------------------------------------------
def train_stage(tr, end: int, sparsity: dict[str, torch.Tensor]) -> None:
    """Train until step `end` on `tr.sampler`, with the organizer's per-step hooks in `Trainer.fit`'s order.

    `sparsity` accumulates, on the device, the share of parameters changed and the agents updated per
    step ("changed", "agents") and the steps counted ("steps"); a trial's branch steps are not counted.
    """
    acfg, log_every = tr.cfg.autonomy, tr.cfg.train.log_every
    trial_steps = acfg.trial_steps if acfg.enabled else 0
    while tr.step < end:
        x, y = (t.to(tr.device, non_blocking=True) for t in tr.sampler.next())
        step = tr.step + 1
        log_due = step % log_every == 0 or step == end
        record = tr.train_step(x, y, log_due)
        sparsity["changed"] += record.stats.params_changed / record.total_params
        sparsity["agents"] += record.stats.agents_updated
        sparsity["steps"] += 1
        tr.organizer.observe(record)
        if log_due:
            tr.organizer.check_safety()
        if step + trial_steps <= end:  # a trial trains on this stage's domain, so it must end inside it
            tr.organizer.maybe_act(step)


def _row(metrics: dict, domains: list[str], key: str) -> list[float]:
    return [metrics["domains"][d][key] for d in domains]


def strategy_trainer(cfg: RunConfig, strategy: str, seed: int, corpus, run_dir: Path):
    """The one Trainer of a (strategy, seed): it lives through every stage; no callbacks, no checkpoints."""
    from k1.engine.train import Trainer  # late import: keeps `k1 --help` fast

    cfg = strategy_config(strategy, cfg, steps_per_domain=cfg.train.steps // len(cfg.data.domains))
    train = cfg.train.model_copy(update={"seed": seed})
    cfg = cfg.model_copy(update={"train": train, "name": f"{strategy}-seed{seed}"})
    run_dir.mkdir(parents=True, exist_ok=True)  # k1-auto's surgery writes the tree's shape history here
    return Trainer(cfg, run_dir, corpus=corpus, quiet=True, callbacks=[])


def run_one(cfg: RunConfig, ccfg: ContinualConfig, strategy: str, seed: int, corpus, run_dir: Path,
            on_stage=lambda stage: None) -> dict:
    """Train one strategy through every domain with one seed; return its R, R_loss, R_init and metrics."""
    domains, spd = list(cfg.data.domains), cfg.train.steps // len(cfg.data.domains)
    t0 = time.perf_counter()
    tr = strategy_trainer(cfg, strategy, seed, corpus, run_dir)
    cfg = tr.cfg
    B, T = cfg.train.batch_size, cfg.model.context
    all_windows = tr.eval_sets
    init = tr.evaluate()
    buffer = ReservoirBuffer(ccfg.replay_buffer, T, seed) if strategy == "replay" else None
    ewc = EWCPenalty(ccfg.ewc_lambda) if strategy == "ewc" else None
    R, R_loss, agents_per_stage = [], [], []
    sparsity = {k: torch.zeros((), device=tr.device) for k in ("changed", "agents", "steps")}
    for i, d in enumerate(domains):
        current = BatchSampler(corpus, B, T, seed=seed, domains=[d])
        tr.sampler = ReplaySampler(current, buffer, i, ccfg.replay_fraction) if buffer is not None else current
        tr.eval_sets = {d: all_windows[d]}  # held-out judgements (k1-auto's trials) see this domain only
        tr.organizer.reset_loss_baseline()  # a new domain's higher loss is expected, not a spike to roll back
        train_stage(tr, (i + 1) * spd, sparsity)
        tr.eval_sets = all_windows
        metrics = tr.evaluate()
        tr.organizer.after_eval(metrics)  # snapshot for the safety ring (self-stop is off: fixed budget)
        R.append(_row(metrics, domains, "bpb"))
        R_loss.append(_row(metrics, domains, "loss"))
        agents_per_stage.append(tr.shape.n_agents)
        if ewc is not None and i < len(domains) - 1:
            fisher_sampler = BatchSampler(corpus, B, T, seed=seed + 104_729, domains=[d])  # apart from training
            batches = [tuple(t.to(tr.device) for t in fisher_sampler.next()) for _ in range(ccfg.ewc_batches)]
            ewc.consolidate(tr.model, batches)
            if ewc not in tr.regularizers:
                tr.regularizers.append(ewc)
        on_stage(i)
    steps = sparsity["steps"].clamp_min(1)
    frac, agents = (sparsity["changed"] / steps).item(), (sparsity["agents"] / steps).item()  # host sync (end)
    s = tr.summary()
    R_init = _row(init, domains, "bpb")
    out = {"seed": seed, "R": R, "R_loss": R_loss, "R_init": R_init, "R_init_loss": _row(init, domains, "loss"),
           **continual_metrics(R, R_init), "frac_params_changed": frac,
           "agents_updated": agents, "params": s["params"], "agents_after_stage": agents_per_stage,
           "model": "DenseGPT" if cfg.arch == "dense" else "AgentTree", "policy": cfg.policy.name,
           "steps": tr.step, "organizer": s["safety"], "autonomy": s.get("autonomy"),
           "seconds": time.perf_counter() - t0}
    (run_dir / "continual_run.json").write_text(json.dumps(out, indent=1))
    return out


# ---- the experiment -----------------------------------------------------------------------------------
def aggregate(name: str, runs: list[dict]) -> dict:
    """One strategy's entry of continual.json: mean ± std over seeds of R, R_loss, R_init and every metric."""
    entry = {"name": name, "R": _elementwise([r["R"] for r in runs]),
             "R_loss": _elementwise([r["R_loss"] for r in runs]), "R_init": _elementwise([r["R_init"] for r in runs])}
    for key in [*METRICS, "frac_params_changed"]:
        entry[key] = mean_std([r[key] for r in runs])
    entry["per_seed"] = runs
    return entry


def run_continual(cfg: RunConfig, ccfg: ContinualConfig, out_dir: Path, strategies: list[str], seeds: list[int],
                  command: str = "k1 continual", quiet: bool = False, console=None) -> dict:
    """Every (strategy, seed) through `cfg.data.domains` in order; writes continual.json and .md; returns the JSON.

    `cfg` comes from `check_run` (its `train.steps` is domains × steps per domain). The progress bar counts
    (strategy, seed, stage) units.
    """
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from k1.experiments.continual_report import describe, to_markdown, to_table

    console = console or Console()
    domains = list(cfg.data.domains)
    spd = cfg.train.steps // len(domains)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus(cfg.data)
    console.print(describe(cfg, ccfg, strategies, seeds))
    t0 = time.perf_counter()
    results: dict[str, list[dict]] = {s: [] for s in strategies}
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=quiet)
    with progress:
        task = progress.add_task("continual", total=len(strategies) * len(seeds) * len(domains))
        for name in strategies:
            for seed in seeds:
                def on_stage(i, name=name, seed=seed):  # stage i is done; say which one runs next
                    nxt = f": {domains[i + 1]}" if i + 1 < len(domains) else ""
                    progress.update(task, advance=1, description=f"{name} seed {seed}{nxt}")
                progress.update(task, description=f"{name} seed {seed}: {domains[0]}")
                run_dir = out_dir / "runs" / f"{name}-seed{seed}"
                results[name].append(run_one(cfg, ccfg, name, seed, corpus, run_dir, on_stage))
    report = {"domains": domains, "seeds": seeds, "steps_per_domain": spd, "metric": "bpb", "command": command,
              "strategies": [aggregate(name, runs) for name, runs in results.items()]}
    seconds = time.perf_counter() - t0
    (out_dir / "continual.json").write_text(json.dumps(report, indent=1))
    (out_dir / "continual.md").write_text(to_markdown(report, cfg, ccfg, seconds))
    console.print(to_table(report))
    from k1.report import write_report

    page = write_report(out_dir)
    console.print(f"{seconds:.0f} s; wrote {out_dir / 'continual.md'}, {out_dir / 'continual.json'} and the report {page}")
    log.info("continual: %d runs in %.1f s", len(strategies) * len(seeds), seconds)
    return report
