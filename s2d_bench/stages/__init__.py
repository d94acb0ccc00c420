"""The workflow's stages, one file each, and the registry the config names them by."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from s2d_bench.errors import UserError
from s2d_bench.registry import Registry

if TYPE_CHECKING:  # types only: `s2d-bench ls` lists the registry without loading transformers
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from s2d_bench.backends.base import Backend, Logger, StageReport
    from s2d_bench.harness.rewards import Reward
    from s2d_bench.resume import Checkpoints
    from s2d_bench.served.teacher import ServedTeacher
    from s2d_bench.tasks.base import Splits


@dataclass
class StageInputs:
    """Everything a stage entry function may use; `model` is trained in place."""

    backend: Backend
    model: PreTrainedModel
    teacher: PreTrainedModel | ServedTeacher | None
    tok: PreTrainedTokenizerBase
    splits: Splits
    reward: Reward  # the task's grader in the grading pool (RL stages)
    cfg: Any
    seed: int
    log: Logger
    workdir: str | None = None  # the stage's folder, for caches a backend may keep there
    checkpoints: Checkpoints | None = None  # the stage's resumable saves (resume.py)
    teacher_cache: Path | None = None  # a served teacher's warmup rollouts, shared by the run directory (served/teacher.py)


def nonempty(items: list, stage: str, what: str) -> list:
    """The stage's inputs, or the same clear error on every backend when there are none."""
    if not items:
        raise UserError(f"{stage}: the task gives no {what}; a stage cannot train on an empty set")
    return items


@dataclass(frozen=True)
class Stage:
    name: str
    trains: str  # "teacher" or "student"
    needs_teacher: bool
    uses_labels: bool
    run: Callable[[StageInputs], StageReport]
    samples_from: str = "trained"  # whose rollouts the stage trains on: "trained" (on-policy) or "teacher" (the warmup)


STAGES: Registry = Registry("stage")
STAGES.register("teacher_rl", "s2d_bench.stages.teacher_rl:STAGE", "1: GRPO on the teacher, labeled prompts, sparse 0/1 reward")
STAGES.register("warmup", "s2d_bench.stages.warmup:STAGE", "2a: forward KL(teacher || student) on teacher rollouts")
STAGES.register("opd", "s2d_bench.stages.opd:STAGE", "2b: on-policy distillation, reverse KL(student || teacher) per token")
STAGES.register("student_rl", "s2d_bench.stages.student_rl:STAGE", "3: GRPO on the student, labeled prompts")
STAGES.register("replay", "s2d_bench.stages.replay:STAGE", "3 (control): more OPD for stage 3's number of updates, no labels")
