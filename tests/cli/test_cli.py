"""The `k1` command line, run as a real subprocess: train, resume, explain, generate, compare, errors."""

import json

import pytest

from k1.testing.cli import run_k1
from k1.testing.tiny import write_tiny_config_file


k1 = run_k1


@pytest.fixture
def cfg_file(tmp_path):
    return write_tiny_config_file(tmp_path)


def test_train_explain_generate_and_resume(cfg_file, tmp_path):
    run = tmp_path / "run"
    r = k1("train", "--config", cfg_file, "--preset", "tiny", "--policy", "attribution", "--steps", "6",
           "--checkpoint-every", "3", "--out", run, "--quiet")
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 6 and summary["policy"] == "attribution"
    text = k1("explain", "--run", run).stdout
    assert "★ culprit" in text and "blame path: root →" in text and "untouched" in text
    tree = json.loads(k1("explain", "--run", run, "--json", "--step", "2").stdout)
    assert tree["step"] == 2 and len(tree["agents"]) == 7
    assert sum(a["role"] == "culprit" for a in tree["agents"]) == 1
    one = json.loads(k1("explain", "--run", run, "--text", "the old king walked", "--json").stdout)
    assert len(one["agents"]) == 7 and one["blame_path"][0] == "root"
    out = k1("generate", "--run", run, "--prompt", "the ", "--tokens", "20").stdout
    assert out.startswith("the ")
    k1("train", "--resume", run, "--steps", "9", "--quiet")
    steps = [json.loads(x)["step"] for x in open(run / "attribution.jsonl")]
    assert steps == list(range(1, 10))


def test_compare_quick_writes_table_and_json(cfg_file, tmp_path):
    out = tmp_path / "cmp"
    r = k1("compare", "--quick", "--config", cfg_file, "--set", "train.steps=4", "--set", "model.branching=[2, 2]",
           "--set", "model.width=32", "--set", "data.max_train_bytes=50000", "--out", out, "--quiet")
    result = json.loads((out / "compare.json").read_text())
    rows = result["rows"]
    assert result["preset"] == "small" and set(result["unigram"]["domains"]) == set(rows[0]["domains"])
    assert [row["policy"] for row in rows] == ["gpt", "dense", "attribution", "hybrid", "trust", "random", "k1-auto"]
    for row in rows:
        assert {"policy", "val_loss", "val_bpb", "tokens_per_s", "frac_params_changed", "agents_updated"} <= set(row)
    assert rows[0]["frac_params_changed"] > rows[2]["frac_params_changed"]
    assert "unigram" in (out / "compare.md").read_text() and "unigram" in r.stdout
    assert (out / "report.html").is_file()


@pytest.mark.parametrize("args, needle", [
    (["train", "--set", "train.stepz=5"], "train.stepz"),
    (["train", "--set", "train.steps=-1"], "train.steps"),
    (["train", "--policy", "nope"], "nope"),
    (["train", "--config", "/no/such.toml"], "/no/such.toml"),
    (["train", "--preset", "huge"], "huge"),
    (["explain", "--run", "/no/such/run"], "/no/such/run"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, needle):
    r = k1(*args, check=False)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("k1: error:")


def test_malformed_toml_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps = 3")
    r = k1("train", "--config", bad, check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "bad.toml" in r.stderr
