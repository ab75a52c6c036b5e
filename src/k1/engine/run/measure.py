"""Measuring a run on held-out data: validation loss and bits per byte (`evaluate`), the loss that judges a
trialled change (`trial_loss`) and the trust ledger's probe (`probe_loss`). Read-only: the state's model,
windows and autocast; train mode is restored after."""

from __future__ import annotations

import math

import torch


def run_forward(state, x: torch.Tensor, y: torch.Tensor):
    with state.autocast():
        return state.forward(x.to(state.device), y.to(state.device))


@torch.no_grad()
def evaluate(state) -> dict:
    """Validation loss and bits per byte per domain, on fixed windows; means across domains."""
    state.model.eval()
    per = {}
    for d, windows in state.eval_sets.items():
        loss = torch.stack([run_forward(state, x, y)[1].float() for x, y in windows]).mean().item()  # host sync
        per[d] = {"loss": loss, "bpb": loss / math.log(2) / state.corpus.domains[d].val_bytes_per_token}
    state.model.train()
    return {"val_loss": sum(v["loss"] for v in per.values()) / len(per),
            "val_bpb": sum(v["bpb"] for v in per.values()) / len(per), "domains": per}


def trial_batches(state) -> list:
    n = state.cfg.autonomy.trial_batches
    return [xy for d in state.trial_domains for xy in state.tune_sets[d][:n]]


@torch.no_grad()
def trial_loss(state) -> float:
    """Held-out loss that judges a change: the first `trial_batches` tuning windows per trial domain (the
    evaluation windows themselves when `train.tune_fraction` is 0)."""
    state.model.eval()
    loss = torch.stack([run_forward(state, x, y)[1].float() for x, y in trial_batches(state)]).mean().item()
    state.model.train()
    return loss


@torch.no_grad()
def probe_loss(state) -> torch.Tensor:
    with state.autocast():
        return state.forward(*state.probe)[1]
