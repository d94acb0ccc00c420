"""What each backend cannot express, declared beside the backends; the preflight collects them before any stage runs.

A backend that accepts every option (torch) declares nothing. `config` refusals read the config alone;
`pair` refusals read a distilling pair's embedding sizes (`vocab_size(role)`, loaded only when asked).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from s2d_bench import distributed
from s2d_bench.config import ROLES, DistillConfig, RunConfig, require


def _stage_configs(cfg: RunConfig):  # noqa: ANN202 - (arm, stage, its effective config) for every stage of every arm
    return [(arm, stage, cfg.stage_config(arm, stage)) for arm in cfg.arms for stage in cfg.arms[arm].stages]


TRL_ENGINES = ("hf", "vllm")  # hf: TRL's trainers sample with their own generate
TRL_ESTIMATORS = ("full",)  # GKD and Distillation trainers compute the full-vocabulary divergence


def _trl(cfg: RunConfig) -> None:
    """TRL accumulates equal micro-batches and has only full-vocabulary divergences, against a resident teacher model;
    GKD (the warmup's trainer) leaves the temperature out of its loss (found by test_parity at 0.7: another student)."""
    require(not cfg.teacher.server, "backend=trl: TRL's distillation trainers score with a teacher model resident beside the student; "
                                    "a served teacher (teacher.server) trains with backend=torch or backend=deepspeed")
    require(cfg.rollout.engine in TRL_ENGINES, f"backend=trl: rollout.engine={cfg.rollout.engine} is not one of TRL's samplers "
                                               f"({', '.join(TRL_ENGINES)}: its own generate, or its colocated vLLM); use backend=torch")
    for _, stage, st in _stage_configs(cfg):
        per_step = st.step_sequences // st.step_mini_batches
        require(not (st.step_sequences % st.step_mini_batches or (st.micro_batch_size and per_step % st.micro_batch_size)),
                 f"backend=trl: {stage}: mini_batches and micro_batch_size must divide the step's {st.step_sequences} sequences "
                 "evenly (TRL accumulates equal micro-batches)")
        require(stage != "warmup" or st.temperature == 1.0,
                f"backend=trl: warmup.temperature={st.temperature}: TRL's GKD trainer takes the forward KL at temperature 1, "
                "ours at the stage's sampling temperature (as TRL's other trainers do); set temperature: 1.0, or use backend=torch")
        require(not isinstance(st, DistillConfig) or st.estimator in TRL_ESTIMATORS,
                 f"backend=trl: {stage}.estimator={getattr(st, 'estimator', '')} has no TRL equivalent (its trainers use the "
                 "full-vocabulary divergence): set estimator: full, or use backend=torch")


def _deepspeed(cfg: RunConfig) -> None:
    """Every rank samples a share of each step's prompts: a step needs a prompt for each of the launch's ranks.
    bf16 needs ZeRO-2 or 3, the stages whose optimizers accumulate micro-batch gradients in fp32 (`grad_accum_dtype`):
    DeepSpeed 0.19 has no fp32 accumulation without ZeRO, and ZeRO-1's bf16 optimizer, which it switches to for
    fp32 accumulation, did not accumulate this backend's micro-batches (a gradient 7.9x off, measured on the CPU)."""
    require(not cfg.deepspeed.bf16 or cfg.deepspeed.zero_stage >= 2,
            f"backend=deepspeed: deepspeed.bf16 with zero_stage {cfg.deepspeed.zero_stage} would accumulate micro-batch gradients "
            "in bf16; set zero_stage: 2 or 3 (fp32 accumulation) or bf16: false")
    world = distributed.launched_world()
    for arm, stage, st in _stage_configs(cfg):
        require(st.step_prompts >= world, f"backend=deepspeed: {arm}/{stage} draws {st.step_prompts} prompts a step for {world} ranks; "
                                           "raise its prompts_per_step/batch_size to at least the number of ranks")


def _trl_pair(cfg: RunConfig, vocab_size: Callable[[str], int]) -> None:
    """TRL's GKD and Distillation trainers compare full distributions and refuse embeddings of two sizes; the
    torch and DeepSpeed backends compare the shared vocabulary (`losses.shared_vocabulary`)."""
    sizes = {role: vocab_size(role) for role in ROLES}
    require(sizes["teacher"] == sizes["student"],
            f"backend=trl: the teacher's embedding has {sizes['teacher']:,} rows and the student's {sizes['student']:,} "
            "(one tokenizer, padded differently); TRL's distillation trainers need equal sizes: use backend=torch or "
            "backend=deepspeed, which compare the shared vocabulary")


def _accepts(*args: object) -> None:
    """Nothing refused."""


@dataclass(frozen=True)
class Refusals:
    config: Callable[[RunConfig], None] = _accepts
    pair: Callable[[RunConfig, Callable[[str], int]], None] = _accepts


REFUSALS = {"trl": Refusals(config=_trl, pair=_trl_pair), "deepspeed": Refusals(config=_deepspeed)}  # by registered name


def refusals(backend: str) -> Refusals:
    return REFUSALS.get(backend, Refusals())
