"""Build the built-in corpora into a cache folder, offline, with a manifest that says what is in it.

Layout: `<cache>/<domain>/train.txt`, `val.txt` (UTF-8, documents joined by a blank line),
`<cache>/<domain>/documents.json` (each document's id and byte range) and `<cache>/manifest.json`
(sources, licences, attribution, sizes, sha256, build time). Domains come from `builtin.py` (defaults)
and `extras.py` (Debian extras); reading the cache back is `sources.py`'s job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from k1.common.files import write_atomic
from k1.data.builtin import DEFAULT_RECIPES, Recipe
from k1.data.documents import DOC_SEPARATOR, split_documents
from k1.data.extras import EXTRA_RECIPES
from k1.errors import DataError

log = logging.getLogger(__name__)

MANIFEST_FORMAT = 1
VAL_FRACTION = 0.1
"""Share of documents (by id hash) in each built-in domain's validation split."""
MIN_DOMAIN_BYTES = 1_000_000
DEFAULT_DOMAINS = tuple(DEFAULT_RECIPES)
EXTRA_DOMAINS = tuple(EXTRA_RECIPES)


def default_cache_dir() -> Path:
    """`$K1_DATA_DIR`, else `~/.cache/k1/corpora`."""
    env = os.environ.get("K1_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "k1" / "corpora"


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def read_manifest(cache_dir: str | Path | None = None) -> dict | None:
    """The manifest of a built cache, or None if there is none (or it is unreadable)."""
    path = resolve_cache_dir(cache_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT else None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_corpora(
    cache_dir: str | Path | None = None,
    extras: Iterable[str] = (),
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Build the default domains (prose, code, science) and any `extras` into the cache; return the manifest.

    Idempotent: a domain whose manifest entry has the same input fingerprint and whose files still match
    their sha256 is kept as is, unless `force`. An extra that cannot be had (no apt, no network) is
    logged in one line and listed under `skipped`; a default domain that cannot be built raises.
    """
    cache = resolve_cache_dir(cache_dir)
    extras = list(dict.fromkeys(extras))
    unknown = [e for e in extras if e not in EXTRA_RECIPES]
    if unknown:
        raise DataError(f"unknown extra corpus {unknown[0]!r}; choose from {', '.join(EXTRA_DOMAINS)}")
    recipes = [DEFAULT_RECIPES[d] for d in DEFAULT_DOMAINS] + [EXTRA_RECIPES[e] for e in extras]
    old = read_manifest(cache) or {}
    old_domains = old.get("domains", {})
    domains: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    started = time.perf_counter()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
        disable=not progress, transient=False,
    ) as bar:
        task = bar.add_task("corpora", total=len(recipes))
        for recipe in recipes:
            bar.update(task, description=f"building {recipe.name}: {recipe.description}")
            try:
                fingerprint = {**recipe.fingerprint(), "val_fraction": VAL_FRACTION}
                entry = old_domains.get(recipe.name)
                if not force and _is_current(cache, recipe.name, entry, fingerprint):
                    log.debug("%s: up to date in %s", recipe.name, cache)
                    domains[recipe.name] = entry
                else:
                    domains[recipe.name] = _build_domain(cache, recipe, fingerprint)
            except DataError as e:
                if recipe.name not in EXTRA_RECIPES:
                    raise
                log.warning("skipping extra corpus %r: %s", recipe.name, e)
                skipped[recipe.name] = str(e)
            bar.advance(task)
    # Extras built earlier stay in the manifest even when not asked for again.
    domains.update({d: e for d, e in old_domains.items() if d in EXTRA_RECIPES and d not in extras})
    manifest = {
        "format": MANIFEST_FORMAT,
        "cache_dir": str(cache),
        "val_fraction": VAL_FRACTION,
        "separator": DOC_SEPARATOR,
        "domains": domains,
        "skipped": skipped,
    }
    if any(manifest[k] != old.get(k) for k in ("domains", "skipped", "cache_dir")):
        manifest["updated_at"] = _now()
        write_atomic(cache / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8"))
    else:
        manifest = old
    log.info("corpora ready in %s (%.1f s)", cache, time.perf_counter() - started)
    return manifest


def _is_current(cache: Path, name: str, entry: dict | None, fingerprint: dict) -> bool:
    if not entry or entry.get("fingerprint") != fingerprint:
        return False
    for split in ("train", "val"):
        path = cache / name / f"{split}.txt"
        if not path.is_file() or path.stat().st_size != entry["bytes"][split]:
            return False
        if file_sha256(path) != entry["sha256"][split]:
            return False
    return (cache / name / "documents.json").is_file()


def _build_domain(cache: Path, recipe: Recipe, fingerprint: dict) -> dict:
    t0 = time.perf_counter()
    collection = recipe.collect()
    split = split_documents(collection.documents, VAL_FRACTION)
    total = len(split.train) + len(split.val)
    if total == 0:
        raise DataError(f"built-in domain {recipe.name!r} came out empty; check its sources: {collection.sources}")
    if recipe.name in DEFAULT_RECIPES and total < MIN_DOMAIN_BYTES:
        log.warning("built-in domain %r is only %d bytes (expected >= %d)", recipe.name, total, MIN_DOMAIN_BYTES)
    folder = cache / recipe.name
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "train.txt", split.train)
    write_atomic(folder / "val.txt", split.val)
    index = {"train": split.train_index, "val": split.val_index}
    write_atomic(folder / "documents.json", json.dumps(index, ensure_ascii=False).encode("utf-8"))
    seconds = time.perf_counter() - t0
    log.info("%s: %d + %d documents, %.2f + %.2f MB in %.1f s", recipe.name, *split.n_documents.values(),
             len(split.train) / 1e6, len(split.val) / 1e6, seconds)
    return {
        "description": recipe.description,
        "sources": collection.sources,
        "bytes": {"train": len(split.train), "val": len(split.val)},
        "n_documents": split.n_documents,
        "n_duplicates_removed": split.n_duplicates,
        "sha256": {"train": hashlib.sha256(split.train).hexdigest(), "val": hashlib.sha256(split.val).hexdigest()},
        "fingerprint": fingerprint,
        "built_at": _now(),
        "build_seconds": round(seconds, 3),
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
