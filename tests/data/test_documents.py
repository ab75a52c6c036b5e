"""Documents, the document-level split, the shared record path (HF rows / JSONL) and text cleaning."""

from __future__ import annotations

import random

import pytest

from k1.data import (
    DOC_SEPARATOR,
    Document,
    blank_line_documents,
    is_validation,
    normalise_code,
    normalise_prose,
    records_to_documents,
    split_documents,
    strip_rst,
    unwrap_paragraphs,
    wikitext_articles,
)
from k1.errors import DataError


def make_docs(n: int) -> list[Document]:
    return [Document(f"doc-{i}", f"text of document {i}. " * (1 + i % 5)) for i in range(n)]


def test_is_validation_is_deterministic_and_near_fraction():
    ids = [f"id{i}" for i in range(20_000)]
    first = [is_validation(i, 0.1) for i in ids]
    assert first == [is_validation(i, 0.1) for i in ids]
    assert 0.09 < sum(first) / len(ids) < 0.11


def test_split_is_by_document_and_order_independent():
    docs = make_docs(500)
    split = split_documents(docs, 0.2)
    train_ids = {d for d, _, _ in split.train_index}
    val_ids = {d for d, _, _ in split.val_index}
    assert train_ids.isdisjoint(val_ids) and len(train_ids) + len(val_ids) == 500
    assert val_ids == {d.id for d in docs if is_validation(d.id, 0.2)}
    shuffled = docs[:]
    random.Random(0).shuffle(shuffled)
    assert {d for d, _, _ in split_documents(shuffled, 0.2).val_index} == val_ids


def test_split_index_reads_documents_back_and_joins_with_separator():
    docs = make_docs(50)
    split = split_documents(docs, 0.3)
    by_id = {d.id: d.text for d in docs}
    for data, index in ((split.train, split.train_index), (split.val, split.val_index)):
        for doc_id, start, end in index:
            assert data[start:end].decode() == by_id[doc_id]
        assert data == DOC_SEPARATOR.join(by_id[d] for d, _, _ in index).encode()


def test_split_drops_empty_and_exact_duplicates():
    docs = [Document("a", "same text"), Document("b", "same text"), Document("c", "  \n "), Document("d", "other")]
    split = split_documents(docs, 0.5)
    assert split.n_duplicates == 1
    assert sorted(d for d, _, _ in split.train_index + split.val_index) == ["a", "d"]


def test_blank_line_documents():
    docs = blank_line_documents("one\nstill one\n\n\n  \ntwo\r\n\r\nthree\n", source="f.txt")
    assert [d.text for d in docs] == ["one\nstill one", "two", "three"]
    assert [d.id for d in docs] == ["f.txt#0", "f.txt#1", "f.txt#2"]


def test_wikitext_rows_group_into_articles():
    rows = ["", " = Alpha = \n", "", " Alpha is first . \n", " = = History = = \n", " Old . \n",
            " = Beta = \n", " Beta is second . \n"]
    articles = list(wikitext_articles(rows))
    assert len(articles) == 2
    assert articles[0].startswith("= Alpha =") and "= = History = =" in articles[0]
    assert articles[1].startswith("= Beta =")


def test_records_to_documents_fields_ids_and_budget():
    rows = [{"id": "x1", "abstract": "first abstract"}, {"id": "x2", "abstract": "second"},
            {"id": "x3", "abstract": ""}, {"id": "x4", "abstract": "fourth"}]
    docs = records_to_documents(rows, source="arxiv")
    assert [(d.id, d.text) for d in docs] == [("arxiv:x1", "first abstract"), ("arxiv:x2", "second"),
                                              ("arxiv:x4", "fourth")]
    assert len(records_to_documents(rows, source="arxiv", max_bytes=10)) == 1
    code = records_to_documents([{"repo_name": "r", "path": "a.py", "content": "x = 1"}], source="gh")
    assert code[0].id == "gh:r/a.py"
    anonymous = records_to_documents([{"text": "t"}], source="s")
    assert anonymous[0].id == "s#0"


def test_records_without_text_field_raise(one_line):
    with pytest.raises(DataError) as e:
        records_to_documents([{"id": 1, "label": 3}], source="bad")
    assert "text" in one_line(e)


def test_records_wikitext_mode():
    rows = [{"text": t} for t in [" = A = \n", " a . \n", " = B = \n", " b . \n"]]
    docs = records_to_documents(rows, source="wikitext", wikitext=True)
    assert [d.text for d in docs] == ["= A = \n a .", "= B = \n b ."]


def test_normalise_prose():
    raw = "A chair ( ) is a\u00a0seat  <b>with</b> legs &amp; a back (, also x < 2).\n\n\nSecond  paragraph. "
    assert normalise_prose(raw) == "A chair is a seat with legs & a back (also x < 2).\nSecond paragraph."


def test_normalise_code_keeps_indentation():
    code = "def f():\r\n    return 1   \n\n\n\n\nclass A:\n\tpass\n"
    assert normalise_code(code) == "def f():\n    return 1\n\nclass A:\n\tpass"


def test_strip_rst():
    rst = (
        ".. _label:\n\nTitle\n=====\n\nUse :func:`~os.path.join` or :ref:`the guide <guide>`, see "
        "`Python <https://python.org>`_ and ``code`` with **bold** and *emph*.\n\n"
        ".. function:: spam(eggs)\n   :noindex:\n\n   Spam the eggs.\n\n.. note::\n\n   Careful.\n\n.. math:: y = w x\n"
    )
    text = strip_rst(rst)
    assert "Use os.path.join or the guide, see Python and code with bold and emph." in text
    assert "spam(eggs)" in text and "Spam the eggs." in text and "Careful." in text and "y = w x" in text
    for leftover in ("=====", ".. ", ":func:", "``", "**", ":noindex:", "_label"):
        assert leftover not in text


def test_unwrap_paragraphs():
    assert unwrap_paragraphs("It is a truth\nuniversally acknowledged.\n\nCHAPTER 2\n") == (
        "It is a truth universally acknowledged.\nCHAPTER 2"
    )
