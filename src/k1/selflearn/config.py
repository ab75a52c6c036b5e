"""`LoopConfig`: everything one `k1 loop run` does, validated up front (pydantic, extra="forbid")."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from k1.common.config_files import read_toml, validate_as


class LoopConfig(BaseModel):
    """The defaults are the settings the loop's published figures were measured with (30 training and 30
    held-out tasks, 4 samples, seeds 0, 1, 2), so the README's short command reproduces them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = Field(description="the member that learns: k1:RUN_DIR, hf:PATH[::FILE.gguf] or smollm2")
    teacher: str | None = Field(None, description="member for method = 'teacher'")
    judge: str | None = Field(None, description="orders verified candidates; never used in evaluation")
    tasks: str = Field("arithmetic:d1", description="arithmetic:d1..d4, python, or a JSONL task file")
    n_train: int = Field(30, ge=1, description="tasks the target practises on (per seed)")
    n_heldout: int = Field(30, ge=1, description="tasks only ever evaluated (per seed), disjoint from training")
    self_instruct: int = Field(0, ge=0, description="extra training prompts proposed by the target (arithmetic)")
    method: Literal["rejection", "refine", "teacher"] = "rejection"
    samples: int = Field(4, ge=1, description="rejection: samples per task; teacher: rewrites per task")
    rounds: int = Field(2, ge=1, description="refine: retries after a failed answer")
    temperature: float = Field(1.0, ge=0.0)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    # K-1 target: engine training steps; Hugging Face target: LoRA epochs, lr, rank
    train_steps: int = Field(60, ge=1)
    epochs: int = Field(3, ge=1)
    lr: float = Field(2e-4, gt=0)
    lora_r: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "LoopConfig":
        if self.method == "teacher" and not self.teacher:
            raise ValueError("method = 'teacher' needs teacher = '<member spec>'")
        return self


def load_loop_config(path: Path | None = None, **overrides) -> LoopConfig:
    """TOML file (optional) + overrides (None values ignored) → LoopConfig, errors as one ConfigError line."""
    data = read_toml(path, "loop config") if path is not None else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validate_as(LoopConfig, data, str(path) if path is not None else "loop config")
