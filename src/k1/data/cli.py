"""`k1 data ...`: build the built-in corpora and show what is in the cache (mounted by the main CLI).

Errors are raised as `DataError`; the main CLI turns them into one line and exit code 2.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from k1.data.corpora import EXTRA_DOMAINS, build_corpora, read_manifest, resolve_cache_dir
from k1.errors import DataError

data_app = typer.Typer(help="Build and inspect the built-in text corpora.", no_args_is_help=True)

CacheDirOption = Annotated[
    Optional[Path], typer.Option("--cache-dir", help="Cache folder (default: $K1_DATA_DIR or ~/.cache/k1/corpora).")
]


@data_app.command()
def build(
    cache_dir: CacheDirOption = None,
    extra: Annotated[
        Optional[list[str]],
        typer.Option("--extra", help=f"Also build an optional corpus from Debian packages: {', '.join(EXTRA_DOMAINS)}."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when the cache is up to date.")] = False,
) -> None:
    """Build the built-in corpora (prose, code, science and any extras) offline into the cache."""
    console = Console()
    started = time.perf_counter()
    manifest = build_corpora(cache_dir=cache_dir, extras=extra or (), force=force, progress=True)
    console.print(manifest_table(manifest))
    for name, reason in manifest.get("skipped", {}).items():
        console.print(f"[yellow]skipped {name}[/]: {reason}")
    console.print(f"cache: {manifest['cache_dir']}  ({time.perf_counter() - started:.1f} s)")


@data_app.command()
def info(cache_dir: CacheDirOption = None) -> None:
    """Show the manifest of the built-in corpora: documents, sizes, sources and licences."""
    cache = resolve_cache_dir(cache_dir)
    manifest = read_manifest(cache)
    if manifest is None:
        raise DataError(f"no corpora manifest in {cache}; run `k1 data build` first")
    console = Console()
    console.print(manifest_table(manifest))
    attributions = {s["attribution"] for e in manifest["domains"].values() for s in e["sources"] if "attribution" in s}
    for attribution in sorted(attributions):
        console.print(f"[dim]{attribution}[/]")
    console.print(f"cache: {manifest['cache_dir']}")


def manifest_table(manifest: dict) -> Table:
    """One row per domain: documents and megabytes per split, and the sources with their licences."""
    table = Table(title="k1 corpora")
    for column in ("domain", "docs train", "docs val", "MB train", "MB val", "sources"):
        table.add_column(column, justify="right" if column.startswith(("docs", "MB")) else "left")
    for name, entry in manifest["domains"].items():
        docs, size = entry["n_documents"], entry["bytes"]
        sources = "; ".join(f"{s['name']} ({s['licence']})" for s in entry["sources"])
        table.add_row(name, f"{docs['train']:,}", f"{docs['val']:,}",
                      f"{size['train'] / 1e6:.2f}", f"{size['val'] / 1e6:.2f}", sources)
    return table
