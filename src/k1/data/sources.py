"""Where a domain's text comes from: the built-in cache, local files and folders, or Hugging Face datasets.

Every source ends as a `DomainText` (train and validation UTF-8 bytes plus a manifest-style entry).
Local files and HF datasets share one path: documents -> `split_documents` (dedupe, split by id hash,
join); HF rows go through the same `records_to_documents` as local `.jsonl` files, so tests cover it
offline. Tokenizing is `corpus.py`'s job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from k1.data.config import DataConfig
from k1.data.corpora import build_corpora, read_manifest, resolve_cache_dir
from k1.data.documents import Document, blank_line_documents, records_to_documents, split_documents
from k1.data.extras import EXTRA_RECIPES
from k1.errors import DataError
from k1.registry import Registry

log = logging.getLogger(__name__)

_SNIFF_BYTES = 8192  # a NUL byte in the first 8 KiB marks a binary file, skipped in folders


@dataclass(frozen=True)
class DomainText:
    """One domain's train and validation text (UTF-8, documents joined by a blank line) and its provenance."""

    train: bytes
    val: bytes
    entry: dict  # sources, bytes, n_documents, sha256: the shape of a built-in manifest entry


# name → loader(cfg) -> (texts, manifest); `DataConfig.source` names one
SOURCES: Registry = Registry("data source")


def load_texts(cfg: DataConfig) -> tuple[dict[str, DomainText], dict]:
    """Every configured domain's text, and a manifest describing it (the built-in one, or one made here)."""
    return SOURCES.get(cfg.source)(cfg)


@SOURCES.register("builtin")
def _builtin(cfg: DataConfig):
    return builtin_texts(cfg.domains, cfg.cache_dir)


@SOURCES.register("files")
def _files(cfg: DataConfig):
    def read(domain: str):
        if domain not in cfg.paths:
            raise DataError(f"domain {domain!r} has no entry in data.paths; add paths.{domain} = 'FILE_OR_FOLDER'")
        path = Path(cfg.paths[domain]).expanduser()
        return file_documents(path, domain), [{"name": path.name, "path": str(path), "licence": "unknown (local files)"}]

    return _documents_source(cfg, read)


@SOURCES.register("hf")
def _hf(cfg: DataConfig):
    def read(domain: str):
        spec = cfg.hf_datasets.get(domain)
        if spec is None:
            raise DataError(f"domain {domain!r} has no entry in data.hf_datasets; add hf_datasets.{domain}")
        return hf_documents(spec, domain, cfg.hf_max_bytes), [{
            "name": spec, "path": f"https://huggingface.co/datasets/{spec.partition(':')[0]}",
            "licence": "see the dataset card"}]

    return _documents_source(cfg, read)


def _documents_source(cfg: DataConfig, read) -> tuple[dict[str, DomainText], dict]:
    """Sources that yield documents per domain share the split, the dedupe and the manifest."""
    texts = {d: documents_to_text(d, *read(d), cfg.val_fraction) for d in cfg.domains}
    manifest = {"source": cfg.source, "val_fraction": cfg.val_fraction,
                "domains": {d: t.entry for d, t in texts.items()}}
    return texts, manifest


def documents_to_text(domain: str, docs: list[Document], sources: list[dict], val_fraction: float) -> DomainText:
    """Shared by files and HF: dedupe, split by document id, join; an empty corpus is an error."""
    split = split_documents(docs, val_fraction)
    if not split.train and not split.val:
        where = ", ".join(s["path"] for s in sources)
        raise DataError(f"domain {domain!r}: no text in {where} (0 bytes); point it at non-empty text files")
    for source in sources:
        source["n_documents"] = sum(split.n_documents.values())
    entry = {
        "sources": sources,
        "bytes": {"train": len(split.train), "val": len(split.val)},
        "n_documents": split.n_documents,
        "n_duplicates_removed": split.n_duplicates,
        "sha256": {"train": hashlib.sha256(split.train).hexdigest(), "val": hashlib.sha256(split.val).hexdigest()},
    }
    return DomainText(split.train, split.val, entry)


# --- built-in cache -----------------------------------------------------------------------------------


