"""One (strategy, seed) of `k1 continual`: train through every domain on the engine's one loop, record R,
and resume mid-run after an interruption, as `k1 train --resume` does.

A run directory holds `continual_identity.json` (what decides its training, written first), full
checkpoints at every stage's end (`checkpoints/step-N`: what `k1 explain` and `k1 specialize` read) and a
resume point every `checkpoint_every` steps inside a stage (`resume/checkpoints/step-N`, only the newest kept), and
`continual_run.json` last (atomically): its presence means "finished". A run started again with the same
identity continues from its newest complete checkpoint or resume point; R's rows, the replay buffer, the
EWC anchors and the policy's usage travel in the checkpoint (`state.extras`, `state.policy`).
"""

from __future__ import annotations

import json
import shutil
import time
import tomllib
from pathlib import Path

from k1.common.files import write_atomic
from k1.engine.config import RunConfig, dump_config, validate
from k1.data import BatchSampler
from k1.engine.run.checkpoint import is_complete
from k1.engine.hooks import Hook
from k1.engine.run.loop import Loop, Stage
from k1.engine.hooks.requests import UseSampler
from k1.engine.run.state import TrainState
from k1.engine.run.measure import evaluate
from k1.engine.run.rundir import RunDir
from k1.engine.run.train import standard_hooks
from k1.errors import ConfigError
from k1.experiments.continual_metrics import continual_metrics
from k1.experiments.provenance import code_version, same_code
from k1.experiments.strategies import STRATEGIES, ContinualConfig, strategy_config

RESUME = "resume"  # the resume points of a run directory, itself laid out as one (`RESUME/checkpoints/step-N`)


class RunBook:
    """What a continual run has measured so far (R's rows, R_init, agents per stage, seconds): kept in
    `state.extras`, so a checkpoint carries it and a resumed run carries on from it."""

    def __init__(self):
        self.R, self.R_loss, self.agents = [], [], []
        self.R_init, self.R_init_loss, self.seconds = [], [], 0.0

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, s: dict) -> None:
        for k, v in s.items():
            setattr(self, k, v)


class StageRecorder(Hook):
    """Collects R's rows: every domain's validation loss and bits per byte after each stage and the tree
    size, then a full checkpoint per stage (it holds the rows too), so `k1 explain`, `k1 specialize`, the
    report and a resume read the run. Hooks that act at a stage's end come before it."""

    def __init__(self, domains: list[str], run_dir: Path, on_stage=lambda i: None, book: RunBook | None = None):
        self.domains, self.run_dir, self.on_stage = domains, run_dir, on_stage
        self.book = book or RunBook()

    @property
    def R(self):
        return self.book.R

    @property
    def R_loss(self):
        return self.book.R_loss

    def on_stage_end(self, state, stage, metrics):
        self.book.R.append(_row(metrics, self.domains, "bpb"))
        self.book.R_loss.append(_row(metrics, self.domains, "loss"))
        self.book.agents.append(state.shape.n_agents)
        state.save(RunDir(self.run_dir).checkpoint(state.step), meta={"stage": stage.index, "domain": stage.name})
        shutil.rmtree(self.run_dir / RESUME, ignore_errors=True)  # the stage's end supersedes them
        self.on_stage(stage.index)


class ResumePoints(Hook):
    """A full checkpoint every `every` steps inside a stage, under `resume/checkpoints/` (only the newest kept)."""

    def __init__(self, run_dir: Path, every: int):
        self.root, self.every = run_dir / RESUME, every

    def on_check(self, state, step):
        if not self.every or step % self.every or step >= state.stage_end:
            return
        old = RunDir(self.root).checkpoint_dirs()
        state.save(RunDir(self.root).checkpoint(step), meta={"resume_point": True})
        for d in old:
            shutil.rmtree(d, ignore_errors=True)


def _row(metrics: dict, domains: list[str], key: str) -> list[float]:
    return [metrics["domains"][d][key] for d in domains]


