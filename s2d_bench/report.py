"""The end-of-run table: avg@k per arm and stage, one column group per benchmark, from result records only."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pandas as pd


def stage_table(records: list[dict[str, Any]], arms: dict[str, list[str]]) -> pd.DataFrame:
    """Rows: the base models, then each arm's stages in order (shared stages repeat their numbers)."""
    by_node: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)  # node -> benchmark column -> record
    for r in records:
        by_node[r["node"]][r["task"]] = r
    rows = []
    for node, per_task in by_node.items():
        first = next(iter(per_task.values()))
        if first["stage"] == "base":
            rows.append(_row("(base)", first["role"], per_task))
    for arm, nodes in arms.items():
        for node_id in nodes:
            per_task = by_node[node_id]
            rows.append(_row(arm, next(iter(per_task.values()))["stage"], per_task))
    return pd.DataFrame(rows)


def _row(arm: str, step: str, per_task: dict[str, dict[str, Any]]) -> dict[str, Any]:
    first = next(iter(per_task.values()))
    row: dict[str, Any] = {"arm": arm, "after": step, "model": first["role"]}
    for task, r in per_task.items():
        row[f"{task} {r['metric']}"] = f"{r['mean']:.3f}"
        row[f"{task} ± se"] = f"{r['stderr']:.3f}"
        row[f"{task} n x k"] = f"{r['n']}x{r['k']}"
    row["labeled (draws/distinct)"] = f"{first['labeled_draws']}/{first['labeled_unique']}"
    return row


def render(records: list[dict[str, Any]], arms: dict[str, list[str]]) -> str:
    return stage_table(records, arms).to_string(index=False)
