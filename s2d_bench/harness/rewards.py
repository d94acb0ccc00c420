"""RL rewards: the task's registered grader, run in the grading pool with its hard timeout.

GRPO's reward is the same verdict evaluation gives (the last boxed answer against the gold one),
and it must never hang a training run: math-verify can stall in C code on an answer such as
`9^{9^{9^{9}}}`, which no in-process timeout can stop. So rewards go through `GradingPool`,
whose workers are killed and replaced at the deadline. A timed-out completion scores 0 and is
counted (`grading_timeouts` in the stage's metrics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from s2d_bench.harness.grading import GradingPool, grade
from s2d_bench.tasks.base import Problem


@dataclass(frozen=True)
class Scores:
    """0/1 rewards, one per completion, and how many of them a grading timeout decided."""

    rewards: list[float]
    timeouts: int = 0


Reward = Callable[[list[str], list[Problem]], Scores]


class PoolReward:
    """`Reward` by a registered grader (GRADERS); isolated graders run in `pool`."""

    def __init__(self, grader: str, pool: GradingPool) -> None:
        self.grader, self.pool = grader, pool

    def __call__(self, completions: list[str], problems: list[Problem]) -> Scores:
        if len(completions) != len(problems):
            raise ValueError(f"{len(completions)} completions for {len(problems)} problems")
        verdicts = grade(completions, [p.answer for p in problems], self.grader, None, self.pool, rules=[p.rules for p in problems])
        return Scores([float(v.correct) for v in verdicts], sum(v.timed_out for v in verdicts))
