"""Typed dataclasses from plain data (YAML, `key.sub=value` overrides), each failure one line naming the key.

`from_dict` builds a dataclass field by field: unknown keys are an error with a "did you mean",
values are coerced to the annotated type (`X | None`, nested dataclasses, dicts and lists of
them; YAML's `true` is never a number, `1e9` is), and each dataclass's own `__post_init__` check
is reported with the role, stage or arm it is about in front (`_placed`). `set_path` applies one
override to the raw mapping before it is built. The run config's fields live in `config.py`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

import yaml

from s2d_bench.errors import UserError
from s2d_bench.registry import suggest


def help_field(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its help text (what `s2d-bench config` and the docs print for the key)."""
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata={"help": text})
    return dataclasses.field(default=default, metadata={"help": text})


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def to_dict(cfg: Any) -> Any:
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg


def _coerce(kind: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):  # `X | None`: None, or an X
        (inner,) = [a for a in typing.get_args(kind) if a is not type(None)]
        return None if value is None else _coerce(inner, value, where)
    if dataclasses.is_dataclass(kind):
        require(isinstance(value, dict), f"{where} must be a mapping of fields, got {value!r}")
        return from_dict(kind, value, where)
    if origin is dict:
        require(isinstance(value, dict), f"{where} must be a mapping, got {value!r}")
        _, value_kind = typing.get_args(kind)
        return {str(k): _coerce(value_kind, v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        require(isinstance(value, list), f"{where} must be a list, got {value!r}")
        (item_kind,) = typing.get_args(kind)
        return [_coerce(item_kind, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind is bool:
        require(isinstance(value, bool), f"{where} must be true or false, got {value!r}")
        return value
    if kind in (int, float):
        require(not isinstance(value, bool), f"{where} must be a number ({kind.__name__}), got {value!r}")  # YAML true is not 1
        try:
            number = float(value)  # YAML 1.1 reads `1e9` (no dot) as a string; it is still a number
        except (TypeError, ValueError):
            raise UserError(f"{where} must be a number ({kind.__name__}), got {value!r}") from None
        require(math.isfinite(number), f"{where} must be a finite number, got {value!r}")
        if kind is int:
            require(number == int(number), f"{where} must be an integer, got {value!r}")
            return int(number)
        return number
    if kind is str:
        require(isinstance(value, (str, int, float)), f"{where} must be a string, got {value!r}")
        return str(value)
    return value  # typing.Any


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass `cls` from `data`, rejecting unknown keys with a suggestion."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise UserError(f"unknown key '{where}.{key}'.{suggest(str(key), names)} Known keys: {', '.join(names)}")
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}")
    try:
        return cls(**kwargs)
    except UserError as exc:
        raise UserError(_placed(str(exc), where)) from None


GENERIC_PREFIXES = ("GRPO: ", "distill: ", "pretrain: ")  # what a check knows of itself; `where` says which role, stage or arm


def _placed(message: str, where: str) -> str:
    """A validation message with the role, stage or arm it is about in front: `teacher.pretrain: lr > 0`, not `pretrain: lr > 0`."""
    label = where.removeprefix("config").lstrip(".")
    if not label or message.startswith(label):
        return message
    for prefix in GENERIC_PREFIXES:
        message = message.removeprefix(prefix)
    return f"{label}: {message}"


def set_path(raw: dict[str, Any], cls: type, path: list[str], value: Any) -> None:
    """Set `raw[path] = value`, seeding a missing free-form mapping (like `arms`) with its default."""
    key, rest = path[0], path[1:]
    if not rest:
        raw[key] = value
        return
    kind = None
    if dataclasses.is_dataclass(cls):
        names = {f.name: f for f in dataclasses.fields(cls)}
        if key not in names:
            raise UserError(f"unknown key '{key}' in override.{suggest(key, list(names))} Known keys: {', '.join(names)}")
        kind = typing.get_type_hints(cls)[key]
        if key not in raw and typing.get_origin(kind) is dict:
            spec = names[key]
            default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
            raw[key] = {k: to_dict(v) for k, v in default.items()}
        if typing.get_origin(kind) is dict and typing.get_args(kind)[1] is Any:
            raw.setdefault(key, {})[".".join(rest)] = value  # free-form dotted keys, e.g. arm overrides
            return
    elif typing.get_origin(cls) is dict:
        kind = typing.get_args(cls)[1]
    sub = raw.setdefault(key, {})
    require(isinstance(sub, dict), f"cannot set '{'.'.join(path)}': '{key}' is not a mapping")
    set_path(sub, kind, rest, value)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'stages.opd.lr=1e-4' -> (['stages', 'opd', 'lr'], 1e-4); values are read as YAML."""
    key, sep, value = text.partition("=")
    require(bool(sep) and bool(key), f"override '{text}' is not of the form key.sub=value")
    return key.strip().split("."), yaml.safe_load(value) if value.strip() else ""
