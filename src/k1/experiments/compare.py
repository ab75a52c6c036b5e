"""`compare`: the dense GPT baseline and the tree under every policy, on the same data, seed and budget.

Every run shares one corpus, one seed (hence the same batches in the same order), the same context, batch
size, step count and learning-rate schedule; DenseGPT is sized to the tree's parameter count. The table
reports per-domain validation loss and bits per byte beside the corpus's unigram entropy (what a model that
learnt nothing but byte frequencies would score).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from k1.engine.config import RunConfig, load_config
from k1.data import load_corpus
from k1.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    """One row of the table: which model, under which policy, with or without autonomy."""

    name: str
    arch: str  # "dense": DenseGPT; "tree": the AgentTree
    policy: str
    autonomy: bool = False

    def config(self, base: RunConfig) -> RunConfig:
        auto = base.autonomy.model_copy(update={"enabled": self.autonomy})
        return base.model_copy(update={"arch": self.arch, "policy": _policy(self.policy), "autonomy": auto,
                                       "name": self.name})


ROWS: Registry[Row] = Registry("compare row")
for _r in [Row("gpt", "dense", "dense"), Row("dense", "tree", "dense"), Row("attribution", "tree", "attribution"),
           Row("hybrid", "tree", "hybrid"), Row("trust", "tree", "trust"), Row("random", "tree", "random"),
           Row("k1-auto", "tree", "attribution", autonomy=True)]:  # attribution + plasticity + autonomy
    ROWS.add(_r.name, _r)
POLICY_ORDER = [n for n in ROWS.names() if n != "gpt"]  # the tree rows, in table order


def run_compare(base: RunConfig, out_dir: Path, policies: list[str] | None = None, quiet: bool = False,
                console: Console | None = None) -> list[dict]:
    """Train DenseGPT and the tree under each policy; write compare.json / compare.md; return the rows."""
    from k1.engine.run.train import Trainer  # late import: keeps `k1 --help` fast

    console = console or Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus(base.data)
    runs = [(name, ROWS.get(name).config(base)) for name in ["gpt", *(policies or POLICY_ORDER)]]
    rows = []
    for label, cfg in runs:
        console.rule(f"[bold]{label}[/] ({'DenseGPT' if cfg.arch == 'dense' else 'AgentTree'}, policy {cfg.policy.name})")
        s = Trainer(cfg, out_dir / label, corpus=corpus, quiet=quiet).fit()
        rows.append({
            "policy": label, "model": "DenseGPT" if cfg.arch == "dense" else "AgentTree",
            "val_loss": s["val_loss"], "val_bpb": s["val_bpb"],
            "domains": s["domains"], "tokens_per_s": s["tokens_per_s"],
            "frac_params_changed": s["frac_params_changed"], "agents_updated": s["agents_updated"],
            "agents": s["agents"], "params": s["params"], "steps": s["steps"],
            "final_agents": s["final_agents"], "events": len([e for e in s["events"] if e["kind"] == "trial"]),
        })
    unigram = corpus.unigram_bits_per_byte()
    (out_dir / "compare.json").write_text(json.dumps(rows, indent=1))
    (out_dir / "compare.md").write_text(to_markdown(rows, unigram, base))
    console.print(to_table(rows, unigram))
    from k1.report import write_report

    page = write_report(out_dir)
    console.print(f"wrote {out_dir / 'compare.md'}, {out_dir / 'compare.json'} and the report {page}")
    return rows


def _policy(name: str):
    return load_config(extra={"policy": {"name": name}}).policy


def _columns(rows: list[dict]) -> list[str]:
    return list(rows[0]["domains"]) if rows else []


def to_table(rows: list[dict], unigram: dict[str, float]) -> Table:
    domains = _columns(rows)
    t = Table(title="K-1 compare: validation bits per byte (lower is better)")
    for col in ["policy", "model", "val loss", "val bpb", *[f"{d} bpb" for d in domains], "tokens/s",
                "params changed/step", "agents/step"]:
        t.add_column(col, justify="left" if col in ("policy", "model") else "right")
    for r in rows:
        t.add_row(r["policy"], r["model"], f"{r['val_loss']:.4f}", f"{r['val_bpb']:.3f}",
                  *[f"{r['domains'][d]['bpb']:.3f}" for d in domains], f"{r['tokens_per_s']:,.0f}",
                  f"{r['frac_params_changed']:.1%}", f"{r['agents_updated']:.1f}/{r['agents']}")
    t.add_row("unigram", "(entropy)", "", f"{sum(unigram.values()) / len(unigram):.3f}",
              *[f"{unigram[d]:.3f}" for d in domains], "", "", "")
    return t


def to_markdown(rows: list[dict], unigram: dict[str, float], cfg: RunConfig) -> str:
    domains = _columns(rows)
    head = ["policy", "model", "val loss", "val bpb", *[f"{d} bpb" for d in domains], "tokens/s",
            "params changed/step", "agents/step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["policy"], r["model"], f"{r['val_loss']:.4f}", f"{r['val_bpb']:.3f}",
            *[f"{r['domains'][d]['bpb']:.3f}" for d in domains], f"{r['tokens_per_s']:,.0f}",
            f"{r['frac_params_changed']:.1%}", f"{r['agents_updated']:.1f}/{r['agents']}"]) + " |")
    lines.append("| unigram entropy | — | — | " + f"{sum(unigram.values()) / len(unigram):.3f} | "
                 + " | ".join(f"{unigram[d]:.3f}" for d in domains) + " | — | — | — |")
    m, t = cfg.model, cfg.train
    return (f"# K-1 compare\n\nSame data, seed ({t.seed}), context ({m.context}), batch ({t.batch_size}), "
            f"steps ({t.steps}) and learning-rate schedule for every row. Tree: branching {m.branching}, "
            f"width {m.width}, wiring `{m.wiring}`; DenseGPT sized to the same parameter count.\n\n"
            + "\n".join(lines) + "\n")
