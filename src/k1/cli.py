"""The `k1` command line: one verb per job; every verb runs on built-in defaults and writes a run directory.

Errors caused by user input (`K1Error`) are caught here, in one place: one line on stderr, exit code 2;
the full traceback only with `--debug`.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from k1.errors import ConfigError, K1Error

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="K-1: agent trees trained by attributed sparse updates.")
console = Console(width=None if sys.stdout.isatty() else 140)  # tables stay readable when piped
_debug = {"on": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
          verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level.")):
    _debug["on"] = debug
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _data_app():
    from k1.data.cli import data_app
    return data_app


app.add_typer(_data_app(), name="data", help="Build and inspect the built-in corpora.")


@app.command()
def train(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file."),
    preset: Optional[str] = typer.Option(None, help="Named preset: tiny, small, default."),
    policy: Optional[str] = typer.Option(None, help="Update policy: dense, attribution, hybrid, trust, random, protect, usage, grow."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set train.steps=50 (repeatable)."),
    name: Optional[str] = typer.Option(None, help="Run name (the default run directory is runs/<name>)."),
    steps: Optional[int] = typer.Option(None, help="Number of training steps."),
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 or auto."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default runs/<name>)."),
    checkpoint_every: Optional[int] = typer.Option(None, help="Write a checkpoint every N steps."),
    resume: Optional[Path] = typer.Option(None, help="Continue the run in this directory from its last checkpoint."),
    phase2: bool = typer.Option(False, "--phase2", help="Self-organisation: plasticity, autonomy, staged breaks."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar; print only the summary JSON."),
):
    """Train one model and write runs/<name>/ (config, metrics, attribution log, checkpoints)."""
    from k1.engine.config import load_config
    from k1.engine.run import distributed
    from k1.engine.run.rundir import RunDir
    from k1.engine.run.train import Trainer

    extra: dict = {} if name is None else {"name": name}
    if policy:
        extra["policy"] = {"name": policy}
    if phase2:
        extra["autonomy"] = {"enabled": True}
    for key, val in (("steps", steps), ("seed", seed), ("device", device), ("checkpoint_every", checkpoint_every)):
        if val is not None:
            extra.setdefault("train", {})[key] = val
    if resume is not None:
        changed = [flag for flag, given in (("--config", config), ("--preset", preset), ("--policy", policy),
                                            ("--set", set_), ("--name", name), ("--seed", seed is not None),
                                            ("--device", device), ("--out", out), ("--phase2", phase2)) if given]
        if changed:
            raise ConfigError(f"--resume continues a run exactly as configured; {changed[0]} would change it "
                              "(only --steps and --checkpoint-every may be given)")
        run = RunDir(resume)
        if not run.has_config():
            raise ConfigError(f"--resume {resume}: no {RunDir.CONFIG} there; is it a k1 run directory?")
        cfg = run.read_config(extra=extra)
        dist = _join(cfg)
        trainer = Trainer(cfg, resume, quiet=quiet, dist=dist)
        trainer.restore()
        if steps is not None and dist.is_main:
            run.write_config(cfg)
    else:
        cfg = load_config(config, preset=preset, overrides=set_, extra=extra)
        run_dir = out or Path("runs") / cfg.name
        run = RunDir(run_dir)
        dist = _join(cfg)
        if run.has_checkpoint():
            raise ConfigError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
        if dist.is_main and run.has_config():  # killed before its first checkpoint
            print(f"k1: {run_dir} has no complete checkpoint; starting it over", file=sys.stderr)
            run.clear_started()
        trainer = Trainer(cfg, run_dir, quiet=quiet, dist=dist)
    try:
        summary = trainer.fit()
    finally:
        distributed.teardown()
    if not dist.is_main:
        return
    if quiet:
        print(json.dumps(summary))
    else:
        console.print(f"[bold]done[/]: val loss {summary['val_loss']:.4f}, bpb {summary['val_bpb']:.3f}, "
                      f"{summary['frac_params_changed']:.1%} of parameters changed per step → {trainer.out_dir}")


def _join(cfg):
    """Under torchrun: join the process group (a one-line error if impossible). The config is left as
    loaded; the run state picks this rank's device (`Dist.device`)."""
    from k1.engine.run import distributed

    try:
        return distributed.setup(cfg.train.device)
    except (RuntimeError, ValueError, KeyError) as e:
        raise ConfigError(f"torchrun: could not join the process group ({str(e).splitlines()[0]})") from None


