"""One name -> class registry, shared by observers, local metrics and sensitivity methods.

Each plug-in kind keeps a module-level ``Registry``; a class with a ``name`` attribute joins it
with the registry's ``register`` decorator and is built by name with ``make``.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from tvm_mpq.errors import MpqError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        name = getattr(cls, "name")
        if name in self._classes:
            raise ValueError(f"{self.kind} '{name}' registered twice")
        self._classes[name] = cls
        return cls

    def names(self) -> list[str]:
        return list(self._classes)

    def make(self, name: str, **kwargs) -> T:
        """A new instance by registered name (MpqError naming the valid ones otherwise)."""
        if name not in self._classes:
            raise MpqError(f"unknown {self.kind} '{name}' (have {', '.join(self.names())})")
        return self._classes[name](**kwargs)
