"""`math`: real competition mathematics for real checkpoints (the paper's setting).

Training problems come from `task.train_data` (a JSON Lines file or a hub dataset with `problem`
and `answer` fields); a seeded shuffle gives the first `n_labeled` as the labeled set (answers
used by the RL stages) and the next `n_unlabeled` as prompts for the dense bridge, whose answers
are never read. Every evaluation uses `task.test_benchmark` (MATH-500 by default), limited to
`n_test` problems. Rewards and evaluation grade with math-verify on the last boxed answer.
This task has no pretraining corpus: its models come from `model.path`.
"""

from __future__ import annotations

import random
from pathlib import Path

from s2d_bench.config import TaskConfig
from s2d_bench.errors import UserError
from s2d_bench.models.refs import hub_offline, looks_like_path
from s2d_bench.tasks.base import Problem, Splits
from s2d_bench.tasks.benchmarks import DEFAULT_TEMPLATE, load_problems
from s2d_bench.tasks.jsonl import read_jsonl


def load_training_problems(source: str) -> list[Problem]:
    """Rows with `problem` and `answer` from a local JSON Lines file or a hub dataset id."""
    if not source:
        raise UserError("task 'math' needs task.train_data: a JSON Lines file or hub dataset with problem and answer fields")
    if Path(source).is_file():
        rows = read_jsonl(Path(source), "task.train_data")
    else:
        rows = _hub_rows(source)
    return [Problem(id=str(r.get("id", i)), prompt=DEFAULT_TEMPLATE.format(problem=r["problem"]), answer=str(r["answer"]))
            for i, r in enumerate(rows)]


def _hub_rows(source: str) -> list[dict]:
    import datasets

    if looks_like_path(source):
        raise UserError(f"task.train_data '{source}' does not exist; give a JSON Lines file with problem and answer fields")
    if hub_offline():
        raise UserError(f"task.train_data '{source}': not a local file, and the hub is unreachable; give a local JSON Lines file")
    try:
        rows = datasets.load_dataset(source, split="train")
    except (ConnectionError, OSError, ValueError) as exc:
        raise UserError(f"task.train_data: cannot load {source} ({exc}); offline, give a local JSON Lines file") from None
    missing = {"problem", "answer"} - set(rows.column_names)
    if missing:
        raise UserError(f"task.train_data {source}: rows need fields problem and answer; missing {sorted(missing)}")
    return list(rows)


class MathTask:
    grader = "math_verify"  # registered grader of rewards and evaluations alike (rewards in the pool, with its timeout)

    def __init__(self, cfg: TaskConfig) -> None:
        self.cfg = cfg

    def splits(self) -> Splits:
        from s2d_bench.tasks import BENCHMARKS

        train = load_training_problems(self.cfg.train_data)
        random.Random(self.cfg.seed).shuffle(train)
        labeled, unlabeled = train[: self.cfg.n_labeled], train[self.cfg.n_labeled : self.cfg.n_labeled + self.cfg.n_unlabeled]
        test = load_problems(BENCHMARKS.get(self.cfg.test_benchmark), self.cfg.data_dir or None, self.cfg.n_test)
        return Splits(labeled, unlabeled, test)

    def pretrain_examples(self, rng: random.Random, n: int) -> list[tuple[str, str]]:
        raise UserError("task 'math' has no pretraining corpus: set teacher.path and student.path to checkpoints")
