"""`TrainState`: everything a training run *is*, in one object with `state_dict()` / `load_state_dict()`.

The run state is a table of named fields (`FIELDS`). Each field says whether a snapshot carries it:

    field      what                                                     snapshot   rolled back by a trial
    shape      the tree's topology                                      yes        yes
    model      parameters                                               yes        yes
    optimizer  moments and per-agent step counts                        yes        yes
    trust      the trust ledger                                         yes        yes
    policy     the policy's random stream, top-K knob and usage it keeps  yes        yes
    rng        torch's global RNG                                       yes        yes
    knobs      run-time knobs (learning-rate scale)                     yes        yes
    progress   step and the sparsity accumulators                       yes        only a trial undoes steps
    sampler    the data cursor                                          no: the data moves on after a rollback
    safety     loss baseline, pending losses, rollback/trial counts     no
    autonomy   stage, phase, self-stop book-keeping, measurement window no
    ring       the snapshot ring itself                                 no
    record     events, last evaluation, wall-clock, all steps executed  no
    compute    training FLOPs spent, trial branches included             no: compute spent is never undone
    extras     state owned by hooks (replay buffer, EWC anchors)        no

Checkpoints save every field; snapshots (`snapshot()`), rollback (`restore()`) and structural surgery
(`apply_surgery()`) go through the same table, so a field added here is saved, restored and snapshotted
without touching anything else. The model, optimizer and policy are rebuilt together whenever the shape
changes (`build.install`). Beside this file: building the parts (`build.py`), measuring on held-out data
(`measure.py`) and the run directory's files (`rundir.py`).
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from k1.data import BatchSampler, eval_windows
from k1.engine.config import RunConfig
from k1.engine.model.budget import check_fits
from k1.engine.model.shape import TreeShape
from k1.engine.run.build import build_model, install, resolve_device
from k1.engine.run.checkpoint import load_checkpoint, save_checkpoint
from k1.engine.run.distributed import Dist
from k1.engine.run.host_memory import keep_freed_memory
from k1.engine.selforg.autonomy import Autonomy
from k1.engine.selforg.plasticity import Surgery, assemble
from k1.engine.selforg.safety import SnapshotRing, clone_tree
from k1.engine.update.trust import TrustVector
from k1.errors import CheckpointError, ConfigError

# name → carried by snapshots; the order is the load order (shape first: it decides what is built)
FIELDS: dict[str, bool] = {
    "shape": True, "model": True, "optimizer": True, "trust": True, "policy": True, "rng": True,
    "knobs": True, "progress": True,
    "sampler": False, "safety": False, "autonomy": False, "ring": False, "record": False, "compute": False,
    "extras": False,
}
# restored by a safety rollback (the step count and what it accumulated move on; a trial undoes them too)
ROLLBACK_FIELDS = [f for f, snap in FIELDS.items() if snap and f != "progress"]


def _check_like(field: str, got: dict, want: dict) -> None:
    """`got` must have `want`'s keys with tensors of the same shapes (a checkpoint of another tree does not)."""
    if not isinstance(got, dict) or set(got) != set(want):
        raise ValueError(f"{field} has keys {sorted(got) if isinstance(got, dict) else type(got).__name__}, "
                         f"expected {sorted(want)}")
    for k, w in want.items():
        if torch.is_tensor(w) and (not torch.is_tensor(got[k]) or got[k].shape != w.shape or got[k].dtype != w.dtype):
            raise ValueError(f"{field}.{k} does not match this run's shape {tuple(w.shape)} and dtype {w.dtype}")


@dataclass
class Progress:
    """Steps completed and what they accumulated (device tensors: read once, at the end)."""

    step: int = 0
    frac_changed: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    agents: torch.Tensor = field(default_factory=lambda: torch.zeros(()))

    def state_dict(self) -> dict:
        return {"step": self.step, "frac_changed": self.frac_changed.clone(), "agents": self.agents.clone()}

    def load_state_dict(self, s: dict, device) -> None:
        if not isinstance(s["step"], int) or s["step"] < 0:
            raise ValueError(f"progress.step must be a count of steps, got {s['step']!r}")
        self.step = s["step"]
        self.frac_changed, self.agents = s["frac_changed"].to(device).clone(), s["agents"].to(device).clone()


