"""What an evaluation measures: a benchmark's problems under one sampling protocol.

`eval.benchmarks` (the pipeline) and `s2d-bench eval --tasks` (a suite) both end here, so a
protocol is resolved one way: a field the entry sets wins, otherwise the benchmark's own
definition (tasks/benchmarks.py) applies, and for `task`, the task's held-out split, the
`eval` section's protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from s2d_bench.config import BenchmarkConfig, EvalConfig, RunConfig
from s2d_bench.tasks import BENCHMARKS
from s2d_bench.tasks.base import Problem
from s2d_bench.tasks.benchmarks import GROUPS, Benchmark, load_problems

TASK = "task"
PROTOCOL = ("samples", "temperature", "top_p", "top_k", "max_new_tokens", "extraction")
# A protocol setting added after records existed, left out of a protocol at the value every earlier record was made
# with: their file names and store keys stay theirs
LATER_PROTOCOL = {"extraction": "last_box"}


@dataclass(frozen=True)
class Target:
    label: str  # the leaderboard column (benchmark name, or the task's name)
    benchmark: str  # registered name, or "task"
    problems: list[Problem]
    cfg: EvalConfig  # the concrete protocol
    grader: str
    audit: str | None
    data: str  # where the problems came from
    limit: int | None

    def protocol(self) -> dict:
        """What the record's protocol says and its hashes read (LATER_PROTOCOL settings only where they differ)."""
        values = {name: getattr(self.cfg, name) for name in PROTOCOL}
        return {name: value for name, value in values.items() if not (name in LATER_PROTOCOL and LATER_PROTOCOL[name] == value)}


def _merged(entry: BenchmarkConfig, defaults: dict, eval_cfg: EvalConfig) -> EvalConfig:
    fields = {name: getattr(entry, name) if getattr(entry, name) is not None else defaults[name] for name in PROTOCOL}
    return EvalConfig(**fields, prompts_per_batch=eval_cfg.prompts_per_batch, engine=eval_cfg.engine)


def entries(benchmarks: list[BenchmarkConfig]) -> list[BenchmarkConfig]:
    """`eval.benchmarks` with each group (tasks/benchmarks.GROUPS) replaced by an entry per member, carrying the group
    entry's settings; a benchmark named twice (alone and in a group) is evaluated once, under its first entry."""
    out: dict[str, BenchmarkConfig] = {}
    for entry in benchmarks:
        for name in GROUPS.get(entry.name, (entry.name,)):
            out.setdefault(name, replace(entry, name=name))
    return list(out.values())


def benchmark_target(entry: BenchmarkConfig, bench: Benchmark, eval_cfg: EvalConfig, data: str | None) -> Target:
    """A registered benchmark, its problems read from `data` (file or folder; None: $S2D_DATA_DIR, else the hub)."""
    cfg = _merged(entry, {name: getattr(bench, name) for name in PROTOCOL}, eval_cfg)
    problems = load_problems(bench, data, entry.limit)
    label = bench.name
    if data and Path(data).is_file() and Path(data).name != bench.local_file:  # another file under this benchmark's protocol
        label = f"{bench.name}[{Path(data).stem}]"
    return Target(label, bench.name, problems, cfg, bench.grader, bench.audit, data or bench.hf_id, entry.limit)


def task_target(entry: BenchmarkConfig, task_name: str, test: list[Problem], grader: str, eval_cfg: EvalConfig) -> Target:
    """The task's own held-out split under the `eval` section's protocol (the entry's fields win)."""
    cfg = _merged(entry, {name: getattr(eval_cfg, name) for name in PROTOCOL}, eval_cfg)
    problems = test[: entry.limit]  # limit None: all
    return Target(task_name, TASK, problems, cfg, grader, None, f"task:{task_name}", entry.limit)


def run_targets(cfg: RunConfig, grader: str, test: list[Problem]) -> list[Target]:
    """A run's `eval.benchmarks`, each with its problems and protocol (the task's own test split for `task`), loaded once."""
    out = []
    for entry in entries(cfg.eval.benchmarks):
        if entry.name == TASK:
            out.append(task_target(entry, cfg.task.name, test, grader, cfg.eval))
        else:
            out.append(benchmark_target(entry, BENCHMARKS.get(entry.name), cfg.eval, cfg.task.data_dir or None))
    return out