@app.command()
def compare(
    quick: bool = typer.Option(False, "--quick", help="A smaller model and budget (a smoke test: 1 min 26 s on 2 "
                                                      "idle CPU cores)."),
    out: Path = typer.Option(Path("runs/compare"), help="Output directory."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config applied on top of the preset."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key (repeatable)."),
    policies: Optional[str] = typer.Option(None, help="Comma-separated subset of policies to run."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """The main job: DenseGPT vs the tree under every policy, same data/seed/budget; prints the table."""
    from k1.engine.config import load_config
    from k1.experiments.compare import run_compare

    cfg = load_config(config, preset="small" if quick else "default", overrides=set_)
    names = [p.strip() for p in policies.split(",")] if policies else None
    run_compare(cfg, out, names, quiet=quiet, console=console, preset="small" if quick else "default")


@app.command()
def explain(
    run: Path = typer.Option(..., "--run", help="A run directory."),
    step: Optional[int] = typer.Option(None, help="Which logged step (default: the last)."),
    text: Optional[str] = typer.Option(None, "--text", help="Explain this input instead of a logged step."),
    file: Optional[Path] = typer.Option(None, "--file", help="Explain the text in this file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of the text tree."),
):
    """The attribution tree of a logged step, or of one input (--text/--file): RMS grad, gate, ablation Δloss,
    blame path; plus the run's structural and stage history."""
    if text is not None or file is not None:
        from k1.explain.input_attribution import explain_input, render_input_text

        if file is not None:
            if not file.is_file():
                raise ConfigError(f"--file {file}: no such file")
            text = file.read_text(errors="replace")
        result = explain_input(run, text)
        print(json.dumps(result, indent=1) if as_json else render_input_text(result))
        return
    from k1.explain.step_tree import render_text, step_tree

    tree = step_tree(run, step)
    print(json.dumps(tree, indent=1) if as_json else render_text(tree))


@app.command()
def generate(
    run: Path = typer.Option(..., "--run", help="A run directory with a checkpoint."),
    prompt: str = typer.Option("The ", help="Text to continue."),
    tokens: int = typer.Option(200, help="How many tokens to sample."),
    temperature: float = typer.Option(0.8, help="Sampling temperature."),
    top_k: Optional[int] = typer.Option(None, help="Sample only from the k most likely tokens."),
    seed: int = typer.Option(0, help="Sampling seed."),
):
    """Sample a continuation of --prompt from the run's latest checkpoint."""
    from k1.engine.run.generate import generate_text

    print(generate_text(run, prompt, tokens, temperature, top_k, seed))


# Commands that live beside their concern register themselves here (their heavy imports stay lazy).
def _register_plugins() -> None:
    import importlib

    for module in ("k1.explain.command", "k1.experiments.continual_command", "k1.report.command"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is None or not module.startswith(e.name):  # a missing dependency, not a missing plugin
                raise
            continue
        mod.register(app)


_register_plugins()


def _add_optional_app(module: str, name: str, commands: list[str] = ()) -> None:
    """A sub-app whose extra may be missing (the bridge needs websockets): without it, the core CLI still works.
    `commands` ("module:function") are added to the sub-app from packages it must not import itself."""
    import importlib

    try:
        sub = importlib.import_module(module).app
        for spec in commands:
            mod, fn = spec.split(":")
            sub.command()(getattr(importlib.import_module(mod), fn))
        app.add_typer(sub, name=name)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.startswith("k1"):
            raise


_add_optional_app("k1.pool.cli", "pool")      # k1 pool serve | status | dream | ... (extra: pool)
_add_optional_app("k1.bridge.cli", "bridge", ["k1.agents.cli:agent", "k1.agents.cli:collab"])
# k1 bridge serve | send | listen | log, and the model agents' `agent` | `collab` (they live with the agents)
_add_optional_app("k1.selflearn.cli", "loop")  # k1 loop run | eval (the self-learning loop)


def main() -> None:
    try:
        app()
    except K1Error as e:
        if _debug["on"]:
            raise
        print(f"k1: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("k1: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
