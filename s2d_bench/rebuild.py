"""`s2d-bench store rebuild`: the results store made again from the files runs leave on disk.

The store is an index: every row it holds is also a file. A workflow run directory has each
evaluation record (`nodes/<id>/eval-*.json`), each diagnostic (`nodes/<id>/diagnostics.json`)
and each run's arm paths (`arms/*.json`); an `s2d-bench eval` output folder has one
`<model>-<hash>/<benchmark>/results.json` per model and benchmark. Rows are written with the keys the runs use, so
rebuilding into a store that already holds them replaces, never duplicates.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from s2d_bench.errors import UserError
from s2d_bench.harness.records import eval_records, read_record
from s2d_bench.identity import put_record
from s2d_bench.store import Store


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        print(f"warning: {path} is unreadable; skipped", file=sys.stderr)
        return None
    return data if isinstance(data, dict) else None


def _record(path: Path) -> dict[str, Any] | None:
    try:
        return read_record(path)
    except ValueError as exc:
        print(f"warning: {exc}; skipped", file=sys.stderr)
        return None


def rebuild(store: Store, folders: list[Path], eval_suite: str = "eval") -> dict[str, int]:
    """Write every row the folders hold into `store`; return how many of each kind."""
    counts = {"evals": 0, "arms": 0, "diagnostics": 0}
    for folder in folders:
        if (folder / "nodes").is_dir():
            _run_dir(store, folder, counts)
        elif records := eval_records(folder):
            for path in records:
                record = _record(path)
                if record is not None:
                    put_record(store, record.get("run") or eval_suite, record)
                    counts["evals"] += 1
        else:
            raise UserError(f"{folder} is neither a run directory (nodes/) nor an `s2d-bench eval` output folder (<model>/<benchmark>/results.json)")
    return counts


def _run_dir(store: Store, root: Path, counts: dict[str, int]) -> None:
    uses: dict[str, list[tuple[str, int, str]]] = defaultdict(list)  # node -> (suite, seed, stage) of each arm row
    for path in sorted((root / "arms").glob("*.json")):
        data = _read(path)
        if data is None:
            continue
        store.put_arms(data["suite"], data["seed"], {arm: [tuple(row) for row in rows] for arm, rows in data["arms"].items()},
                       data["config"], data["written"])
        counts["arms"] += 1
        for rows in data["arms"].values():
            for node, stage in rows:
                uses[node].append((data["suite"], data["seed"], stage))
    if counts["arms"] == 0:
        print(f"warning: {root} has no arms/ files (written since arms were kept on disk); its records are restored without arm paths",
              file=sys.stderr)
    for path in sorted((root / "nodes").glob("*/eval-*.json")):
        record = _record(path)
        if record is not None:  # keyed by its file's evaluation id, as the run keyed it (eval-<id>.json)
            put_record(store, record.get("run") or root.name, record, path.stem.removeprefix("eval-"))
            counts["evals"] += 1
    for path in sorted((root / "nodes").glob("*/diagnostics.json")):
        data = _read(path)
        if data is None or "kind" not in data:
            continue
        for suite, seed, stage in dict.fromkeys(uses.get(path.parent.name, [])):
            store.put_diagnostic(suite, path.parent.name, data["kind"], {**data, "stage": stage, "seed": seed})
            counts["diagnostics"] += 1
