"""Leaderboard tables as pure functions of stored records (store.py): no model is touched.

Rows are arms (for a workflow suite) or models (for an `s2d-bench eval` suite); columns are
tasks. A cell is avg@k over seeds and problems with a 95% interval that holds both (training-seed
noise and problem sampling: intervals.py says how). The delta against the full workflow is
paired, by seed and by problem id, which is far tighter than the difference of two independent
intervals; two different problem sets are never paired. Every comparison also gives its
seed-to-seed SD and, unless resolved, how many seeds would resolve an effect of its size.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from s2d_bench.leaderboards.intervals import Interval, interval, pooled, seed_note, verdict
from s2d_bench.tasks.benchmarks import GROUPS

FULL = "full"
STAGE_ORDER = ["base", "teacher_rl", "warmup", "opd", "student_rl", "replay"]
SCORE = (0.0, 1.0)  # the range of an avg@k, for clipping its interval


def score(matrix: np.ndarray) -> Interval:
    """An avg@k cell: the (seeds, problems) matrix's mean with its interval over seeds and problems."""
    return interval(matrix, SCORE)


def latest_by_node(evals: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(node, task) -> its newest record (a node re-evaluated under a new eval config keeps the newest)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in sorted(evals, key=lambda r: r.get("timestamp", 0)):
        out[(r["node"], r["task"])] = r
    return out


def arm_paths(arms: list[dict[str, Any]]) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """arm -> seed -> its rows in stage order."""
    out: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in sorted(arms, key=lambda r: (r["arm"], r["seed"], r["position"])):
        out[row["arm"]][row["seed"]].append(row)
    return out


def _matrix(records: list[dict[str, Any]]) -> tuple[np.ndarray, list[str]]:
    """(seeds, problems) of per-problem means on the problems every record has, columns in sorted id order."""
    ids = sorted(set.intersection(*(set(r["per_problem"]) for r in records)))
    return np.array([[r["per_problem"][i] for i in ids] for r in records]), ids


def _paired_delta(mine: dict[int, dict[str, Any]], theirs: dict[int, dict[str, Any]], seeds: list[int]) -> Interval | None:
    """mine - theirs over `seeds`, paired by seed and by problem id (both matrices' columns are the sorted ids); None
    when the two arms' problem sets differ, whatever their sizes (two sets of equal size are still other problems)."""
    a, ids = _matrix([mine[s] for s in seeds])
    b, their_ids = _matrix([theirs[s] for s in seeds])
    return interval(a - b) if ids and ids == their_ids else None


def _final_records(paths: dict[int, list[dict[str, Any]]], evals: dict, task: str) -> dict[int, dict[str, Any]]:
    out = {}
    for seed, rows in paths.items():
        record = evals.get((rows[-1]["node"], task))
        if record is not None and record.get("per_problem"):
            out[seed] = record
    return out


def split_label(arm: str) -> tuple[str, str]:
    """`name [x]` (an arm labelled by its config, see leaderboards.build) -> ('name', 'x]'); an unlabelled arm -> (arm, '')."""
    name, _, label = arm.partition(" [")
    return name, label


def _full_of(arm: str) -> str:
    """The full arm an arm is compared with: `full`, or `full [x]` for an arm labelled `name [x]` (its config's)."""
    label = split_label(arm)[1]
    return f"{FULL} [{label}" if label else FULL


def _order(arms: list[str]) -> list[str]:
    """The full arm(s) first, then the rest by name; labelled arms (`name [x]`) of one name side by side."""
    return sorted(arms, key=lambda a: (a != _full_of(a), a))


def _budget(record: dict[str, Any]) -> str:
    per_stage = record.get("labeled_per_stage") or {}
    ordered = sorted(per_stage.items(), key=lambda item: STAGE_ORDER.index(item[0]) if item[0] in STAGE_ORDER else len(STAGE_ORDER))
    parts = [f"{stage} {n}" for stage, n in ordered if n]
    return f"{record.get('labeled_draws', 0)} ({' + '.join(parts) or 'none'})"


@dataclass(frozen=True)
class ArmResult:
    finals: dict[int, dict[str, Any]]  # seed -> the record of the arm's final model
    score: Interval
    compared: bool  # not the full arm, and shares a seed with it
    delta: Interval | None  # against the full arm, paired; None when not compared or on other problems


def _arm_result(paths: dict, by_node: dict, arm: str, task: str) -> ArmResult | None:
    """An arm's final records on a task, its score and its paired delta against its full arm; None without records."""
    finals = _final_records(paths[arm], by_node, task)
    if not finals:
        return None
    full = _final_records(paths.get(_full_of(arm), {}), by_node, task)
    common = sorted(set(finals) & set(full))
    compared = arm != _full_of(arm) and bool(common)
    return ArmResult(finals, score(_matrix(list(finals.values()))[0]), compared,
                     _paired_delta(finals, full, common) if compared else None)


SERVED = " (served)"  # how a record names a teacher on its own server (rundir.model_label)


def _served_teacher(paths: dict[int, list[dict[str, Any]]], by_node: dict, task: str) -> str:
    """'NAME (served): warmup topk k=64, opd sampled' when the arm distilled from a served teacher (its distillation stages
    trained on the server's top-k or sampled-token log-probs, which the row must say), else ''."""
    records = [by_node.get((row["node"], task)) for rows in paths.values() for row in rows]
    records = [r for r in records if r is not None]
    teacher = next((r["teacher_model"] for r in records if str(r.get("teacher_model", "")).endswith(SERVED)), None)
    if teacher is None:
        return ""
    stages = {}
    for r in records:
        cfg = r.get("node_config") or {}
        if "estimator" in cfg:
            stages.setdefault(r["stage"], f"{r['stage']} {cfg['estimator']}" + (f" k={cfg['top_k']}" if cfg["estimator"] == "topk" else ""))
    return f"{teacher}: {', '.join(stages.values())}" if stages else ""  # an arm that never asked the teacher (direct GRPO)


def arm_table(evals: list[dict[str, Any]], arms: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per arm: avg@k [95% CI] per task, paired delta against `full` with its seed SD, budget, trajectory."""
    by_node, paths = latest_by_node(evals), arm_paths(arms)
    tasks = sorted({task for _, task in by_node})
    trajectories = {task: trajectory(evals, arms, task) for task in tasks}
    rows = []
    for arm in _order(list(paths)):
        row: dict[str, Any] = {"arm": arm}
        for task in tasks:
            result = _arm_result(paths, by_node, arm, task)
            if result is None:
                continue
            first_record, delta = next(iter(result.finals.values())), result.delta
            row[f"{task} {first_record['metric']} [95% CI]"] = str(result.score)
            row["seeds"] = len(result.finals)
            if result.compared:
                row[f"{task} Δ vs full"] = str(delta) if delta is not None else "-"
                row[f"{task} Δ seeds"] = seed_note(delta) if delta is not None else "-"
            row["labeled draws (per stage)"] = _budget(first_record)
            served = _served_teacher(paths[arm], by_node, task)
            if served:
                row["teacher"] = served
            points = trajectories[task][trajectories[task]["arm"] == arm]
            row[f"{task} after each stage"] = " → ".join(f"{p.stage} {p.mean:.3f}" for p in points.itertuples())
        rows.append(row)
    frame = pd.DataFrame(rows)
    if "seeds" in frame:  # an arm with no records yet (a grid still running) leaves a gap: counts stay integers, not 2.0
        frame["seeds"] = frame["seeds"].astype("Int64")
    first = ["arm"] + [c for task in tasks for c in frame.columns if c.startswith(f"{task} ") and "after each stage" not in c]
    rest = [c for c in frame.columns if c not in first]
    return frame[first + rest].astype(object).fillna("-")


ABLATION_COLUMNS = ["arm", "seeds", "mean", "low", "high", "delta", "delta_low", "delta_high"]


def ablation_frame(evals: list[dict[str, Any]], arms: list[dict[str, Any]], task: str) -> pd.DataFrame:
    """The numbers of the ablation figure: per arm its final score and its delta against full, each with its
    interval (NaN where there is no delta), in the table's arm order."""
    by_node, paths = latest_by_node(evals), arm_paths(arms)
    rows = []
    for arm in _order(list(paths)):
        result = _arm_result(paths, by_node, arm, task)
        if result is None:
            continue
        cell, delta = result.score, result.delta
        d = (delta.mean, delta.low, delta.high) if delta is not None else (np.nan,) * 3
        rows.append([arm, len(result.finals), cell.mean, cell.low, cell.high, *d])
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)


# The paper's teacher-quality ordering: raw-teacher transfer < direct GRPO < RL-teacher transfer. Each rung is the
# first of its arm names the suite has (`bridge` in a config's own arms, `no-student-rl` in an ablation grid).
ORDERING = [("raw-teacher transfer", ("raw-bridge",)), ("direct GRPO", ("direct-grpo",)), ("RL-teacher transfer", ("bridge", "no-student-rl"))]


def _claim(delta: Interval) -> str:
    """'holds: Δ 0.02 [0.01, 0.03]; seed SD 0.004', with how many seeds would resolve it when it is not resolved."""
    claim = f"{verdict(delta)}: Δ {delta}"
    return claim if delta.problems_only else f"{claim}; {seed_note(delta)}"  # one seed: the verdict already says so


def ordering_table(evals: list[dict[str, Any]], arms: list[dict[str, Any]]) -> pd.DataFrame:
    """Per task: the three rungs' avg@k [95% CI] and, for each `<`, the paired delta (same seeds, same problems)
    with its interval and whether it holds (the interval above 0), is reversed (below 0) or is not resolved.
    Empty unless the suite has an arm for every rung."""
    by_node, paths = latest_by_node(evals), arm_paths(arms)
    rungs = [(label, next((a for a in names if a in paths), None)) for label, names in ORDERING]
    if any(arm is None for _, arm in rungs):
        return pd.DataFrame()
    rows = []
    for task in sorted({task for _, task in by_node}):
        finals = [_final_records(paths[arm], by_node, task) for _, arm in rungs]
        seeds = sorted(set.intersection(*(set(f) for f in finals)))
        if not seeds:
            continue
        row: dict[str, Any] = {"task": task, "seeds": len(seeds)}
        for (label, arm), final in zip(rungs, finals):
            row[f"{label} ({arm})"] = str(score(_matrix([final[s] for s in seeds])[0]))
        for (low, _), (high, _), lower, higher in zip(rungs, rungs[1:], finals, finals[1:]):
            delta = _paired_delta(higher, lower, seeds)
            row[f"{low} < {high}"] = _claim(delta) if delta is not None else "-"  # "-": different problems
        rows.append(row)
    return pd.DataFrame(rows)


REFERENCE_BACKEND = "torch"


def agreement_table(evals: list[dict[str, Any]], arms: list[dict[str, Any]]) -> pd.DataFrame:
    """Backend agreement: for each arm the suite has under more than one backend (every config's arm rows), each
    other backend's final avg@k minus the torch backend's, paired over the seeds and problems both have, with its
    95% interval and whether it contains 0. Empty unless some arm ran on two backends."""
    by_node = latest_by_node(evals)
    backend_of = {r["node"]: r.get("backend") for r in evals}
    by_backend: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))  # arm -> backend -> rows
    for config_rows in _by_config(arms).values():
        for arm, seeds in arm_paths(config_rows).items():
            backends = {backend_of.get(rows[-1]["node"]) for rows in seeds.values()}
            if len(backends) == 1 and None not in backends:
                by_backend[arm][backends.pop()].extend(r for rows in seeds.values() for r in rows)
    rows = []
    for arm in _order([a for a, b in by_backend.items() if REFERENCE_BACKEND in b and len(b) > 1]):
        reference = arm_paths(by_backend[arm][REFERENCE_BACKEND])[arm]
        for backend in sorted(b for b in by_backend[arm] if b != REFERENCE_BACKEND):
            other = arm_paths(by_backend[arm][backend])[arm]
            for task in sorted({t for _, t in by_node}):
                mine, theirs = _final_records(other, by_node, task), _final_records(reference, by_node, task)
                seeds = sorted(set(mine) & set(theirs))
                if not seeds:
                    continue
                delta = _paired_delta(mine, theirs, seeds)
                if delta is None:
                    continue
                rows.append({"arm": arm, "task": task, "backend": backend, "seeds": len(seeds),
                             "avg@k [95% CI]": str(score(_matrix([mine[s] for s in seeds])[0])),
                             f"{REFERENCE_BACKEND} avg@k [95% CI]": str(score(_matrix([theirs[s] for s in seeds])[0])),
                             f"Δ vs {REFERENCE_BACKEND} [95% CI]": str(delta),
                             "agrees (interval holds 0)": _agrees(delta), "Δ seeds": seed_note(delta)})
    return pd.DataFrame(rows)


