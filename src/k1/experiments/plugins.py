"""The pieces a continual strategy is composed of (as Avalanche composes a strategy from a template and
plugins): each plugin may change the run config, and adds hooks to the one training loop.

A plugin is a small frozen dataclass registered by name in `PLUGINS`; `strategies.py` composes them. State
a plugin's hooks keep across steps goes into `state.extras` when the hook is built, so it is checkpointed
with the run and a run resumed mid-stage finds it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from k1.data import BatchSampler
from k1.engine.config import RunConfig, load_config
from k1.engine.hooks import Hook
from k1.engine.hooks.requests import UseSampler
from k1.errors import ConfigError
from k1.experiments.adapter import AdapterOnShift, AdapterState, ShiftAdapters
from k1.experiments.ewc import EWCPenalty
from k1.experiments.replay import ReplaySampler, ReservoirBuffer
from k1.experiments.shift import (
    ConsolidateOnShift,
    ForgettingSources,
    GrowOnShift,
    InputShiftDetector,
    ShiftDetector,
)
from k1.registry import Registry


class ContinualConfig(BaseModel):
    """The `[continual]` table of a config file (or `--set continual.ewc_lambda=...`): the plugins' knobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    replay_buffer: int = Field(default=512, ge=1)  # windows kept by reservoir sampling
    replay_fraction: float = Field(default=0.25, gt=0, lt=1)  # share of each batch drawn from the buffer
    # λ in λ/2 · Σ F (θ − θ*)²; large because the empirical Fisher of batch-mean gradients is tiny per
    # parameter. 1e6 gave the best final average bpb of a one-seed grid 1e3 … 1e8 (×10 steps) at 200 steps
    # per domain on the `small` model (naive BWT 0.85 → 0.44 bpb; 1e8 reached 0.19 but learnt less), judged
    # on windows that overlapped evaluation; re-chosen on the tuning windows (docs/continual.md): 1e6 again
    ewc_lambda: float = Field(default=1e6, ge=0)
    ewc_batches: int = Field(default=8, ge=1)  # training batches of a finished domain that estimate its Fisher
    # λ of EWC on the shared parameters only (`k1-ewc-shared`); the default is ewc_lambda's, not tuned
    ewc_shared_lambda: float = Field(default=1e6, ge=0)
    # evaluation: at least this many tokens per domain, from the evaluation part of each validation split
    eval_tokens: int = Field(default=16_384, ge=1)
    # the share of each validation split (its start) held out as tuning windows: trials judge there, and
    # `--eval-on tune` evaluates there so that settings are chosen apart from the evaluation windows
    tune_fraction: float = Field(default=0.5, gt=0, lt=1)
    # the label-free shift detector of k1-grow, k1-usage(-route) and the adapters: "input" (token-pair
    # histograms, settings chosen on the tuning windows by `python -m k1.experiments.shift_tuning`) or "loss"
    # (the first detector: loss surprise, α 0.05, z 3, patience 3, warmup 15)
    shift_signal: Literal["input", "loss"] = "input"
    shift_z: float = Field(default=3.0, gt=0)
    shift_patience: int = Field(default=5, ge=1)
    shift_warmup: int = Field(default=5, ge=0)
    shift_window: int = Field(default=3, ge=1)
    adapter_slots: int = Field(default=4, ge=1)  # k1-adapter: adapters allocated (shifts beyond are not given one)


@dataclass(frozen=True)
class Context:
    """What a plugin's hooks are built from: the knobs, the seed, the run state and the number of stages."""

    ccfg: ContinualConfig
    seed: int
    state: object
    n_stages: int


class Plugin:
    """Base: no change to the config, no hooks."""

    name: str = "plugin"

    def configure(self, cfg: RunConfig, steps_per_domain: int | None) -> RunConfig:
        return cfg

    def hooks(self, ctx: Context) -> list[Hook]:
        return []


PLUGINS: Registry[Plugin] = Registry("continual plugin")


def _policy(table: dict):
    return load_config(extra={"policy": table}).policy


# ---- config plugins ------------------------------------------------------------------------------------
@PLUGINS.register("path-k")
@dataclass(frozen=True)
class PathK(Plugin):
    """Update as many agents per step as the tree has levels: attribution's blame-path sparsity, so random-k
    and k1-hybrid are compared with attribution at one sparsity."""

    def configure(self, cfg, steps_per_domain):
        return cfg.model_copy(update={"policy": cfg.policy.model_copy(update={"top_k": len(cfg.model.branching) + 1})})


