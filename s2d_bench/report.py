"""The end-of-run table: avg@k per arm and stage, rendered from result records only."""

from __future__ import annotations

from typing import Any

import pandas as pd


def stage_table(records: list[dict[str, Any]], arms: dict[str, list[str]]) -> pd.DataFrame:
    """Rows: the base models, then each arm's stages in order (shared stages repeat their number)."""
    by_node = {r["node"]: r for r in records}
    rows = []
    for r in records:
        if r["stage"] == "base":
            rows.append(_row("(base)", r["role"], r))
    for arm, nodes in arms.items():
        for node_id in nodes:
            r = by_node[node_id]
            rows.append(_row(arm, r["stage"], r))
    return pd.DataFrame(rows)


def _row(arm: str, step: str, r: dict[str, Any]) -> dict[str, Any]:
    return {
        "arm": arm,
        "after": step,
        "model": r["role"],
        r["metric"]: f"{r['mean']:.3f}",
        "± se": f"{r['stderr']:.3f}",
        "labeled (draws/distinct)": f"{r['labeled_draws']}/{r['labeled_unique']}",
        "n x k": f"{r['n']}x{r['k']}",
    }


def render(records: list[dict[str, Any]], arms: dict[str, list[str]]) -> str:
    return stage_table(records, arms).to_string(index=False)
