"""`k1 report` on real run, compare and continual directories: every plot present, absent data said plainly."""

import base64
import io
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="k1 report draws its plots with matplotlib")

from rich.console import Console  # noqa: E402

from k1.engine.model.shape import TreeShape  # noqa: E402
from k1.engine.run.train import Trainer  # noqa: E402
from k1.errors import CheckpointError  # noqa: E402
from k1.report import write_report  # noqa: E402
from k1.report.html import load_run, selection_matrix, trust_matrix  # noqa: E402
from k1.testing import tiny_config  # noqa: E402

PLOT = re.compile(r'<figure class="plot" data-plot="([^"]+)"><img src="data:image/png;base64,([^"]+)"')


def plots_in(page: str) -> dict[str, bytes]:
    """data-plot marker → decoded PNG bytes."""
    return {key: base64.b64decode(data) for key, data in PLOT.findall(page)}


def absences(page: str) -> set[str]:
    return set(re.findall(r'class="absent" data-absent="([^"]+)"', page))


def assert_self_contained(page: str) -> None:
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page
    for key, png in plots_in(page).items():
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000, key


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    cfg = tiny_config(root / "data", ["train.steps=12", "train.log_every=4", "train.eval_every=6"],
                      policy={"name": "attribution"})
    Trainer(cfg, root / "run", quiet=True).fit()
    return root / "run"


@pytest.fixture(scope="module")
def reshaped_run(tmp_path_factory):
    """Autonomy on from step 0 with a negative break threshold: trials commit and reshape the tree."""
    root = tmp_path_factory.mktemp("reshape")
    cfg = tiny_config(root / "data", ["train.steps=24", "train.log_every=4", "train.eval_every=8",
                                      "autonomy.enabled=true", "autonomy.phase2_step=0", "autonomy.check_every=6",
                                      "autonomy.trial_steps=1", "autonomy.break_epsilon=-1.0"],
                      policy={"name": "hybrid"})
    Trainer(cfg, root / "run", quiet=True).fit()
    return root / "run"


def test_run_report_has_every_plot_and_says_what_is_absent(run_dir):
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    page = path.read_text()
    assert_self_contained(page)
    assert set(plots_in(page)) == {"loss-curves", "params-changed", "selection-heatmap", "trust"}
    # no events and no specialize.json in a plain 12-step run: one line each, no plot
    assert absences(page) == {"events", "specialisation"}
    assert f"k1 specialize --run {run_dir}" in page
    tree = re.search(r'<pre data-tree="last">(.*?)</pre>', page, re.S).group(1)
    assert tree.startswith("step 12  policy attribution") and "blame path: root →" in tree
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"{summary['val_bpb']:.3f}" in page
    rows = [json.loads(line) for line in open(run_dir / "attribution.jsonl") if '"event"' not in line]
    names, steps, m = trust_matrix(load_run(run_dir))
    assert steps == [r["step"] for r in rows]
    assert names == TreeShape.from_dict(json.loads((run_dir / "shape.json").read_text())).names()
    assert np.array_equal(m, np.array([r["trust"] for r in rows]).T)


def test_specialisation_appears_and_a_run_without_trust_says_so(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("checkpoints", "report.html"))
    rows = [json.loads(line) for line in open(run / "attribution.jsonl")]
    (run / "attribution.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "trust"}) + "\n"
                                                   for r in rows))
    agents = json.loads((run / "shape.json").read_text())["agents"]
    names, domains = [a[1] for a in agents], ["code", "prose", "science"]
    A, D = len(names), len(domains)
    spec = {"domains": domains, "agents": names,
            "gate_share": [[1 / A] * D for _ in names], "ablation_dloss": [[0.01 * (i - j) for j in range(D)] for i in range(A)],
            "blame_share": [[1 / A] * D for _ in names], "score": [0.1 * i for i in range(A)],
            "ci_low": [0.1 * i - 0.05 for i in range(A)], "ci_high": [0.1 * i + 0.05 for i in range(A)],
            "p_value": [0.5 / (i + 1) for i in range(A)], "specialist_domain": [domains[i % D] for i in range(A)]}
    (run / "specialize.json").write_text(json.dumps(spec))
    page = write_report(run, tmp_path / "out" / "r.html").read_text()
    assert_self_contained(page)
    assert set(plots_in(page)) == {"loss-curves", "params-changed", "selection-heatmap", "specialization-ablation",
                                   "specialization-gate"}
    assert absences(page) == {"events", "trust"}
    top = re.search(r"Top specialists.*?<tbody>\s*<tr><td class=\"l\">([^<]+)</td>", page, re.S).group(1)
    assert top == names[-1]  # the highest score leads the table


