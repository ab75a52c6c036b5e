"""`k1 compare`: compare.json carries its provenance, the table warns about load, progress bars name the row."""

import io
import json
import platform

import pytest
import torch
from rich.console import Console

from k1 import __version__
from k1.data import load_corpus
from k1.experiments.compare import read_compare, run_compare
from k1.testing import tiny_config


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    base = tiny_config(root / "data", ["train.steps=6", "train.log_every=3", "train.eval_every=3"])
    out = root / "cmp"
    console = io.StringIO()
    rows = run_compare(base, out, ["attribution", "k1-auto"], console=Console(file=console, width=200),
                       preset="tiny")
    return base, out, rows, console.getvalue()


def test_compare_json_holds_the_rows_with_their_provenance(compared):
    base, out, rows, _ = compared
    c = json.loads((out / "compare.json").read_text())
    assert c["rows"] == rows and [r["policy"] for r in rows] == ["gpt", "attribution", "k1-auto"]
    assert c["seed"] == base.train.seed and c["preset"] == "tiny"
    assert c["setting"]["steps"] == 6 and c["setting"]["branching"] == list(base.model.branching)
    assert c["setting"]["device"] == "cpu"
    unigram = load_corpus(base.data).unigram_bits_per_byte()
    assert c["unigram"]["domains"] == pytest.approx(unigram)
    assert c["unigram"]["val_bpb"] == pytest.approx(sum(unigram.values()) / len(unigram))
    assert c["threads"] == torch.get_num_threads()
    assert c["versions"] == {"k1": __version__, "python": platform.python_version(), "torch": torch.__version__,
                             "torch_cuda": torch.version.cuda}
    assert c["wall_s"] >= sum(r["wall_s"] for r in rows) - 0.5 and all(r["wall_s"] > 0 for r in rows)
    assert read_compare(out / "compare.json") == c


def test_an_older_compare_json_of_rows_only_still_reads(compared, tmp_path):
    _, _, rows, _ = compared
    (tmp_path / "compare.json").write_text(json.dumps(rows))
    assert read_compare(tmp_path / "compare.json") == {"rows": rows}


def test_the_tables_say_tokens_per_s_depends_on_load(compared):
    _, out, _, printed = compared
    md = (out / "compare.md").read_text()
    for text in (md, printed):
        assert "Tokens/s depends on the machine and its load" in text
    n = torch.get_num_threads()
    assert f"{n} thread{'' if n == 1 else 's'}," in md and f"torch {torch.__version__}" in md
    assert "| unigram entropy |" in md and "preset `tiny`" in md


def test_progress_label_names_the_row(tmp_path, capfd):
    base = tiny_config(tmp_path / "data", ["train.steps=2", "train.log_every=1", "train.eval_every=2"],
                       train={"recorders": ["progress", "metrics"]})
    run_compare(base, tmp_path / "cmp", ["dense", "k1-auto"], console=Console(file=io.StringIO()))
    shown = capfd.readouterr().out
    assert "gpt (dense)" in shown and "k1-auto (attribution)" in shown
    assert "dense (dense)" not in shown  # a row named after its policy is shown once