@PLUGINS.register("model")
@dataclass(frozen=True)
class ModelOptions(Plugin):
    """Model options set on top of the base config, e.g. `(("gate_balance", 0.1),)`."""

    options: tuple[tuple[str, object], ...] = ()

    def configure(self, cfg, steps_per_domain):
        return cfg.model_copy(update={"model": cfg.model.model_copy(update=dict(self.options))})


@PLUGINS.register("route")
@dataclass(frozen=True)
class HardRoutes(Plugin):
    """Hard top-k routing over MLP agents below an attention root (`model.routing`), with the Switch
    load-balancing loss, capacity and the ST-MoE router z-loss: a token's gradient reaches only the agents
    it was dispatched to (and the gate keys that competed for it), so choosing agents means something."""

    routing: str = "topk"
    route_k: int = 2
    capacity_factor: float = 1.25
    route_balance: float = 0.01
    route_z: float = 1e-3

    def configure(self, cfg, steps_per_domain):
        kinds = ["block"] + ["mlp"] * len(cfg.model.branching)
        data = {**cfg.model.model_dump(), "kinds": kinds, "routing": self.routing, "route_k": self.route_k,
                "capacity_factor": self.capacity_factor, "route_balance": self.route_balance,
                "route_z": self.route_z}
        return cfg.model_copy(update={"model": type(cfg.model).model_validate(data)})


