"""Documents and the document-level train/validation split, shared by every source (built-in, files, HF).

A document is the unit of the split: all of it goes to train or all of it to validation, decided by a
hash of its id, so the split is deterministic, independent of order, and never cuts a text in two
(random windows from one text on both sides would leak validation text into training).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from k1.errors import DataError

DOC_SEPARATOR = "\n\n"
"""Written between documents in a corpus file (and so seen by the model as a document boundary)."""

# Fields a Hugging Face (or JSONL) record keeps its text and its identity in, tried in this order.
TEXT_FIELDS = ("text", "content", "abstract", "code", "document", "body")
ID_FIELDS = ("id", "url", "path", "title")

_BLANK_RUNS = re.compile(r"\n[^\S\n]*\n\s*")
_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $")  # " = Title = " starts a wikitext article; " = = x = = " does not


@dataclass(frozen=True)
class Document:
    """One text with a stable id (a path, a title, a dataset key): the id alone decides its split."""

    id: str
    text: str


@dataclass
class SplitText:
    """A domain's documents joined into train and validation text, with where each document sits.

    `train_index`/`val_index` hold `(id, start, end)` byte offsets into the UTF-8 text, so a document can
    be read back exactly and tests can check that no document is on both sides.
    """

    train: bytes = b""
    val: bytes = b""
    train_index: list[tuple[str, int, int]] = field(default_factory=list)
    val_index: list[tuple[str, int, int]] = field(default_factory=list)
    n_duplicates: int = 0

    @property
    def n_documents(self) -> dict[str, int]:
        return {"train": len(self.train_index), "val": len(self.val_index)}


def is_validation(doc_id: str, val_fraction: float) -> bool:
    """True if the document with this id belongs to the validation split (sha256 of the id < fraction)."""
    h = int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "big")
    return h < val_fraction * 2**64


def split_documents(docs: Iterable[Document], val_fraction: float) -> SplitText:
    """Drop empty and exact-duplicate documents (first one wins), split by id hash, join with DOC_SEPARATOR."""
    seen: set[bytes] = set()
    parts: dict[str, list[bytes]] = {"train": [], "val": []}
    index: dict[str, list[tuple[str, int, int]]] = {"train": [], "val": []}
    sizes = {"train": 0, "val": 0}
    sep = DOC_SEPARATOR.encode("utf-8")
    duplicates = 0
    for doc in docs:
        data = doc.text.encode("utf-8")
        if not data.strip():
            continue
        digest = hashlib.sha256(data).digest()
        if digest in seen:
            duplicates += 1
            continue
        seen.add(digest)
        split = "val" if is_validation(doc.id, val_fraction) else "train"
        if parts[split]:
            parts[split].append(sep)
            sizes[split] += len(sep)
        start = sizes[split]
        parts[split].append(data)
        sizes[split] += len(data)
        index[split].append((doc.id, start, sizes[split]))
    return SplitText(
        train=b"".join(parts["train"]),
        val=b"".join(parts["val"]),
        train_index=index["train"],
        val_index=index["val"],
        n_duplicates=duplicates,
    )


def blank_line_documents(text: str, source: str) -> list[Document]:
    """One file of many texts: each run of lines between blank lines is a document, id `source#i`."""
    chunks = (c.strip() for c in _BLANK_RUNS.split(text.replace("\r\n", "\n")))
    return [Document(f"{source}#{i}", c) for i, c in enumerate(c for c in chunks if c)]


def wikitext_articles(lines: Iterable[str]) -> Iterator[str]:
    """Group WikiText rows (one line each, as the HF `wikitext` sets store them) into whole articles.

    An article starts at a top-level heading line " = Title = "; section headings (" = = x = = ") stay
    inside it. Without this every line would be a "document" and the split would cut articles in two.
    """
    article: list[str] = []
    for line in lines:
        if _WIKITEXT_TITLE.match(line.rstrip("\n")) and any(a.strip() for a in article):
            yield "".join(article).strip()
            article = []
        article.append(line if line.endswith("\n") else line + "\n")
    if any(a.strip() for a in article):
        yield "".join(article).strip()


def records_to_documents(
    records: Iterable[Mapping[str, Any]],
    source: str,
    text_field: str | None = None,
    max_bytes: int | None = None,
    wikitext: bool = False,
) -> list[Document]:
    """Dataset rows (HF `datasets` or JSONL lines) -> documents; stops after about `max_bytes` of text.

    The text field is `text_field` or the first of TEXT_FIELDS present; the id is the first of ID_FIELDS
    present (prefixed by `source`), else the row number. `wikitext=True` groups line rows into articles.
    """
    rows = _texts_and_ids(records, source, text_field)
    if wikitext:
        rows = ((f"{source}#article{i}", t) for i, t in enumerate(wikitext_articles(t for _, t in rows)))
    docs, total = [], 0
    for doc_id, text in rows:
        text = text.strip()
        if not text:
            continue
        docs.append(Document(doc_id, text))
        total += len(text.encode("utf-8"))
        if max_bytes is not None and total >= max_bytes:
            break
    return docs


def _texts_and_ids(
    records: Iterable[Mapping[str, Any]], source: str, text_field: str | None
) -> Iterator[tuple[str, str]]:
    for i, record in enumerate(records):
        if text_field is None:
            text_field = next((f for f in TEXT_FIELDS if isinstance(record.get(f), str)), None)
            if text_field is None:
                raise DataError(
                    f"{source}: records have no text field among {', '.join(TEXT_FIELDS)} "
                    f"(fields: {', '.join(map(str, record))}); give each record a 'text' field"
                )
        text = record.get(text_field)
        if not isinstance(text, str):
            continue
        key = next((str(record[f]) for f in ID_FIELDS if record.get(f) not in (None, "")), None)
        if key is not None and "repo_name" in record:
            key = f"{record['repo_name']}/{key}"
        yield (f"{source}:{key}" if key is not None else f"{source}#{i}"), text
