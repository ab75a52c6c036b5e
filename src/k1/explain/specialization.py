"""Agent × domain specialisation (`k1 specialize`): which agents matter for which domain, and is it real.

On every domain's held-out validation windows the run's latest checkpoint is measured per batch (gate
mass, ablation Δloss, blame path); per agent a specialisation score is tested by a label-permutation
p-value and given a bootstrap interval. Writes `specialize.json` (read by the HTML report) and a heatmap.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from k1.errors import ConfigError, DataError
from k1.explain.input_attribution import ablation_losses, blame_path, gradient_signals

log = logging.getLogger(__name__)

ALPHA = 0.05  # family-wise error rate of the "significantly specialised" verdict (Holm over agents)
STRONG = 0.5  # selectivity from which a significant agent is called a strong specialist ...
MIN_EFFECT = 0.01  # ... if ablating it also costs at least this much (nats/token) on its specialist domain

METHOD = (
    "Per batch of one domain's validation windows (eval_windows), with the latest checkpoint: "
    "gate_share = the agent's gate mass (mean path weight over the batch's tokens; raw, not normalised "
    "across domains, so siblings sum to their parent and the root is 1), averaged over the domain's batches; "
    "ablation_dloss = loss with the agent ablated (identity) minus the clean loss, nats/token, averaged; "
    "blame_share = fraction of the domain's batches whose blame path (largest RMS gradient of that batch's "
    "loss among siblings, root to leaf) includes the agent. "
    "score = ablation_dloss on the agent's specialist domain (its largest) minus its mean over the other "
    "domains. p_value = label permutation test of the score (domain labels shuffled across batches, the "
    "specialist domain re-chosen in every shuffle); ci = 95% percentile bootstrap of the same contrast with "
    "batches resampled within each domain and the specialist domain held fixed (conditional on that choice, "
    "so judge significance by p_value). Significant: Holm-corrected p <= 0.05 over all agents. A small p "
    "says only that the agent's ablation effect differs between domains (with many low-noise batches even "
    "tiny differences are significant, and domains differ in difficulty); read the score (nats) and the "
    "table's selectivity = score / (|dloss on specialist| + |mean dloss elsewhere|) for size; a strong "
    "specialist is significant with selectivity >= 0.5 and dloss >= 0.01 nats on its domain."
)


@dataclass(frozen=True)
class BatchMeasures:
    """Per-batch measurements; every batch holds windows of one domain."""

    domain: torch.Tensor  # [nb] long, index into the domain list
    loss: torch.Tensor  # [nb] clean loss
    dloss: torch.Tensor  # [nb, A] loss with the agent ablated − clean loss
    gate: torch.Tensor  # [nb, A] gate mass
    on_path: torch.Tensor  # [nb, A] bool: the agent is on the batch's blame path


def measure_batches(model, windows: dict[str, list[tuple[torch.Tensor, torch.Tensor]]],
                    device: torch.device | str = "cpu") -> BatchMeasures:
    """Measure `model` on every batch of every domain (1 forward + backward + A ablation forwards each)."""
    A = model.shape.n_agents
    doms, losses, dls, gates, paths = [], [], [], [], []
    for k, batches in enumerate(windows.values()):
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            s = gradient_signals(model, x, y)
            on = torch.zeros(A, dtype=torch.bool)
            on[blame_path(model, s)] = True
            doms.append(k)
            losses.append(s.loss.cpu())
            gates.append(s.gate_mass.cpu())
            dls.append((ablation_losses(model, x, y) - s.loss).cpu())
            paths.append(on)
    return BatchMeasures(torch.tensor(doms), torch.stack(losses), torch.stack(dls).double(),
                         torch.stack(gates).double(), torch.stack(paths))


# ---- statistics (pure functions of per-batch arrays) ------------------------------------------------
def domain_means(values: torch.Tensor, labels: torch.Tensor, n_domains: int) -> torch.Tensor:
    """values [nb, A], labels [..., nb] → [..., D, A] the mean of each domain's batches."""
    onehot = torch.nn.functional.one_hot(labels, n_domains).to(values.dtype)  # [..., nb, D]
    sums = torch.einsum("...nd,na->...da", onehot, values)
    return sums / onehot.sum(-2).clamp_min(1).unsqueeze(-1)


