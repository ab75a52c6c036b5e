"""Run configuration: typed, frozen pydantic models read from TOML, with presets and `--set` overrides.

Every field has a default, so `k1 train` runs with no file. Validation errors become one line per problem
(file, dotted field, value, what is allowed). The resolved config is written to `runs/<name>/config.toml`,
and that file alone reproduces the run.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from k1.common.config_files import read_toml, validate_as
from k1.data.config import DataConfig
from k1.engine.model.tree import ModelConfig
from k1.engine.selforg.autonomy import AutonomyConfig
from k1.engine.selforg.safety import SafetyConfig
from k1.engine.update.optim import OptimConfig
from k1.engine.update.policies import AttributionConfig, PolicyConfig
from k1.engine.update.trust import TrustVectorConfig
from k1.errors import ConfigError


class TrainConfig(BaseModel):
    """The loop: budget, batch, schedule of logging/evaluation/checkpoints, device."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(default=300, ge=1)
    batch_size: int = Field(default=16, ge=1)
    seed: int = 1337
    device: str = "auto"  # "auto" → cuda if available, else cpu
    autocast: Literal["auto", "bf16", "off"] = "auto"  # auto → bf16 on CUDA, off on CPU
    compile: bool = False  # torch.compile the forward pass
    log_every: int = Field(default=10, ge=1)  # host syncs happen only here
    eval_every: int = Field(default=100, ge=1)
    eval_batches: int = Field(default=4, ge=1)  # per domain, fixed windows of the validation split
    # the share of each validation split (its start) kept as tuning windows, apart from the evaluation
    # windows (the rest): trials judge on them; 0: one set of windows for both (as before)
    tune_fraction: float = Field(default=0.0, ge=0, lt=1)
    eval_on: Literal["eval", "tune"] = "eval"  # "tune": evaluate on the tuning windows (choosing settings)
    checkpoint_every: int = Field(default=0, ge=0)  # 0: only a final checkpoint
    keep_checkpoints: int = Field(default=0, ge=0)  # keep the newest N (plus the best); 0: keep all
    # hooks that record the run, by registered name (`callbacks`: the key before this name, still read)
    recorders: list[str] = Field(default=["progress", "metrics", "attribution"],
                                 validation_alias=AliasChoices("recorders", "callbacks"))


class RunConfig(BaseModel):
    """Everything a run needs; `arch="dense"` trains the DenseGPT baseline sized to the tree."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "k1"
    arch: Literal["tree", "dense"] = "tree"
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    policy: PolicyConfig = AttributionConfig()
    trust: TrustVectorConfig = TrustVectorConfig()
    train: TrainConfig = TrainConfig()
    autonomy: AutonomyConfig = AutonomyConfig()
    safety: SafetyConfig = SafetyConfig()

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        if self.model.width % self.model.n_heads:
            raise ValueError(
                f"model.width ({self.model.width}) must be divisible by model.n_heads ({self.model.n_heads}); "
                "change one of them"
            )
        if self.arch == "dense" and self.policy.name != "dense":
            raise ValueError(f'arch="dense" trains every layer: set policy.name="dense" (got {self.policy.name!r})')
        return self


# Named presets: `tiny` is CI-sized (seconds on CPU), `small` is compare --quick, `default` the main job.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "model": {"branching": [2, 2], "width": 32, "mlp_width": 64, "n_heads": 2, "context": 32},
        "data": {"max_train_bytes": 200_000},
        "train": {"steps": 20, "batch_size": 4, "log_every": 5, "eval_every": 10, "eval_batches": 2},
    },
    "small": {
        "model": {"branching": [4, 3, 2], "width": 48, "mlp_width": 96, "n_heads": 4, "context": 64},
        "optim": {"lr": 3e-3, "warmup_steps": 10},
        "train": {"steps": 120, "batch_size": 8, "log_every": 10, "eval_every": 40, "eval_batches": 4},
        "autonomy": {"phase2_step": 40, "check_every": 40},
    },
    "default": {
        "model": {"branching": [4, 3, 2], "width": 64, "mlp_width": 128, "n_heads": 4, "context": 64},
        "optim": {"lr": 3e-3, "warmup_steps": 20},
        "train": {"steps": 250, "batch_size": 16, "log_every": 10, "eval_every": 50, "eval_batches": 4},
        "autonomy": {"phase2_step": 100, "check_every": 50},
    },
}


def merge(base: dict, over: dict) -> dict:
    """Recursive dict merge; `over` wins. A policy table replaces the preset's policy wholesale."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "policy":
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(item: str) -> dict:
    """'train.steps=50' → {'train': {'steps': 50}}; the value is read as TOML, else as a string."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set train.steps=50")
    key, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    out: dict = value
    for part in reversed(key.strip().split(".")):
        out = {part: out}
    return out


def load_config(path: str | Path | None = None, preset: str | None = None,
                overrides: list[str] | None = None, extra: dict | None = None) -> RunConfig:
    """Preset ← TOML file ← `extra` (CLI flags) ← `--set` overrides, validated into a `RunConfig`."""
    data: dict = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
        data = merge(data, PRESETS[preset])
    source = "defaults"
    if path is not None:
        source = str(Path(path))
        data = merge(data, read_toml(path))
    if extra:
        data = merge(data, extra)
    for item in overrides or []:
        data = merge(data, parse_override(item))
    if isinstance(data.get("policy"), str):  # `policy = "hybrid"` is short for [policy] name = "hybrid"
        data["policy"] = {"name": data["policy"]}
    return validate(data, source)


def validate(data: dict, source: str = "config") -> RunConfig:
    """`data` as a `RunConfig`; every problem is one line naming `source` and the dotted field."""
    return validate_as(RunConfig, data, source)


def dump_config(cfg: RunConfig) -> str:
    return tomli_w.dumps(cfg.model_dump(mode="json", exclude_none=True))
