"""`RunDir`: the layout of a run directory. Every file a run writes, and every reader of one (`k1 explain`,
`k1 report`, `k1 generate`, `--resume`, the experiments), goes through this class, so the names and the
rules about them live in one place:

    config.toml         the resolved config: alone, it reproduces the run
    metrics.jsonl       training and evaluation rows (recorder `metrics`)
    attribution.jsonl   one row per step: blame, selection, scales; and every event (recorder `attribution`)
    shapes.jsonl        the tree's history: one row per change, applying after its step
    shape.json          the current tree
    summary.json/.md    the final numbers and every event (written when the run ends)
    checkpoints/step-N  full run state (`checkpoint.py`); snapshots/step-N: the safety ring on disk
    tensorboard/        recorder `tensorboard`
    specialize.json/.png  `k1 specialize` (agent × domain specialisation), read by `k1 report`
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from k1.common.files import write_atomic
from k1.engine.config import RunConfig, dump_config, load_config
from k1.engine.model.shape import TreeShape
from k1.engine.run.checkpoint import is_complete
from k1.errors import CheckpointError

log = logging.getLogger(__name__)


class RunDir:
    CONFIG, METRICS, ATTRIBUTION = "config.toml", "metrics.jsonl", "attribution.jsonl"
    SHAPES, SHAPE, SUMMARY_JSON, SUMMARY_MD = "shapes.jsonl", "shape.json", "summary.json", "summary.md"
    CHECKPOINTS, SNAPSHOTS, TENSORBOARD = "checkpoints", "snapshots", "tensorboard"
    SPECIALIZE, SPECIALIZE_PNG = "specialize.json", "specialize.png"  # `k1 specialize`, read by the report
    LOGS = (METRICS, ATTRIBUTION, SHAPES)  # step-keyed logs: cut back to the checkpoint's step on resume
    # what a started run leaves before its first checkpoint (removed when it is started over)
    STARTED = (CONFIG, *LOGS, SHAPE, SUMMARY_JSON, SUMMARY_MD)

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def has_logs(self) -> bool:
        """A run has recorded steps here (what `k1 report` looks for)."""
        return (self.path / self.METRICS).is_file() or (self.path / self.ATTRIBUTION).is_file()

    # ---- config ---------------------------------------------------------------------------------------
    def has_config(self) -> bool:
        return (self.path / self.CONFIG).is_file()

    def read_config(self, extra: dict | None = None) -> RunConfig:
        """The run's config (`extra` merged over it, as `load_config` does); none here is a one-line error."""
        if not self.has_config():
            raise CheckpointError(f"{self.path}: no {self.CONFIG}; is it a k1 run directory?")
        return load_config(self.path / self.CONFIG, extra=extra)

    def write_config(self, cfg: RunConfig) -> None:
        write_atomic(self.path / self.CONFIG, dump_config(cfg))

    # ---- the tree's shape ---------------------------------------------------------------------------------
    def write_shape(self, shape: TreeShape, step: int) -> None:
        """shape.json is the current tree; shapes.jsonl its history (a shape applies after its step)."""
        d = shape.to_dict()
        write_atomic(self.path / self.SHAPE, json.dumps(d))
        history = self.path / self.SHAPES
        lines = history.read_text().splitlines() if history.exists() else []
        if lines and json.loads(lines[-1])["shape"] == d:
            return  # unchanged (e.g. a resume): the history records changes only
        with open(history, "a") as f:
            f.write(json.dumps({"step": step, "shape": d}) + "\n")

    def shape_at(self, step: int | None = None) -> TreeShape:
        """The tree as it was during `step` (from the history), else the current one."""
        history = self.path / self.SHAPES
        if step is not None and history.is_file():
            shape = None
            for row in self.read_jsonl(self.SHAPES):
                if row["step"] < step or shape is None:
                    shape = row["shape"]
            if shape is not None:
                return TreeShape.from_dict(shape)
        path = self.path / self.SHAPE
        if not path.is_file():
            raise CheckpointError(f"missing {path}; is {self.path} a k1 run directory?")
        return TreeShape.from_dict(json.loads(path.read_text()))

    # ---- logs and summary ---------------------------------------------------------------------------------
    def open_log(self, name: str):
        """Append to one of `LOGS` (the recorders keep it open for the run)."""
        return open(self.path / name, "a")

    def read_jsonl(self, name: str) -> list[dict]:
        """The rows of a JSONL file here ([] if absent); a line torn by a kill is skipped."""
        path = self.path / name
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                if line.strip():
                    rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def truncate_logs(self, step: int) -> None:
        """Drop log rows written after `step` (they belong to the interrupted tail of the run)."""
        for name in self.LOGS:
            path = self.path / name
            if not path.exists():
                continue
            keep = []
            for line in path.read_text().splitlines():
                try:
                    if line.strip() and json.loads(line).get("step", 0) <= step:
                        keep.append(line)
                except json.JSONDecodeError:  # a line torn by the kill
                    continue
            write_atomic(path, "".join(line + "\n" for line in keep))

    def write_summary(self, summary: dict, markdown: str) -> None:
        write_atomic(self.path / self.SUMMARY_JSON, json.dumps(summary, indent=1))
        write_atomic(self.path / self.SUMMARY_MD, markdown)

    def read_summary(self) -> dict | None:
        path = self.path / self.SUMMARY_JSON
        return json.loads(path.read_text()) if path.is_file() else None

    def clear_started(self) -> None:
        """Remove what a run killed before its first checkpoint left, so it starts over cleanly."""
        for name in self.STARTED:
            (self.path / name).unlink(missing_ok=True)

    # ---- checkpoints ----------------------------------------------------------------------------------
    def checkpoint(self, step: int) -> Path:
        return self.path / self.CHECKPOINTS / f"step-{step}"

    def snapshot(self, step: int) -> Path:
        return self.path / self.SNAPSHOTS / f"step-{step}"

    def checkpoint_dirs(self) -> list[Path]:
        """`step-N` directories, oldest first (temporary `.tmp`/`.old` directories excluded)."""
        root = self.path / self.CHECKPOINTS
        if not root.is_dir():
            return []
        found = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"step-\d+", p.name)]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def has_checkpoint(self) -> bool:
        return any(is_complete(d) for d in self.checkpoint_dirs())

    def latest_checkpoint(self) -> Path:
        """The newest complete checkpoint; incomplete ones are skipped with a one-line warning."""
        for ckpt in reversed(self.checkpoint_dirs()):
            if is_complete(ckpt):
                return ckpt
            log.warning("skipping incomplete checkpoint %s", ckpt)
            print(f"warning: skipping incomplete checkpoint {ckpt}", flush=True)
        raise CheckpointError(f"no complete checkpoint in {self.path / self.CHECKPOINTS}; "
                              "train with --checkpoint-every N")

    def prune_checkpoints(self, keep: int, best: Path | None = None) -> list[Path]:
        """Delete all but the newest `keep` checkpoints (and `best`); 0 keeps everything. → what was deleted."""
        if keep <= 0:
            return []
        doomed = [d for d in self.checkpoint_dirs()[:-keep] if best is None or d != best]
        for d in doomed:
            shutil.rmtree(d, ignore_errors=True)
        return doomed
