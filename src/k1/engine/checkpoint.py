"""Checkpoints: `checkpoints/step-<N>/` with safetensors for tensors and JSON for the rest.

model.safetensors   model parameters
state.safetensors   optimizer moments and per-agent step counts, trust, RNG states (torch, data, policy)
state.json          step, tree shape, data position, versions
A missing, truncated or corrupt file is a one-line `CheckpointError` naming it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from k1.errors import CheckpointError


def save_checkpoint(dir_: Path, model_state: dict, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    dir_.mkdir(parents=True, exist_ok=True)
    tmp = dir_.with_name(dir_.name + ".tmp")  # write beside, then rename: never a half-written checkpoint
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, tmp / "model.safetensors")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp / "state.safetensors")
    (tmp / "state.json").write_text(json.dumps(meta, indent=1))
    for f in tmp.iterdir():
        f.replace(dir_ / f.name)
    tmp.rmdir()
    return dir_


def load_checkpoint(dir_: Path) -> tuple[dict, dict, dict]:
    """→ (model state, other tensors, meta)."""
    files = {name: dir_ / name for name in ("model.safetensors", "state.safetensors", "state.json")}
    for f in files.values():
        if not f.is_file():
            raise CheckpointError(f"checkpoint file missing: {f}")
    out = []
    for name in ("model.safetensors", "state.safetensors"):
        try:
            out.append(load_file(files[name]))
        except Exception as e:  # safetensors raises its own error types for bad headers/truncation
            raise CheckpointError(f"corrupt checkpoint file {files[name]}: {str(e).splitlines()[0]}") from None
    try:
        meta = json.loads(files["state.json"].read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt checkpoint file {files['state.json']}: {e}") from None
    return out[0], out[1], meta


def latest_checkpoint(run_dir: Path) -> Path:
    ckpts = sorted(
        (p for p in (run_dir / "checkpoints").glob("step-*") if re.fullmatch(r"step-\d+", p.name)),
        key=lambda p: int(p.name.split("-")[1]),
    ) if (run_dir / "checkpoints").is_dir() else []
    if not ckpts:
        raise CheckpointError(f"no checkpoint in {run_dir / 'checkpoints'}; train with --checkpoint-every N")
    return ckpts[-1]


def flatten(prefix: str, state: dict) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def unflatten(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}
