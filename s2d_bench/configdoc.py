"""The config explaining itself: every key with its value, its default and its help text (`s2d-bench config show`).

The help texts live on the dataclass fields of `config.py` (`_help`), so this reads them from there
rather than keeping a second description that could drift. Defaults are the dataclasses' own
(what a key is when no YAML sets it), values those of the loaded config with its overrides.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Iterator

from s2d_bench.config import RunConfig
from s2d_bench.errors import UserError
from s2d_bench.registry import suggest


@dataclass(frozen=True)
class KeyDoc:
    key: str  # dotted, as an override writes it
    value: Any
    default: Any
    help: str

    @property
    def changed(self) -> bool:
        return self.value != self.default


def _fields(current: Any, default: Any, help_text: str, prefix: str) -> Iterator[KeyDoc]:
    if dataclasses.is_dataclass(current):
        for spec in dataclasses.fields(current):
            yield from _fields(getattr(current, spec.name), getattr(default, spec.name), spec.metadata.get("help", ""),
                               f"{prefix}.{spec.name}" if prefix else spec.name)
        return
    yield KeyDoc(prefix, _plain(current), _plain(default), help_text)


def _plain(value: Any) -> Any:
    """Leaves as YAML would hold them: dataclasses inside lists and mappings (arms, eval.benchmarks) as mappings."""
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def describe(cfg: RunConfig, key: str | None = None) -> list[KeyDoc]:
    """Every key of `cfg` (or those under `key`) with its value, default and help, in the dataclasses' order."""
    docs = list(_fields(cfg, RunConfig(), "", ""))
    if not key:
        return docs
    chosen = [d for d in docs if d.key == key or d.key.startswith(key + ".")]
    if not chosen:
        names = sorted({d.key for d in docs} | {d.key.rsplit(".", 1)[0] for d in docs if "." in d.key})
        raise UserError(f"no config key '{key}'.{suggest(key, names)} `s2d-bench config show` lists them all")
    return chosen


def _text(value: Any) -> str:
    return value if isinstance(value, str) and value else json.dumps(value)


def render(docs: list[KeyDoc]) -> str:
    """Two lines a key: `key = value` (with the default where it differs), then the help, indented."""
    lines = []
    for doc in docs:
        default = f"   (default {_text(doc.default)})" if doc.changed else ""
        lines.append(f"{doc.key} = {_text(doc.value)}{default}")
        if doc.help:
            lines.append(f"    {doc.help}")
    return "\n".join(lines)
