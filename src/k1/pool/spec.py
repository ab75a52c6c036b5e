"""Member spec strings for `k1 pool add`: `k1:RUN_DIR`, `hf:PATH[::FILE.gguf]`, `openai:BASE_URL` or a named
opt-in model (`gemma3`: Gemma-3-270M, converted once from its wheel; see gemma.py), turned into
a pool-file `[[members]]` table, validated, and appended to a pool file (every value is a string, a number or
a list of strings, which JSON quoting writes as valid TOML)."""

from __future__ import annotations

import json
from pathlib import Path

from k1.errors import ConfigError


def parse_spec(spec: str, *, name: str | None = None, roles: list[str] = (), model: str | None = None,
               price: float = 1.0, stop: list[str] = ()) -> dict:
    """→ a member table ({"name", "kind", ...}), validated like a pool file's entry; `stop` (K-1 members only:
    a tree has no end-of-text token) the strings every answer of it ends at, "\\n" written as a backslash-n."""
    from k1.common.config_files import validate_as
    from k1.pool.config import PoolConfig

    if spec == "gemma3":  # the opt-in second family: converted once beside the pool (its licence: gemma.LICENCE)
        from k1.pool import gemma
        spec, name = f"hf:{gemma.converted_dir(quiet=False)}", name or gemma.NAME
    kind, _, rest = spec.partition(":")
    if kind == "k1" and rest:
        path = Path(rest).expanduser().resolve()
        table = {"name": name or f"k1-{path.name}", "kind": "k1", "run": str(path)}
        if stop:
            table["stop"] = [t.replace("\\n", "\n").replace("\\t", "\t") for t in stop]
    elif kind == "hf" and rest:
        p, _, gguf = rest.partition("::")
        path = Path(p).expanduser().resolve()
        table = {"name": name or path.name, "kind": "hf", "path": str(path)} | ({"gguf_file": gguf} if gguf else {})
    elif kind == "openai" and rest:
        table = {"name": name or (model or "remote"), "kind": "openai", "base_url": rest,
                 "price_per_1k_tokens": price} | ({"model": model} if model else {})
    else:
        raise ConfigError(f"member {spec!r}: use k1:RUN_DIR, hf:PATH[::FILE.gguf], openai:BASE_URL or gemma3")
    if stop and kind != "k1":
        raise ConfigError(f"member {spec!r}: --stop is for k1 members (a tree has no end-of-text token); "
                          "other kinds end their answers themselves")
    if kind in ("k1", "hf") and not path.exists():
        raise ConfigError(f"member {spec!r}: {path} does not exist")
    table["roles"] = list(roles)
    validate_as(PoolConfig, {"members": [table]}, "member")
    return table


def append_member(pool_file: Path, table: dict, existing: list[str]) -> None:
    """Append `table` to `pool_file` as a [[members]] entry (refusing a name the pool already has)."""
    if table["name"] in existing or table["name"] == "auto":
        raise ConfigError(f"the pool already has a member {table['name']!r} (or it is reserved); pass --name")
    lines = ["[[members]]"] + [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    pool_file = Path(pool_file)
    pool_file.parent.mkdir(parents=True, exist_ok=True)
    with pool_file.open("a") as f:
        f.write("\n" + "\n".join(lines) + "\n")
