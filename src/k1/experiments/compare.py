"""`compare`: the dense GPT baseline and the tree under every policy, on the same data, seed and budget.

Every run shares one corpus, one seed (hence the same batches in the same order), the same context, batch
size, step count and learning-rate schedule; DenseGPT is sized to the tree's parameter count. The table
reports per-domain validation loss and bits per byte beside the corpus's unigram entropy (what a model that
learnt nothing but byte frequencies would score). `compare.json` keeps the rows with what makes them
reproducible or comparable: seed, preset, the unigram row, thread count, wall time and the versions.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from k1 import __version__
from k1.common.files import write_atomic
from k1.common.load import LoadMeter, tokens_cell, under_load_note
from k1.data import load_corpus
from k1.engine.config import RunConfig, load_config
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
                console: Console | None = None, preset: str | None = None) -> list[dict]:
    """Train DenseGPT and the tree under each policy; write compare.json / compare.md; return the rows.

    `preset` is only recorded (the caller has already applied it to `base`).
    """
    import torch  # late imports: keep `k1 --help` fast

    from k1.engine.run.train import Trainer

    console = console or Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    corpus = load_corpus(base.data)
    runs = [(name, ROWS.get(name).config(base)) for name in ["gpt", *(policies or POLICY_ORDER)]]
    rows = []
    for label, cfg in runs:
        console.rule(f"[bold]{label}[/] ({'DenseGPT' if cfg.arch == 'dense' else 'AgentTree'}, policy {cfg.policy.name})")
        t_row = time.perf_counter()
        with LoadMeter(torch.get_num_threads()) as load:
            s = Trainer(cfg, out_dir / label, corpus=corpus, quiet=quiet).fit()
        rows.append({
            "policy": label, "model": "DenseGPT" if cfg.arch == "dense" else "AgentTree",
            "val_loss": s["val_loss"], "val_bpb": s["val_bpb"],
            "domains": s["domains"], "tokens_per_s": s["tokens_per_s"],
            "frac_params_changed": s["frac_params_changed"], "agents_updated": s["agents_updated"],
            "agents": s["agents"], "params": s["params"], "steps": s["steps"],
            "final_agents": s["final_agents"], "events": len([e for e in s["events"] if e["kind"] == "trial"]),
            "wall_s": round(time.perf_counter() - t_row, 2), **load.result(),
        })
    unigram = corpus.unigram_bits_per_byte()
    m, t = base.model, base.train
    result = {
        "rows": rows,
        "unigram": {"val_bpb": sum(unigram.values()) / len(unigram), "domains": unigram},
        "seed": t.seed, "preset": preset,
        "setting": {"context": m.context, "batch_size": t.batch_size, "steps": t.steps,
                    "branching": list(m.branching), "width": m.width, "wiring": m.wiring,
                    "device": t.device if t.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"),
                    "domains": list(corpus.domains)},
        "threads": torch.get_num_threads(), "wall_s": round(time.perf_counter() - t0, 1),
        "versions": {"k1": __version__, "python": platform.python_version(), "torch": torch.__version__,
                     "torch_cuda": torch.version.cuda},
    }
    write_atomic(out_dir / "compare.json", json.dumps(result, indent=1))
    write_atomic(out_dir / "compare.md", to_markdown(result))
    console.print(to_table(rows, unigram))
    console.print(" ".join(filter(None, [under_load_note(rows), load_note(result)])))
    from k1.report import write_report

    page = write_report(out_dir)
    console.print(f"wrote {out_dir / 'compare.md'}, {out_dir / 'compare.json'} and the report {page}")
    return rows


def load_note(result: dict) -> str:
    """Tokens/s is measured on whatever else the machine was doing: say so, with the threads and build."""
    v = result["versions"]
    n = result["threads"]
    return (f"Tokens/s depends on the machine and its load (another job on the same cores can slow a row "
            f"10× or more); this run: {n} thread{'' if n == 1 else 's'}, {result['wall_s']:.0f} s wall, "
            f"torch {v['torch']}, Python {v['python']}, k1 {v['k1']}.")


def read_compare(path: Path) -> dict:
    """`compare.json` as an object; an older file holding only the list of rows comes back as {"rows": [...]}."""
    data = json.loads(path.read_text())
    return {"rows": data} if isinstance(data, list) else data


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
                  *[f"{r['domains'][d]['bpb']:.3f}" for d in domains], tokens_cell(r),
                  f"{r['frac_params_changed']:.1%}", f"{r['agents_updated']:.1f}/{r['agents']}")
    t.add_row("unigram", "(entropy)", "", f"{sum(unigram.values()) / len(unigram):.3f}",
              *[f"{unigram[d]:.3f}" for d in domains], "", "", "")
    return t


def to_markdown(result: dict) -> str:
    rows, unigram = result["rows"], result["unigram"]["domains"]
    domains = _columns(rows)
    head = ["policy", "model", "val loss", "val bpb", *[f"{d} bpb" for d in domains], "tokens/s",
            "params changed/step", "agents/step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["policy"], r["model"], f"{r['val_loss']:.4f}", f"{r['val_bpb']:.3f}",
            *[f"{r['domains'][d]['bpb']:.3f}" for d in domains], tokens_cell(r),
            f"{r['frac_params_changed']:.1%}", f"{r['agents_updated']:.1f}/{r['agents']}"]) + " |")
    lines.append("| unigram entropy | — | — | " + f"{result['unigram']['val_bpb']:.3f} | "
                 + " | ".join(f"{unigram[d]:.3f}" for d in domains) + " | — | — | — |")
    st = result["setting"]
    preset = f"preset `{result['preset']}`, " if result.get("preset") else ""
    return (f"# K-1 compare\n\nSame data, seed ({result['seed']}), context ({st['context']}), batch "
            f"({st['batch_size']}), steps ({st['steps']}) and learning-rate schedule for every row ({preset}device "
            f"{st['device']}). Tree: branching {st['branching']}, width {st['width']}, wiring `{st['wiring']}`; "
            f"DenseGPT sized to the same parameter count.\n\n"
            + "\n".join(lines) + "\n\n" + " ".join(filter(None, [under_load_note(rows), load_note(result)])) + "\n")
