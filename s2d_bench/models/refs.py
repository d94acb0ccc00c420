"""What a model reference (`--model`, `teacher.path`) names, decided before anything is loaded.

A reference is a local folder or a hub id. Left to transformers, a mistyped folder becomes a hub
lookup that retries for over a minute offline, and a folder without `config.json` or tokenizer
files fails deep inside a loader with a message about something else. Here a reference that
exists is checked for what loading needs and resolved to its absolute path (so `./m`, its
absolute path and `m/` are one model in every table); one that looks like a path (more than one
`/`, a leading `.`, `/` or `~`, a trailing `/`) and does not exist is an error; a hub id is
looked up only when the hub can be reached, else the local cache alone answers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import struct
import socket
from pathlib import Path

from s2d_bench.errors import UserError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
HUB_HOST = "huggingface.co"


@functools.cache
def hub_offline() -> bool:
    """HF_HUB_OFFLINE is set, or the hub's host does not answer within two seconds (checked once per process)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return True
    try:
        socket.create_connection((HUB_HOST, 443), timeout=2.0).close()
        return False
    except OSError:
        return True


def looks_like_path(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or ref.endswith("/") or ref.count("/") > 1 or os.sep != "/" and os.sep in ref


def missing_files(folder: Path, tokenizer: bool = True) -> str | None:
    """What a model folder lacks for loading (config, tokenizer, chat template), or None."""
    if not (folder / "config.json").is_file():
        return "no config.json (not a saved Hugging Face model folder)"
    if tokenizer and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return f"no tokenizer files ({', '.join(TOKENIZER_FILES)}); save the tokenizer beside the weights (tokenizer.save_pretrained)"
    return None


def resolve_model(ref: str, what: str = "model", tokenizer: bool = True) -> str:
    """The reference to load: a checked folder's absolute path, or a hub id that can be loaded now."""
    if not ref:
        raise UserError(f"{what}: empty model reference; give a saved Hugging Face folder or a hub id")
    folder = Path(ref).expanduser()
    if folder.is_dir():
        problem = missing_files(folder, tokenizer)
        if problem:
            raise UserError(f"{what} '{ref}': {problem}")
        return str(folder.resolve())
    if folder.exists():
        raise UserError(f"{what} '{ref}' is a file; give the folder the model was saved to")
    if looks_like_path(ref):
        raise UserError(f"{what} '{ref}' does not exist (looked in {folder.resolve().parent}); give a saved Hugging Face folder or an org/name hub id")
    if hub_offline() and not _cached(ref):
        raise UserError(f"{what} '{ref}': no folder of that name here, and the hub is unreachable with no cached copy; "
                        "give a local folder, or download it first")
    return ref


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def with_revision(ref: str) -> str:
    """How a table names a model: a folder by its absolute path, a hub id with the commit it was loaded at
    (`org/name@<sha>`, from the local cache after loading), so two revisions are two rows."""
    if Path(ref).is_dir():
        return ref
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(ref, "config.json")
    if isinstance(cached, str) and Path(cached).parent.parent.name == "snapshots":
        return f"{ref}@{Path(cached).parent.name[:12]}"
    return ref


def load_kwargs(ref: str) -> dict:
    """`from_pretrained` keywords: a hub id read offline comes from the cache only, without retries."""
    return {"local_files_only": True} if not Path(ref).is_dir() and hub_offline() else {}


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
FULL_HASH_BYTES = 256 * 2**20  # weights up to this size are hashed whole; larger ones by header, size and sampled blocks
SAMPLED_BLOCKS, BLOCK_BYTES = 64, 2**16


def _listing(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """(relative path, size, mtime) of every visible file: what decides whether a cached fingerprint still holds."""
    files = (p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    return tuple(sorted((str(p.relative_to(folder)), stat.st_size, stat.st_mtime_ns) for p in files for stat in (p.stat(),)))


def fingerprint(folder: Path) -> str:
    """What a local model folder holds, as a short hash: every visible file's name and size, the small files (config,
    tokenizer, generation config) whole, and the weights whole up to `FULL_HASH_BYTES` in all, else each weight file's
    first 64 KiB (a safetensors header with every tensor's name, shape and offset) and 64 blocks spread over it.

    It joins a path model's node id, so replacing the weights of `student.path` is a new node whose results are not
    mixed with the old model's (a path alone would keep the old scores). Sampled blocks catch any training of a large
    checkpoint, which changes every tensor; they would miss a single edited byte, which a copy never makes.
    """
    return _fingerprint(str(folder.resolve()), _listing(folder))


@functools.lru_cache(maxsize=64)
def _fingerprint(folder: str, listing: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    weights = sum(size for name, size, _ in listing if name.endswith(WEIGHT_SUFFIXES))
    for name, size, _ in listing:
        digest.update(f"{name}\0{size}\0".encode())
        with open(Path(folder) / name, "rb") as handle:
            if not name.endswith(WEIGHT_SUFFIXES) or weights <= FULL_HASH_BYTES:
                for block in iter(lambda: handle.read(2**20), b""):
                    digest.update(block)
                continue
            for i in range(SAMPLED_BLOCKS):
                handle.seek(0 if i == 0 else size * i // SAMPLED_BLOCKS)
                digest.update(handle.read(BLOCK_BYTES))
    return digest.hexdigest()[:16]


def damaged_weights(folder: Path) -> str | None:
    """A safetensors file whose size is not what its header describes (a copy cut short, a download interrupted), or
    None. Checked before anything runs, so a truncated `student.path` is named at once rather than after the teacher's
    evaluation, as a loader error that names no model."""
    for path in sorted(folder.glob("*.safetensors")):
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            try:
                header = json.loads(handle.read(length)) if length is not None and 8 + length <= size else None
            except ValueError:
                header = None
        if not isinstance(header, dict):
            return f"{path.name} is not a readable safetensors file ({size:,} bytes, no valid header)"
        end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        if size != 8 + length + end:
            return f"{path.name} has {size:,} bytes where its header describes {8 + length + end:,} (cut short: copy or download it again)"
    return None
