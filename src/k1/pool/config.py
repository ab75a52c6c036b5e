"""The pool file (TOML): members with their kind, roles and (for remote members) prices, plus pool settings.

```toml
[pool]
budget_atp = 500.0          # what a session may spend (ATP: GFLOPs for local members, price × tokens for remote)
selection = "thompson"      # thompson | ucb | greedy

[[members]]
name = "smollm2"
kind = "hf"                 # k1 | hf | openai
path = "~/.cache/k1/pool/smollm2-135m-instruct"
roles = ["teacher", "reference"]

[[members]]
name = "remote"
kind = "openai"
base_url = "http://127.0.0.1:8000/v1"
price_per_1k_tokens = 2.0
```
Relative paths are read from the pool file's folder. Local members' cost is measured, so they have no price.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from k1.common.config_files import read_toml, validate_as
from k1.common.db import check_target, is_url
from k1.pool.route.context import ContextSettings
from k1.pool.route.metabolic import MetabolicSettings
from k1.pool.route.snarc import SnarcWeights
from k1.pool.sleep.settings import DreamSettings


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    roles: list[str] = []


class K1Spec(_Spec):
    """A K-1 run directory (its latest checkpoint)."""
    kind: Literal["k1"] = "k1"
    run: str
    # strings every answer of this member ends at: a tree has no end-of-text token, so one trained on one-line
    # answers (a DREAM student: " ANSWER\n") ends them at "\n" instead of writing filler up to max_tokens
    stop: list[Annotated[str, Field(min_length=1, max_length=16)]] = []


class HFSpec(_Spec):
    """A transformers causal LM from a local folder (or a GGUF file in it)."""
    kind: Literal["hf"] = "hf"
    path: str
    gguf_file: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "cpu"


class OpenAISpec(_Spec):
    """Any OpenAI-compatible HTTP server."""
    kind: Literal["openai"] = "openai"
    base_url: str
    model: str | None = None  # the server's model id (default: the member's name)
    api_key_env: str | None = None  # name of the environment variable holding the key (never the key itself)
    price_per_1k_tokens: float = Field(default=1.0, ge=0)  # ATP per 1,000 tokens (prompt + completion)
    timeout_s: float = Field(default=30.0, gt=0)
    retries: int = Field(default=2, ge=0)
    backoff_s: float = Field(default=0.5, ge=0)
    breaker_failures: int = Field(default=3, ge=1)
    breaker_cooldown_s: float = Field(default=30.0, ge=0)
    deadline_s: float = Field(default=120.0, gt=0)  # the whole call, retries included
    max_response_bytes: int = Field(default=4 << 20, ge=1024)  # a longer answer fails the call


MemberSpec = Annotated[Union[K1Spec, HFSpec, OpenAISpec], Field(discriminator="kind")]


STORE_ENV = "K1_POOL_STORE"  # overrides the pool file's `store` (a path or a postgresql:// URL)


class PoolSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    budget_atp: float = Field(default=1000.0, gt=0)
    selection: Literal["thompson", "ucb", "greedy"] = "thompson"
    cost_weight: float = Field(default=0.3, ge=0)  # λ in utility = P(success) − λ·cost / (cost of the priciest member)
    # trust, budget and experiences: a SQLite file (relative to the pool file's folder) or a postgresql:// URL
    # shared by several replicas; $K1_POOL_STORE overrides it
    store: str = "pool.sqlite"
    reference: str | None = None  # member whose bits per byte measure surprise (default: the cheapest local one)
    judge: str | None = None  # member asked "is this answer correct?" when no verifier or feedback decides
    cross_check: float = Field(default=0.0, ge=0, le=1)  # share of calls a second member also answers (conflict)
    idle_unload_s: float = Field(default=300.0, gt=0)  # REST unloads local members unused for this long
    seed: int | None = None
    # calibration (calibrate.py): tasks per class each member answers, and how many observations each weighs
    calibration_per_class: int = Field(default=10, ge=1, le=16)  # 10: tells 0 % from 45 % (calibrate.ENOUGH_PER_CLASS)
    calibration_weight: float = Field(default=1.0, ge=0)
    # the task classifier also learns from this many of the newest experiences with a stated class (taskclass.py)
    task_class_examples: int = Field(default=2000, ge=0)
    task_class_form: Literal["complement", "multinomial"] = "complement"  # the form of naive Bayes (taskclass.py)
    # classes a client may name besides the built-in and calibrated ones (a client's unknown class gets 400)
    task_classes: list[Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]] = []
    # a student answers `auto` for a class only once its calibration success for the class reaches this (choice.py)
    student_pass: float = Field(default=0.5, ge=0, le=1)
    # where a verifier exists for the task class, the pool judges its own answers in the background (aftercare.py)
    self_verify: bool = True
    context: ContextSettings = ContextSettings()
    metabolic: MetabolicSettings = MetabolicSettings()
    snarc: SnarcWeights = SnarcWeights()
    # the server's sleep: `k1 pool serve` runs DREAM by itself when it is due (`dream = "auto"`; sleep/settings.py)
    dream: DreamSettings = DreamSettings()

    @field_validator("dream", mode="before")
    @classmethod
    def _dream_mode(cls, v):
        return {"mode": v} if isinstance(v, str) else v


class PoolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    pool: PoolSettings = PoolSettings()
    members: list[MemberSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "PoolConfig":
        names = [m.name for m in self.members]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"member names must be unique; rename the repeated {', '.join(dup)}")
        if "auto" in names:
            raise ValueError("'auto' is reserved for routing through the pool; rename that member")
        for key in ("reference", "judge"):
            who = getattr(self.pool, key)
            if who is not None and who not in names:
                raise ValueError(f"pool.{key} = {who!r} is not a member; choose one of {', '.join(names)}")
        return self


def read_pool_config(path: str | Path) -> PoolConfig:
    path = Path(path)
    data = read_toml(path, "pool file", missing=f"pool file {path} does not exist; write one (see docs/pool.md) "
                                                "or use the default pool")
    return resolve_paths(validate_as(PoolConfig, data, str(path)), path.parent)


def resolve_paths(cfg: PoolConfig, root: Path) -> PoolConfig:
    """Make `run`, `path` and `store` absolute against `root` (after expanding ~); a store named by URL
    ($K1_POOL_STORE first) is kept as it is, and a URL of an unknown kind is a one-line error."""
    def fix(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (root / q).resolve())

    members = []
    for m in cfg.members:
        field = {"k1": "run", "hf": "path"}.get(m.kind)
        members.append(m.model_copy(update={field: fix(getattr(m, field))}) if field else m)
    store = os.environ.get(STORE_ENV) or cfg.pool.store
    check_target(store, "pool store")  # an unknown URL is an error here, not a file name
    if not is_url(store):
        store = fix(store)
    pool = cfg.pool.model_copy(update={"store": store})
    return cfg.model_copy(update={"members": members, "pool": pool})