def test_a_run_logged_without_attribution_says_which_sections_are_missing(tmp_path):
    cfg = tiny_config(tmp_path / "data", ["train.steps=8", "train.log_every=4", "train.eval_every=4"],
                      train={"recorders": ["metrics"]})
    Trainer(cfg, tmp_path / "run", quiet=True).fit()
    page = write_report(tmp_path / "run").read_text()
    assert_self_contained(page)
    assert set(plots_in(page)) == {"loss-curves"}  # from metrics.jsonl alone
    assert absences(page) == {"params-changed", "selection", "trust", "events", "attribution-tree", "specialisation"}


def test_reshaped_run_shows_events_and_every_agent_it_ever_had(reshaped_run):
    page = write_report(reshaped_run).read_text()
    assert_self_contained(page)
    assert {"loss-curves", "params-changed", "selection-heatmap", "events-timeline"} <= set(plots_in(page))
    events = [json.loads(line) for line in open(reshaped_run / "attribution.jsonl") if '"event"' in line]
    shown = [e for e in events if e["event"] not in ("diagnostics", "proposals")]
    table = page[page.index('data-section="events"'):page.index('data-section="attribution-tree"')]
    assert table.count("<tr>") == len(shown) + 1  # header + one row per event
    commits = [e for e in shown if e.get("decision") == "commit"]
    assert commits, "the scenario should commit at least one structural change"

    run = load_run(reshaped_run)
    names, steps, m = selection_matrix(run)
    first, last = run.names_at(1, len(run.steps[0]["grad_rms"])), run.steps[-1]
    final = run.names_at(last["step"], len(last["grad_rms"]))
    assert set(first) | set(final) <= set(names) and set(first) != set(final)
    for j, r in enumerate(run.steps):
        for i, n in enumerate(names):
            alive = run.names_at(r["step"], len(r["grad_rms"]))
            expected = 1.0 if n in r["selected"] else (0.0 if alive is None or n in alive else math.nan)
            assert m[i, j] == expected or (math.isnan(expected) and math.isnan(m[i, j])), (n, r["step"])
    assert np.isnan(m).any()  # some agent was absent for part of the run


def test_compare_report_overlays_every_row(tmp_path, monkeypatch):
    from k1.experiments.compare import run_compare

    monkeypatch.chdir(tmp_path)  # the user names the directory relatively, as `k1 compare` does by default
    base = tiny_config(tmp_path / "data", ["train.steps=8", "train.log_every=4", "train.eval_every=4"])
    out = Path("cmp")
    rows = run_compare(base, out, ["attribution", "k1-auto"], quiet=True, console=Console(file=io.StringIO()))
    page = write_report(out).read_text()
    assert_self_contained(page)
    assert set(plots_in(page)) == {"compare-val-curves", "compare-train-loss", "compare-params-changed"}
    assert not absences(page)
    for r in rows:
        assert f"<td class=\"l\">{r['policy']}</td>" in page and f"{r['val_bpb']:.3f}" in page
    c = json.loads((out / "compare.json").read_text())
    unigram = re.search(r'<td class="l">unigram entropy</td><td class="l">—</td><td>—</td><td>([0-9.]+)</td>', page)
    assert unigram and unigram.group(1) == f"{c['unigram']['val_bpb']:.3f}"
    assert "Tokens/s depends on the machine and its load" in page and f"{c['threads']} thread" in page
    assert str(tmp_path) not in page  # no absolute path (a home folder) in a page meant to be shared
    # k1-auto's trials never start in 8 steps, so it is attribution step for step: the caption says so
    assert "k1-auto is identical to attribution" in page
    # a row whose run directory is gone is named, and the others are still drawn
    shutil.rmtree(out / "gpt")
    page = write_report(out).read_text()
    assert absences(page) == {"compare-runs"} and "<code>gpt</code>" in page
    assert "compare-val-curves" in plots_in(page)


