"""`RunDir` on real run directories: one list of what a restart clears, logs cut back on resume, the shape
history, and a whole `Trainer` run whose every file is one `RunDir` names."""

import json

import pytest

from k1.engine.model.shape import TreeShape
from k1.engine.run.rundir import RunDir
from k1.engine.run.train import Trainer
from k1.errors import CheckpointError
from k1.testing.tiny import tiny_config


def test_clear_started_removes_every_file_a_run_leaves_before_its_first_checkpoint(tmp_path):
    run = RunDir(tmp_path)
    for name in RunDir.STARTED:
        (tmp_path / name).write_text("x")
    (tmp_path / "notes.txt").write_text("mine")
    run.clear_started()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert RunDir.SUMMARY_JSON in RunDir.STARTED and set(RunDir.LOGS) <= set(RunDir.STARTED)


def test_truncate_logs_keeps_rows_up_to_the_step_and_drops_torn_lines(tmp_path):
    run = RunDir(tmp_path)
    rows = [{"step": s, "loss": 1.0 / s} for s in range(1, 6)]
    (tmp_path / RunDir.METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "lo')
    run.truncate_logs(3)
    assert [r["step"] for r in run.read_jsonl(RunDir.METRICS)] == [1, 2, 3]
    assert not (tmp_path / RunDir.ATTRIBUTION).exists()  # absent logs stay absent


def test_shape_history_records_changes_only(tmp_path):
    run = RunDir(tmp_path)
    a, b = TreeShape.from_branching([2]), TreeShape.from_branching([3])
    run.write_shape(a, 0)
    run.write_shape(a, 5)  # unchanged (a resume): no new row
    run.write_shape(b, 7)
    assert [r["step"] for r in run.read_jsonl(RunDir.SHAPES)] == [0, 7]
    assert run.shape_at(7) == a and run.shape_at(8) == b and run.shape_at() == b


def test_a_missing_config_or_checkpoint_is_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="no config.toml"):
        RunDir(tmp_path).read_config()
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        RunDir(tmp_path).latest_checkpoint()


def test_a_run_writes_only_what_rundir_names(tmp_path):
    cfg = tiny_config(tmp_path / "data", ["train.steps=4", "train.checkpoint_every=2", "train.eval_every=2"])
    Trainer(cfg, tmp_path / "run", quiet=True).fit()
    run = RunDir(tmp_path / "run")
    named = {RunDir.CONFIG, RunDir.METRICS, RunDir.ATTRIBUTION, RunDir.SHAPES, RunDir.SHAPE,
             RunDir.SUMMARY_JSON, RunDir.SUMMARY_MD, RunDir.CHECKPOINTS}
    assert {p.name for p in run.path.iterdir()} == named
    assert [p.name for p in run.checkpoint_dirs()] == ["step-2", "step-4"]
    assert run.read_config() == cfg and run.read_summary()["steps"] == 4
    assert run.has_logs() and run.has_checkpoint()


def test_a_config_written_before_the_recorders_rename_still_reads(tmp_path):
    (tmp_path / RunDir.CONFIG).write_text('[train]\ncallbacks = ["metrics"]\nsteps = 3\n')
    cfg = RunDir(tmp_path).read_config()
    assert cfg.train.recorders == ["metrics"] and cfg.train.steps == 3
    RunDir(tmp_path).write_config(cfg)
    assert "recorders" in (tmp_path / RunDir.CONFIG).read_text()
