"""A small registry of named, lazily imported components.

Entries are "module:attr" strings so that listing or looking up names never imports heavy
optional dependencies (trl, deepspeed); a missing extra surfaces only when that entry is used,
with the pip command that fixes it.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Generic, TypeVar

from s2d_bench.errors import UserError

T = TypeVar("T")


def suggest(name: str, choices: list[str]) -> str:
    """' Did you mean 'x'?' for the closest choice, or ''."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, tuple[str, str, str]] = {}

    def register(self, name: str, target: str, summary: str = "", extra: str = "") -> None:
        """Register `target` ("package.module:attr") under `name`; `extra` names the pip extra."""
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = (target, summary, extra)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def summaries(self) -> dict[str, str]:
        return {name: self._entries[name][1] for name in self.names()}

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def check(self, name: str) -> None:
        """Raise a UserError naming the choices when `name` is not registered."""
        if name not in self._entries:
            raise UserError(
                f"unknown {self.kind} '{name}'.{suggest(name, self.names())} "
                f"Available: {', '.join(self.names())}"
            )

    def get(self, name: str) -> T:
        self.check(name)
        target, _, extra = self._entries[name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not extra:
                raise
            raise UserError(
                f"{self.kind} '{name}' needs the '{extra}' extra ({exc.name} is missing): "
                f"pip install 's2d-bench[{extra}]'"
            ) from exc
        return getattr(module, attr)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Registry({self.kind}: {', '.join(self.names())})"

