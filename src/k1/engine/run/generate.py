"""Sampling text from a run's latest checkpoint (`k1 generate`)."""

from __future__ import annotations

from pathlib import Path

import torch

from k1.engine.config import load_config
from k1.data import load_tokenizer
from k1.engine.run.checkpoint import latest_checkpoint, load_checkpoint
from k1.engine.model.shape import TreeShape
from k1.engine.run.build import build_model
from k1.errors import ConfigError, CheckpointError


def load_run_model(run_dir: Path):
    """→ (model in eval mode, tokenizer, config) from the run's config and its latest checkpoint."""
    cfg_file = run_dir / "config.toml"
    if not cfg_file.is_file():
        raise CheckpointError(f"{run_dir}: no config.toml; is it a k1 run directory?")
    cfg = load_config(cfg_file)
    tok = load_tokenizer(cfg.data.tokenizer)
    model_state, state = load_checkpoint(latest_checkpoint(run_dir))
    model = build_model(cfg, tok.vocab_size, TreeShape.from_dict(state["shape"]))
    try:
        model.load_state_dict(model_state)
    except RuntimeError as e:
        raise CheckpointError(f"{run_dir}: checkpoint does not fit the model ({str(e).splitlines()[0]})") from None
    return model.eval(), tok, cfg


def generate_text(run_dir: Path, prompt: str, tokens: int = 200, temperature: float = 0.8,
                  top_k: int | None = None, seed: int = 0) -> str:
    model, tok, _ = load_run_model(Path(run_dir))
    ids = tok.encode(prompt)
    if not ids:
        raise ConfigError("--prompt is empty; give at least one character")
    g = torch.Generator().manual_seed(seed)
    out = model.generate(torch.tensor([ids]), tokens, temperature, top_k, generator=g)
    return tok.decode(out[0].tolist())
