"""A suite's results as a Hugging Face dataset folder: Parquet tables, a dataset card, the rendered tables.

`s2d-bench leaderboard publish --hub-dir DIR` writes a folder to upload as it is
(`hf upload --repo-type dataset ORG/NAME DIR`), the way lm-eval, lighteval and
evalchemy publish results:

  data/per_problem.parquet  one row per (record, problem): the score behind every interval
  data/records.parquet      one row per evaluation record (its fields, and the whole record as JSON)
  data/arms.parquet         each arm's path of nodes, per config and seed
  data/diagnostics.parquet  C1 / C2 diagnostics per node
  data/leaderboard.parquet  the main table as published
  tables/                   the md, csv, html, tex tables and the stage plot (`publish`)
  README.md                 the dataset card: YAML metadata (configs, task, protocol, seeds, versions) and the table

Nothing is lost on the way: `store_from_tables` rebuilds a results store from the records, arms and
diagnostics tables, and `leaderboards.build` on it gives the leaderboard back (tested).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import yaml

from s2d_bench.store import Store

TABLES = ("per_problem", "records", "arms", "diagnostics", "leaderboard")
RECORD_COLUMNS = ("suite", "node", "stage", "role", "seed", "seed_scope", "task", "benchmark", "metric", "k", "n", "mean", "stderr",
                  "model", "backend", "engine", "grader", "config_hash", "labeled_draws", "timestamp")


def tables(store: Store, suite: str, every_config: bool, board: Any, evals: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """The suite's rows as the folder's Parquet tables: its records `evals`, its arms (the newest config's unless
    `every_config`), diagnostics, and the main table of `board` (its `leaderboards.Leaderboard`)."""
    records = pd.DataFrame([{**{c: r.get(c) for c in RECORD_COLUMNS}, "record": json.dumps(r, sort_keys=True)} for r in evals])
    per_problem = pd.DataFrame([{"suite": suite, "node": r.get("node"), "stage": r.get("stage"), "seed": r.get("seed"), "task": r.get("task"),
                                 "model": r.get("model"), "problem": str(pid), "score": float(score)}
                                for r in evals for pid, score in (r.get("per_problem") or {}).items()])
    arms = pd.DataFrame(store.arms(suite, every_config), columns=["config", "seed", "arm", "position", "node", "stage", "written"])
    diagnostics = pd.DataFrame([{"node": d["node"], "kind": d["kind"], "record": json.dumps(d, sort_keys=True)} for d in store.diagnostics(suite)],
                               columns=["node", "kind", "record"])
    return {"per_problem": per_problem, "records": records, "arms": arms, "diagnostics": diagnostics, "leaderboard": board.main.astype(str)}


def store_from_tables(records: Iterable[dict[str, Any]], arms: Iterable[dict[str, Any]], diagnostics: Iterable[dict[str, Any]],
                      path: Path) -> Store:
    """A results store at `path` holding what a hub folder's records, arms and diagnostics tables hold (rows as dicts,
    e.g. from `datasets.load_dataset("parquet", ...)`), so the leaderboard can be built from a downloaded dataset."""
    store = Store(path)
    for row in records:
        record = json.loads(row["record"])
        store.put_eval(hashlib.sha256(row["record"].encode()).hexdigest()[:24], row["suite"], record)  # one key per distinct record
    paths: dict[tuple, list[tuple[int, str, str]]] = {}
    for row in arms:
        paths.setdefault((row["config"], row["seed"], row["arm"], row["written"]), []).append((row["position"], row["node"], row["stage"]))
    suite = next(iter({r["suite"] for r in store.evals()}), "")
    for (config, seed, arm, written), steps in paths.items():
        store.put_arms(suite, int(seed), {arm: [(node, stage) for _, node, stage in sorted(steps)]}, config, float(written))
    for row in diagnostics:
        record = json.loads(row["record"])
        store.put_diagnostic(suite, row["node"], row["kind"], {k: v for k, v in record.items() if k not in ("node", "kind")})
    return store


def card(suite: str, records: list[dict[str, Any]], table_md: str) -> str:
    """The dataset card: YAML metadata the Hub reads (configs, tags) and ours (task, protocol, seeds, versions), then the table."""

    def distinct(key: str) -> list[Any]:
        seen: list[Any] = []
        for r in records:
            value = r.get(key)
            if value is not None and value not in seen:
                seen.append(value)
        return seen

    meta = {
        "pretty_name": f"s2d-bench results: {suite}",
        "tags": ["s2d-bench", "evaluation", "distillation", "grpo", "on-policy-distillation"],
        "configs": [{"config_name": name, "data_files": [{"split": "train", "path": f"data/{name}.parquet"}],
                     **({"default": True} if name == "leaderboard" else {})} for name in TABLES],
        "s2d_bench": {
            "suite": suite,
            "tasks": distinct("task"),
            "benchmarks": distinct("benchmark"),
            "protocol": {"metric": distinct("metric"), "eval_config": distinct("eval_config"), "grader": distinct("grader"),
                         "audit_grader": distinct("audit_grader"), "engine": distinct("engine"), "thinking": distinct("thinking")},
            "seeds": sorted(distinct("seed")),
            "seed_scope": distinct("seed_scope") or ["stages"],
            "configs": distinct("config_hash"),
            "backends": distinct("backend"),
            "models": distinct("model"),
            "git_commits": distinct("git_commit"),
            "versions": distinct("versions"),
        },
    }
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=120)
    body = f"""# s2d-bench results: {suite}

Results of the s2d-bench workflow benchmark (teacher GRPO, forward-KL warmup,
on-policy distillation, student GRPO; avg@k after every stage), as `s2d-bench leaderboard publish --hub-dir` wrote them.

| config | one row per |
|---|---|
| `leaderboard` | arm, as the published table shows it |
| `per_problem` | (record, problem): the avg@k of one model on one problem, the unit every interval resamples |
| `records` | evaluation record: node, stage, seed, task, k, n, mean, stderr, and the whole record as JSON (`record`) |
| `arms` | (config, seed, arm, position): the node each arm's stage produced |
| `diagnostics` | (node, kind): the C1 and C2 diagnostics as JSON |

Load a table: `datasets.load_dataset("parquet", data_files="data/per_problem.parquet")` here, or
`datasets.load_dataset("ORG/NAME", "per_problem")` from the Hub. Rebuild every table from the data:
`s2d_bench.leaderboards.hub.store_from_tables(records, arms, diagnostics, path)`, then `s2d_bench.leaderboards.build`.

{table_md}
"""
    return f"---\n{header}---\n\n{body}"


def write_hub_dir(store: Store, suite: str, every_config: bool, folder: Path) -> list[Path]:
    """The folder described above; returns the paths written."""
    from s2d_bench.leaderboards import build, publish, render

    board, evals = build(store, suite, every_config), store.evals(suite)
    frames = tables(store, suite, every_config, board, evals)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    paths = []
    for name in TABLES:
        path = folder / "data" / f"{name}.parquet"
        frames[name].to_parquet(path, index=False)
        paths.append(path)
    paths.extend(publish(board, folder / "tables"))
    readme = folder / "README.md"
    readme.write_text(card(suite, evals, render(board, "md")), encoding="utf-8")
    return [readme, *paths]