@dataclass
class SafetyState:
    """The safety rail's book-keeping: the loss baseline, losses not yet checked, and counters."""

    loss_ema: float | None = None
    pending: list = field(default_factory=list)  # [(loss, grad_norm)] device scalars since the last check
    counts: dict = field(default_factory=lambda: {"rollbacks": 0, "commits": 0, "trial_rollbacks": 0,
                                                  "breaks_tried": 0, "trials": 0})

    def state_dict(self) -> dict:
        pend = torch.stack([torch.stack([a.float(), b.float()]) for a, b in self.pending]) if self.pending else None
        return {"loss_ema": self.loss_ema, "pending": pend, "counts": dict(self.counts)}

    def load_state_dict(self, s: dict, device) -> None:
        self.loss_ema = s["loss_ema"]
        p = s["pending"]
        self.pending = [] if p is None else [(row[0].to(device), row[1].to(device)) for row in p]
        self.counts = {**self.counts, **s["counts"]}


@dataclass
class RunRecord:
    """What happened: events, the last evaluation, wall-clock training time and every step executed
    (trial branches included, rolled back or not: compute spent is never undone)."""

    events: list = field(default_factory=list)
    last_eval: dict = field(default_factory=dict)
    train_time: float = 0.0
    train_tokens: int = 0
    steps_executed: int = 0
    initial_agents: int = 0
    stage: int = 0  # index of the stage being trained (continual runs have several)
    stage_started: bool = False  # its start hooks have run (a resume inside a stage must not rerun them)
    best: dict | None = None  # {"step", "val_loss"} of the best checkpointed evaluation (kept by pruning)

    def state_dict(self) -> dict:
        return copy.deepcopy(self.__dict__)

    def load_state_dict(self, s: dict, device=None) -> None:
        for k, v in s.items():
            default = getattr(RunRecord(), k, KeyError)
            if default is KeyError or (default is not None and v is not None and not isinstance(v, type(default))
                                       and not (isinstance(default, float) and isinstance(v, int))):
                raise ValueError(f"record.{k} = {v!r:.40} is not what a run records")
        self.__dict__.update(copy.deepcopy(s))