def contrast(means: torch.Tensor, best: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """means [..., D, A] → (score [..., A], best domain [..., A]): the mean on the best domain (or the given
    one) minus the mean over the other domains."""
    D = means.shape[-2]
    if best is None:
        best = means.argmax(-2)
    on_best = means.gather(-2, best.expand(*means.shape[:-2], -1).unsqueeze(-2)).squeeze(-2)
    return on_best - (means.sum(-2) - on_best) / (D - 1), best


def permutation_pvalue(values: torch.Tensor, labels: torch.Tensor, n_domains: int, n_perm: int,
                       generator: torch.Generator) -> torch.Tensor:
    """[A] one-sided p-value of the score under exchangeable domain labels: (1 + #{perm ≥ obs}) / (1 + n)."""
    observed, _ = contrast(domain_means(values, labels, n_domains))
    tol = 1e-9 * values.abs().max().clamp_min(1e-30)  # ties (e.g. identical domains) count as exceeding
    exceed = torch.zeros_like(observed)
    for chunk in torch.arange(n_perm).split(500):  # bounded memory: [500, nb] label sets at a time
        perms = torch.rand(len(chunk), labels.numel(), generator=generator).argsort(-1)
        null, _ = contrast(domain_means(values, labels[perms], n_domains))  # [P, A]
        exceed += (null >= observed - tol).sum(0)
    return (1 + exceed) / (1 + n_perm)


def bootstrap_ci(values: torch.Tensor, labels: torch.Tensor, n_domains: int, best: torch.Tensor, n_boot: int,
                 generator: torch.Generator, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """([A], [A]) percentile interval of the contrast for the fixed `best` domains, batches resampled with
    replacement within each domain (each domain keeps its batch count)."""
    per_domain = []
    for d in range(n_domains):
        rows = (labels == d).nonzero().squeeze(1)
        if rows.numel() == 0:
            raise DataError(f"domain index {d} has no batches; every domain needs at least one")
        pick = rows[torch.randint(0, rows.numel(), (n_boot, rows.numel()), generator=generator)]
        per_domain.append(values[pick].mean(1))  # [n_boot, A]
    score, _ = contrast(torch.stack(per_domain, 1), best)  # [n_boot, A]
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=score.dtype)
    lo, hi = torch.quantile(score, q, dim=0)
    return lo, hi


def holm_significant(p: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    """[A] bool: rejected by Holm's step-down procedure at family-wise level `alpha`."""
    order = p.argsort()
    m = p.numel()
    ok = p[order] <= alpha / (m - torch.arange(m, dtype=p.dtype))
    passed = ok.long().cumprod(0).bool()  # step down: stop at the first failure
    out = torch.zeros(m, dtype=torch.bool)
    out[order] = passed
    return out


# ---- the whole analysis ---------------------------------------------------------------------------------
def specialize(run_dir: Path, batches: int = 8, bootstrap: int = 2000, seed: int = 0,
               device: str = "cpu") -> dict:
    """Measure and test per agent × domain specialisation of the run's latest checkpoint; → the
    `specialize.json` dict (see METHOD). `batches` per domain, `bootstrap` resamples and label shuffles."""
    from k1.data import eval_windows, load_corpus
    from k1.engine.run.generate import load_run_model

    if batches < 1:
        raise ConfigError(f"--batches {batches}: need at least 1 batch per domain")
    if bootstrap < 1:
        raise ConfigError(f"--bootstrap {bootstrap}: need at least 1 resample (2000 gives p-values down to 0.0005)")
    run_dir = Path(run_dir)
    model, _, cfg = load_run_model(run_dir)
    model.to(device)
    corpus = load_corpus(cfg.data)
    domains = list(corpus.domains)
    if len(domains) < 2:
        raise DataError(f"{run_dir}: the run has one domain ({domains[0]}); specialisation needs at least two")
    B, T = cfg.train.batch_size, model.cfg.context
    windows = {d: eval_windows(s.val, B, T, batches, name=f"domain {d!r} validation split")
               for d, s in corpus.domains.items()}
    t0 = time.perf_counter()
    m = measure_batches(model, windows, device)
    log.info("measured %d agents on %d batches in %.1f s", model.shape.n_agents, m.domain.numel(),
             time.perf_counter() - t0)
    D = len(domains)
    g = torch.Generator().manual_seed(seed)
    dloss = domain_means(m.dloss, m.domain, D)  # [D, A]
    score, best = contrast(dloss)
    p = permutation_pvalue(m.dloss, m.domain, D, bootstrap, g)
    lo, hi = bootstrap_ci(m.dloss, m.domain, D, best, bootstrap, g)
    return {"domains": domains, "agents": model.shape.names(),
            "gate_share": _by_agent(domain_means(m.gate, m.domain, D)), "ablation_dloss": _by_agent(dloss),
            "blame_share": _by_agent(domain_means(m.on_path.double(), m.domain, D)),
            "score": score.tolist(), "ci_low": lo.tolist(), "ci_high": hi.tolist(), "p_value": p.tolist(),
            "specialist_domain": [domains[i] for i in best.tolist()], "n_batches": int(m.domain.numel()),
            "method": METHOD}


def _by_agent(means: torch.Tensor) -> list[list[float]]:
    """[D, A] → A lists of D floats (the JSON's agent × domain layout)."""
    return means.T.tolist()


def write_outputs(run_dir: Path, result: dict) -> tuple[Path, Path | None, str | None]:
    """Write `specialize.json` and, if matplotlib is installed, `specialize.png`. → (json, png, note)."""
    path = Path(run_dir) / "specialize.json"
    path.write_text(json.dumps(result, indent=1))
    try:
        png = heatmap(result, Path(run_dir) / "specialize.png")
    except ImportError:
        return path, None, "heatmap skipped: matplotlib is not installed (pip install matplotlib)"
    return path, png, None


def heatmap(result: dict, out: Path) -> Path:
    """Three A×D panels, agents in tree order, to a PNG. Each row is shown relative to the agent's own mean
    over domains (raw values are in the JSON), so a specialist stands out even when its level dominates
    the raw scale; strong specialists get a ★ in their label."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    agents, domains = result["agents"], result["domains"]
    gate, dloss, blame = (torch.tensor(result[k]) for k in ("gate_share", "ablation_dloss", "blame_share"))
    panels = [("gate share ÷ agent mean", gate / gate.mean(1, keepdim=True).clamp_min(1e-12), "PuOr_r", 1.0),
              ("ablation Δloss − agent mean (nats)", dloss - dloss.mean(1, keepdim=True), "coolwarm", 0.0),
              ("blame share", blame, "magma", None)]
    labels = [f"{n} ★" if s else n for n, s in zip(agents, strong_specialists(result))]
    fig, axes = plt.subplots(1, 3, figsize=(4 + 1.2 * 3 * len(domains), 1.5 + 0.22 * len(agents)), sharey=True)
    for ax, (title, grid, cmap, centre) in zip(axes, panels):
        kw = {}
        if centre is not None:  # a diverging map, symmetric around "no specialisation"
            r = (grid - centre).abs().max().clamp_min(1e-12).item()
            kw = {"vmin": centre - r, "vmax": centre + r}
        im = ax.imshow(grid.numpy(), aspect="auto", cmap=cmap, **kw)
        ax.set_xticks(range(len(domains)), domains, rotation=45, ha="right")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.05)
    axes[0].set_yticks(range(len(agents)), labels, fontsize=7)
    fig.suptitle(f"agent × domain specialisation ({result['n_batches']} batches; ★ strong specialist: Holm "
                 f"p ≤ {ALPHA}, selectivity ≥ {STRONG}, Δloss ≥ {MIN_EFFECT} nats)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def selectivity(result: dict) -> list[float]:
    """[A] how much of an agent's effect is domain-specific: score / (|Δ on its domain| + |mean Δ elsewhere|).

    1 when ablating it hurts only its specialist domain (or helps elsewhere), about 0 when it hurts every
    domain alike, 0 when its best-domain Δloss is not positive (an agent whose removal hurts nowhere is
    no specialist). A size measure to read beside the p-value, which says only that the domains differ.
    """
    out = []
    for row, score in zip(result["ablation_dloss"], result["score"]):
        best = max(row)
        rest = (sum(row) - best) / max(len(row) - 1, 1)
        out.append(score / (abs(best) + abs(rest)) if best > 0 and abs(best) + abs(rest) > 0 else 0.0)
    return out


def strong_specialists(result: dict) -> list[bool]:
    """[A] significant after Holm, selectivity ≥ STRONG and a specialist-domain Δloss ≥ MIN_EFFECT."""
    sig = holm_significant(torch.tensor(result["p_value"])).tolist()
    return [s and sel >= STRONG and max(row) >= MIN_EFFECT
            for s, sel, row in zip(sig, selectivity(result), result["ablation_dloss"])]


def render_table(result: dict, top: int = 15, resamples: int | None = None):
    """A rich Table of the `top` agents by score, and the verdict line: how many agents are significantly
    domain-selective (Holm), and which of those are strong specialists (selectivity ≥ STRONG and a
    specialist-domain Δloss ≥ MIN_EFFECT: a selective agent whose removal changes nothing is no specialist).
    `resamples` (the permutation count) lets the verdict say when too few shuffles made significance
    unreachable."""
    from rich.table import Table

    p = torch.tensor(result["p_value"])
    sig = holm_significant(p).tolist()
    sel, is_strong = selectivity(result), strong_specialists(result)
    agents, spec = result["agents"], result["specialist_domain"]
    order = sorted(range(len(agents)), key=lambda i: -result["score"][i])[:top]
    table = Table(title=f"specialisation by ablation Δloss ({result['n_batches']} batches over "
                        f"{len(result['domains'])} domains; top {len(order)} of {len(agents)} agents by score)")
    for col in ("agent", "specialist", "score", "95% CI", "p", "signif.", "selectivity"):
        table.add_column(col, justify="left" if col in ("agent", "specialist") else "right")
    for d in result["domains"]:
        table.add_column(f"Δloss {d}", justify="right")
    for i in order:
        dl = [f"{v:+.4f}" for v in result["ablation_dloss"][i]]
        table.add_row(agents[i] + (" ★" if is_strong[i] else ""), spec[i], f"{result['score'][i]:+.4f}",
                      f"[{result['ci_low'][i]:+.4f}, {result['ci_high'][i]:+.4f}]", f"{result['p_value'][i]:.4f}",
                      "yes" if sig[i] else "no", f"{sel[i]:.2f}", *dl)
    n_sig = sum(sig)
    if n_sig:
        strong = [i for i in sorted(range(len(sig)), key=lambda i: -sel[i]) if is_strong[i]]
        names = ", ".join(f"{agents[i]} ({spec[i]}, {sel[i]:.2f})" for i in strong) or "none"
        verdict = (f"{n_sig} of {len(sig)} agents have a significantly domain-dependent ablation effect "
                   f"(Holm-corrected p ≤ {ALPHA}); strong specialists (selectivity ≥ {STRONG} and Δloss ≥ "
                   f"{MIN_EFFECT} nats on their domain): {names}")
    else:
        verdict = (f"no agent is significantly specialised (Holm-corrected p ≤ {ALPHA} over "
                   f"{len(sig)} agents; smallest p = {min(result['p_value']):.4f})")
        if resamples is not None and 1 / (1 + resamples) > ALPHA / len(sig):
            verdict += (f"; with {resamples} shuffles p cannot go below {1 / (1 + resamples):.4f}, "
                        f"so raise --bootstrap above {round(len(sig) / ALPHA)}")
    return table, verdict
