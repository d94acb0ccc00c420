"""The backend interface: sampling plus one method per stage.

A backend trains the models it is handed in place; the stage files around it load, check, save
and evaluate. Shared algorithm code lives in `s2d_bench.losses` and `s2d_bench.models.sequences`,
never in an inherited base class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from s2d_bench.config import DistillConfig, GRPOConfig, RunConfig
from s2d_bench.harness.sampling import Sampling
from s2d_bench.models.sequences import Batch
from s2d_bench.tasks.base import Problem

Logger = Callable[[dict], None]
Grader = Callable[[str, Problem], bool]


@dataclass
class Rollouts:
    """k samples per prompt; sequence i answers prompt i // k."""

    texts: list[str]
    batch: Batch
    k: int


@dataclass
class RLJob:
    """GRPO on `policy` with labeled problems (stages 1 and 3)."""

    name: str
    policy: PreTrainedModel
    tok: PreTrainedTokenizerBase
    problems: list[Problem]
    grade: Grader
    cfg: GRPOConfig
    seed: int
    log: Logger


@dataclass
class DistillJob:
    """Dense teacher supervision of `student` on prompts only (stages 2a and 2b)."""

    name: str
    student: PreTrainedModel
    teacher: PreTrainedModel
    tok: PreTrainedTokenizerBase
    prompts: list[str]
    cfg: DistillConfig
    seed: int
    log: Logger
    workdir: str | None = None  # the stage's own folder, for caches a backend keeps (TRL: teacher rollouts)


@dataclass
class StageReport:
    """What a stage consumed: labeled problem ids drawn (with repeats) and steps taken."""

    steps: int
    labeled_draws: list[str] = field(default_factory=list)


class Backend(Protocol):
    name: str

    def validate(self, cfg: RunConfig) -> None:
        """Refuse, before any stage runs, config options this backend cannot express (UserError)."""
        ...

    def generate(self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: list[str], sampling: Sampling, seed: int) -> Rollouts:
        """k = sampling.k samples for each prompt, sampled with a KV cache."""
        ...

    def teacher_rl(self, job: RLJob) -> StageReport:
        ...

    def warmup(self, job: DistillJob) -> StageReport:
        ...

    def opd(self, job: DistillJob) -> StageReport:
        ...

    def student_rl(self, job: RLJob) -> StageReport:
        ...
