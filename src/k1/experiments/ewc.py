"""Elastic weight consolidation: the penalty the EWC plugin (`plugins.py`) adds to the objective."""

from __future__ import annotations

import torch


class EWCPenalty:
    """Elastic weight consolidation: λ/2 · Σ_domains Σ_params F_d (θ − θ*_d)², one anchor per finished domain.

    F_d is the diagonal empirical Fisher: the squared gradient of the mean batch loss, averaged over a few
    training batches of domain d, taken at θ*_d (the parameters when domain d finished). Its gradient is
    λ · Σ_d F_d (θ − θ*_d). Called as a trainer regulariser: `penalty(model) -> 0-d tensor`.
    `scope="shared"` anchors only the tree's shared parameters (embeddings, final norm; the head is tied),
    where most of the forgetting was found, and leaves every agent free.
    """

    def __init__(self, lam: float, scope: str = "all"):
        if scope not in ("all", "shared"):
            raise ValueError(f"EWC scope must be 'all' or 'shared', got {scope!r}")
        self.lam, self.scope = lam, scope
        self.anchors: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []  # (F, θ*) per domain

    def _anchored(self, name: str) -> bool:
        return self.scope == "all" or not name.startswith("levels.")

    def consolidate(self, model: torch.nn.Module, batches) -> None:
        """Estimate F on `batches` ([(x, y)], at the current parameters) and anchor θ* there."""
        fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters() if self._anchored(n)}
        was_training = model.training
        model.eval()
        count = 0
        for x, y in batches:
            model.zero_grad(set_to_none=True)
            _, loss = model(x, y)
            loss.backward()
            for n, p in model.named_parameters():
                if p.grad is not None and n in fisher:
                    fisher[n] += p.grad.detach() ** 2
            count += 1
        model.zero_grad(set_to_none=True)  # the next training step must not see these gradients
        model.train(was_training)
        fisher = {n: f / max(count, 1) for n, f in fisher.items()}
        star = {n: p.detach().clone() for n, p in model.named_parameters() if n in fisher}
        self.anchors.append((fisher, star))

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        params = dict(model.named_parameters())
        total = torch.zeros((), device=next(iter(params.values())).device)
        for fisher, star in self.anchors:
            for n, f in fisher.items():
                total = total + (f * (params[n] - star[n]) ** 2).sum()
        return 0.5 * self.lam * total

    def state_dict(self) -> dict:  # the anchors travel with a continual run's checkpoints (resume)
        return {"anchors": [{"fisher": f, "star": s} for f, s in self.anchors]}

    def load_state_dict(self, s: dict) -> None:
        self.anchors = [({n: t.clone() for n, t in a["fisher"].items()}, {n: t.clone() for n, t in a["star"].items()})
                        for a in s["anchors"]]