def test_an_older_compare_json_of_rows_only_still_renders(tmp_path):
    rows = [{"policy": "gpt", "model": "DenseGPT", "val_loss": 2.5, "val_bpb": 3.713, "domains": {}}]
    (tmp_path / "compare.json").write_text(json.dumps(rows))
    page = write_report(tmp_path).read_text()
    assert "3.713" in page and "unigram entropy" not in page


def test_overlaid_lines_each_get_their_own_style_and_identical_ones_are_named():
    from k1.report import plots

    same = [(s, {"val_bpb": 4.0 - 0.1 * s, "domains": {}}) for s in range(1, 6)]
    series = {name: list(same) for name in ["gpt", "dense", "attribution", "hybrid", "trust", "random", "k1-auto"]}
    series["gpt"] = [(s, {"val_bpb": 3.0, "domains": {}}) for s in range(1, 6)]
    fig = plots.overlaid_curves(series, [("mean", "")], "t", "bpb", "bpb")
    lines = fig.axes[0].get_lines()
    assert len({(ln.get_linestyle(), ln.get_marker()) for ln in lines}) == len(series)
    labels = [ln.get_label() for ln in lines]
    assert labels[0] == "gpt" and labels[1] == "dense" and labels[-1] == "k1-auto (= dense)"


def test_continual_report_has_a_matrix_per_strategy(tmp_path):
    domains = ["prose", "code", "science"]
    rng = np.random.default_rng(0)

    def metric():
        return {"mean": float(rng.normal()), "std": float(abs(rng.normal()))}

    strategies = [{"name": name, "R": {"mean": (3 + rng.random((3, 3))).tolist(), "std": rng.random((3, 3)).tolist()},
                   **{k: metric() for k in ("final_avg", "bwt", "forgetting_first", "forgetting_max", "fwt")}}
                  for name in ("finetune", "ewc", "k1")]
    c = {"domains": domains, "seeds": [0, 1], "steps_per_domain": 50, "metric": "bpb", "strategies": strategies}
    (tmp_path / "continual.json").write_text(json.dumps(c))
    page = write_report(tmp_path).read_text()
    assert_self_contained(page)
    assert set(plots_in(page)) == {"continual-finetune", "continual-ewc", "continual-k1", "continual-metrics"}
    for s in strategies:
        assert f"{s['bwt']['mean']:.4f} ± {s['bwt']['std']:.4f}" in page
    assert "run" not in re.findall(r"K-1 ([a-z +]+) report", page)[0]  # no run sections for a continual directory
    assert "Paired over seeds" not in page  # an older continual.json without the paired section still renders

    strategies[2]["strong_specialists"] = {"mean": 2.0, "std": 1.0}
    c["paired"] = [{"candidate": "k1", "reference": "finetune", "metric": "forgetting_max", "seeds": 8,
                    "mean_diff": -0.125, "std_diff": 0.05, "candidate_better": 8, "p_value": 0.0078125}]
    (tmp_path / "continual.json").write_text(json.dumps(c))
    page = write_report(tmp_path).read_text()
    assert "Paired over seeds" in page and "k1 − finetune" in page and "-0.125 ± 0.050" in page
    assert "0.0078" in page and "2.0 ± 1.0" in page


def test_not_a_report_directory_is_a_one_line_error(tmp_path):
    with pytest.raises(CheckpointError, match="pass a run, compare or continual directory"):
        write_report(tmp_path)
    r = subprocess.run([sys.executable, "-m", "k1.cli", "report", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "k1: error:" in r.stderr


def test_cli_writes_the_report_and_prints_its_path(run_dir, tmp_path):
    from typer.testing import CliRunner

    from k1.cli import app

    out = tmp_path / "page.html"
    r = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == str(out) and 'data-plot="loss-curves"' in out.read_text()