def strategy_run_config(cfg: RunConfig, strategy: str, seed: int) -> RunConfig:
    """The resolved config of one (strategy, seed): what its run directory's config.toml holds."""
    cfg = strategy_config(strategy, cfg, steps_per_domain=cfg.train.steps // len(cfg.data.domains))
    train = cfg.train.model_copy(update={"seed": seed, "recorders": ["metrics", "attribution"]})
    return cfg.model_copy(update={"train": train, "name": f"{strategy}-seed{seed}"})


def strategy_state(cfg: RunConfig, strategy: str, seed: int, corpus) -> TrainState:
    """The one run state of a (strategy, seed): it lives through every stage."""
    return TrainState(strategy_run_config(cfg, strategy, seed), corpus)


def run_identity(cfg: RunConfig, ccfg: ContinualConfig, strategy: str, seed: int) -> dict:
    """Everything that decides a (strategy, seed)'s training; a run is reused or resumed only if it matches.
    `code`: the code version (provenance.py): commit, dirty flag and the source hash that must match."""
    return {"config": dump_config(strategy_run_config(cfg, strategy, seed)), "continual": ccfg.model_dump(),
            "code": code_version()}


def same_training(saved: dict | None, identity: dict) -> bool:
    """Whether a saved identity trains like `identity`: the same code (source hash), the same continual
    knobs and the same validated config, so an option added to the config later (saved without it, at
    its default) still matches."""
    if not isinstance(saved, dict) or saved.get("continual") != identity["continual"]:
        return False
    if not same_code(saved.get("code"), identity["code"]):
        return False
    try:
        return validate(tomllib.loads(saved["config"])) == validate(tomllib.loads(identity["config"]))
    except (ConfigError, tomllib.TOMLDecodeError, KeyError, TypeError):
        return False


def finished_run(run_dir: Path, identity: dict, specialise: bool = False) -> dict | None:
    """The saved result of a finished (strategy, seed) with this identity, or None (absent, other, torn).

    A finished tree run that was trained without the specialist count gets it now, from its final weights."""
    path = run_dir / "continual_run.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not same_training(saved.get("identity"), identity):
        return None
    if specialise and saved.get("model") == "AgentTree" and saved.get("strong_specialists") is None:
        saved["strong_specialists"] = count_specialists(run_dir)
        write_run_result(run_dir, saved)
    return saved


def resume_point(run_dir: Path, identity: dict) -> Path | None:
    """The newest complete checkpoint (stage end or resume point) of an unfinished run with this identity."""
    try:
        saved = json.loads((run_dir / "continual_identity.json").read_text())
    except (OSError, ValueError):
        return None
    if not same_training(saved, identity):
        return None
    found = [d for d in RunDir(run_dir).checkpoint_dirs() + RunDir(run_dir / RESUME).checkpoint_dirs()
             if is_complete(d)]
    return max(found, key=lambda p: int(p.name.split("-")[1]), default=None)


def write_run_result(run_dir: Path, result: dict) -> None:
    """`continual_run.json`, written atomically: its presence means "finished"."""
    write_atomic(run_dir / "continual_run.json", json.dumps(result, indent=1))


def count_specialists(run_dir: Path) -> int:
    """`k1 specialize` on the run's final weights (written to specialize.json): the strong specialists."""
    from k1.explain.specialization import specialize, strong_specialists, write_outputs

    result = specialize(run_dir)
    write_outputs(run_dir, result)
    return sum(strong_specialists(result))


def domain_stages(domains: list[str], steps_per_domain: int) -> list[Stage]:
    """One stage per domain, evaluated only at its end; trials judge on the stage's own domain only."""
    return [Stage(d, (i + 1) * steps_per_domain, index=i, domains=[d], trial_domains=[d], eval_every=0)
            for i, d in enumerate(domains)]


def _enter_stage(state, stage: Stage, plugin_hooks: list) -> None:
    """Put the sampler of `stage` in place as the loop does at its start (the plain one, then the plugins'
    replacements), so that a checkpoint taken inside the stage restores its data cursor into the same kind."""
    B, T = state.cfg.train.batch_size * state.dist.world, state.cfg.model.context
    state.sampler = BatchSampler(state.corpus, B, T, seed=state.cfg.train.seed, domains=list(stage.domains))
    for h in plugin_hooks:
        for req in getattr(h, "on_stage_start", lambda *a: None)(state, stage) or []:
            if isinstance(req, UseSampler):
                state.sampler = req.sampler


def run_one(cfg: RunConfig, ccfg: ContinualConfig, strategy: str, seed: int, corpus, run_dir: Path,
            on_stage=lambda stage: None, specialise: bool = False, checkpoint_every: int = 0,
            extra_hooks: list | None = None, resume: bool = True) -> dict:
    """Train one strategy through every domain with one seed; return its R, R_loss, R_init and metrics.

    An unfinished run of the same identity in `run_dir` is resumed from its newest checkpoint (unless
    `resume` is False); anything else there is removed first. `checkpoint_every`: a resume point every that many steps (0: stage ends
    only). `specialise`: also count the tree's strong specialists after the last stage."""
    domains, spd = list(cfg.data.domains), cfg.train.steps // len(cfg.data.domains)
    identity = run_identity(cfg, ccfg, strategy, seed)
    ckpt = resume_point(run_dir, identity) if resume else None
    if ckpt is None:
        if run_dir.exists():  # a stale or torn directory: its config.toml and logs must not leak into this run
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        write_atomic(run_dir / "continual_identity.json", json.dumps(identity, indent=1))
    t0 = time.perf_counter()
    state = strategy_state(cfg, strategy, seed, corpus)
    cfg = state.cfg
    book = RunBook()
    state.extras["continual"] = book
    plugin_hooks = STRATEGIES.get(strategy).hooks(ccfg, seed, state, len(domains))
    stages = domain_stages(domains, spd)
    if ckpt is not None:
        step = int(ckpt.name.split("-")[1])
        _enter_stage(state, stages[(step - 1) // spd], plugin_hooks)
        state.load(ckpt)
        RunDir(run_dir).truncate_logs(state.step)
    else:
        init = evaluate(state)
        book.R_init, book.R_init_loss = _row(init, domains, "bpb"), _row(init, domains, "loss")
    recorder = StageRecorder(domains, run_dir, on_stage, book)
    hooks = standard_hooks(cfg, quiet=True) + plugin_hooks + [recorder, ResumePoints(run_dir, checkpoint_every),
                                                              *(extra_hooks or [])]
    s = Loop(state, hooks, run_dir, final_checkpoint=False).run(stages)

    book.seconds += time.perf_counter() - t0
    out = {"seed": seed, "R": book.R, "R_loss": book.R_loss, "R_init": book.R_init,
           "R_init_loss": book.R_init_loss, **continual_metrics(book.R, book.R_init),
           "frac_params_changed": s["frac_params_changed"], "agents_updated": s["agents_updated"],
           "params": s["params"], "agents_after_stage": book.agents, "steps_executed": s["steps_executed"],
           "train_flops": s["train_flops"],
           "model": "DenseGPT" if cfg.arch == "dense" else "AgentTree", "policy": cfg.policy.name,
           "steps": s["steps"], "organizer": s["safety"], "autonomy": s.get("autonomy"),
           "strong_specialists": count_specialists(run_dir) if specialise and cfg.arch == "tree" else None,
           "shifts_detected": state.extras["shift"].shifts if "shift" in state.extras else None,
           "forgetting_sources": state.extras["sources"].result if "sources" in state.extras else None,
           "seconds": book.seconds, "resumed_from": ckpt.name if ckpt is not None else None,
           "code": identity["code"], "identity": identity}
    for d in RunDir(run_dir).checkpoint_dirs():  # an interrupt's checkpoint inside a stage: superseded by the stage ends
        if int(d.name.split("-")[1]) % spd:
            shutil.rmtree(d, ignore_errors=True)
    write_run_result(run_dir, out)  # last: a run cut short before this line is resumed or trained again
    return out
