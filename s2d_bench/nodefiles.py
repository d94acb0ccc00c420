"""What a node's folder is made of on disk: files written whole or not at all, model checksums, a lock.

A run directory outlives the processes that write it (a kill, a crash, a second run of the same
config, seeds side by side), so every file a reader relies on is written to a temporary name and
renamed, a model's files are checksummed when it is saved and checked before it is reused, and a
process building a node holds that node's lock. `damage` is what a rerun checks before it
reuses a finished node.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Iterator


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file in a model folder: a zeroed or truncated file is found before it is loaded."""
    out = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        out[path.name] = digest.hexdigest()
    return out


@contextlib.contextmanager
def node_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (flock: released by the OS when its holder dies, so a crash leaves no stale lock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_atomic(path: Path, text: str) -> None:
    """Write then rename, per process: seeds run side by side share one run directory."""
    write_atomic_bytes(path, text.encode())


def write_atomic_bytes(path: Path, data: bytes) -> None:
    """`write_atomic` for bytes (a tensor file): a reader finds the whole file or none."""
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=str))


def damage(folder: Path) -> str | None:
    """What is wrong with a finished node's files (its stage.json, its model's checksums), or None."""
    try:
        info = json.loads((folder / "stage.json").read_text())
    except FileNotFoundError:
        return "stage.json is missing"
    except (OSError, ValueError):
        return "stage.json is unreadable"
    if not isinstance(info, dict) or not {"labeled_draws", "labeled_ids", "seconds"} <= set(info):
        return "stage.json is incomplete"
    expected = info.get("files")
    if expected is None:  # written before checksums were kept
        return None
    actual = checksums(folder / "model")
    bad = sorted(name for name in set(expected) | set(actual) if expected.get(name) != actual.get(name))
    return f"model files fail their checksums ({', '.join(bad)})" if bad else None
