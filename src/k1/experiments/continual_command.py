"""The `k1 continual` command (registered by `k1.cli`): parse the options, run `continual.py`, print the table.

Budgets: one step of the `small` model costs ~45 ms for DenseGPT and ~80 ms for the tree on 2 idle CPU
cores (k1-auto more, for its trials). The default of 130 steps per domain gives forgetting room to show;
`--quick` (40 per domain, about a third of the cost) is what the README's tables use, at 3 and 8 seeds,
because a table of 13 strategies at the default length did not fit one session on the shared machine.
Finished (strategy, seed) runs in `--out` are read back, so a long table can be built over several calls.
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
        quick: bool = typer.Option(False, "--quick", help="Fewer steps per domain (about 3 minutes on 2 CPU cores)."),
        out: Path = typer.Option(Path("runs/continual"), help="Output directory."),
        seeds: int = typer.Option(3, help="Number of seeds (train.seed, +1, +2, ...); mean ± std over them."),
        steps_per_domain: Optional[int] = typer.Option(None, "--steps-per-domain",
                                                       help="Training steps per domain (default 130; --quick 40)."),
        domains: Optional[str] = typer.Option(None, help="Comma-separated domains in training order "
                                                         "(default: the config's, prose,code,science)."),
        strategies: Optional[str] = typer.Option(None, help="Comma-separated subset of: gpt-naive, gpt-replay, "
                                                            "gpt-ewc, tree-naive, tree-replay, tree-ewc, random-k, "
                                                            "k1-attribution, k1-hybrid, k1-auto, k1-replay, "
                                                            "k1-protect, k1-balance (default: all)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config on top of the preset; "
                                              "its table `continual` sets the replay and EWC knobs."),
        set_: list[str] = typer.Option([], "--set", help="Override a key: --set optim.lr=1e-3, "
                                                         "--set continual.ewc_lambda=500 (repeatable)."),
        specialise: bool = typer.Option(True, "--specialize/--no-specialize",
                                        help="Count each tree run's strong specialists after the last stage "
                                             "(k1 specialize; a few seconds per run)."),
        fresh: bool = typer.Option(False, "--fresh", help="Train every (strategy, seed) again, even when a "
                                                          "finished run of the same config is in --out."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ):
        """Domains in sequence: loss matrix, forgetting, backward/forward transfer, against naive, replay and EWC baselines
        on both DenseGPT and the tree."""
        from rich.console import Console

        from k1.experiments.continual import check_run, load_configs, run_continual
        from k1.experiments.strategies import STRATEGY_ORDER

        preset, spd = SETTINGS["quick" if quick else "default"]
        cfg, ccfg = load_configs(config, preset, set_)
        names = strategies.split(",") if strategies is not None else STRATEGY_ORDER
        order = domains.split(",") if domains is not None else list(cfg.data.domains)
        steps = steps_per_domain if steps_per_domain is not None else spd
        cfg, names = check_run(cfg, order, names, seeds, steps)
        seed_list = [cfg.train.seed + i for i in range(seeds)]
        command = "k1 " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        console = Console(width=None if sys.stdout.isatty() else 160)
        run_continual(cfg, ccfg, out, names, seed_list, command=command, quiet=quiet, console=console,
                      specialise=specialise, reuse=not fresh)
