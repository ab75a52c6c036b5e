"""A tiny name → class registry used for policies, optimizers, hooks and data sources.

Registration happens on import (each package's `__init__` imports its members), so the full list of
names is visible in one file; an unknown name is a `ConfigError` listing the valid ones.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from k1.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a lowercase name (the same word in code, TOML and CLI) to a class."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def decorate(cls: type[T]) -> type[T]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            cls.name = name  # type: ignore[attr-defined]
            self._items[name] = cls
            return cls

        return decorate

    def add(self, name: str, item: T) -> T:
        """Register an instance (a table entry rather than a class) under `name`."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        return item

    def get(self, name: str) -> type[T]:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