def _agrees(delta: Interval) -> str:
    word = "yes" if delta.low <= 0 <= delta.high else "no"
    return f"{word} (one seed: problems only)" if delta.problems_only else word


def _by_config(arms: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in arms:
        out[row.get("config", "")].append(row)
    return out


def trajectory(evals: list[dict[str, Any]], arms: list[dict[str, Any]], task: str) -> pd.DataFrame:
    """arm x stage position: mean avg@k over seeds after each of the arm's stages (base first)."""
    by_node, paths = latest_by_node(evals), arm_paths(arms)
    rows = []
    for arm in _order(list(paths)):
        points: dict[int, list[float]] = defaultdict(list)
        stages: dict[int, str] = {}
        for rows_of_seed in paths[arm].values():
            for row in rows_of_seed:
                record = by_node.get((row["node"], task))
                if record is not None:
                    points[row["position"]].append(record["mean"])
                    stages[row["position"]] = row["stage"]
        for position in sorted(points):
            rows.append({"arm": arm, "position": position, "stage": stages[position], "mean": float(np.mean(points[position])),
                         "seeds": len(points[position])})
    return pd.DataFrame(rows, columns=["arm", "position", "stage", "mean", "seeds"])


def protocol_of(record: dict[str, Any]) -> str:
    """What two evaluations of one model must share to be pooled: problem set, k, sampling, length, prompt, grader."""
    cfg = record.get("eval_config") or {}
    parts = [f"n={record['n']}", f"k={record['k']}"]
    parts += [f"{label}={cfg[key]}" for key, label in (("temperature", "T"), ("top_p", "top-p"), ("top_k", "top-k"),
                                                       ("max_new_tokens", "max")) if key in cfg]
    if record.get("limit"):
        parts.append(f"limit={record['limit']}")
    if record.get("data"):
        parts.append(f"data={Path(str(record['data'])).name}")
    if record.get("thinking"):
        parts.append("thinking")
    parts.append(str(record.get("grader", "?")))
    return " ".join(parts)


def model_table(evals: list[dict[str, Any]]) -> pd.DataFrame:
    """For an `s2d-bench eval` suite: one row per model, avg@k [95% CI] per benchmark.

    Records of different protocols (problem set, k, sampling, length, prompt, grader) are never
    pooled: a model evaluated under a second protocol on a benchmark gets a second row, and a
    `protocol` column per benchmark then says which is which.
    """
    groups: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in sorted(evals, key=lambda r: r.get("timestamp", 0)):
        groups[r["model"]][r["task"]][protocol_of(r)].append(r)
    several = any(len(by_protocol) > 1 for tasks in groups.values() for by_protocol in tasks.values())
    rows = []
    for model in sorted(groups):
        depth = max(len(by_protocol) for by_protocol in groups[model].values())
        for i in range(depth):
            row: dict[str, Any] = {"model": model}
            matrices: dict[str, np.ndarray] = {}
            for task, by_protocol in sorted(groups[model].items()):
                protocols = list(by_protocol)
                if i >= len(protocols):
                    continue
                usable = [r for r in by_protocol[protocols[i]] if r.get("per_problem")]
                if usable:
                    matrices[task], _ = _matrix(usable)
                    row[f"{task} {usable[-1]['metric']} [95% CI]"] = str(score(matrices[task]))
                    if several:
                        row[f"{task} protocol"] = protocols[i]
            for group, members in GROUPS.items():  # the group's macro average, once every member is there
                if all(m in matrices for m in members):
                    row[f"{group} (mean of {len(members)}) [95% CI]"] = str(pooled([matrices[m] for m in members]))
            rows.append(row)
    return pd.DataFrame(rows).fillna("-")
