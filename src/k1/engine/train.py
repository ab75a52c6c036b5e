"""The trainer: `train_step` follows DESIGN.md's diagram line by line; `fit` runs the loop.

    batch → forward → loss → backward → StepSignals → policy.plan → optimizer.step(plan) → trust.update
          → StepRecord → callbacks

What differs between policies lives in the policy and the optimizer, not in branches here. No host syncs
in the step: `.item()` happens only in callbacks when `log_due` (and in `evaluate`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import torch

from k1 import __version__
from k1.config import RunConfig, save_config
from k1.data import BatchSampler, eval_windows, load_corpus
from k1.engine.baseline import DenseGPT
from k1.engine.callbacks import CALLBACKS, Callback
from k1.engine.checkpoint import flatten, latest_checkpoint, load_checkpoint, save_checkpoint, unflatten
from k1.engine.optim import build_optimizer
from k1.engine.organize import Organizer
from k1.engine.plasticity import Surgery, assemble
from k1.engine.safety import Snapshot, clone_tensors
from k1.engine.policies import build_policy
from k1.engine.record import RunInfo, StepRecord
from k1.engine.shape import TreeShape
from k1.engine.signals import StepSignals, flat_parents_tensor
from k1.engine.tree import AgentTree
from k1.engine.trust import TrustVector
from k1.errors import CheckpointError

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(cfg: RunConfig, vocab_size: int, shape: TreeShape | None = None) -> AgentTree:
    model_cfg = cfg.model.model_copy(update={"vocab_size": vocab_size})
    if cfg.arch == "dense":
        return DenseGPT(model_cfg, vocab_size, n_layers=cfg.model.dense_layers or len(cfg.model.branching) + 1)
    shape = shape or TreeShape.from_branching(cfg.model.branching, cfg.model.kinds)
    return AgentTree(shape, model_cfg, vocab_size)


def lr_at(step: int, cfg) -> float:
    """Linear warmup, then cosine decay to lr · min_lr_ratio at the last step (`step` is 0-based)."""
    o, total = cfg.optim, cfg.train.steps
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    frac = (step - o.warmup_steps) / max(1, total - o.warmup_steps)
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


class Trainer:
    """Owns the model, optimizer, policy, trust, data position and counters of one run."""

    def __init__(self, cfg: RunConfig, out_dir: str | Path, corpus=None, quiet: bool = False,
                 callbacks: list[Callback] | None = None):
        self.cfg, self.out_dir = cfg, Path(out_dir)
        self.device = resolve_device(cfg.train.device)
        torch.manual_seed(cfg.train.seed)
        self.corpus = corpus if corpus is not None else load_corpus(cfg.data)
        self.policy = None
        self._install(build_model(cfg, self.corpus.vocab_size).to(self.device))
        self.trust = TrustVector(self.shape.n_agents, cfg.trust, self.device)
        self.initial_agents = self.shape.n_agents  # the tree may grow or shrink; summaries report both
        self.probe = None  # a fixed held-out batch for the ledger's "probe" outcome mode
        self.lr_scale = 1.0  # run-time knob (autonomy, rollbacks); the config stays frozen
        B, T = cfg.train.batch_size, cfg.model.context
        self.sampler = BatchSampler(self.corpus, B, T, seed=cfg.train.seed, split="train")
        self.eval_sets = {d: eval_windows(s.val, B, T, cfg.train.eval_batches) for d, s in self.corpus.domains.items()}
        if cfg.trust.outcome == "probe":  # the first validation window of every domain, on the device
            xs, ys = zip(*(w[0] for w in self.eval_sets.values()))
            self.probe = (torch.cat(xs).to(self.device), torch.cat(ys).to(self.device))
        use_bf16 = cfg.train.autocast == "bf16" or (cfg.train.autocast == "auto" and self.device.type == "cuda")
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext
        names = [n for n in cfg.train.callbacks if not (quiet and n == "progress")]
        self.callbacks = callbacks if callbacks is not None else [CALLBACKS.get(n)() for n in names]
        self.step = 0  # steps completed
        # device-side accumulators for the summary (read once at the end)
        self._sum_frac_changed = torch.zeros((), device=self.device)
        self._sum_agents = torch.zeros((), device=self.device)
        self._train_time, self._train_tokens = 0.0, 0
        self.last_eval: dict = {}
        self.events: list[dict] = []
        self.stop_requested = False
        # extra loss terms f(model) → scalar added to the objective (e.g. EWC in `k1 continual`); the
        # logged loss stays the data loss so runs compare on the same measure
        self.regularizers: list = []
        self.organizer = Organizer(self, cfg.autonomy, cfg.safety)

    def _install(self, model: AgentTree) -> None:
        """Make `model` current: its shape, a fresh optimizer for it, and the policy rebuilt for the shape
        (keeping the policy's random stream and top-K knob). Used at start, after surgery and rollback."""
        self.model, self.shape = model, model.shape
        self.parents = flat_parents_tensor(self.shape, self.device)
        self.optimizer = build_optimizer(model, self.cfg.optim)
        old = self.policy
        self.policy = build_policy(self.cfg.policy, self.shape, self.device, self.cfg.train.seed)
        if old is not None:
            self.policy.load_state_dict(old.state_dict())
            self.policy.k = old.k
        self.forward = torch.compile(model) if self.cfg.train.compile else model
        self.total_params = model.num_parameters()
        self._names = self.shape.names()

    # ---- one step ----------------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor, log_due: bool = False) -> StepRecord:
        cfg = self.cfg
        lr = lr_at(self.step, cfg) * self.lr_scale
        with self.autocast():
            _, loss = self.forward(x, y)
        objective = loss if not self.regularizers else loss + sum(r(self.model) for r in self.regularizers)
        objective.backward()
        signals = StepSignals.measure(self.model, loss, self.parents)
        plan = self.policy.plan(signals, self.trust, self.step)
        self.model.finish_weight_grads(plan)  # deferred matrix gradients, selected agents only (no-op if off)
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
        finite = torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)  # stays on the device
        stats = self.optimizer.step(plan, lr, ok=finite)
        if self.probe is None:
            self.trust.update(plan.masked(finite), loss, self.step)
        else:
            self.trust.update_probe(plan.masked(finite), self._probe_loss(), self.step)
        self.model.zero_grad(set_to_none=True)
        self.step += 1
        self._sum_frac_changed += stats.params_changed / self.total_params  # a fraction: the tree may be resized
        self._sum_agents += stats.agents_updated
        return StepRecord(self.step, lr, x.numel(), loss.detach(), finite, grad_norm.detach(), signals, plan,
                          stats, self.trust.trust, log_due, self._names, self.total_params)

    @torch.no_grad()
    def _probe_loss(self) -> torch.Tensor:
        with self.autocast():
            return self.forward(*self.probe)[1]

    # ---- the loop -----------------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg = self.cfg.train
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if not (self.out_dir / "config.toml").exists():
            save_config(self.cfg, self.out_dir / "config.toml")
        self._write_shape()
        info = RunInfo(self.out_dir, self.shape.names(), self.total_params, cfg.steps, self.cfg.policy.name,
                       self.step, list(self.corpus.domains))
        for cb in self.callbacks:
            cb.on_train_start(info)
        self.organizer.start()
        self.model.train()
        try:
            self._loop()
        except KeyboardInterrupt:  # never lose work: checkpoint where we are, then let the CLI say so
            self.save()
            raise
        if self.last_eval.get("step") != self.step:  # trials may have moved past the last scheduled point
            self._eval_and_notify()
        if not (self.out_dir / "checkpoints" / f"step-{self.step}").exists():
            self.save()
        summary = self.summary()
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        (self.out_dir / "summary.md").write_text(summary_markdown(summary))
        for cb in self.callbacks:
            cb.on_train_end(summary)
        return summary

    def _loop(self) -> None:
        cfg = self.cfg.train
        t0, tokens = time.perf_counter(), 0
        while self.step < cfg.steps:
            x, y = (t.to(self.device, non_blocking=True) for t in self.sampler.next())
            step = self.step + 1
            log_due = step % cfg.log_every == 0 or step == cfg.steps
            record = self.train_step(x, y, log_due)
            tokens += record.tokens
            if log_due:
                self._sync()  # timing needs finished kernels
                dt = time.perf_counter() - t0
                self._train_time, self._train_tokens = self._train_time + dt, self._train_tokens + tokens
                record = _with_speed(record, tokens / max(dt, 1e-9))
            for cb in self.callbacks:
                cb.on_step_end(record)
            self.organizer.observe(record)
            # ---- the one point between steps where structure, schedule and state may change ----
            if log_due:
                self.organizer.check_safety()
            if step % cfg.eval_every == 0 or step == cfg.steps:
                self._eval_and_notify()
            self.organizer.maybe_act(step)
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps \
                    or self.stop_requested:
                self.save()
            if log_due:
                t0, tokens = time.perf_counter(), 0  # evaluation, trials, checkpoints are not training time
            if self.stop_requested:
                break

    def _eval_and_notify(self) -> None:
        self.last_eval = {**self.evaluate(), "step": self.step}
        for cb in self.callbacks:
            cb.on_eval(self.step, self.last_eval)
        self.organizer.after_eval(self.last_eval)

    def emit(self, event: dict) -> None:
        """Record a structural, safety or autonomy event (logged, summarised, shown by `k1 explain`)."""
        event = {"step": self.step, **event}
        self.events.append(event)
        log.info("event %s", event)
        for cb in self.callbacks:
            cb.on_event(event)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Validation loss and bits per byte per domain, on fixed windows; means across domains."""
        self.model.eval()
        per = {}
        for d, windows in self.eval_sets.items():
            losses = []
            for x, y in windows:
                with self.autocast():
                    _, loss = self.forward(x.to(self.device), y.to(self.device))
                losses.append(loss.float())
            loss = torch.stack(losses).mean().item()  # host sync (evaluation)
            bpb = loss / math.log(2) / self.corpus.domains[d].val_bytes_per_token
            per[d] = {"loss": loss, "bpb": bpb}
        self.model.train()
        return {"val_loss": sum(v["loss"] for v in per.values()) / len(per),
                "val_bpb": sum(v["bpb"] for v in per.values()) / len(per), "domains": per}

    def summary(self) -> dict:
        steps_run = max(self.step, 1)
        return {
            "name": self.cfg.name, "policy": self.cfg.policy.name, "arch": self.cfg.arch, "steps": self.step,
            "params": self.total_params, "agents": self.initial_agents,
            **{k: self.last_eval.get(k) for k in ("val_loss", "val_bpb")},
            "domains": self.last_eval.get("domains", {}),
            "tokens_per_s": self._train_tokens / self._train_time if self._train_time else None,
            "frac_params_changed": self._sum_frac_changed.item() / steps_run,  # host sync (end)
            "agents_updated": self._sum_agents.item() / steps_run,
            "final_agents": self.shape.n_agents, "stopped_early": self.stop_requested,
            "events": self.events, **self.organizer.summary(),
        }

    # ---- snapshots, surgery, trials (used by the organizer between steps) -------------------------
    def capture(self, reason: str) -> Snapshot:
        return Snapshot(self.step, self.shape.to_dict(), clone_tensors(self.model.state_dict()),
                        clone_tensors(self.optimizer.state_dict()), clone_tensors(self.trust.state_dict()),
                        self.policy.generator.get_state(), torch.get_rng_state(),
                        {"lr_scale": self.lr_scale, "top_k": self.policy.k,
                         "counters": (self._sum_frac_changed.clone(), self._sum_agents.clone())}, reason)

    def restore_snapshot(self, snap: Snapshot, reset_step: bool) -> None:
        """Put back model, optimizer, trust, shape, RNG and knobs; the data position moves on regardless."""
        shape = TreeShape.from_dict(snap.shape)
        if shape != self.shape:
            self._rebuild(shape)
            self._write_shape()
        self.model.load_state_dict(snap.model)
        self.optimizer.load_state_dict(clone_tensors(snap.optimizer))
        self.trust.load_state_dict(snap.trust)
        self.policy.generator.set_state(snap.policy_rng)
        torch.set_rng_state(snap.torch_rng)
        self.lr_scale, self.policy.k = snap.knobs["lr_scale"], snap.knobs["top_k"]
        if reset_step:  # a trial branch is undone: so are its steps and what they counted
            self.step = snap.step
            self._sum_frac_changed, self._sum_agents = (c.clone() for c in snap.knobs["counters"])

    def _rebuild(self, shape: TreeShape) -> None:
        """A fresh model, optimizer and trust vector of `shape`, to be filled from a snapshot or checkpoint."""
        self._install(build_model(self.cfg, self.corpus.vocab_size, shape).to(self.device))
        self.trust = TrustVector(shape.n_agents, self.cfg.trust, self.device)

    def apply_surgery(self, surgery: Surgery) -> None:
        """Rebuild model and optimizer for the new shape; agent rows (weights, moments, steps) follow ids."""
        old_model, old_opt, old_shape = self.model, self.optimizer, self.shape
        self._install(build_model(self.cfg, self.corpus.vocab_size, surgery.shape).to(self.device))
        assemble(old_model, old_opt, self.model, self.optimizer, surgery.rows)
        self.trust.remap(old_shape, surgery.shape, surgery.merged)
        self._write_shape()

    def _write_shape(self) -> None:
        """shape.json is the current tree; shapes.jsonl its history (a shape applies after its step)."""
        d = self.shape.to_dict()
        (self.out_dir / "shape.json").write_text(json.dumps(d))
        with open(self.out_dir / "shapes.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, "shape": d}) + "\n")

    def trial_batches(self) -> list:
        n = self.cfg.autonomy.trial_batches
        return [xy for windows in self.eval_sets.values() for xy in windows[:n]]

    @torch.no_grad()
    def trial_loss(self) -> float:
        """Held-out loss used to judge a change (the first `trial_batches` validation windows per domain)."""
        self.model.eval()
        losses = []
        for x, y in self.trial_batches():
            with self.autocast():
                losses.append(self.forward(x.to(self.device), y.to(self.device))[1].float())
        self.model.train()
        return torch.stack(losses).mean().item()  # host sync (trial)

    def train_quiet(self, steps: int) -> None:
        """Train without callbacks (trial branches); the records are not logged per step."""
        for _ in range(steps):
            x, y = (t.to(self.device, non_blocking=True) for t in self.sampler.next())
            self.train_step(x, y)

    # ---- checkpoints ------------------------------------------------------------------------------
    def save(self) -> Path:
        tensors = {**flatten("optim", self.optimizer.state_dict()), **flatten("trust", self.trust.state_dict()),
                   "rng.torch": torch.get_rng_state(), "rng.policy": self.policy.state_dict()["generator"],
                   "acc.changed": self._sum_frac_changed, "acc.agents": self._sum_agents}
        sampler_state = self.sampler.state_dict()
        tensors.update({f"sampler.{k}": v for k, v in sampler_state.items() if torch.is_tensor(v)})
        meta = {"step": self.step, "shape": self.shape.to_dict(), "k1_version": __version__,
                "torch_version": torch.__version__, "policy": self.cfg.policy.name,
                "sampler": {k: v for k, v in sampler_state.items() if not torch.is_tensor(v)},
                "train_time": self._train_time, "train_tokens": self._train_tokens, "last_eval": self.last_eval,
                "lr_scale": self.lr_scale, "top_k": self.policy.k, "events": self.events,
                "organizer": self.organizer.state_dict()}
        path = save_checkpoint(self.out_dir / "checkpoints" / f"step-{self.step}", self.model.state_dict(), tensors, meta)
        for cb in self.callbacks:
            cb.on_checkpoint(self.step, path)
        return path

    def restore(self, ckpt: Path | None = None) -> int:
        """Load the latest (or given) checkpoint and cut the run's logs back to its step."""
        ckpt = ckpt or latest_checkpoint(self.out_dir)
        model_state, tensors, meta = load_checkpoint(ckpt)
        shape = TreeShape.from_dict(meta["shape"])
        if shape != self.shape:  # the tree was reshaped during the run: rebuild it as it was saved
            self._rebuild(shape)
        try:
            self.model.load_state_dict(model_state)
        except RuntimeError as e:
            raise CheckpointError(f"{ckpt / 'model.safetensors'}: does not fit the model ({str(e).splitlines()[0]})") from None
        self.optimizer.load_state_dict({k: v.to(self.device) for k, v in unflatten("optim", tensors).items()})
        self.trust.load_state_dict(unflatten("trust", tensors))
        torch.set_rng_state(tensors["rng.torch"])
        self.policy.load_state_dict({"generator": tensors["rng.policy"]})
        self.sampler.load_state_dict({**meta["sampler"], **unflatten("sampler", tensors)})
        self._sum_frac_changed = tensors["acc.changed"].to(self.device)
        self._sum_agents = tensors["acc.agents"].to(self.device)
        self._train_time, self._train_tokens = meta["train_time"], meta["train_tokens"]
        self.last_eval = meta.get("last_eval", {})
        self.lr_scale = meta.get("lr_scale", 1.0)
        self.policy.k = meta.get("top_k", self.policy.k)
        self.events = meta.get("events", [])
        self.organizer.load_state_dict(meta.get("organizer", {}))
        self.step = int(meta["step"])
        for name in ("metrics.jsonl", "attribution.jsonl", "shapes.jsonl"):
            _truncate_log(self.out_dir / name, self.step)
        log.info("resumed %s at step %d", self.out_dir, self.step)
        return self.step


