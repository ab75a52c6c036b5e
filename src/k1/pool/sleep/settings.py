"""`[pool.dream]` of the pool file: whether and when a serving pool runs DREAM by itself (`dream = "auto"` is
short for `[pool.dream] mode = "auto"`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class DreamSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Literal["off", "auto"] = "off"  # auto: `k1 pool serve` runs DREAM when it is due (`--dream` overrides)
    after: int = Field(default=64, ge=1)  # new verified experiences (from trusted tenants) that make DREAM due
    rest_after: int = Field(default=16, ge=1)  # … or this many while the pool rests (idle): the seeds' sleep
    every_s: float = Field(default=1800.0, ge=1.0)  # at least this long between two cycles' starts, failed included
    min_budget_left: float = Field(default=0.25, ge=0, le=1)  # no cycle when less of the budget is left
    check_s: float = Field(default=10.0, gt=0)  # how often a server looks whether DREAM is due
    timeout_s: float = Field(default=3600.0, gt=0)  # a cycle running longer is stopped (and counts as failed)
    lease_s: float = Field(default=120.0, ge=1.0)  # the lease's life without renewal: a crashed cycle's ends by itself
    args: list[str] = []  # more arguments for `k1 pool dream`, e.g. ["--task-class", "arithmetic", "--verified-only"]

    @field_validator("args")
    @classmethod
    def _no_pool(cls, v: list[str]) -> list[str]:
        for a in v:
            if a in ("--pool", "-p") or a.startswith("--pool="):
                raise ValueError("the server passes its own pool file to `k1 pool dream`; drop --pool from args")
        return v