def builtin_texts(domains: list[str], cache_dir: str | Path | None = None) -> tuple[dict[str, DomainText], dict]:
    """Read the built-in corpora's train/val files, building the cache first if it is missing or stale."""
    cache = resolve_cache_dir(cache_dir)
    manifest = read_manifest(cache)
    if not _has_domains(cache, manifest, domains):
        log.info("built-in corpora %s not ready in %s; building them now (`k1 data build` does this ahead)",
                 ", ".join(domains), cache)
        manifest = build_corpora(cache, extras=[d for d in domains if d in EXTRA_RECIPES], progress=False)
        if not _has_domains(cache, manifest, domains):
            missing = [d for d in domains if d not in manifest["domains"]]
            reason = manifest.get("skipped", {}).get(missing[0], "see the log") if missing else "files changed"
            what = missing[0] if missing else ", ".join(domains)
            raise DataError(f"built-in corpus {what!r} is unavailable: {reason}; see `k1 data build --help`")
    texts = {}
    for d in domains:
        train, val = ((cache / d / f"{split}.txt").read_bytes() for split in ("train", "val"))
        texts[d] = DomainText(train, val, manifest["domains"][d])
    return texts, {**manifest, "source": "builtin", "domains": {d: manifest["domains"][d] for d in domains}}


def builtin_documents(domain: str, split: str = "train", cache_dir: str | Path | None = None) -> list[Document]:
    """The documents of a built cache's split, read back exactly through `documents.json`'s byte ranges."""
    folder = resolve_cache_dir(cache_dir) / domain
    if not (folder / "documents.json").is_file():
        raise DataError(f"no built-in corpus {domain!r} in {folder.parent}; run `k1 data build` first")
    index = json.loads((folder / "documents.json").read_text(encoding="utf-8"))[split]
    data = (folder / f"{split}.txt").read_bytes()
    return [Document(doc_id, data[start:end].decode("utf-8")) for doc_id, start, end in index]


def _has_domains(cache: Path, manifest: dict | None, domains: list[str]) -> bool:
    if manifest is None:
        return False
    for d in domains:
        entry = manifest["domains"].get(d)
        if entry is None:
            return False
        for split in ("train", "val"):
            path = cache / d / f"{split}.txt"
            if not path.is_file() or path.stat().st_size != entry["bytes"][split]:
                return False
    return True


# --- local files and folders --------------------------------------------------------------------------


def file_documents(path: Path, domain: str) -> list[Document]:
    """A folder: every text file under it is a document (id = relative path). A file: split on blank lines.

    A `.jsonl` file is read as records, one JSON object per line, exactly like rows of a HF dataset.
    """
    if not path.exists():
        raise DataError(f"domain {domain!r}: path {str(path)!r} does not exist; fix data.paths.{domain}")
    if path.is_file():
        if path.suffix == ".jsonl":
            return records_to_documents(_jsonl_records(path), source=path.name)
        return blank_line_documents(_read_text(path), source=path.name)
    docs = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):
            continue  # .git, editor swap files
        with file.open("rb") as f:
            if b"\0" in f.read(_SNIFF_BYTES):
                log.debug("skipping binary file %s", file)
                continue
        docs.append(Document(rel.as_posix(), _read_text(file).strip()))
    return docs


def _read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n")


def _jsonl_records(path: Path):
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as e:
                    raise DataError(f"{path}:{n}: not a JSON object ({e.msg}); write one JSON record per line") from e


# --- Hugging Face datasets ----------------------------------------------------------------------------


def hf_documents(spec: str, domain: str, max_bytes: int | None) -> list[Document]:
    """Stream a HF dataset ("name" or "name:config", split "train") into documents, up to `max_bytes`.

    Offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set) it reads the local datasets cache instead of
    streaming; with nothing cached that fails, as any network error does, with one DataError line.
    """
    try:
        import datasets  # lazy: an optional extra
    except ImportError as e:
        raise DataError("source = 'hf' needs the 'datasets' package; install it with: pip install 'k1[hf]'") from e
    name, _, config = spec.partition(":")
    try:
        rows = datasets.load_dataset(name, config or None, split="train", streaming=not _hf_offline())
        return records_to_documents(rows, source=name, max_bytes=max_bytes, wikitext="wikitext" in name.lower())
    except DataError:
        raise
    except Exception as e:  # datasets raises many kinds (ConnectionError, FileNotFoundError, HfHubHTTPError...)
        raise DataError(
            f"domain {domain!r}: could not load Hugging Face dataset {spec!r} ({_first_line(e)}); "
            "check the network and HF_HUB_OFFLINE, or use source = 'builtin'"
        ) from e


def _hf_offline() -> bool:
    flags = (os.environ.get(v, "").lower() for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(flag in ("1", "true", "yes", "on") for flag in flags)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
