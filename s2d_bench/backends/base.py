"""The backend interface: one method per stage.

A backend trains the models it is handed in place; the stage files around it load, check, save
and evaluate. Shared algorithm code lives in `s2d_bench.losses` and `s2d_bench.models.sequences`,
sampling in `s2d_bench.generation`, never in an inherited base class.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from s2d_bench.config import DistillConfig, GRPOConfig
from s2d_bench.harness.rewards import Reward
from s2d_bench.resume import Checkpoints
from s2d_bench.served.teacher import ServedTeacher
from s2d_bench.tasks.base import Problem

Logger = Callable[[dict], None]


@dataclass
class RLJob:
    """GRPO on `policy` with labeled problems (stages 1 and 3)."""

    name: str
    policy: PreTrainedModel
    tok: PreTrainedTokenizerBase
    problems: list[Problem]
    reward: Reward  # 0/1 per completion, graded in the pool (harness/rewards.py)
    cfg: GRPOConfig
    seed: int
    log: Logger
    checkpoints: Checkpoints | None = None  # where the stage saves the state it continues from (resume.py); None: never


@dataclass
class DistillJob:
    """Dense teacher supervision of `student` on prompts only (stages 2a and 2b)."""

    name: str
    student: PreTrainedModel
    teacher: PreTrainedModel | ServedTeacher  # resident beside the student, or on its own server (served/)
    tok: PreTrainedTokenizerBase
    prompts: list[str]
    cfg: DistillConfig
    seed: int
    log: Logger
    workdir: str | None = None  # the stage's own folder, for caches a backend keeps (TRL: teacher rollouts)
    checkpoints: Checkpoints | None = None  # as RLJob's
    teacher_cache: Path | None = None  # a served teacher's warmup rollouts, content-addressed, shared by the run's nodes


@dataclass
class StageReport:
    """What a stage consumed: labeled problem ids drawn (with repeats) and steps taken."""

    steps: int
    labeled_draws: list[str] = field(default_factory=list)


class Backend(Protocol):
    """Built from the run's config, `BACKENDS.get(name)(cfg)`, after `preflight.check_config` has refused what
    it cannot express; building it may join a process group (DeepSpeed). The pipeline loads a stage's models
    through it, saves the trained one inside `saving`, reads `memory_layout()`, and calls one method per stage."""

    name: str

    def load(self, ref: str, trained: bool) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """A stage's model (`trained`) or frozen teacher from a checked reference, placed as this backend holds it
        (DeepSpeed ZeRO-3: partitioned over the ranks as it loads)."""
        ...

    def saving(self, model: PreTrainedModel) -> contextlib.AbstractContextManager:
        """Entered by every rank after a stage; inside, rank 0 can save the model whole."""
        ...

    def memory_layout(self) -> dict:
        """How it holds a trained model, for the preflight memory estimate: any of precision ('fp32', 'bf16-mixed'),
        zero_stage, world, offload_optimizer, offload_params, teacher_zero3 (absent keys: one fp32 process)."""
        ...

    def teacher_rl(self, job: RLJob) -> StageReport:
        ...

    def warmup(self, job: DistillJob) -> StageReport:
        ...

    def opd(self, job: DistillJob) -> StageReport:
        ...

    def student_rl(self, job: RLJob) -> StageReport:
        ...
