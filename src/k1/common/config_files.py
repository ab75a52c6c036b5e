"""Reading a TOML config file into a pydantic model, with every problem as one line (file, dotted field,
what is wrong, the value given) in a `ConfigError` — never a traceback."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from k1.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def read_toml(path: str | Path, what: str = "config file", missing: str | None = None) -> dict:
    """The TOML table in `path`; a missing file, bad TOML or non-UTF-8 bytes are one-line `ConfigError`s.
    `missing`: the whole message for a missing file, when it should say how to make one."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(missing or f"{what} not found: {p}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML ({e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not a UTF-8 text file (byte {e.start}: {e.reason})") from None


def error_lines(e: ValidationError, source: str, at: str = "") -> str:
    """A pydantic error as `source: field.path: message (got value)` lines, joined by "; ". `at`: where the
    validated table sits in its file (e.g. "continual"), put in front of every field path."""
    lines = []
    for err in e.errors():
        parts = [str(x) for x in err["loc"] if not str(x).startswith(("function-", "tagged-union"))]
        loc = ".".join([at, *parts] if at else parts)
        val = err.get("input")
        shown = "" if isinstance(val, dict) else f" (got {val!r})"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {loc or '<root>'}: {msg}{shown}")
    return "; ".join(lines)


def validate_as(model: type[M], data: dict, source: str = "config", at: str = "") -> M:
    """`model.model_validate(data)`, its errors as one `ConfigError` naming `source` (and the table `at`)."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(error_lines(e, source, at)) from None


def load_model(model: type[M], path: str | Path, what: str = "config file") -> M:
    """A TOML file validated into `model` (both steps' errors are one line)."""
    return validate_as(model, read_toml(path, what), str(path))
