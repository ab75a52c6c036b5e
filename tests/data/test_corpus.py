"""Corpus loading (dtypes, truncation, exact bytes) and the unigram baselines, with hand-checkable cases."""

from __future__ import annotations

import math

import pytest
import torch

from k1.data import ByteTokenizer, Corpus, DataConfig, DomainSplit, default_cache_dir, load_corpus, unigram_entropy_bits


def test_builtin_corpus_is_the_cached_bytes(builtin_corpus):
    assert list(builtin_corpus.domains) == ["prose", "code", "science"]
    assert builtin_corpus.vocab_size == 256 and builtin_corpus.tokenizer.name == "byte"
    for name, split in builtin_corpus.domains.items():
        assert split.train.dtype == torch.uint8 and split.train.dim() == 1
        assert split.val_bytes_per_token == 1.0
        assert bytes(split.val.numpy()) == (default_cache_dir() / name / "val.txt").read_bytes()
        assert builtin_corpus.manifest["domains"][name]["bytes"]["train"] == split.train.numel()


def test_max_train_bytes_truncates_train_only(builtin_manifest):
    corpus = load_corpus(DataConfig(domains=["prose", "code"], max_train_bytes=50_000))
    for name, split in corpus.domains.items():
        assert split.train.numel() == 50_000
        assert split.val.numel() == builtin_manifest["domains"][name]["bytes"]["val"]


@pytest.mark.parametrize(
    ("tokens", "bits"),
    [([7] * 10, 0.0), ([0, 1] * 8, 1.0), ([0, 1, 2, 3] * 5, 2.0), ([0, 0, 0, 1], -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))],
)
def test_unigram_entropy_bits(tokens, bits):
    assert unigram_entropy_bits(torch.tensor(tokens, dtype=torch.uint8)) == pytest.approx(bits)
    assert unigram_entropy_bits(torch.tensor(tokens, dtype=torch.int32)) == pytest.approx(bits)


def test_unigram_bits_per_byte_by_hand():
    # train: token 0 three times, token 1 once; add-one over vocab 2 -> p(0) = 4/6, p(1) = 2/6.
    split = DomainSplit(torch.tensor([0, 0, 0, 1], dtype=torch.int32), torch.tensor([0, 1], dtype=torch.int32), 2.0)
    corpus = Corpus({"d": split}, ByteTokenizer(), 2, {})
    bits_per_token = -(math.log2(4 / 6) + math.log2(2 / 6)) / 2
    assert corpus.unigram_bits_per_byte()["d"] == pytest.approx(bits_per_token / 2.0)


def test_unigram_baseline_on_real_text(builtin_corpus):
    for name, bpb in builtin_corpus.unigram_bits_per_byte().items():
        entropy = unigram_entropy_bits(builtin_corpus.domains[name].val)
        assert 3.0 < entropy <= bpb < 6.0, name  # cross-entropy >= entropy; bytes of text sit near 4-5 bits
