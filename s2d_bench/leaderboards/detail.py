"""The leaderboard's detail view: the paper's conditions C1 and C2, pooled over seeds.

C1 (the teacher is reward-shaped): stage 1's gain in held-out avg@k (from the two evaluation
records) and in training reward (first tenth of steps to last tenth, from the diagnostic).
C2 (the teacher is within small KL of the student): KL(T||S) and KL(S||T) around each
distillation stage, before -> after, on the same held-out prompts. Both from stored records only.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd

from s2d_bench.leaderboards.tables import latest_by_node


def _arms_of(arms: list[dict[str, Any]]) -> dict[str, str]:
    """node -> the arms that run it, comma-joined (a shared node serves several arms)."""
    out: dict[str, set[str]] = defaultdict(set)
    for row in arms:
        out[row["node"]].add(row["arm"])
    return {node: ", ".join(sorted(names)) for node, names in out.items()}


def c1_table(evals: list[dict[str, Any]], diagnostics: list[dict[str, Any]]) -> pd.DataFrame:
    by_node = {node: r for (node, _), r in latest_by_node(evals).items()}
    rows = []
    for d in (d for d in diagnostics if d["kind"] == "c1"):
        record = by_node.get(d["node"])
        parent = by_node.get(record.get("parent")) if record else None
        if record is None or parent is None:
            continue
        rows.append({"seed": d.get("seed"), "avg@k before": parent["mean"], "avg@k after": record["mean"],
                     "train reward first 10%": d.get("reward_first", np.nan), "train reward last 10%": d.get("reward_last", np.nan)})
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    pooled = frame.drop(columns="seed").mean().to_dict()
    out = {"teacher RL": f"{len(frame)} seed(s)"}
    out["held-out avg@k"] = f"{pooled['avg@k before']:.3f} → {pooled['avg@k after']:.3f} ({pooled['avg@k after'] - pooled['avg@k before']:+.3f})"
    out["training reward"] = f"{pooled['train reward first 10%']:.3f} → {pooled['train reward last 10%']:.3f}"
    return pd.DataFrame([out])


def c2_table(arms: list[dict[str, Any]], diagnostics: list[dict[str, Any]]) -> pd.DataFrame:
    arms_of = _arms_of(arms)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for d in (d for d in diagnostics if d["kind"] == "c2"):
        groups[(d["stage"], arms_of.get(d["node"], "?"), d.get("top_k") if d.get("teacher") == "served" else None)].append(d)
    rows = []
    for (stage, arm_names, served_k), items in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)):
        mean = lambda key: float(np.mean([d[key] for d in items]))  # noqa: E731
        # a served teacher gives top-k log-probs: its KLs are the sampled token's log-ratio, an estimate (diagnostics.py)
        label = stage if served_k is None else f"{stage} (served teacher: sampled-token estimate, top-k {served_k})"
        rows.append({
            "stage": label, "arms": arm_names, "seeds": len(items),
            "KL(T||S) before → after": f"{mean('kl_forward_before'):.3f} → {mean('kl_forward_after'):.3f}",
            "KL(S||T) before → after": f"{mean('kl_reverse_before'):.3f} → {mean('kl_reverse_after'):.3f}",
        })
    return pd.DataFrame(rows)
