"""Reading a TOML config file into a pydantic model, with every problem as one line (file, dotted field,
what is wrong, the value given) in a `ConfigError` — never a traceback."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from k1.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def read_toml(path: str | Path, what: str = "config file") -> dict:
    """The TOML table in `path`; a missing file, bad TOML or non-UTF-8 bytes are one-line `ConfigError`s."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} not found: {p}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML ({e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not a UTF-8 text file (byte {e.start}: {e.reason})") from None


def error_lines(e: ValidationError, source: str) -> str:
    """A pydantic error as `source: field.path: message (got value)` lines, joined by "; "."""
    lines = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith(("function-", "tagged-union")))
        val = err.get("input")
        shown = "" if isinstance(val, dict) else f" (got {val!r})"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {loc or '<root>'}: {msg}{shown}")
    return "; ".join(lines)


def validate_as(model: type[M], data: dict, source: str = "config") -> M:
    """`model.model_validate(data)`, its errors as one `ConfigError` naming `source`."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(error_lines(e, source)) from None


def load_model(model: type[M], path: str | Path, what: str = "config file") -> M:
    """A TOML file validated into `model` (both steps' errors are one line)."""
    return validate_as(model, read_toml(path, what), str(path))
