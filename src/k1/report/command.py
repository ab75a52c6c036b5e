"""The `k1 report` command (registered by `k1.cli`); matplotlib is imported only when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from k1.errors import ConfigError


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        dir: Path = typer.Argument(..., help="A run, compare or continual directory."),
        out: Optional[Path] = typer.Option(None, "--out", help="HTML file to write (default DIR/report.html)."),
    ):
        """One self-contained HTML report (plots embedded, viewable offline) of a run, compare or continual dir."""
        try:
            from k1.report import write_report
        except ModuleNotFoundError as e:
            if e.name != "matplotlib":
                raise
            raise ConfigError("k1 report draws its plots with matplotlib, which is not installed; "
                              "pip install matplotlib") from None
        print(write_report(dir, out))
