"""How `k1 continual` shows its result: the config line, the rich table and continual.md (metrics + R matrices).

Every number here is read from the report dict that `continual.py` also writes as continual.json.
"""

from __future__ import annotations

from rich.table import Table

from k1.engine.config import RunConfig
from k1.experiments.strategies import ContinualConfig

COLUMNS = [("final avg bpb", "final_avg"), ("BWT", "bwt"), ("forgetting (first)", "forgetting_first"),
           ("forgetting (max)", "forgetting_max"), ("FWT", "fwt"), ("just-learnt bpb", "just_learnt"),
           ("forgetting ÷ learnt", "forgetting_rel")]


def pm(stat: dict, digits: int = 3) -> str:
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def pct(stat: dict) -> str:
    return f"{stat['mean']:.1%} ± {stat['std']:.1%}"


EXTRA = ["params changed/step", "params (final)", "agents (final)", "training FLOPs", "shifts detected",
         "strong specialists"]


def extra_cells(s: dict) -> list[str]:
    """Sparsity measured per step, parameters and agents after the last stage (a grown tree ends larger),
    training FLOPs counted (trial branches included), the data shifts a label-free mechanism detected, and
    the strong specialists `k1 specialize` finds after the last stage (— where it does not apply)."""
    spec, agents, shifts = s.get("strong_specialists"), s.get("final_agents"), s.get("shifts_detected")
    return [pct(s["frac_params_changed"]), f"{s['params']['mean']:,.0f}",
            f"{agents['mean']:.0f}" if agents and s["name"].startswith(("tree", "k1", "random")) else "—",
            f"{s['train_flops']['mean']:.3g}", f"{shifts['mean']:.1f} ± {shifts['std']:.1f}" if shifts else "—",
            f"{spec['mean']:.1f} ± {spec['std']:.1f}" if spec else "—"]


def sources_markdown(s: dict) -> list[str]:
    """Where a grown tree's forgetting comes from (`shift.ForgettingSources`), means over seeds."""
    lines = [f"## {s['name']}: where the forgetting comes from", "",
             "Per earlier domain, bits per byte: its best before the last stage, after the last stage, and the "
             "final model with the shared parameters (embedding, final norm) of the end of that domain put "
             "back, with the agents grown after that domain switched off (gate bias −10⁴), and with both. "
             "What `both` leaves above `best` came through the agents themselves (updates before the shift "
             "was detected).", "",
             "| domain | best | final | shared put back | new gates off | both |", "|---|---|---|---|---|---|"]
    for r in s["forgetting_sources"]:
        lines.append(f"| {r['domain']} | {r['best']:.3f} | {r['final']:.3f} | {r['shared_restored']:.3f} | "
                     f"{r['new_gates_off']:.3f} | {r['both']:.3f} |")
    return lines + [""]


PAIRED_HEAD = ["candidate − reference", "metric", "seeds", "mean diff ± std", "seeds candidate lower", "p",
               "test", "p (Holm)"]


def paired_rows(report: dict) -> list[list[str]]:
    """Primary (pre-registered) tests first, then the rest with their Holm-adjusted p."""
    rows = sorted(report.get("paired", []), key=lambda c: not c.get("primary", False))
    return [[f"{c['candidate']} − {c['reference']}", c["metric"], str(c["seeds"]),
             f"{c['mean_diff']:+.3f} ± {c['std_diff']:.3f}", f"{c['candidate_better']}/{c['seeds']}",
             f"{c['p_value']:.4f}", "primary" if c.get("primary") else "secondary",
             "—" if c.get("primary") else f"{c.get('p_holm', float('nan')):.4f}"] for c in rows]


def paired_table(report: dict) -> Table:
    t = Table(title="paired over seeds (negative diff: the candidate is lower, i.e. better); p: two-sided "
                    "paired sign-flip permutation test")
    for col in PAIRED_HEAD:
        t.add_column(col, justify="left" if col.startswith("candidate −") or col == "metric" else "right")
    for row in paired_rows(report):
        t.add_row(*row)
    return t


def describe(cfg: RunConfig, ccfg: ContinualConfig, strategies: list[str], seeds: list[int]) -> str:
    """One paragraph with everything that sets the budget: model, data, schedule, seeds, baseline knobs."""
    m, t, o = cfg.model, cfg.train, cfg.optim
    domains = list(cfg.data.domains)
    return (f"continual: {' → '.join(domains)}, {t.steps // len(domains)} steps per domain "
            f"({t.steps} in all; lr {o.lr:g}, warmup {o.warmup_steps}, one cosine over the whole sequence), "
            f"batch {t.batch_size}, context {m.context}, tree {m.branching} width {m.width} (DenseGPT sized to it), "
            f"seeds {seeds}, strategies {', '.join(strategies)}; replay buffer {ccfg.replay_buffer} "
            f"windows × fraction {ccfg.replay_fraction:g}; EWC λ {ccfg.ewc_lambda:g} on {ccfg.ewc_batches} batches"
            f" (shared-only λ {ccfg.ewc_shared_lambda:g}); evaluated on the {t.eval_on} windows, "
            f"{t.eval_batches * t.batch_size * m.context:,} tokens per domain"
            + (f" (the first {t.tune_fraction:.0%} of each validation split is the tuning part)"
               if t.tune_fraction else ""))


