"""Continual-learning strategies of `k1 continual`: which model and policy each trains, the two classic
anti-forgetting baselines (a reservoir replay sampler and the EWC penalty, on DenseGPT and on the tree),
and the K-1 mechanisms against forgetting (docs/continual.md gives each one's rationale).

The stage loop and the metrics live in `continual.py`, the report in `continual_report.py`; this file only
builds things.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field

from k1.engine.config import RunConfig, load_config
from k1.data import BatchSampler
from k1.engine.hooks import Hook
from k1.engine.hooks.requests import UseSampler
from k1.errors import ConfigError
from k1.registry import Registry

log = logging.getLogger(__name__)

class ContinualConfig(BaseModel):
    """The `[continual]` table of a config file (or `--set continual.ewc_lambda=...`): the baselines' knobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    replay_buffer: int = Field(default=512, ge=1)  # windows kept by reservoir sampling
    replay_fraction: float = Field(default=0.25, gt=0, lt=1)  # share of each batch drawn from the buffer
    # λ in λ/2 · Σ F (θ − θ*)²; large because the empirical Fisher of batch-mean gradients is tiny per
    # parameter. 1e6 gave the best final average bpb of a one-seed grid 1e3 … 1e8 (×10 steps) at 200 steps
    # per domain on the `small` model (naive BWT 0.85 → 0.44 bpb; 1e8 reached 0.19 but learnt less)
    ewc_lambda: float = Field(default=1e6, ge=0)
    ewc_batches: int = Field(default=8, ge=1)  # training batches of a finished domain that estimate its Fisher


