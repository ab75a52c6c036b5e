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
                                                          "per domain, 1 seed (4 min 13 s on 2 idle CPU cores; "
                                                          "slower cores have taken about 3× as long)."),
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
                                                            "k1-protect, k1-balance, k1-grow, k1-usage, k1-ewc, "
                                                            "random-path, random-path-ewc, tree-freeze, k1-freeze, "
                                                            "random-path-freeze, k1-ewc-shared, tree-route, "
                                                            "k1-route, random-path-route, k1-usage-route, "
                                                            "k1-adapter, k1-route-adapter "
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
        sweep: Optional[str] = typer.Option(None, "--sweep", help="KEY=V1,V2,...: run the table once per value "
                                            "(--set KEY=V, into OUT/sweep/KEY=V/) and plot the stability–plasticity "
                                            "frontier, e.g. --sweep continual.ewc_lambda=1e5,1e6,1e7 or --sweep "
                                            "optim.lr=1e-3,3e-3,1e-2."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ):
        """Domains in sequence: loss matrix, forgetting, backward/forward transfer, against naive, replay and EWC baselines
        on both DenseGPT and the tree."""
        from rich.console import Console

        from k1.experiments.continual import check_run, load_configs, run_continual
        from k1.experiments.strategies import QUICK_STRATEGIES, STRATEGY_ORDER

        from k1.experiments.frontier import write_frontier

        preset, spd = SETTINGS["quick" if quick else "default"]
        runs = [(out, set_)]
        if sweep is not None:
            runs = [(out / "sweep" / f"{key}={v}", [*set_, f"{key}={v}"]) for key, v in sweep_values(sweep)]
        command = "k1 " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        console = Console(width=None if sys.stdout.isatty() else 160)
        checked = []
        for run_out, overrides in runs:  # every value is validated before any trains
            cfg, ccfg = load_configs(config, preset, overrides)
            names = strategies.split(",") if strategies is not None else QUICK_STRATEGIES if quick else STRATEGY_ORDER
            n_seeds = seeds if seeds is not None else 1 if quick else 3
            order = domains.split(",") if domains is not None else list(cfg.data.domains)
            steps = steps_per_domain if steps_per_domain is not None else spd
            cfg, names = check_run(cfg, order, names, n_seeds, steps, ccfg, eval_on)
            checked.append((run_out, cfg, ccfg, names, [cfg.train.seed + i for i in range(n_seeds)]))
        for run_out, cfg, ccfg, names, seed_list in checked:
            run_continual(cfg, ccfg, run_out, names, seed_list, command=command, quiet=quiet, console=console,
                          specialise=specialise, reuse=not fresh, checkpoint_every=checkpoint_every)
        write_frontier([out], out)
        console.print(f"stability–plasticity frontier: {out / 'frontier.png'}, {out / 'frontier.html'}")


def sweep_values(spec: str) -> list[tuple[str, str]]:
    """`KEY=V1,V2,...` → [(KEY, V1), (KEY, V2), ...]; a one-line ConfigError for anything else."""
    from k1.errors import ConfigError

    key, sep, values = spec.partition("=")
    vals = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key.strip() or not vals:
        raise ConfigError(f"--sweep {spec!r}: expected KEY=V1,V2,..., e.g. --sweep continual.ewc_lambda=1e5,1e6")
    return [(key.strip(), v) for v in vals]