def versus(report: dict, reference: str = "tree-naive") -> dict[str, tuple[float, float]]:
    """Per strategy: (max-based forgetting ÷ the reference's, final average's relative change vs the
    reference), from the means — the two numbers the continual goals are stated in. Empty without it. The
    ratio is None when the reference forgot nothing (its forgetting ≤ 0): a ratio to it says nothing then."""
    ref = next((s for s in report["strategies"] if s["name"] == reference), None)
    if ref is None:
        return {}
    f0, a0 = ref["forgetting_max"]["mean"], ref["final_avg"]["mean"]
    return {s["name"]: (s["forgetting_max"]["mean"] / f0 if f0 > 0 else None,
                        s["final_avg"]["mean"] / a0 - 1, learning_gap(s, ref)) for s in report["strategies"]}


def learning_gap(s: dict, ref: dict) -> float | None:
    """The worst relative gap of just-learnt bpb to the reference's over the domains learnt after the
    first (the goal: within 2 % on each); None where the entry has no diagonal."""
    a, b = s.get("just_learnt_per_domain"), ref.get("just_learnt_per_domain")
    if not a or not b:
        return None
    return max(x / y - 1 for x, y in zip(a["mean"][1:], b["mean"][1:]))


def versus_cells(report: dict, name: str) -> list[str]:
    v = versus(report).get(name)
    if v is None:
        return ["—", "—", "—"]
    return ["n/a" if v[0] is None else f"{v[0]:.2f}×", f"{v[1]:+.1%}", "—" if v[2] is None else f"{v[2]:+.1%}"]


VERSUS = ["forgetting ÷ tree-naive", "final avg vs tree-naive", "worst just-learnt vs tree-naive"]


def to_table(report: dict) -> Table:
    n = len(report["seeds"])
    t = Table(title=f"K-1 continual: {' → '.join(report['domains'])}, bits per byte, mean ± std over {n} "
                    f"seed{'s' if n > 1 else ''} (every metric lower is better)")
    vs = VERSUS if versus(report) else []
    for col in ["strategy", *[c for c, _ in COLUMNS], *EXTRA, *vs]:
        t.add_column(col, justify="left" if col == "strategy" else "right")
    for s in report["strategies"]:
        t.add_row(s["name"], *[pm(s[key]) for _, key in COLUMNS], *extra_cells(s),
                  *(versus_cells(report, s["name"]) if vs else []))
    return t


def matrix_markdown(s: dict, domains: list[str]) -> str:
    """R (bits per byte, mean ± std) with the before-training row first."""
    lines = ["| after | " + " | ".join(domains) + " |", "|---|" + "---|" * len(domains)]
    init = s["R_init"]
    lines.append("| (init) | " + " | ".join(f"{a:.3f} ± {b:.3f}" for a, b in zip(init["mean"], init["std"])) + " |")
    for i, d in enumerate(domains):
        row = zip(s["R"]["mean"][i], s["R"]["std"][i])
        lines.append(f"| {d} | " + " | ".join(f"{a:.3f} ± {b:.3f}" for a, b in row) + " |")
    return "\n".join(lines)


def code_line(code: dict | None) -> str:
    """The code version the report was written by (provenance.py)."""
    if not code:
        return "Code version: not recorded."
    dirty = {True: ", with uncommitted changes", False: ", clean", None: ""}[code.get("dirty")]
    return (f"Code version: commit {code.get('commit') or 'unknown'}{dirty}; source hash {code['source'][:12]} "
            "(a run is read back only by the same source).")


