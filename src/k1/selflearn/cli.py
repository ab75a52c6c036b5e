"""`k1 loop run | eval`: the self-learning loop and base-rate measurement from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from k1.selflearn.config import LoopConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, help="The self-learning loop.")


def _default(field: str) -> str:
    """The config's default, for a flag's help (the flag itself defaults to None: a config file may set it)."""
    f = LoopConfig.model_fields[field]
    value = f.default_factory() if f.default_factory is not None else f.default
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


@app.command()
def run(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Loop config (TOML); flags override it."),
    target: Optional[str] = typer.Option(None, "--target", help="k1:RUN_DIR, hf:PATH[::FILE.gguf] or smollm2."),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="arithmetic:d1..d4, python, or a JSONL task file "
                                       f"(default {_default('tasks')})."),
    method: Optional[str] = typer.Option(None, "--method", help=f"rejection, refine or teacher (default {_default('method')})."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds, at least 3 for a spread "
                                       f"(default {_default('seeds')})."),
    n_train: Optional[int] = typer.Option(None, "--n-train", help=f"Training tasks per seed (default {_default('n_train')})."),
    n_heldout: Optional[int] = typer.Option(None, "--n-heldout", help=f"Held-out tasks per seed (default {_default('n_heldout')})."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Samples (rejection) or rewrites (teacher) per "
                                         f"task (default {_default('samples')})."),
    out: Path = typer.Option(Path("runs/loop"), "--out", help="Output directory."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar; print the report JSON."),
):
    """Evaluate → improve → dataset → train → evaluate again, per seed; writes OUT/report.md and dataset.jsonl."""
    from k1.selflearn.runner import render, run_loop

    cfg = loop_config(config=config, target=target, tasks=tasks, method=method, seeds=seeds, n_train=n_train,
                      n_heldout=n_heldout, samples=samples)
    report = run_loop(cfg, out, quiet=quiet)
    print(json.dumps(report) if quiet else render(report) + f"\n→ {out}/report.md, {out}/dataset.jsonl")


def loop_config(config=None, seeds: Optional[str] = None, **flags):
    """The LoopConfig that `k1 loop run` runs with these flags (the file, then the flags, then the defaults);
    tests/cli/test_readme.py resolves the README's command through it."""
    from k1.errors import ConfigError
    from k1.selflearn.config import load_loop_config

    try:
        seed_list = [int(s) for s in seeds.split(",")] if seeds else None
    except ValueError:
        raise ConfigError(f"--seeds {seeds!r}: give comma-separated integers, e.g. 0,1,2") from None
    return load_loop_config(config, seeds=seed_list, **flags)


@app.command("eval")
def eval_(
    target: str = typer.Option(..., "--target", help="k1:RUN_DIR, hf:PATH[::FILE.gguf] or smollm2."),
    tasks: str = typer.Option("arithmetic:d2", "--tasks", help="Comma-separated task families or files."),
    n: int = typer.Option(30, "--n", help="Tasks per family (a seeded sample)."),
    seed: int = typer.Option(0, "--seed"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar on stderr; only the JSON lines."),
):
    """Base rates: the target's greedy success on a sample of each task family, scored by verifiers.
    One JSON line per family on stdout; a progress bar per family on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from k1.selflearn import members
    from k1.selflearn.evaluate import evaluate
    from k1.selflearn.runner import load_tasks
    from k1.tasks.sandbox import require_sandbox
    from k1.tasks.task import split_tasks

    families = {spec: load_tasks(spec) for spec in tasks.split(",")}
    if any(t.kind == "python" for ts in families.values() for t in ts):
        require_sandbox()  # refuse before the model loads
    err = Console(stderr=True)
    if not quiet:
        err.print(f"loading {target} …")
    member = members.load(target)
    for spec, all_tasks in families.items():
        sample, _ = split_tasks(all_tasks, min(n, len(all_tasks)), 0, seed)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, transient=True, disable=quiet) as bar:
            job = bar.add_task(f"{spec}: greedy answers", total=len(sample))
            result = evaluate(member, sample, on_task=lambda: bar.advance(job))
        print(json.dumps({"target": target, "tasks": spec, **result}), flush=True)
