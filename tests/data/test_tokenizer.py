"""Tokenizers: byte round trip, loading by spec, and the Hugging Face adapter (skipped without `tokenizers`)."""

from __future__ import annotations

import pytest
import torch

from k1.data import ByteTokenizer, DataConfig, HFTokenizer, load_corpus, load_tokenizer
from k1.errors import DataError

TEXTS = ["", "hello world", "naïve café — 東京 🚀\n\ttabs", "def f(x):\n    return x + 1\n"]


@pytest.mark.parametrize("text", TEXTS)
def test_byte_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_byte_decode_replaces_broken_utf8():
    tok = ByteTokenizer()
    ids = tok.encode("é")[:1]  # half a character, as a random window may cut it
    assert tok.decode(ids) == "\ufffd"
    assert (tok.name, tok.vocab_size) == ("byte", 256)


def test_load_tokenizer_byte_and_missing_path(tmp_path, one_line):
    assert isinstance(load_tokenizer("byte"), ByteTokenizer)
    with pytest.raises(DataError) as e:
        load_tokenizer(str(tmp_path / "nope.json"))
    assert "nope.json" in one_line(e)


@pytest.fixture
def bpe_file(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS * 50 + ["the cat sat on the mat"] * 50, trainer)
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return path


def test_hf_tokenizer_round_trip(bpe_file):
    tok = load_tokenizer(str(bpe_file))
    assert isinstance(tok, HFTokenizer) and tok.vocab_size > 256
    for text in TEXTS:
        assert tok.decode(tok.encode(text)) == text
    long_text = "the cat sat on the mat\n" * 5000  # longer than one encode chunk
    assert tok.decode(tok.encode(long_text)) == long_text


def test_hf_tokenizer_corpus_is_int32(bpe_file, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(40):
        (folder / f"{i}.txt").write_text(f"the cat sat on the mat number {i}\n" * 20)
    cfg = DataConfig(source="files", domains=["cats"], paths={"cats": str(folder)}, tokenizer=str(bpe_file))
    corpus = load_corpus(cfg)
    split = corpus.domains["cats"]
    assert split.train.dtype == torch.int32 and split.val.dtype == torch.int32
    assert split.val_bytes_per_token > 1.0  # merges make tokens longer than a byte
    assert corpus.vocab_size == corpus.tokenizer.vocab_size
