"""A compare row trained while other work competed for the cores is marked: its tokens/s (1,202 for DenseGPT
against ~6,000 for the others in one loaded run) measured the machine, not the code."""

import json
import time

from k1.experiments.compare import LoadMeter, to_markdown, under_load_note
from k1.report import write_report


def _meter(load: float, threads: int = 1, cores: int = 2) -> LoadMeter:
    with LoadMeter(threads, every_s=0.01, sample=lambda: (load, load, load), cores=cores) as m:
        time.sleep(0.05)
    return m


def test_the_load_meter_marks_a_row_only_when_others_compete_for_the_cores():
    assert _meter(1.0).result() == {"load_avg": 1.0, "under_load": False}  # the row alone on 2 cores
    assert _meter(2.0, threads=2).result()["under_load"] is False  # its own two threads
    assert _meter(3.1).result()["under_load"] is True  # two other jobs on 2 cores
    assert _meter(3.1, cores=16).result()["under_load"] is False  # cores to spare
    assert LoadMeter(1, sample=None).result() == {"load_avg": None, "under_load": None}  # no load average here


def _result(under_load: bool) -> dict:
    row = {"policy": "gpt", "model": "DenseGPT", "val_loss": 2.5, "val_bpb": 3.713, "domains": {"prose": {"bpb": 3.7}},
           "tokens_per_s": 1202.0, "frac_params_changed": 1.0, "agents_updated": 4.0, "agents": 4,
           "load_avg": 3.4, "under_load": under_load}
    return {"rows": [row], "unigram": {"val_bpb": 4.5, "domains": {"prose": 4.5}}, "seed": 1, "preset": "tiny",
            "setting": {"context": 8, "batch_size": 2, "steps": 3, "branching": [2], "width": 8, "wiring": "tree",
                        "device": "cpu", "domains": ["prose"]},
            "threads": 1, "wall_s": 3.0, "versions": {"k1": "x", "python": "3", "torch": "2"}}


def test_tables_and_the_report_mark_a_row_measured_under_load(tmp_path):
    md = to_markdown(_result(True))
    assert "| 1,202* |" in md and "gpt 3.4" in md and "not how fast the code is" in md
    assert "1,202*" not in to_markdown(_result(False)) and under_load_note(_result(False)["rows"]) == ""
    (tmp_path / "compare.json").write_text(json.dumps(_result(True)))
    page = write_report(tmp_path).read_text()
    assert "1,202*" in page and "not how fast the code is" in page
