"""The `k1 specialize` command (registered into the `k1` app by cli.py); the analysis is specialization.py."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def specialize(
        run: Path = typer.Option(..., "--run", help="A run directory with a checkpoint."),
        batches: int = typer.Option(8, help="Validation batches per domain."),
        bootstrap: int = typer.Option(2000, help="Bootstrap resamples for the CI and label shuffles for the p-value."),
        seed: int = typer.Option(0, help="Seed of the resampling."),
        device: str = typer.Option("cpu", help="cpu, cuda or cuda:1."),
        top: int = typer.Option(15, help="Rows of the table (agents by score)."),
        as_json: bool = typer.Option(False, "--json", help="Print specialize.json instead of the table."),
    ):
        """Which agents specialise in which domain: gate share, ablation Δloss and blame share per agent ×
        domain on held-out batches, a specialisation score with bootstrap CI and permutation p-value.
        Writes RUN/specialize.json and RUN/specialize.png."""
        from rich.console import Console

        from k1.explain.specialization import render_table, specialize as measure, write_outputs

        t0 = time.perf_counter()
        result = measure(run, batches=batches, bootstrap=bootstrap, seed=seed, device=device)
        path, png, note = write_outputs(run, result)
        if as_json:
            print(json.dumps(result, indent=1))
            if note:
                typer.echo(note, err=True)  # stdout stays pure JSON
            return
        console = Console(width=None if sys.stdout.isatty() else 160)
        table, verdict = render_table(result, top=top, resamples=bootstrap)
        console.print(table)
        console.print(verdict)
        console.print(f"wrote {path}" + (f" and {png}" if png else "") + f" in {time.perf_counter() - t0:.1f} s")
        if note:
            console.print(note)
