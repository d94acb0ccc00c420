"""Where a command will write, checked before it does any work.

A run directory that is a file, an `--out` on a read-only file system or a store inside a folder
that cannot be written used to fail after pretraining or generation, as a traceback, leaving half
a run behind. These checks touch nothing: they walk up to the nearest part of the path that
exists and ask the operating system whether it could be written (`os.access` answers for a
read-only mount even to root).
"""

from __future__ import annotations

import os
from pathlib import Path

from s2d_bench.errors import UserError


def _existing(path: Path) -> Path:
    """The path itself or its nearest existing ancestor."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_folder(path: Path, what: str) -> None:
    """`path` is, or can become, a folder this process may write into."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} '{path}' is a file; give a folder (it holds several files)")
    _check_writable(path, what)


def check_file(path: Path, what: str) -> None:
    """`path` is, or can become, a file this process may write (and its folder, for SQLite's journal beside it)."""
    if path.is_dir():
        raise UserError(f"{what} '{path}' is a folder; give a file path")
    _check_writable(path.parent, what, path)


def _check_writable(folder: Path, what: str, shown: Path | None = None) -> None:
    nearest = _existing(folder)
    if not nearest.is_dir():
        raise UserError(f"{what} '{shown or folder}': '{nearest}' is a file, so nothing can be created under it")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise UserError(f"{what} '{shown or folder}' cannot be written ('{nearest}' is read-only); choose another location")
