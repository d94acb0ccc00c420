"""The evaluation record: one typed row per (model, benchmark, protocol), written by `s2d-bench eval`,
the pipeline and ablations alike, stored as JSON in results.jsonl, the node folders and the store.

Workflow fields (run, node, arms, labeled budget ...) stay empty for a plain `s2d-bench eval`.
`task` is the column a leaderboard files the record under: the benchmark's name, or the task's
name for its own held-out split.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s2d_bench.harness.provenance import git_commit, package_versions

if TYPE_CHECKING:  # evaluate.py brings the generation stack (torch); a reader of records (browse) needs none of it
    from s2d_bench.harness.evaluate import EvalResult


@dataclass
class EvalRecord:
    # what was evaluated, on what, how
    model: str
    task: str  # the leaderboard column: benchmark name, or the task's name for its held-out split
    benchmark: str  # registered benchmark, or "task"
    eval_config: dict[str, Any]  # the sampling protocol: samples, temperature, top_p, top_k, max_new_tokens
    engine: str
    thinking: bool
    grader: str
    audit_grader: str | None
    seed: int  # the run's seed (pipeline); for `s2d-bench eval`, its --seed
    eval_seed: int  # the sampling seed the evaluation's per-problem seeds derive from
    data: str  # where the problems came from (file, folder, hub id, or the task)
    limit: int | None
    # the numbers
    metric: str
    n: int
    k: int
    mean: float
    stderr: float
    pass_at: dict[str, float]
    maj: float
    agreement: float | None
    timeouts: int
    no_answer: float
    samples_per_second: float
    tokens_per_second: float
    eval_seconds: float
    breakdown: list[dict[str, Any]]
    per_problem: dict[str, float]
    # the workflow (pipeline records only)
    stage: str = "eval"
    run: str | None = None
    node: str | None = None
    role: str | None = None
    arms: list[str] = field(default_factory=list)
    parent: str | None = None
    teacher_node: str | None = None
    backend: str | None = None
    teacher_model: str | None = None
    student_model: str | None = None
    config_hash: str | None = None
    node_config: dict[str, Any] = field(default_factory=dict)
    labeled_draws: int = 0
    labeled_unique: int = 0
    labeled_per_stage: dict[str, int] = field(default_factory=dict)
    train_seconds: float = 0.0
    seed_scope: str | None = None  # pipeline: what its seed varied, 'stages' or 'all' (config.RunConfig.seed_scope)
    # provenance
    git_commit: str | None = field(default_factory=git_commit)
    versions: dict[str, str] = field(default_factory=package_versions)
    timestamp: float = field(default_factory=time.time)

    @classmethod
    def of(cls, result: EvalResult, **fields: Any) -> "EvalRecord":
        """A record from an evaluation's result and the fields that say what it measured."""
        score = result.score
        return cls(
            metric=f"avg@{score.k}", n=score.n, k=score.k, mean=score.mean, stderr=score.stderr,
            pass_at={str(k): v for k, v in result.pass_at.items()}, maj=result.maj, agreement=result.agreement,
            timeouts=result.timeouts, no_answer=result.no_answer, samples_per_second=result.samples_per_second,
            tokens_per_second=result.tokens_per_second, eval_seconds=result.seconds, breakdown=result.breakdown,
            per_problem=result.per_problem, **fields,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EvalRecord":
        if not isinstance(data, dict):
            raise ValueError(f"not an evaluation record: a JSON {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"not an evaluation record: missing {missing}")
        return cls(**{k: v for k, v in data.items() if k in names})


def read_record(path: Path) -> dict[str, Any]:
    """A stored record as written (the dict), checked to be one; ValueError for unreadable or foreign JSON
    (a run re-evaluates it, `store rebuild` skips it). FileNotFoundError passes through."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is unreadable ({exc})") from None
    try:
        EvalRecord.from_dict(data)
    except TypeError as exc:  # a field of the wrong kind
        raise ValueError(f"{path} is not an evaluation record ({exc})") from None
    return data


def eval_records(folder: Path) -> list[Path]:
    """The records of an `s2d-bench eval` folder: `<model>-<hash>/<benchmark>/results.json`, and `<benchmark>/results.json`
    of folders written before evaluations were kept apart by model."""
    return sorted([*folder.glob("*/*/results.json"), *folder.glob("*/results.json")])


def problems_path(completions: Path) -> Path:
    """Where the problems of a completions file are: completions.jsonl -> problems.jsonl, completions-<h> -> problems-<h>."""
    return completions.with_name(completions.name.replace("completions", "problems", 1))
