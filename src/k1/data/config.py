"""`DataConfig`: which text to train on (built-in corpora, local files or Hugging Face datasets) and how to tokenize it.

Every field has a default, so the data section of a run config may be empty. Loading is `corpus.py`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from k1.data.builtin import DEFAULT_RECIPES
from k1.data.extras import EXTRA_RECIPES


def _default_hf_datasets() -> dict[str, str]:
    # "name" or "name:config"; the text field is detected (text, content, abstract, ...).
    return {
        "prose": "Salesforce/wikitext:wikitext-103-raw-v1",  # Wikipedia good/featured articles, CC BY-SA
        "code": "codeparrot/codeparrot-clean-valid",  # Python files from GitHub, de-duplicated
        "science": "gfissore/arxiv-abstracts-2021",  # arXiv abstracts, CC0 metadata
    }


class DataConfig(BaseModel):
    """The data section of a run config.

    `source`: "builtin" (the offline corpora of `k1 data build`), "files" (`paths`: domain -> file or
    folder) or "hf" (`hf_datasets`: domain -> Hugging Face dataset, streamed). `val_fraction` applies to
    files and hf; the built-in corpora have a fixed 10% document split recorded in their manifest.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["builtin", "files", "hf"] = "builtin"
    domains: list[str] = Field(default_factory=lambda: ["prose", "code", "science"], min_length=1)
    paths: dict[str, str] = Field(default_factory=dict)
    cache_dir: str | None = None  # built-in corpora; None: $K1_DATA_DIR or ~/.cache/k1/corpora
    tokenizer: str = "byte"  # "byte" or a path to a Hugging Face tokenizer.json
    val_fraction: float = Field(0.1, gt=0.0, le=0.5)
    max_train_bytes: int | None = Field(None, gt=0)  # truncate each domain's train split (fast runs)
    hf_datasets: dict[str, str] = Field(default_factory=_default_hf_datasets)
    hf_max_bytes: int = Field(32_000_000, gt=0)  # stop streaming a dataset after this much text per domain

    @model_validator(mode="after")
    def _check_domains(self) -> DataConfig:
        if len(set(self.domains)) != len(self.domains):
            raise ValueError(f"domains {self.domains} lists a domain twice; list each once")
        if self.source == "builtin":
            known = [*DEFAULT_RECIPES, *EXTRA_RECIPES]
            unknown = [d for d in self.domains if d not in known]
            if unknown:
                raise ValueError(
                    f"built-in corpora have no domain {unknown[0]!r}; choose from {', '.join(known)}, "
                    "or set source = 'files' with paths"
                )
        elif self.source == "files":
            missing = [d for d in self.domains if d not in self.paths]
            if missing:
                raise ValueError(f"source = 'files' but paths has no entry for {missing[0]!r}; add paths.{missing[0]}")
        else:
            missing = [d for d in self.domains if d not in self.hf_datasets]
            if missing:
                raise ValueError(
                    f"source = 'hf' but hf_datasets has no entry for {missing[0]!r}; add hf_datasets.{missing[0]}"
                )
        return self