def summary_markdown(s: dict) -> str:
    """A readable run summary: final numbers, then every structural, safety and autonomy event."""
    lines = [f"# Run summary: {s['name']}", "",
             f"- policy `{s['policy']}`, {s['steps']} steps, {s['params']:,} parameters, "
             f"agents {s['agents']} at the start, {s['final_agents']} at the end",
             f"- validation loss {s['val_loss']:.4f}, bits per byte {s['val_bpb']:.3f}",
             f"- parameters changed per step: {s['frac_params_changed']:.1%}; agents updated per step: "
             f"{s['agents_updated']:.2f}", f"- stopped early (self-stop): {s['stopped_early']}",
             f"- safety: {s.get('safety')}", f"- autonomy: {s.get('autonomy', 'off')}", ""]
    shown = [e for e in s["events"] if e["kind"] not in ("diagnostics", "proposals")]
    if not shown:
        lines.append("No structural, safety or autonomy events happened in this run.")
    else:
        lines += ["| step | event | details |", "|---|---|---|"]
        for e in shown:
            det = ", ".join(f"{k}={_fmt(v)}" for k, v in e.items() if k not in ("step", "kind"))
            lines.append(f"| {e['step']} | {e['kind']} | {det} |")
    kinds = {(e["kind"], e.get("decision")) for e in s["events"]}
    checks = {"committed change": ("trial", "commit") in kinds, "rolled-back change": ("trial", "rollback") in kinds
              or any(e["kind"] == "rollback" for e in s["events"]),
              "stage advance": any(e["kind"] == "stage" for e in s["events"]), "self-stop": s["stopped_early"]}
    lines += ["", "What this run exercised. An unticked item did not happen in this run; the scenarios in "
              "tests/engine/test_autonomy.py and tests/engine/test_safety.py trigger each of them on purpose:", ""]
    lines += [f"- [{'x' if v else ' '}] {k}" for k, v in checks.items()]
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _with_speed(r: StepRecord, tokens_per_s: float) -> StepRecord:
    return replace(r, tokens_per_s=tokens_per_s)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after `step` (they belong to the interrupted tail of the run)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep))
