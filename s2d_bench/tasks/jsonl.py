"""Reading a local JSON Lines data file, with an error that names the line for every way it can be bad.

`datasets.load_dataset("json")` answers an empty file with `StopIteration`, a non-UTF-8 byte
with a `UnicodeDecodeError` from pyarrow and a malformed line with `DatasetGenerationError`,
none naming the line. A benchmark file is a few hundred records, so the standard library reads
it line by line and says which line is wrong and how. The hub path stays with `datasets`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from s2d_bench.errors import UserError

MAX_LINE_BYTES = 1 << 20  # 1 MiB: a competition problem is a few KB; a larger record is a broken file, not a prompt


def read_jsonl(path: Path, what: str, required: tuple[str, ...] = ("problem", "answer")) -> list[dict[str, Any]]:
    """The records of `path` in file order; blank lines are skipped."""
    rows = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            where = f"{what}: {path} line {number}"
            if len(raw) > MAX_LINE_BYTES:
                raise UserError(f"{where} is {len(raw) / 2**20:.1f} MiB (limit {MAX_LINE_BYTES // 2**20} MiB per record); "
                                "fix or remove that record")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(f"{where} is not UTF-8 (byte {exc.start}); re-encode the file as UTF-8") from None
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UserError(f"{where} is not JSON ({exc.msg}, column {exc.colno}); each line must be one JSON object") from None
            if not isinstance(row, dict):
                raise UserError(f"{where} is a JSON {type(row).__name__}, not an object with fields {', '.join(required)}")
            missing = [key for key in required if row.get(key) in (None, "")]
            if missing:
                raise UserError(f"{where} has no {', '.join(missing)}; every record needs {', '.join(required)}")
            rows.append(row)
    if not rows:
        raise UserError(f"{what}: {path} holds no records; give a JSON Lines file with one object per line")
    return rows
