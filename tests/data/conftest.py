"""Shared fixtures for the data tests: the real built-in corpora (built once per session) and tiny corpora.

The built-in corpora go to the default cache ($K1_DATA_DIR or ~/.cache/k1/corpora), the same one
`k1 data build` fills on a CI machine before the tests; building is idempotent, so a built cache costs
only a checksum pass here.
"""

from __future__ import annotations

import pytest
import torch

from k1.data import ByteTokenizer, Corpus, DataConfig, DomainSplit, build_corpora, load_corpus
from k1.errors import DataError


@pytest.fixture(scope="session")
def builtin_manifest() -> dict:
    return build_corpora(progress=False)


@pytest.fixture(scope="session")
def builtin_corpus(builtin_manifest) -> Corpus:
    return load_corpus(DataConfig())


@pytest.fixture
def counting_corpus() -> Corpus:
    """Three domains whose token streams are disjoint counting sequences: a window's first token says where it began."""
    domains = {
        name: DomainSplit(
            train=torch.arange(base, base + 5000, dtype=torch.int32),
            val=torch.arange(base + 5000, base + 6000, dtype=torch.int32),
            val_bytes_per_token=1.0,
        )
        for name, base in (("a", 0), ("b", 10_000), ("c", 20_000))
    }
    return Corpus(domains, ByteTokenizer(), 30_000, {"source": "test"})


def _one_line(excinfo: pytest.ExceptionInfo) -> str:
    assert isinstance(excinfo.value, DataError)
    message = str(excinfo.value)
    assert message and "\n" not in message, message
    return message


@pytest.fixture
def one_line():
    """`one_line(excinfo)`: the message of a raised DataError, checked to be a single line."""
    return _one_line
