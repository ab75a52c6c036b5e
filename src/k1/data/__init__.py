"""k1.data: text corpora (built-in offline, local files, Hugging Face), tokenizers, and batch sampling.

`build_corpora()` assembles the built-in corpora into a cache; `load_corpus(DataConfig())` returns token
tensors per domain; `BatchSampler` and `eval_windows` cut them into next-token batches.
"""

from k1.data.builtin import DEFAULT_RECIPES, Collection, Recipe
from k1.data.config import DataConfig
from k1.data.corpora import (
    DEFAULT_DOMAINS,
    EXTRA_DOMAINS,
    build_corpora,
    default_cache_dir,
    read_manifest,
)
from k1.data.corpus import Corpus, DomainSplit, encode_bytes, load_corpus, unigram_entropy_bits
from k1.data.documents import (
    DOC_SEPARATOR,
    Document,
    SplitText,
    blank_line_documents,
    is_validation,
    records_to_documents,
    split_documents,
    wikitext_articles,
)
from k1.data.extras import EXTRA_RECIPES
from k1.data.markup import normalise_code, normalise_prose, strip_rst, unwrap_paragraphs
from k1.data.sampler import BatchSampler, check_window, eval_windows
from k1.data.sources import (
    DomainText,
    builtin_documents,
    builtin_texts,
    documents_to_text,
    file_documents,
    hf_documents,
    load_texts,
)
from k1.data.tokenizer import ByteTokenizer, HFTokenizer, Tokenizer, load_tokenizer

__all__ = [
    "DEFAULT_DOMAINS",
    "DEFAULT_RECIPES",
    "DOC_SEPARATOR",
    "EXTRA_DOMAINS",
    "EXTRA_RECIPES",
    "BatchSampler",
    "ByteTokenizer",
    "Collection",
    "Corpus",
    "DataConfig",
    "Document",
    "DomainSplit",
    "DomainText",
    "HFTokenizer",
    "Recipe",
    "SplitText",
    "Tokenizer",
    "blank_line_documents",
    "build_corpora",
    "builtin_documents",
    "builtin_texts",
    "check_window",
    "default_cache_dir",
    "documents_to_text",
    "encode_bytes",
    "eval_windows",
    "file_documents",
    "hf_documents",
    "is_validation",
    "load_corpus",
    "load_texts",
    "load_tokenizer",
    "normalise_code",
    "normalise_prose",
    "read_manifest",
    "records_to_documents",
    "split_documents",
    "strip_rst",
    "unigram_entropy_bits",
    "unwrap_paragraphs",
    "wikitext_articles",
]