# ---- the strategies -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Strategy:
    """One row of the continual table: which model trains, under which policy, with which baseline hooks."""

    name: str
    arch: str  # "dense": DenseGPT; "tree": the AgentTree
    policy: str  # update policy
    replay: bool = False  # a reservoir replay mixture from the second domain on
    ewc: bool = False  # the EWC penalty per finished domain
    autonomy: bool = False  # plasticity + autonomy (k1-auto)
    path_k: bool = False  # update as many agents per step as the tree has levels (attribution's sparsity)
    model: tuple[tuple[str, float], ...] = ()  # model options set on top of the base config, e.g. gate_balance

    def config(self, base: RunConfig, steps_per_domain: int | None = None) -> RunConfig:
        """`base` with this strategy's architecture, policy and autonomy (all else equal).

        random-k and k1-hybrid update `n_levels` agents per step: exactly as many as attribution's blame
        path (one agent per level, root to culprit), so the sparse tree strategies share one sparsity
        (measured in the table). k1-auto checks at least twice per stage (`check_every ≤ steps_per_domain
        // 2`): with `check_every` dividing `steps_per_domain` every check would fall on a stage's last
        steps, with no room for a trial; its controller may reshape and retune but not stop a stage early.
        """
        autonomy = base.autonomy.model_copy(update={"enabled": False})
        if self.autonomy:
            every = base.autonomy.check_every
            if steps_per_domain is not None:
                every = max(1, min(every, steps_per_domain // 2))
            autonomy = base.autonomy.model_copy(update={"enabled": True, "self_stop": False, "check_every": every})
        policy = base.policy if base.policy.name == self.policy else _policy({"name": self.policy})
        if self.path_k:
            policy = policy.model_copy(update={"top_k": len(base.model.branching) + 1})  # = n_levels
        model = base.model.model_copy(update=dict(self.model)) if self.model else base.model
        return base.model_copy(update={"arch": self.arch, "policy": policy, "autonomy": autonomy, "name": self.name,
                                       "model": model})

    def hooks(self, ccfg: "ContinualConfig", seed: int, context: int, n_stages: int) -> list:
        out = []
        if self.replay:
            out.append(ReplayHook(ReservoirBuffer(ccfg.replay_buffer, context, seed), ccfg.replay_fraction))
        if self.ewc:
            out.append(EWCHook(EWCPenalty(ccfg.ewc_lambda), ccfg.ewc_batches, seed, n_stages))
        if self.policy == "protect":
            out.append(DomainBoundaryHook())
        return out


STRATEGIES: Registry[Strategy] = Registry("strategy")
for _s in [
    Strategy("gpt-naive", "dense", "dense"),
    Strategy("gpt-replay", "dense", "dense", replay=True),
    Strategy("gpt-ewc", "dense", "dense", ewc=True),
    Strategy("tree-naive", "tree", "dense"),
    Strategy("tree-replay", "tree", "dense", replay=True),
    Strategy("tree-ewc", "tree", "dense", ewc=True),
    Strategy("random-k", "tree", "random", path_k=True),
    Strategy("k1-attribution", "tree", "attribution"),
    Strategy("k1-hybrid", "tree", "hybrid", path_k=True),
    Strategy("k1-auto", "tree", "attribution", autonomy=True),
    Strategy("k1-replay", "tree", "attribution", replay=True),
    Strategy("k1-protect", "tree", "protect"),
    Strategy("k1-balance", "tree", "attribution", model=(("gate_balance", 0.1),)),
]:
    STRATEGIES.add(_s.name, _s)
STRATEGY_ORDER = STRATEGIES.names()  # table order


def check_strategies(names: Sequence[str]) -> list[str]:
    """The requested strategies in the order given; a one-line ConfigError for an unknown or repeated one."""
    names = [n.strip() for n in names if n.strip()]
    for n in names:
        if n not in STRATEGIES:
            raise ConfigError(f"unknown strategy {n!r} in --strategies; choose from {', '.join(STRATEGY_ORDER)}")
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"--strategies {','.join(names)!r}: list each strategy once, at least one")
    return names


def strategy_config(name: str, base: RunConfig, steps_per_domain: int | None = None) -> RunConfig:
    return STRATEGIES.get(name).config(base, steps_per_domain)


def _policy(table: dict):
    return load_config(extra={"policy": table}).policy


class DomainBoundaryHook(Hook):
    """Tell the policy that a domain ended (`protect` folds the domain's agent use into its importance)."""

    def on_stage_end(self, state, stage, metrics):
        state.policy.consolidate()


# ---- replay ------------------------------------------------------------------------------------------
class ReservoirBuffer:
    """A uniform sample of every training window seen so far (reservoir sampling, Vitter's algorithm R).

    Each slot holds one window of `context + 1` tokens and the index of the domain it came from, so a
    replay draw can ask for past domains only. All randomness comes from the buffer's own generator.
    """

    def __init__(self, capacity: int, context: int, seed: int = 0):
        self.capacity = capacity
        self.windows = torch.zeros(capacity, context + 1, dtype=torch.long)  # [capacity, T+1]
        self.domain = torch.full((capacity,), -1, dtype=torch.long)  # [capacity]; -1 = empty slot
        self.seen = 0  # windows offered so far
        self.generator = torch.Generator().manual_seed(seed + 4099)

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def add(self, x: torch.Tensor, y: torch.Tensor, domain: int) -> None:
        """Offer the rows of a batch (`x`, `y` [b, T]) from domain index `domain`."""
        windows = torch.cat([x, y[:, -1:]], dim=1).cpu()  # [b, T+1]: y is x shifted by one token
        for w in windows:
            if self.seen < self.capacity:
                slot = self.seen
            else:
                slot = int(torch.randint(0, self.seen + 1, (1,), generator=self.generator))
            if slot < self.capacity:
                self.windows[slot], self.domain[slot] = w, domain
            self.seen += 1

    def state_dict(self) -> dict:
        return {"windows": self.windows, "domain": self.domain, "seen": self.seen,
                "generator": self.generator.get_state()}

    def load_state_dict(self, s: dict) -> None:
        self.windows, self.domain = s["windows"].clone(), s["domain"].clone()
        self.seen = int(s["seen"])
        self.generator.set_state(s["generator"])

    def sample(self, n: int, exclude_domain: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`n` windows drawn uniformly (with replacement) from slots of domains other than `exclude_domain`.

        Returns x, y [n, T] and the domains [n]; empty tensors when no past-domain window is held yet.
        """
        slots = ((self.domain >= 0) & (self.domain != exclude_domain)).nonzero().squeeze(1)
        if slots.numel() == 0 or n == 0:
            empty = self.windows[:0]
            return empty[:, :-1], empty[:, 1:], self.domain[:0]
        pick = slots[torch.randint(0, slots.numel(), (n,), generator=self.generator)]
        w = self.windows[pick]
        return w[:, :-1], w[:, 1:], self.domain[pick]


class ReplaySampler:
    """The current domain's batches with `round(fraction · B)` rows replaced by past-domain windows.

    Every current-domain row the model trains on is offered to the reservoir; the replayed rows come
    only from *earlier* domains (so during the first domain nothing is replayed and the batch equals the
    naive one). The current rows are the same windows the naive strategy sees, minus the replaced tail.
    `last_replayed` ([B] bool) marks the rows of the last batch that came from the buffer.
    """

    def __init__(self, current, buffer: ReservoirBuffer, domain: int, fraction: float):
        self.current, self.buffer, self.domain = current, buffer, domain
        self.n_replay = round(fraction * current.batch_size)
        self.last_replayed: torch.Tensor | None = None

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.current.next()  # [B, T]
        B = x.shape[0]
        rx, ry, _ = self.buffer.sample(self.n_replay, exclude_domain=self.domain)
        keep = B - rx.shape[0]
        self.buffer.add(x[:keep], y[:keep], self.domain)  # what is trained on now is what may be replayed later
        x = torch.cat([x[:keep], rx.to(x.device)])
        y = torch.cat([y[:keep], ry.to(y.device)])
        self.last_replayed = torch.arange(B) >= keep
        return x, y

    def state_dict(self) -> dict:
        return {"current": self.current.state_dict(), "buffer": self.buffer.state_dict()}

    def load_state_dict(self, s: dict) -> None:  # a trial restores the data cursor of both branches
        self.current.load_state_dict(s["current"])
        self.buffer.load_state_dict(s["buffer"])


class ReplayHook(Hook):
    """At each stage's start, train on the replay mixture of that stage's batches."""

    def __init__(self, buffer: ReservoirBuffer, fraction: float):
        self.buffer, self.fraction = buffer, fraction

    def on_stage_start(self, state, stage):
        state.extras["replay"] = self.buffer  # checkpointed with the run
        return [UseSampler(ReplaySampler(state.sampler, self.buffer, stage.index, self.fraction))]


# ---- EWC -----------------------------------------------------------------------------------------------
class EWCPenalty:
    """Elastic weight consolidation: λ/2 · Σ_domains Σ_params F_d (θ − θ*_d)², one anchor per finished domain.

    F_d is the diagonal empirical Fisher: the squared gradient of the mean batch loss, averaged over a few
    training batches of domain d, taken at θ*_d (the parameters when domain d finished). Its gradient is
    λ · Σ_d F_d (θ − θ*_d). Called as a trainer regulariser: `penalty(model) -> 0-d tensor`.
    """

    def __init__(self, lam: float):
        self.lam = lam
        self.anchors: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []  # (F, θ*) per domain

    def consolidate(self, model: torch.nn.Module, batches) -> None:
        """Estimate F on `batches` ([(x, y)], at the current parameters) and anchor θ* there."""
        fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
        was_training = model.training
        model.eval()
        count = 0
        for x, y in batches:
            model.zero_grad(set_to_none=True)
            _, loss = model(x, y)
            loss.backward()
            for n, p in model.named_parameters():
                if p.grad is not None:
                    fisher[n] += p.grad.detach() ** 2
            count += 1
        model.zero_grad(set_to_none=True)  # the next training step must not see these gradients
        model.train(was_training)
        fisher = {n: f / max(count, 1) for n, f in fisher.items()}
        star = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.anchors.append((fisher, star))

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        params = dict(model.named_parameters())
        total = torch.zeros((), device=next(iter(params.values())).device)
        for fisher, star in self.anchors:
            for n, f in fisher.items():
                total = total + (f * (params[n] - star[n]) ** 2).sum()
        return 0.5 * self.lam * total


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
