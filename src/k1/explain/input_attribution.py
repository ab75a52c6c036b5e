"""Per-input attribution (`k1 explain --text`): what every agent did for the loss of one given text.

For one text and a run's latest checkpoint: the next-token loss, each agent's RMS gradient of that loss,
its gate mass, the blame path (as the attribution policy would draw it) and the loss change when the agent
is ablated. The measuring helpers here are shared with `k1 specialize` (specialization.py).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from k1.engine.update.policies.attribution import AttributionConfig, AttributionPolicy
from k1.engine.update.signals import StepSignals, flat_parents_tensor
from k1.errors import DataError
from k1.explain.step_tree import MARKS, tree_rows

log = logging.getLogger(__name__)

ROLE_MARKS = {"culprit": MARKS["culprit"], "path": MARKS["path"], "other": MARKS["untouched"]}


# ---- measurements shared with specialization.py ---------------------------------------------------
def gradient_signals(model, x: torch.Tensor, y: torch.Tensor) -> StepSignals:
    """Forward and backward of one batch; → the batch's `StepSignals` (loss, grad_rms [A], gate_mass [A]).

    Gradients are left in the parameters' `.grad` (zeroed first); the model's weights are not touched.
    """
    model.zero_grad(set_to_none=True)
    _, loss = model(x, y)
    loss.backward()
    signals = StepSignals.measure(model, loss, flat_parents_tensor(model.shape, x.device))
    model.zero_grad(set_to_none=True)
    return signals


def blame_path(model, signals: StepSignals) -> list[int]:
    """Flat indices root → culprit, drawn exactly as `AttributionPolicy.blame_path` draws them; the
    repeats it appends after a shallow leaf are dropped, so every index appears once."""
    path = AttributionPolicy(AttributionConfig(), model.shape).blame_path(signals.grad_rms, signals.parents)
    out: list[int] = []
    for i in path.tolist():
        if not out or out[-1] != i:
            out.append(i)
    return out


@torch.no_grad()
def ablation_losses(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[A] the batch loss with each agent ablated alone (its refinement replaced by the identity).

    One forward per agent: the model's `ablate` mask is shared by the whole batch, so the A ablations
    cannot ride in one batch; a 41-agent tree costs 41 forwards of the batch.
    """
    A = model.shape.n_agents
    out = torch.empty(A, device=x.device)
    mask = torch.zeros(A, dtype=torch.bool, device=x.device)
    for a in range(A):
        mask[a] = True
        out[a] = model(x, y, ablate=mask)[1].float()
        mask[a] = False
    return out


# ---- one input --------------------------------------------------------------------------------------
def window_tokens(ids: list[int], context: int) -> tuple[list[int], bool]:
    """The tokens scored: all of `ids`, or its last `context + 1` (the model reads at most `context`
    inputs, each with its next token as target). → (tokens, truncated)."""
    if len(ids) < 2:
        raise DataError(f"the input text has {len(ids)} token(s); give at least 2 so one next token can be scored")
    if len(ids) > context + 1:
        return ids[-(context + 1):], True
    return ids, False


def predicted_bytes(tokenizer, targets: list[int]) -> int:
    """UTF-8 bytes of the predicted tokens: one per token for the byte tokenizer (whose window may cut a
    character, which decoding would replace), else the length of their decoded text."""
    if getattr(tokenizer, "name", None) == "byte":
        return len(targets)
    return len(tokenizer.decode(targets).encode("utf-8"))


def attribute_input(model, tokenizer, text: str) -> dict:
    """Attribution of one text on `model` (an `AgentTree`); see `explain_input` for the result."""
    ids = tokenizer.encode(text)
    tokens, truncated = window_tokens(ids, model.cfg.context)
    device = next(model.parameters()).device
    seq = torch.tensor([tokens], dtype=torch.long, device=device)  # [1, T+1]
    x, y = seq[:, :-1], seq[:, 1:]
    signals = gradient_signals(model, x, y)
    ablated = ablation_losses(model, x, y)
    loss = signals.loss.item()
    path = blame_path(model, signals)
    shape = model.shape
    names, parents = shape.names(), shape.flat_parents()
    scored_bytes = predicted_bytes(tokenizer, tokens[1:])
    grad, gate, dloss = signals.grad_rms.tolist(), signals.gate_mass.tolist(), (ablated - loss).tolist()
    agents = []
    for i, a in enumerate(shape.agents):
        role = "culprit" if i == path[-1] else "path" if i in path else "other"
        agents.append({"name": a.name, "parent": None if parents[i] < 0 else names[parents[i]], "level": a.level,
                       "grad_rms": grad[i], "gate_mass": gate[i], "ablation_dloss": dloss[i], "role": role})
    if truncated:
        log.info("input of %d tokens truncated to its last %d (context %d)", len(ids), len(tokens), model.cfg.context)
    return {"text": tokenizer.decode(tokens), "tokens": len(tokens), "tokens_total": len(ids),
            "truncated": truncated, "context": model.cfg.context, "loss": loss,
            "bits_per_byte": loss * (len(tokens) - 1) / math.log(2) / max(scored_bytes, 1),
            "blame_path": [names[i] for i in path], "agents": agents}


def explain_input(run_dir: Path, text: str) -> dict:
    """Attribute the next-token loss of `text` on the run's latest checkpoint.

    → {"text": the text scored (the window, decoded), "tokens": tokens scored, "tokens_total": tokens in
    the input, "truncated": whether only the last context + 1 tokens were scored, "context", "loss" (mean
    nats per predicted token), "bits_per_byte", "blame_path": [names root → culprit],
    "agents": [{"name", "parent", "level", "grad_rms", "gate_mass", "ablation_dloss", "role"}]} with
    ablation_dloss = loss(agent ablated) − loss and role culprit | path | other.
    """
    from k1.engine.run.generate import load_run_model

    model, tokenizer, _ = load_run_model(Path(run_dir))
    return attribute_input(model, tokenizer, text)


# ---- rendering ---------------------------------------------------------------------------------------
def render_input_text(result: dict) -> str:
    """An indented text tree, one agent per line (grad, gate, ablation Δloss, role), then the blame path."""
    window = (f"the last {result['tokens']} of {result['tokens_total']} tokens (context {result['context']})"
              if result["truncated"] else f"{result['tokens']} tokens")
    lines = [f"input: {window}  loss {result['loss']:.4f}  bits/byte {result['bits_per_byte']:.3f}",
             f"{'agent':<28} {'grad_rms':>10} {'gate':>7} {'Δloss abl':>10}  role"]
    for label, a in tree_rows(result["agents"]):
        lines.append(f"{label:<28} {a['grad_rms']:>10.3e} {a['gate_mass']:>7.3f} {a['ablation_dloss']:>+10.4f}  "
                     f"{ROLE_MARKS[a['role']]} {a['role']}")
    lines.append("blame path: " + " → ".join(result["blame_path"]))
    worst = max(result["agents"], key=lambda a: a["ablation_dloss"])
    lines.append(f"most needed for this text: {worst['name']} (ablating it changes the loss by "
                 f"{worst['ablation_dloss']:+.4f} nats/token)")
    return "\n".join(lines)
