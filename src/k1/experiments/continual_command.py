"""The `k1 continual` command (registered by `k1.cli`): parse the options, run `continual.py`, print the table.

Budgets: one step of the `small` model costs ~45 ms for DenseGPT and ~80 ms for the tree on 2 idle CPU
cores (k1-auto more, for its trials). The plain command is the full table: every strategy, 130 steps per
domain (room for forgetting to show), 3 seeds. `--quick` is a smoke test: a representative subset of
strategies (`QUICK_STRATEGIES`), 40 steps per domain, one seed. Finished (strategy, seed) runs in `--out`
are read back and an interrupted one resumes from its newest checkpoint, so a long table can be built over
several calls.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

# preset and steps per domain; both use the `small` model (width 48, batch 8, context 64): within the budget
# it affords enough steps per domain for forgetting to show, which the `default` model (~2× slower) does not
SETTINGS = {"quick": ("small", 40), "default": ("small", 130)}


def register(app: typer.Typer) -> None:
    @app.command()
    def continual(
        quick: bool = typer.Option(False, "--quick", help="A smoke test: 7 representative strategies, 40 steps "
                                                          "per domain, 1 seed (4 to 13 minutes on 2 idle CPU cores, as fast as the cores)."),
        out: Path = typer.Option(Path("runs/continual"), help="Output directory."),
        seeds: Optional[int] = typer.Option(None, help="Number of seeds (train.seed, +1, +2, ...); mean ± std "
                                                       "over them (default 3; --quick 1)."),
        steps_per_domain: Optional[int] = typer.Option(None, "--steps-per-domain",
                                                       help="Training steps per domain (default 130; --quick 40)."),
        domains: Optional[str] = typer.Option(None, help="Comma-separated domains in training order "
                                                         "(default: the config's, prose,code,science)."),
        strategies: Optional[str] = typer.Option(None, help="Comma-separated subset of: gpt-naive, gpt-replay, "
                                                            "gpt-ewc, tree-naive, tree-replay, tree-ewc, random-k, "
                                                            "k1-attribution, k1-hybrid, k1-auto, k1-replay, "
                                                            "k1-protect, k1-balance, k1-grow, k1-usage, k1-ewc "
                                                            "(default: all; --quick: gpt-naive, tree-naive, "
                                                            "tree-replay, tree-ewc, random-k, k1-attribution, "
                                                            "k1-replay)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config on top of the preset; "
                                              "its table `continual` sets the replay and EWC knobs."),
        set_: list[str] = typer.Option([], "--set", help="Override a key: --set optim.lr=1e-3, "
                                                         "--set continual.ewc_lambda=500 (repeatable)."),
        specialise: bool = typer.Option(True, "--specialize/--no-specialize",
                                        help="Count each tree run's strong specialists after the last stage "
                                             "(k1 specialize; a few seconds per run)."),
        fresh: bool = typer.Option(False, "--fresh", help="Train every (strategy, seed) again, even when a "
                                                          "finished run of the same config is in --out."),
        checkpoint_every: int = typer.Option(20, "--checkpoint-every", min=0,
                                             help="A resume point every N steps inside a stage (0: stage ends "
                                                  "only); an interrupted run continues from its newest one."),
        eval_on: str = typer.Option("eval", "--eval-on", help="Which held-out windows R is measured on: "
                                    "'eval' (the evaluation windows) or 'tune' (the tuning windows, apart from "
                                    "them: choose settings such as continual.ewc_lambda there)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ):
        """Domains in sequence: loss matrix, forgetting, backward/forward transfer, against naive, replay and EWC baselines
        on both DenseGPT and the tree."""
        from rich.console import Console

        from k1.experiments.continual import check_run, load_configs, run_continual
        from k1.experiments.strategies import QUICK_STRATEGIES, STRATEGY_ORDER

        preset, spd = SETTINGS["quick" if quick else "default"]
        cfg, ccfg = load_configs(config, preset, set_)
        names = strategies.split(",") if strategies is not None else QUICK_STRATEGIES if quick else STRATEGY_ORDER
        seeds = seeds if seeds is not None else 1 if quick else 3
        order = domains.split(",") if domains is not None else list(cfg.data.domains)
        steps = steps_per_domain if steps_per_domain is not None else spd
        cfg, names = check_run(cfg, order, names, seeds, steps, ccfg, eval_on)
        seed_list = [cfg.train.seed + i for i in range(seeds)]
        command = "k1 " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        console = Console(width=None if sys.stdout.isatty() else 160)
        run_continual(cfg, ccfg, out, names, seed_list, command=command, quiet=quiet, console=console,
                      specialise=specialise, reuse=not fresh, checkpoint_every=checkpoint_every)