def to_markdown(report: dict, cfg: RunConfig, ccfg: ContinualConfig, seconds: float) -> str:
    domains, seeds = report["domains"], report["seeds"]
    vs = VERSUS if versus(report) else []
    head = ["strategy", *[c for c, _ in COLUMNS], *EXTRA, *vs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in report["strategies"]:
        lines.append("| " + " | ".join([s["name"], *[pm(s[key]) for _, key in COLUMNS], *extra_cells(s),
                                        *(versus_cells(report, s["name"]) if vs else [])]) + " |")
    names = [s["name"] for s in report["strategies"]]
    reused = report.get("reused_runs", 0)
    out = [
        "# K-1 continual", "",
        f"`{report['command']}` ({seconds:.0f} s" + (f"; {reused} finished runs read back" if reused else "") + ")", "",
        describe(cfg, ccfg, names, seeds) + ".", "",
        code_line(report.get("code")), "",
        "R[i][j] is domain j's validation bits per byte after training stage i; every metric is computed on "
        "bits per byte, as mean ± sample std over seeds, and is **lower-is-better**:", "",
        "- final avg: mean of the last row of R.",
        "- BWT = mean over j < n−1 of (R[n−1][j] − R[j][j]); positive means forgetting, negative that later "
        "domains improved earlier ones.",
        "- forgetting (first-based) = the same differences (relative to just after learning j); on a loss it "
        "equals BWT by definition.",
        "- forgetting (max-based, Chaudhry et al. 2018) = mean over j < n−1 of (R[n−1][j] − min over i < n−1 "
        "of R[i][j]): relative to the best j ever was.",
        "- FWT = mean over j > 0 of (R[j−1][j] − R_init[j]); negative means earlier domains already lowered "
        "j's loss before j was trained.",
        "- just-learnt = mean over j of R[j][j] (the diagonal: each domain right after its stage): plasticity, "
        "so that forgetting less by learning less shows; forgetting ÷ learnt = mean over j < n−1 of max-based "
        "forgetting ÷ (R_init[j] − R[j][j]), the share of what was learnt that is lost; worst just-learnt vs "
        "tree-naive: the largest relative gap to tree-naive's diagonal over the domains after the first.",
        "- params changed/step: the measured share of parameters whose value changed per step; params and agents: "
        "the model's totals after the last stage (k1-grow adds agents); shifts detected: data shifts the "
        "loss-surprise detector declared (k1-grow, k1-usage; no label); training FLOPs: counted from the model's shapes for every step executed, the steps of "
        "rolled-back trials included (k1/engine/model/flops.py); strong specialists: agents `k1 specialize` finds "
        "domain-selective after the last stage (Holm-corrected permutation test, selectivity and effect "
        "thresholds), per seed; forgetting ÷ tree-naive and final avg vs tree-naive: the ratio of mean max-based "
        "forgetting and the relative change of the mean final average against tree-naive (the same tree, "
        "every agent updated); n/a where tree-naive forgot nothing (its mean max-based forgetting ≤ 0), "
        "since a ratio to no forgetting says nothing.", "",
        "Strategies: gpt-naive, gpt-replay and gpt-ewc train DenseGPT with dense updates; tree-naive, "
        "tree-replay and tree-ewc train the AgentTree with dense updates (every agent, every step), so the "
        "baselines exist on both architectures (replay: a reservoir buffer of past-domain training windows "
        "replaces a fraction of each batch from the second domain on; ewc: λ/2 Σ F (θ − θ*)² per finished "
        "domain, F the diagonal empirical Fisher); random-k, k1-attribution, k1-hybrid and k1-auto train the "
        "AgentTree sparsely; the first three update as many agents per step as the tree "
        "has levels (attribution: one per level along its blame path; random-k: that many at random), and "
        "k1-auto is attribution with autonomy, which may reshape the tree and retune it but not stop a stage "
        "early. The K-1 mechanisms against forgetting: k1-replay (attribution on the replay mixture), "
        "k1-protect (attribution that shields agents earlier domains relied on) and k1-balance (attribution "
        "with a gate load-balancing loss), and three that get no domain boundary at all: k1-grow (at a shift "
        "detected from the loss, protect every agent and grow fresh ones), k1-usage (update the agents the "
        "current data uses more than earlier data did) and k1-ewc (attribution with the EWC penalty); "
        "docs/continual.md gives their rationale. Controls and isolation: random-path updates a random "
        "root → leaf path with attribution's scales (the control for which agents; -ewc, -freeze, -route: "
        "with EWC, the shared part frozen, hard routes); tree-freeze and k1-freeze freeze the shared "
        "parameters (embeddings, final norm, tied head) after the first domain; k1-ewc-shared puts EWC on "
        "the shared parameters only; tree-route, k1-route and k1-usage-route train a tree with hard top-k "
        "routes (load balancing, capacity, router z-loss).", "",
        *lines, "",
    ]
    if report.get("paired"):
        out += ["## Paired comparisons over seeds", "",
                "Each row: the per-seed difference candidate − reference (same seed: same data order and "
                "initial draw), its mean ± std, how many seeds the candidate was lower (better) on, and the "
                "p-value of a two-sided paired sign-flip permutation test (exact over all 2ⁿ sign patterns; "
                "with n seeds the smallest possible p is 2/2ⁿ). A primary test is its claim's pre-registered "
                "test (docs/continual.md) and stands alone; every secondary test's p is also given with "
                "Holm's correction over all secondary tests of this report.", "",
                "| " + " | ".join(PAIRED_HEAD) + " |", "|" + "---|" * len(PAIRED_HEAD),
                *["| " + " | ".join(r) + " |" for r in paired_rows(report)], ""]
    for s in report["strategies"]:
        if s.get("forgetting_sources"):
            out += sources_markdown(s)
    for s in report["strategies"]:
        out += [f"## {s['name']}: R (bits per byte)", "", matrix_markdown(s, domains), ""]
    return "\n".join(out)
