"""A config file as users write it: read strictly, relative paths from its folder, nothing silently ignored.

`config.load_config` reads a YAML file through here before overrides and types apply: UTF-8 and
valid YAML with no key written twice (`read_yaml`), input paths relative to the file's folder
(`from_folder`), and a `pretrain` block beside a model `path` refused, since nothing would read it
(`pretrain_beside_path`, `refuse_ignored_blocks`). Each failure is one line naming the file.
"""

from __future__ import annotations

from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from s2d_bench.errors import UserError

class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key written twice in one mapping (plain YAML keeps the last, silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise UserError(f"{self.name}: key '{key}' is written twice (lines {seen[key]} and {line}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(source: Path | Traversable) -> dict[str, Any]:
    """A config file as a mapping: UTF-8, valid YAML, no key twice; each failure one line naming the file."""
    try:
        text = source.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{source} is not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); save it as UTF-8") from None
    except OSError as exc:
        raise UserError(f"{source} cannot be read: {exc.strerror}") from None
    loader = _StrictLoader(text)
    loader.name = str(source)
    try:
        raw = loader.get_single_data() or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{source} is not valid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()
    if not isinstance(raw, dict):
        raise UserError(f"{source} must hold a mapping of config keys")
    return raw


ROLES = ("teacher", "student")
INPUT_PATHS = (("teacher", "path"), ("student", "path"), ("task", "train_data"), ("task", "data_dir"))  # read, never written


def from_folder(raw: dict[str, Any], folder: Path) -> None:
    """Relative input paths of a YAML file are relative to the file's folder (as in every config format users know),
    not to wherever the command runs. A hub id (`org/name`) that is not a folder beside the file stays a hub id."""
    from s2d_bench.models.refs import looks_like_path  # here, not above: importing the config must load no registry (models')

    for section, key in INPUT_PATHS:
        block = raw.get(section)
        value = block.get(key) if isinstance(block, dict) else None
        if not isinstance(value, str) or not value or Path(value).expanduser().is_absolute():
            continue
        beside = folder / value
        if looks_like_path(value) or beside.exists():
            raw[section][key] = str(beside)


def refuse_ignored_blocks(raw: dict[str, Any], written: set[str]) -> None:
    """Settings that nothing would read are refused, not dropped: a `pretrain` block written beside a model `path` (in one
    YAML mapping, or by an override). `written`: the roles whose pretrain the user set next to the path."""
    for role in ROLES:
        entry = raw.get(role)
        if role in written and isinstance(entry, dict) and entry.get("path"):
            raise UserError(f"{role}: a model from a path is used as it is, so {role}.pretrain would be ignored; remove the pretrain "
                            f"setting, or build the model with {role}.builder instead of {role}.path")


def pretrain_beside_path(raw: dict[str, Any]) -> set[str]:
    """The roles whose YAML mapping holds both a `pretrain` block and a `path` (overrides add theirs in load_config)."""
    return {role for role in ROLES if isinstance(raw.get(role), dict) and "pretrain" in raw[role] and raw[role].get("path")}