class TrainState:
    """One run: model, optimizer, policy, trust, data cursor, counters, rails, autonomy — see `FIELDS`."""

    def __init__(self, cfg: RunConfig, corpus, device: torch.device | None = None, dist: Dist | None = None):
        self.cfg, self.corpus, self.dist = cfg, corpus, dist or Dist()
        if self.dist.enabled and cfg.model.defer_weight_grads:
            raise ConfigError("model.defer_weight_grads is not supported under torchrun yet; turn it off")
        self.device = device or resolve_device(self.dist.device(cfg.train.device))
        check_fits(cfg, corpus.vocab_size, self.device)  # before anything is allocated
        if self.device.type == "cpu":  # a step's buffers are reused, not faulted back in (host_memory.py)
            keep_freed_memory()
        torch.manual_seed(cfg.train.seed)
        self.policy = None
        install(self, build_model(cfg, corpus.vocab_size).to(self.device))
        self.trust = TrustVector(self.shape.n_agents, cfg.trust, self.device)
        self.lr_scale = 1.0  # run-time knob (controller, rollbacks); the config stays frozen
        self.progress = Progress(0, torch.zeros((), device=self.device), torch.zeros((), device=self.device))
        B, T = cfg.train.batch_size, cfg.model.context
        # the global batch: every rank draws the same windows and trains on its slice (see distributed.py)
        self.sampler = BatchSampler(corpus, B * self.dist.world, T, seed=cfg.train.seed, split="train")
        self.eval_sets, self.tune_sets = held_out_windows(corpus, cfg.train, B, T)
        self.trial_domains: list[str] = list(self.eval_sets)  # what trials judge on (the current stage's)
        self.safety = SafetyState()
        self.autonomy = Autonomy(cfg.autonomy, self.shape, self.device)
        self.ring = SnapshotRing(cfg.safety.ring)
        self.record = RunRecord(initial_agents=self.shape.n_agents)
        self.train_flops = torch.zeros((), dtype=torch.float64, device=self.device)  # counted in train_step
        self.extras: dict = {}  # name → object with state_dict()/load_state_dict(): hook-owned state
        self.stop_requested = False
        self.stage_end = cfg.train.steps  # the current stage's last step (the loop sets it)
        self.probe = None  # a fixed held-out batch for the ledger's "probe" outcome mode
        if cfg.trust.outcome == "probe":  # the first validation window of every domain, on the device
            xs, ys = zip(*(w[0] for w in self.tune_sets.values()))
            self.probe = (torch.cat(xs).to(self.device), torch.cat(ys).to(self.device))
        use_bf16 = cfg.train.autocast == "bf16" or (cfg.train.autocast == "auto" and self.device.type == "cuda")
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext

    @property
    def step(self) -> int:
        return self.progress.step

    # ---- shape changes: everything built for the shape is rebuilt (build.install) ----------------------------------------------------
    def rebuild(self, shape: TreeShape) -> None:
        """A fresh model, optimizer and trust ledger of `shape`, to be filled from a snapshot or checkpoint."""
        install(self, build_model(self.cfg, self.corpus.vocab_size, shape).to(self.device))
        self.trust = TrustVector(shape.n_agents, self.cfg.trust, self.device)
        self.autonomy.reset_window(self.shape)

    def apply_surgery(self, surgery: Surgery) -> None:
        """Rebuild model and optimizer for the new shape; agent rows (weights, moments, steps) follow ids."""
        old_model, old_opt, old_shape = self.model, self.optimizer, self.shape
        install(self, build_model(self.cfg, self.corpus.vocab_size, surgery.shape).to(self.device))
        assemble(old_model, old_opt, self.model, self.optimizer, surgery.rows)
        self.trust.remap(old_shape, surgery.shape, surgery.merged)
        self.autonomy.reset_window(self.shape)

    # ---- the field table ----------------------------------------------------------------------------
    def _get(self, name: str):
        getters = {
            "shape": lambda: self.shape.to_dict(),
            "model": lambda: self.model.state_dict(),
            "optimizer": lambda: self.optimizer.state_dict(),
            "trust": lambda: self.trust.state_dict(),
            "policy": lambda: {**self.policy.state_dict(), "k": self.policy.k},
            "rng": lambda: torch.get_rng_state(),
            "knobs": lambda: {"lr_scale": self.lr_scale, "stop_requested": self.stop_requested},
            "progress": lambda: self.progress.state_dict(),
            "sampler": lambda: self.sampler.state_dict(),
            "safety": lambda: self.safety.state_dict(),
            "autonomy": lambda: self.autonomy.state_dict(),
            "ring": lambda: self.ring.state_dict(),
            "record": lambda: self.record.state_dict(),
            "compute": lambda: {"train_flops": self.train_flops},
            "extras": lambda: {k: v.state_dict() for k, v in self.extras.items()},
        }
        return getters[name]()

    def _set(self, name: str, v) -> None:
        d = self.device
        if name == "shape":
            shape = TreeShape.from_dict(v)
            if shape != self.shape:  # the tree was reshaped: rebuild it as it was saved
                self.rebuild(shape)
        elif name == "model":
            try:
                self.model.load_state_dict({k: t.to(d) for k, t in v.items()})
            except RuntimeError as e:
                raise CheckpointError(f"saved weights do not fit the model ({str(e).splitlines()[0]})") from None
        elif name == "optimizer":
            self._check_optimizer(v)
            self.optimizer.load_state_dict({k: t.to(d).clone() for k, t in v.items()})
        elif name == "trust":
            _check_like("trust", v, self.trust.state_dict())
            self.trust.load_state_dict(v)
        elif name == "policy":
            self.policy.load_state_dict({k: t for k, t in v.items() if k != "k"})
            self.policy.k = v["k"]
        elif name == "rng":
            torch.set_rng_state(v)
        elif name == "knobs":
            self.lr_scale, self.stop_requested = float(v["lr_scale"]), bool(v["stop_requested"])
        elif name == "extras":
            for k, sd in v.items():
                if k in self.extras:
                    self.extras[k].load_state_dict(sd)
        elif name == "sampler":
            self.sampler.load_state_dict(v)
        elif name == "compute":
            _check_like("compute", v, {"train_flops": self.train_flops})
            self.train_flops = v["train_flops"].to(d).clone()
        else:  # progress, safety, autonomy, ring, record
            getattr(self, name).load_state_dict(v, d)

    def _check_optimizer(self, v: dict) -> None:
        """Every moment must belong to a parameter of this model and have its shape; step counts one per agent."""
        params = dict(self.model.named_parameters())
        step_shapes = {"steps.shared": (), **{f"steps.level{lv}": (n,) for lv, n in enumerate(self.shape.level_sizes())}}
        for key, t in v.items():
            if not torch.is_tensor(t) or not t.is_floating_point():
                raise ValueError(f"optimizer entry {key!r} is not a floating-point tensor")
            if key.startswith("steps."):
                if tuple(t.shape) != step_shapes.get(key, None):
                    raise ValueError(f"optimizer entry {key!r} has shape {tuple(t.shape)}, expected "
                                     f"{step_shapes.get(key, 'no such entry')}")
                continue
            _, _, pname = key.partition(".")
            if pname not in params:
                raise ValueError(f"optimizer entry {key!r} names no parameter of this model")
            if t.shape not in (params[pname].shape, (1, *params[pname].shape)):  # shared ones are one "row"
                raise ValueError(f"optimizer entry {key!r} has shape {tuple(t.shape)}, the parameter "
                                 f"{tuple(params[pname].shape)}")

    def state_dict(self, fields=None) -> dict:
        """Every field (or `fields`), as nested dicts of tensors and JSON values; tensors are copies."""
        return {name: clone_tree(self._get(name)) for name in (fields or FIELDS)}

    def load_state_dict(self, state: dict, fields=None) -> None:
        """Restore `fields` (default: all present in `state`) in the table's order."""
        wanted = [f for f in FIELDS if f in state and (fields is None or f in fields)]
        missing = [f for f in (fields or FIELDS) if f not in state]
        if fields is None and missing:
            raise CheckpointError(f"run state lacks field(s) {', '.join(missing)}")
        try:
            for name in wanted:
                self._set(name, clone_tree(state[name]))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise CheckpointError(f"run state field {name!r} is malformed ({type(e).__name__}: {first})") from None

    # ---- snapshots ------------------------------------------------------------------------------------
    def snapshot(self, reason: str) -> dict:
        """The snapshotted fields (see `FIELDS`) plus when and why."""
        return {"reason": reason, "at_step": self.step,
                **self.state_dict([f for f, snap in FIELDS.items() if snap])}

    def restore(self, snap: dict, undo_steps: bool) -> None:
        """Put a snapshot back. A safety rollback keeps the step count (`undo_steps=False`); a trial branch
        that is undone takes its steps and what they accumulated with it (`undo_steps=True`)."""
        self.load_state_dict(snap, fields=[f for f, s in FIELDS.items() if s and (undo_steps or f != "progress")])

    # ---- checkpoints ----------------------------------------------------------------------------------
    def save(self, dir_: Path, meta: dict | None = None) -> Path:
        state = self.state_dict([f for f in FIELDS if f != "model"])
        state["meta"] = meta or {}
        return save_checkpoint(dir_, self.model.state_dict(), state)

    def load(self, dir_: Path) -> None:
        model_state, state = load_checkpoint(dir_)
        self.load_state_dict({**state, "model": model_state})

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch of this rank (the whole batch on one process)."""
        x, y = self.sampler.next()
        return self.dist.shard(x), self.dist.shard(y)


def held_out_windows(corpus, train, B: int, T: int) -> tuple[dict, dict]:
    """(evaluation windows, tuning windows) per domain. With `train.tune_fraction` f > 0 each validation
    split is cut in two: its first f is the tuning part (what trials judge on, and what settings are chosen
    on), the rest the evaluation part, so no evaluation window is ever seen while choosing. `eval_on="tune"`
    evaluates on the tuning part instead. With f = 0 both are the same windows of the whole split."""
    ev, tune = {}, {}
    for d, s in corpus.domains.items():
        cut = int(s.val.numel() * train.tune_fraction)
        if cut == 0:
            ev[d] = tune[d] = eval_windows(s.val, B, T, train.eval_batches)
            continue
        tune_part, eval_part = s.val[:cut], s.val[cut:]
        tune[d] = eval_windows(tune_part, B, T, train.eval_batches, name=f"domain {d!r} tuning windows")
        ev[d] = tune[d] if train.eval_on == "tune" else eval_windows(eval_part, B, T, train.eval_batches,
                                                                     name=f"domain {d!r} evaluation windows")
    return ev, tune
