"""Text sources: local folders and files (and JSONL records, the HF path), the built-in cache, and their errors."""

from __future__ import annotations

import importlib.util
import json
import logging

import pytest

from k1.data import DataConfig, file_documents, hf_documents, load_corpus, load_texts
from k1.data import sources
from k1.errors import DataError

HAS_DATASETS = importlib.util.find_spec("datasets") is not None


def files_config(path, **kw) -> DataConfig:
    return DataConfig(source="files", domains=["mine"], paths={"mine": str(path)}, **kw)


@pytest.fixture
def text_folder(tmp_path):
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    for i in range(30):
        (folder / ("sub" if i % 2 else "") / f"note{i}.txt").write_text(f"Note {i}.\n\nIt has two paragraphs.\n")
    (folder / "copy.txt").write_text("Note 0.\n\nIt has two paragraphs.\n")  # exact duplicate of note0
    (folder / "image.bin").write_bytes(b"\x89PNG\0\0\0")
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "secret.txt").write_text("skip me")
    return folder


def test_folder_is_one_document_per_text_file(text_folder):
    docs = file_documents(text_folder, "mine")
    ids = [d.id for d in docs]
    assert "sub/note1.txt" in ids and "note0.txt" in ids
    assert not any(i.endswith(".bin") or "hidden" in i for i in ids)
    assert len(docs) == 31
    texts, manifest = load_texts(files_config(text_folder, val_fraction=0.3))
    entry = manifest["domains"]["mine"]
    assert entry["n_duplicates_removed"] == 1
    assert sum(entry["n_documents"].values()) == 30
    assert texts["mine"].train.count(b"It has two paragraphs.") == entry["n_documents"]["train"]


def test_single_file_splits_on_blank_lines(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("\n\n".join(f"Paragraph {i} of the book." for i in range(200)))
    docs = file_documents(path, "mine")
    assert len(docs) == 200 and docs[3].text == "Paragraph 3 of the book." and docs[3].id == "book.txt#3"
    corpus = load_corpus(files_config(path))
    split = corpus.domains["mine"]
    assert split.train.numel() > split.val.numel() > 0


def test_jsonl_file_goes_through_the_record_path(tmp_path):
    """Local JSONL rows use `records_to_documents`, the same code that reads Hugging Face rows."""
    path = tmp_path / "abstracts.jsonl"
    rows = [{"id": f"2101.{i:05d}", "abstract": f"We study problem {i}."} for i in range(100)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    docs = file_documents(path, "mine")
    assert docs[0].id == "abstracts.jsonl:2101.00000" and docs[0].text == "We study problem 0."
    texts, manifest = load_texts(files_config(path))
    assert sum(manifest["domains"]["mine"]["n_documents"].values()) == 100


def test_bad_jsonl_line(tmp_path, one_line):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(DataError) as e:
        file_documents(path, "mine")
    assert "bad.jsonl:2" in one_line(e)


def test_missing_path(tmp_path, one_line):
    with pytest.raises(DataError) as e:
        load_corpus(files_config(tmp_path / "nowhere"))
    message = one_line(e)
    assert "nowhere" in message and "paths.mine" in message


@pytest.mark.parametrize("make", ["empty_file", "empty_folder", "blank_files"])
def test_empty_corpus(tmp_path, make, one_line):
    if make == "empty_file":
        path = tmp_path / "empty.txt"
        path.write_text("")
    else:
        path = tmp_path / "folder"
        path.mkdir()
        if make == "blank_files":
            (path / "a.txt").write_text("\n\n   \n")
    with pytest.raises(DataError) as e:
        load_corpus(files_config(path))
    assert "0 bytes" in one_line(e)


def test_builtin_auto_builds_when_missing(tmp_path, caplog, builtin_manifest):
    with caplog.at_level(logging.INFO, logger="k1.data.sources"):
        texts, manifest = load_texts(DataConfig(domains=["science"], cache_dir=str(tmp_path)))
    assert "building them now" in caplog.text
    assert list(texts) == ["science"] and (tmp_path / "manifest.json").is_file()
    assert manifest["domains"]["science"]["sha256"] == builtin_manifest["domains"]["science"]["sha256"]


@pytest.mark.skipif(HAS_DATASETS, reason="`datasets` is installed")
def test_hf_without_datasets_says_how_to_install(one_line):
    with pytest.raises(DataError) as e:
        hf_documents("gfissore/arxiv-abstracts-2021", "science", 1000)
    assert "pip install 'k1[hf]'" in one_line(e)


@pytest.mark.skipif(not HAS_DATASETS, reason="needs the `datasets` package")
def test_hf_offline_is_one_data_error(tmp_path, monkeypatch, one_line):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    with pytest.raises(DataError) as e:
        hf_documents("k1-test/definitely-not-cached", "science", 1000)
    assert "k1-test/definitely-not-cached" in one_line(e)


def test_hf_offline_is_detected(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert sources._hf_offline()
