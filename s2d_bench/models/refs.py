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
import os
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