@PLUGINS.register("autonomy")
@dataclass(frozen=True)
class Autonomy(Plugin):
    """Plasticity + autonomy (k1-auto). It checks at least twice per stage (`check_every ≤ steps_per_domain
    // 2`): with `check_every` dividing `steps_per_domain` every check would fall on a stage's last steps,
    with no room for a trial; it may reshape and retune but not stop a stage early."""

    def configure(self, cfg, steps_per_domain):
        every = cfg.autonomy.check_every
        if steps_per_domain is not None:
            every = max(1, min(every, steps_per_domain // 2))
        a = cfg.autonomy.model_copy(update={"enabled": True, "self_stop": False, "check_every": every})
        return cfg.model_copy(update={"autonomy": a})


# ---- hook plugins --------------------------------------------------------------------------------------
@PLUGINS.register("replay")
@dataclass(frozen=True)
class Replay(Plugin):
    """A reservoir replay mixture from the second domain on (`ContinualConfig.replay_*`)."""

    def hooks(self, ctx):
        buffer = ReservoirBuffer(ctx.ccfg.replay_buffer, ctx.state.cfg.model.context, ctx.seed)
        ctx.state.extras["replay"] = buffer  # checkpointed with the run
        return [ReplayHook(buffer, ctx.ccfg.replay_fraction)]


class ReplayHook(Hook):
    """At each stage's start, train on the replay mixture of that stage's batches."""

    def __init__(self, buffer: ReservoirBuffer, fraction: float):
        self.buffer, self.fraction = buffer, fraction

    def on_stage_start(self, state, stage):
        return [UseSampler(ReplaySampler(state.sampler, self.buffer, stage.index, self.fraction))]


@PLUGINS.register("ewc")
@dataclass(frozen=True)
class EWC(Plugin):
    """The EWC penalty, anchored per finished domain (`ContinualConfig.ewc_*`); `scope="shared"`: on the
    tree's shared parameters only (`ContinualConfig.ewc_shared_lambda`)."""

    scope: str = "all"

    def hooks(self, ctx):
        lam = ctx.ccfg.ewc_lambda if self.scope == "all" else ctx.ccfg.ewc_shared_lambda
        penalty = EWCPenalty(lam, self.scope)
        ctx.state.extras["ewc"] = penalty  # the anchors are checkpointed with the run
        return [EWCHook(penalty, ctx.ccfg.ewc_batches, ctx.seed, ctx.n_stages)]


class EWCHook(Hook):
    """Anchor the EWC penalty after every stage but the last; add it to the objective from then on."""

    def __init__(self, penalty: EWCPenalty, n_batches: int, seed: int, n_stages: int):
        self.penalty, self.n_batches, self.seed, self.n_stages = penalty, n_batches, seed, n_stages

    def loss_terms(self, state) -> list:
        return [self.penalty] if self.penalty.anchors else []

    def on_stage_end(self, state, stage, metrics):
        if stage.index >= self.n_stages - 1:
            return
        B, T = state.cfg.train.batch_size, state.cfg.model.context
        fisher = BatchSampler(state.corpus, B, T, seed=self.seed + 104_729, domains=list(stage.domains))  # apart from training
        self.penalty.consolidate(state.model, [tuple(t.to(state.device) for t in fisher.next())
                                               for _ in range(self.n_batches)])


@PLUGINS.register("boundary")
@dataclass(frozen=True)
class Boundary(Plugin):
    """Tell the policy that a domain ended (`protect` folds the domain's agent use into its importance)."""

    def hooks(self, ctx):
        return [DomainBoundaryHook()]


class DomainBoundaryHook(Hook):
    def on_stage_end(self, state, stage, metrics):
        state.policy.consolidate()


@PLUGINS.register("freeze-shared")
@dataclass(frozen=True)
class FreezeShared(Plugin):
    """After the first domain, freeze the shared parameters (token and position embeddings, final norm; the
    head is tied): the audit found most of the forgetting there, where every row updates every step."""

    def hooks(self, ctx):
        flag = Flag()
        ctx.state.extras["freeze_shared"] = flag  # checkpointed: a resumed run stays frozen
        return [FreezeSharedHook(flag)]


class Flag:
    """A bool that travels in a run's checkpoint (`state.extras`)."""

    def __init__(self, on: bool = False):
        self.on = on

    def state_dict(self) -> dict:
        return {"on": self.on}

    def load_state_dict(self, s: dict) -> None:
        self.on = bool(s["on"])


class FreezeSharedHook(Hook):
    """Sets the optimizer's `shared_scale` from the flag before every step (an optimizer rebuilt by a
    change of shape starts at 1), and raises the flag at the first domain's end."""

    def __init__(self, flag: Flag):
        self.flag = flag

    def _apply(self, state):
        state.optimizer.shared_scale = 0.0 if self.flag.on else 1.0

    def on_train_start(self, state, info):
        self._apply(state)

    def on_stage_start(self, state, stage):
        self._apply(state)

    def on_check(self, state, step):
        self._apply(state)

    def on_stage_end(self, state, stage, metrics):
        if stage.index == 0:
            self.flag.on = True
        self._apply(state)


# ---- label-free shifts (shift.py) --------------------------------------------------------------------------
def make_detector(ccfg: ContinualConfig):
    """The shift detector `ccfg.shift_signal` names, with its settings."""
    if ccfg.shift_signal == "loss":
        return ShiftDetector()
    return InputShiftDetector(z=ccfg.shift_z, patience=ccfg.shift_patience, warmup=ccfg.shift_warmup,
                              window=ccfg.shift_window)


@PLUGINS.register("shift")
@dataclass(frozen=True)
class ConsolidateAtShift(Plugin):
    """At a shift detected from the training loss (no label), call `policy.consolidate()` (`k1-usage`)."""

    def hooks(self, ctx):
        detector = make_detector(ctx.ccfg)
        ctx.state.extras["shift"] = detector
        return [ConsolidateOnShift(detector)]


@PLUGINS.register("grow")
@dataclass(frozen=True)
class GrowAtShift(Plugin):
    """At a shift detected from the training loss (no label), protect the tree and grow a fresh agent
    under each agent of level `under` (`k1-grow`); also measure where the forgetting comes from."""

    under: int = 1

    def hooks(self, ctx):
        detector = make_detector(ctx.ccfg)
        sources = ForgettingSources(list(ctx.state.cfg.data.domains))
        ctx.state.extras["shift"], ctx.state.extras["sources"] = detector, sources
        return [GrowOnShift(detector, self.under), sources]


@PLUGINS.register("adapter")
@dataclass(frozen=True)
class AdapterAtShift(Plugin):
    """Freeze the shared parameters at the first shift detected from the input (no label) and open a small
    adapter for them at every shift, chosen per token by the input alone (`adapter.py`; `k1-adapter`)."""

    def hooks(self, ctx):
        st = ctx.state
        if st.corpus.vocab_size > 1024:
            raise ConfigError(f"k1-adapter routes tokens by token-pair counts (vocab²): it needs a byte-sized "
                              f"vocabulary, not {st.corpus.vocab_size}")
        adapters = ShiftAdapters(st.cfg.model.width, st.corpus.vocab_size, ctx.ccfg.adapter_slots).to(st.device)
        detector, state = make_detector(ctx.ccfg), AdapterState(adapters)
        st.extras["shift"], st.extras["adapter"] = detector, state
        return [AdapterOnShift(detector, state)]
