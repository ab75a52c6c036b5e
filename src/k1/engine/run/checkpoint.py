"""Checkpoints: `checkpoints/step-<N>/` with safetensors for tensors and JSON for the rest.

model.safetensors   model parameters (weights only: what `k1 generate`, `explain` and the pool load)
state.safetensors   every other tensor of the run state (optimizer, trust, RNGs, windows, snapshot ring)
state.json          the rest of the run state, with each tensor replaced by its key in state.safetensors

Crash safety: a checkpoint is written into `step-<N>.tmp/`, each file fsynced, then the directory is
renamed into place and its parent fsynced. A process killed mid-save leaves only a `.tmp` directory, which
`latest_checkpoint` ignores (and the next save removes); a directory that is nevertheless incomplete or
unreadable is skipped with a one-line warning in favour of the newest complete one. A missing, truncated or
corrupt file named directly is a one-line `CheckpointError`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from k1.errors import CheckpointError

log = logging.getLogger(__name__)

FILES = ("model.safetensors", "state.safetensors", "state.json")
_TENSOR = "__tensor__"


# ---- a nested state ⇄ (flat tensors, JSON) -----------------------------------------------------------
def split_tree(obj, prefix: str = "") -> tuple[dict[str, torch.Tensor], object]:
    """Nested dicts/lists/tuples of tensors and JSON values → ({dotted key: tensor}, JSON skeleton)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x, key: str):
        if torch.is_tensor(x):
            tensors[key] = x.detach().contiguous().cpu()
            return {_TENSOR: key}
        if isinstance(x, dict):
            for k in x:
                if not isinstance(k, str):
                    raise TypeError(f"state key {k!r} under {key or 'the root'} is not a string")
            return {k: walk(v, f"{key}.{k}" if key else k) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{key}.{i}" if key else str(i)) for i, v in enumerate(x)]
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"state value at {key!r} has type {type(x).__name__}, not a tensor or JSON value")

    return tensors, walk(obj, prefix)


def join_tree(tensors: dict[str, torch.Tensor], skeleton):
    """The inverse of `split_tree`; a tensor key the skeleton names but `tensors` lacks is a CheckpointError."""
    def walk(x):
        if isinstance(x, dict):
            if set(x) == {_TENSOR}:
                key = x[_TENSOR]
                if not isinstance(key, str) or key not in tensors:
                    raise CheckpointError(f"state.safetensors lacks tensor {key!r}")
                return tensors[key]
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    return walk(skeleton)


# ---- writing -------------------------------------------------------------------------------------------
def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(dir_: Path, model_state: dict, state: dict) -> Path:
    """Write model weights and the nested run `state` to `dir_`, atomically (see the module docstring)."""
    dir_ = Path(dir_)
    dir_.parent.mkdir(parents=True, exist_ok=True)
    tmp = dir_.with_name(dir_.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    tensors, skeleton = split_tree(state)
    save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, tmp / "model.safetensors")
    save_file(tensors, tmp / "state.safetensors")
    (tmp / "state.json").write_text(json.dumps(skeleton))
    for name in FILES:
        _fsync(tmp / name)
    _fsync(tmp)
    if dir_.exists():  # re-saving the same step (e.g. a final save after a resume): replace it whole
        old = dir_.with_name(dir_.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        dir_.rename(old)
        tmp.rename(dir_)
        shutil.rmtree(old)
    else:
        tmp.rename(dir_)
    _fsync(dir_.parent)
    return dir_


# ---- reading -------------------------------------------------------------------------------------------
def load_checkpoint(dir_: Path) -> tuple[dict, dict]:
    """→ (model state, nested run state). Any missing or unreadable part is a one-line CheckpointError."""
    dir_ = Path(dir_)
    for name in FILES:
        if not (dir_ / name).is_file():
            raise CheckpointError(f"checkpoint file missing: {dir_ / name}")
    loaded = []
    for name in FILES[:2]:
        try:
            loaded.append(load_file(dir_ / name))
        except Exception as e:  # safetensors raises its own error types for bad headers/truncation
            raise CheckpointError(f"corrupt checkpoint file {dir_ / name}: {_first_line(e)}") from None
    try:
        skeleton = json.loads((dir_ / "state.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt checkpoint file {dir_ / 'state.json'}: {e}") from None
    if not isinstance(skeleton, dict):
        raise CheckpointError(f"corrupt checkpoint file {dir_ / 'state.json'}: not a JSON object")
    return loaded[0], join_tree(loaded[1], skeleton)


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """`step-N` directories of a run, oldest first (temporary `.tmp`/`.old` directories excluded)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"step-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def is_complete(dir_: Path) -> bool:
    """All three files present and the JSON readable (a cheap check; tensors are read on load)."""
    try:
        return all((dir_ / n).is_file() for n in FILES) and isinstance(json.loads((dir_ / "state.json").read_text()), dict)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest complete checkpoint; incomplete ones are skipped with a one-line warning."""
    for ckpt in reversed(checkpoint_dirs(run_dir)):
        if is_complete(ckpt):
            return ckpt
        log.warning("skipping incomplete checkpoint %s", ckpt)
        print(f"warning: skipping incomplete checkpoint {ckpt}", flush=True)
    raise CheckpointError(f"no complete checkpoint in {Path(run_dir) / 'checkpoints'}; "
                          "train with --checkpoint-every N")


def prune_checkpoints(run_dir: Path, keep: int, best: Path | None = None) -> list[Path]:
    """Delete all but the newest `keep` checkpoints (and `best`); 0 keeps everything. → what was deleted."""
    if keep <= 0:
        return []
    dirs = checkpoint_dirs(run_dir)
    doomed = [d for d in dirs[:-keep] if best is None or d != best]
    for d in doomed:
        shutil.rmtree(d, ignore_errors=True)
    return doomed
