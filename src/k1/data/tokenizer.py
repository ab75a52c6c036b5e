"""Tokenizers: text <-> token ids. The byte tokenizer is the default; Hugging Face tokenizers plug in by path.

Corpus building and sampling live elsewhere (`corpora.py`, `sampler.py`); this file only maps text to ids.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

from k1.errors import DataError

log = logging.getLogger(__name__)

# Long texts are encoded in pieces of about this many characters, cut at line ends, so a
# Hugging Face tokenizer never sees one 10 MB string (slow, and memory-hungry in its pre-tokenizer).
_ENCODE_CHUNK_CHARS = 1 << 16


@runtime_checkable
class Tokenizer(Protocol):
    """What the data layer needs from a tokenizer: a name, a vocabulary size and the two verbs."""

    name: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens (vocab 256): no training, no unknown tokens, bits per token = bits per byte."""

    name = "byte"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        # A random window can start or end inside a multi-byte character: replace, never raise.
        return bytes(ids).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer()"


class HFTokenizer:
    """Adapter for a Hugging Face `tokenizers` file (tokenizer.json); special tokens are never added."""

    def __init__(self, path: str | Path) -> None:
        try:
            from tokenizers import Tokenizer as _HFTokenizer  # lazy: an optional extra
        except ImportError as e:
            raise DataError(
                f"tokenizer {str(path)!r} needs the 'tokenizers' package; install it with: pip install 'k1[hf]'"
            ) from e
        self.path = Path(path)
        try:
            self._tok = _HFTokenizer.from_file(str(self.path))
        except Exception as e:  # tokenizers raises a bare Exception on a bad file
            raise DataError(
                f"could not read tokenizer file {str(self.path)!r} ({_first_line(e)}); "
                "give a Hugging Face tokenizer.json or 'byte'"
            ) from e
        self.name = f"hf:{self.path.name}"
        self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        if len(text) <= _ENCODE_CHUNK_CHARS:
            return list(self._tok.encode(text, add_special_tokens=False).ids)
        encodings = self._tok.encode_batch(_line_chunks(text), add_special_tokens=False)
        return [i for enc in encodings for i in enc.ids]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def __repr__(self) -> str:
        return f"HFTokenizer({str(self.path)!r}, vocab_size={self.vocab_size})"


def load_tokenizer(spec: str) -> ByteTokenizer | HFTokenizer:
    """Build a tokenizer from a config string: "byte", or a path to a Hugging Face tokenizer.json."""
    if spec == "byte":
        return ByteTokenizer()
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise DataError(
            f"tokenizer {spec!r} is neither 'byte' nor an existing tokenizer.json file; "
            "set data.tokenizer to 'byte' or to the path of a tokenizer.json"
        )
    return HFTokenizer(path)


def _line_chunks(text: str) -> list[str]:
    """Cut `text` into pieces of about `_ENCODE_CHUNK_CHARS`, each ending at a line end (lossless)."""
    chunks, start = [], 0
    while start < len(text):
        end = text.find("\n", start + _ENCODE_CHUNK_CHARS)
        end = len(text) if end < 0 else end + 1
        chunks.append(text[start:end])
        start = end
    return chunks


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
